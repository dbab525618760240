"""Issue 30 replayed: each edge a review broke in the data, training and export paths.

Every test here reproduces one finding on small data and checks the right result, or one clear
error (`GPT2CoreError`, or one line and exit status 2 on the command line).
"""

import json
import os
import time

import numpy as np
import pytest

from gpt2_core import checkpoint, cli, corpora, files, launch, prepare, runs, shards

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hum".split()


def texts(n: int = 60) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"{i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(5, 40))))
            for i in range(n)]


def jsonl(path, documents=None):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents or texts()))
    return path


def books(folder):
    folder.mkdir()
    for i, text in enumerate(texts(6)):
        (folder / f"{i}.txt").write_text(text + "\n")
    return folder


def prepared(tmp_path, name="data", **options):
    return prepare.prepare(corpora.open_source(jsonl(tmp_path / f"{name}.jsonl")),
                           tmp_path / name, shard_tokens=100, **options)


def one_line_exit_2(capsys, status):
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- 1. paths: relative, absolute, ./, through a symlink ---------------------------------------
@pytest.mark.parametrize("spelling", ["books", "books/", "./books", "ABS", "link", "link/"])
def test_prepare_reads_a_folder_however_its_path_is_spelt(tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    books(tmp_path / "books")
    (tmp_path / "link").symlink_to(tmp_path / "books")
    spec = str(tmp_path / "books") if spelling == "ABS" else spelling
    manifest = prepare.prepare(corpora.open_source(spec), "out", val_fraction=0.3)
    assert manifest["documents"]["train"] + manifest["documents"]["val"] == 6
    out = {"books": "out2", "./books": "./out2"}.get(spelling, str(tmp_path / "out2"))
    assert cli.main(["prepare", spec, "--out", out, "--num-proc", "1", "--val-fraction",
                     "0.3"]) == 0


def test_the_fingerprint_does_not_depend_on_the_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    books(tmp_path / "books")
    described = {corpora.open_source(s).describe()["fingerprint"]
                 for s in ("books", "./books/", str(tmp_path / "books"))}
    assert len(described) == 1


# --- 2. an empty or short validation split -----------------------------------------------------
def tiny_config(tmp_path, block_size=16, **train):
    config = {"model": {"vocab_size": 50257, "block_size": block_size, "n_layer": 1,
                        "n_head": 1, "n_embd": 8, "dropout": 0.0},
              "train": {"max_steps": 2, "batch_size": 2, "block_size": block_size,
                        "eval_interval": 0, "warmup_steps": 1, **train}}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("val_fraction", [0.0, 0.05])
@pytest.mark.parametrize("main", [cli.main, launch.main])
def test_pretraining_refuses_a_validation_split_too_short_up_front(tmp_path, capsys, main,
                                                                    val_fraction):
    manifest = prepared(tmp_path, val_fraction=val_fraction)
    block = max(16, manifest["tokens"]["val"])              # the split holds no whole window
    status = main(["pretrain" if main is cli.main else "train", "--data",
                   str(tmp_path / "data"), "--config", str(tiny_config(tmp_path, block)),
                   "--out", str(tmp_path / "run")])
    err = one_line_exit_2(capsys, status)
    assert "val split has" in err and f"{block + 1:,}" in err
    assert not (tmp_path / "run").exists()


# --- 3. atomic writes --------------------------------------------------------------------------
def test_atomic_directory_fsyncs_every_file_inside(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
        f"/proc/self/fd/{fd}")), real(fd))[1])
    with files.atomic_directory(tmp_path / "ckpt") as tmp:
        (tmp / "a.bin").write_bytes(b"a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"b")
    names = {os.path.basename(p) for p in synced}
    assert {"a.bin", "b.bin"} <= names


def test_json_written_through_files_is_strict(tmp_path):
    with pytest.raises(ValueError):
        files.atomic_write_json(tmp_path / "x.json", {"loss": float("nan")})
    assert not list(tmp_path.iterdir())


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, capsys):
    import torch

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (1, 2):
        checkpoint.save_checkpoint(tmp_path, model=model, optimizer=optimizer, step=step,
                                   config={})
    (tmp_path / "ckpt-0000002" / "model.safetensors").write_bytes(b"")    # a power loss
    assert checkpoint.latest_checkpoint(tmp_path).name == "ckpt-0000001"
    err = capsys.readouterr().err
    assert "ckpt-0000002" in err and "sha256" in err


def test_a_resumed_run_moves_a_broken_checkpoint_aside_and_trains_past_it(tmp_path, capsys):
    import torch

    run = runs.Run.create(tmp_path / "run", "test", {"a": 1})
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    for step in (1, 2):
        run.log({"step": step, "loss": 1.0})
        checkpoint.save_checkpoint(run.checkpoints, model=model, optimizer=optimizer,
                                   step=step, config={})
    (run.checkpoints / "ckpt-0000002" / "state.json").write_text("")
    resumed = runs.Run.create(tmp_path / "run", "test", {"a": 1}, resume=True)
    assert resumed.last_step == 1
    assert "ckpt-0000002" in capsys.readouterr().err
    checkpoint.save_checkpoint(run.checkpoints, model=model, optimizer=optimizer, step=2,
                               config={})
    assert checkpoint.latest_checkpoint(run.checkpoints).name == "ckpt-0000002"


# --- 5. a torn last line in metrics.jsonl ------------------------------------------------------
def test_resume_drops_a_torn_last_metrics_line(tmp_path):
    run = runs.Run.create(tmp_path / "run", "test", {"a": 1})
    run.log({"step": 1, "loss": 1.0})
    with open(run.directory / runs.METRICS_FILE, "a") as f:
        f.write('{"step": 2, "lo')                  # killed during the write
    resumed = runs.Run.create(tmp_path / "run", "test", {"a": 1}, resume=True)
    assert resumed.last_step == 0 and resumed.metrics() == []
    run = runs.Run.open(tmp_path / "run")
    (run.directory / runs.METRICS_FILE).write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(runs.RunError, match="line 2"):
        run.metrics()                               # a bad line in the middle is still an error


def test_metrics_are_strict_json(tmp_path):
    run = runs.Run.create(tmp_path / "run", "test", {"a": 1})
    with pytest.raises(runs.RunError, match="loss"):
        run.log({"step": 1, "loss": float("nan")})
    assert run.metrics() == []


# --- 7. counts and sizes, checked where the value is built -------------------------------------
@pytest.mark.parametrize("main, command", [(cli.main, "pretrain"), (launch.main, "train")])
@pytest.mark.parametrize("flag, value", [("--grad-accum-steps", "0"), ("--batch-size", "0"),
                                         ("--eval-batches", "0"), ("--max-steps", "0"),
                                         ("--block-size", "-1"), ("--eval-interval", "-1")])
def test_pretrain_count_flags_are_checked(tmp_path, capsys, main, command, flag, value):
    with pytest.raises(SystemExit) as stop:
        main([command, "--data", str(tmp_path), "--out", str(tmp_path / "run"), flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected an integer >= " in err and value in err


@pytest.mark.parametrize("key, value", [("batch_size", 0), ("grad_accum_steps", 0),
                                        ("eval_batches", 0), ("warmup_steps", -1),
                                        ("checkpoint_interval", -1), ("eval_interval", -1)])
def test_train_config_counts_are_checked_with_key_and_value(tmp_path, capsys, key, value):
    prepared(tmp_path)
    status = cli.main(["pretrain", "--data", str(tmp_path / "data"), "--config",
                       str(tiny_config(tmp_path, **{key: value})), "--out", str(tmp_path / "run")])
    err = one_line_exit_2(capsys, status)
    assert f"{key}" in err and str(value) in err
    assert not (tmp_path / "run").exists()


def test_an_invalid_tokenizer_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "tok.json"
    bad.write_text('{"not": "a tokenizer"}')
    status = cli.main(["prepare", str(jsonl(tmp_path / "c.jsonl")), "--out",
                       str(tmp_path / "out"), "--tokenizer", str(bad)])
    assert "tok.json" in one_line_exit_2(capsys, status)


# --- 8. text_pieces (split_text before) is linear ----------------------------------------
def test_text_pieces_is_linear_on_text_without_a_cut_point():
    def seconds(chars: int) -> float:
        chunks = ("\u4e2d" * (1 << 16) for _ in range(chars >> 16))
        started = time.perf_counter()
        for _ in corpora.text_pieces(chunks, piece_chars=1 << 16):
            pass
        return time.perf_counter() - started
    small, large = seconds(1 << 21), seconds(1 << 23)
    assert large < 8 * max(small, 0.01), (small, large)       # quadratic would be 16x


def test_text_pieces_holds_at_most_a_few_chunks():
    held = []

    def chunks():
        for _ in range(64):
            held.append(1)
            yield "\u4e2d" * 1000
    pieces = list(corpora.text_pieces(chunks(), piece_chars=1000))
    assert "".join(p for p, _ in pieces) == "\u4e2d" * 64000
    assert max(len(p) for p, _ in pieces) <= 4096 + 1000


# --- 9. Shards slices like numpy ---------------------------------------------------------------
def test_empty_slices_of_shards_are_empty_arrays(tmp_path):
    prepared(tmp_path)
    tokens = shards.Shards(tmp_path / "data")
    every = tokens[:]
    for index in (slice(5, 5), slice(len(tokens), None), slice(7, 3), slice(-2, -2)):
        got = tokens[index]
        assert isinstance(got, np.ndarray) and got.dtype == tokens.dtype
        assert got.tolist() == every[index].tolist()


# --- 10. the manifest is validated on read -----------------------------------------------------
def edit_manifest(folder, edit):
    path = folder / shards.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["/etc/passwd", "../data.jsonl", "val_000000.bin",
                                  "train_0.bin"])
def test_shard_file_names_must_be_their_own(tmp_path, name):
    prepared(tmp_path)
    edit_manifest(tmp_path / "data",
                  lambda m: m["shards"]["train"][0].__setitem__("file", name))
    with pytest.raises(shards.ManifestError, match="train_000000.bin"):
        shards.Shards(tmp_path / "data", verify=True)


@pytest.mark.parametrize("edit", [
    lambda m: m["shards"]["train"][0].pop("sha256"),
    lambda m: m.pop("dtype"),
    lambda m: m.__setitem__("dtype", "float64"),
    lambda m: m["tokenizer"].__setitem__("file", "../../secret.json"),
    lambda m: m["shards"].pop("val"),
    lambda m: m["shards"]["train"][0].__setitem__("tokens", "many"),
])
def test_a_malformed_manifest_is_a_manifest_error(tmp_path, edit):
    prepared(tmp_path)
    edit_manifest(tmp_path / "data", edit)
    with pytest.raises(shards.ManifestError):
        shards.Shards(tmp_path / "data")


def test_a_failed_prepare_removes_only_its_own_files(tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    manifest = {"format": shards.FORMAT, "version": shards.VERSION, "complete": False}
    records = {"train": [{"file": str(keep)}], "val": []}
    (out / shards.MANIFEST).write_text(json.dumps(manifest))
    prepare._remove_outputs(out, records, copy=False)
    assert keep.read_text() == "mine"


# --- 11. one prepare per folder; no output inside the source -----------------------------------
def test_a_second_prepare_on_the_same_folder_is_refused(tmp_path):
    source = corpora.open_source(jsonl(tmp_path / "c.jsonl"))
    with prepare.folder_lock(tmp_path / "out"), \
            pytest.raises(corpora.CorpusError, match="another prepare"):
        prepare.prepare(source, tmp_path / "out", shard_tokens=100)
    prepare.prepare(source, tmp_path / "out", shard_tokens=100)
    assert not (tmp_path / "out" / prepare.LOCK_FILE).exists()


@pytest.mark.parametrize("out", ["books/out", "books/sub/out", "books"])
def test_an_output_folder_inside_the_source_is_refused_up_front(tmp_path, monkeypatch, out):
    monkeypatch.chdir(tmp_path)
    books(tmp_path / "books")
    with pytest.raises(corpora.CorpusError, match="inside"):
        prepare.prepare(corpora.open_source("./books"), out)
    assert not (tmp_path / "books" / "out").exists()


# --- every entry point: one line and exit status 2 ---------------------------------------------
def test_launch_prepare_and_cli_errors_are_one_line(tmp_path, capsys):
    assert launch.main(["prepare", str(tmp_path / "nothing"), "--out",
                        str(tmp_path / "o")]) == 2
    one_line_exit_2(capsys, 2)



# --- 3 and 4. the web export: whole or nothing, keyed by the code that writes it ---------------
def tiny_gpt():
    import torch

    from gpt2_core.model import GPT, GPTConfig
    from gpt2_core.tokenizer import BPETokenizer

    torch.manual_seed(0)
    tokenizer = BPETokenizer.train(" ".join(WORDS) * 5, 270, name="tiny")
    return GPT(GPTConfig(vocab_size=270, block_size=8, n_layer=1, n_head=1, n_embd=8)), tokenizer


def test_a_failed_web_export_leaves_nothing_and_can_be_retried(tmp_path, monkeypatch):
    from gpt2_core import onnx_export

    model, tokenizer = tiny_gpt()
    real = onnx_export._write_json

    def broken(path, value):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(onnx_export, "_write_json", broken)
    with pytest.raises(OSError):
        onnx_export.export_for_web(model, tokenizer, tmp_path / "web")
    assert not (tmp_path / "web").exists() and not list(tmp_path.iterdir())
    monkeypatch.setattr(onnx_export, "_write_json", real)
    onnx_export.export_for_web(model, tokenizer, tmp_path / "web")
    assert sorted(p.name for p in (tmp_path / "web").iterdir()) == [
        "model.json", "model.onnx", "tokenizer.web.json"]


def test_the_export_cache_key_follows_the_exporter_and_the_regex_module(monkeypatch):
    import inspect

    import regex

    from gpt2_core import onnx_export

    key = onnx_export.export_code_key()
    monkeypatch.setattr(regex, "__version__", "0.0.1")
    assert onnx_export.export_code_key() != key
    monkeypatch.undo()
    source = inspect.getsource(onnx_export)
    monkeypatch.setattr(inspect, "getsource", lambda module: source + "# a fix\n")
    assert onnx_export.export_code_key() != key


def test_the_live_pages_cache_gpt2s_spec_under_the_exporters_key(monkeypatch, tmp_path):
    import importlib.util
    from pathlib import Path

    from gpt2_core import onnx_export

    spec = importlib.util.spec_from_file_location(
        "live_book", Path(__file__).parents[1] / "scripts" / "live_book.py")
    live_book = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(live_book)
    first = live_book.cached_gpt2_spec()
    monkeypatch.setattr(onnx_export, "export_code_key", lambda: "another")
    second = live_book.cached_gpt2_spec()
    assert first != second and json.loads(second.read_text())["name"] == "gpt2"
    assert not [p for p in second.parent.iterdir() if p.name.startswith(".")]


# --- 7, continued: the model's config ----------------------------------------------------------
@pytest.mark.parametrize("key, value", [("n_head", 0), ("n_layer", 0), ("n_embd", -8),
                                        ("vocab_size", 0), ("dropout", 1.5)])
def test_model_config_counts_are_checked_with_key_and_value(tmp_path, capsys, key, value):
    path = tiny_config(tmp_path)
    config = json.loads(path.read_text())
    config["model"][key] = value
    path.write_text(json.dumps(config))
    prepared(tmp_path)
    status = cli.main(["pretrain", "--data", str(tmp_path / "data"), "--config", str(path),
                       "--out", str(tmp_path / "run")])
    err = one_line_exit_2(capsys, status)
    assert key in err and str(value) in err


# --- 6. one entry point for pretraining --------------------------------------------------------
def train_flags(tmp_path):
    return ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--max-steps", "2",
            "--batch-size", "2", "--block-size", "16", "--warmup-steps", "1",
            "--eval-interval", "2", "--eval-batches", "1", "--log-interval", "1"]


@pytest.mark.parametrize("main, command", [(cli.main, "pretrain"), (launch.main, "train")])
def test_both_entry_points_train_and_leave_a_finished_run_alone(tmp_path, capsys, one_thread,
                                                                main, command):
    prepared(tmp_path, val_fraction=0.3)
    assert main([command, *train_flags(tmp_path), "--model", "book"]) == 0
    run = runs.Run.open(tmp_path / "run")
    assert run.config["dataset"] == str((tmp_path / "data").resolve())
    assert run.config["model"]["vocab_size"] == 50257
    finished = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    capsys.readouterr()
    for entry, name in ((cli.main, "pretrain"), (launch.main, "train")):
        assert entry([name, *train_flags(tmp_path), "--model", "book", "--resume"]) == 0
        assert "is finished" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()
            if p.is_file()} == finished


def test_the_book_model_stretches_to_a_longer_block_size(tmp_path):
    prepared(tmp_path, val_fraction=0.3)
    args = cli.build_parser().parse_args(["pretrain", *train_flags(tmp_path), "--model",
                                          "book", "--block-size", "100", "--batch-size", "1"])
    recipe = cli.pretrain_recipe(args)
    assert recipe.model.block_size == 100 == recipe.train.block_size
    assert recipe.model.n_layer == 4


@pytest.mark.parametrize("main, command", [(cli.main, "pretrain"), (launch.main, "train")])
@pytest.mark.parametrize("problem", ["no data", "existing run", "unknown model"])
def test_pretrain_mistakes_are_one_line_and_exit_2(tmp_path, capsys, main, command, problem):
    prepared(tmp_path, val_fraction=0.3)
    flags = train_flags(tmp_path)
    if problem == "no data":
        flags[1] = str(tmp_path / "missing")
    elif problem == "existing run":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "notes.txt").write_text("mine")
    else:
        flags += ["--model", "gpt5"]
    if problem == "unknown model":                      # argparse: usage, then one error line
        with pytest.raises(SystemExit) as stop:
            main([command, *flags])
        assert stop.value.code == 2
        assert "invalid choice: 'gpt5'" in capsys.readouterr().err
        return
    err = one_line_exit_2(capsys, main([command, *flags]))
    assert ("missing" if problem == "no data" else "not empty") in err


@pytest.mark.slow
def test_launch_train_under_torchrun_trains_refuses_and_leaves_a_finished_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    prepared(tmp_path, val_fraction=0.3)
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone",
                "--nproc_per_node=2", "-m"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launched(module, command, *extra):
        return subprocess.run([*torchrun, module, command, *train_flags(tmp_path), *extra],
                              capture_output=True, text=True, env=env, timeout=300)
    assert launched("gpt2_core.launch", "train").returncode == 0
    again = launched("gpt2_core", "pretrain")                  # not --resume: refused
    assert again.returncode != 0
    assert again.stderr.count("gpt2-core pretrain: error: ") == 2 and "not empty" in again.stderr
    finished = launched("gpt2_core", "pretrain", "--resume")
    assert finished.returncode == 0 and "is finished" in finished.stdout
