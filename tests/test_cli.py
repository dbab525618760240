"""The command line: pretrain -> evaluate -> export -> transformers, resume after a kill, clear errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from gpt2_core import data
from gpt2_core.classifier import (
    CLASSIFIER_KIND,
    ClassifierConfig,
    FinetuneConfig,
    LoRALinear,
    classification_loader,
    finetune_classifier,
    load_classifier,
    predict,
    sms_splits,
)
from gpt2_core.cli import COMMANDS, main
from gpt2_core.generate import generate
from gpt2_core.instruct import (
    INSTRUCT_KIND,
    INSTRUCTION_TRAINING,
    InstructConfig,
    finetune_instruct,
)
from gpt2_core.model import from_pretrained
from book_tools.nbexport import ROOT
from gpt2_core.configs import config_from_dict
from gpt2_core.pretrained import BOOK_RECIPE, book_model, recipe_key
from gpt2_core.runs import Run, RunError
from gpt2_core.tokenizer import BPETokenizer
from gpt2_core.train import TrainConfig

TINY = {"dataset": "the-verdict", "vocab_size": 300,
        "model": {"vocab_size": 300, "block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
        "train": {"max_steps": 20, "batch_size": 4, "block_size": 16, "warmup_steps": 2, "eval_interval": 10,
                  "eval_batches": 2, "checkpoint_interval": 5}}


def write_config(directory: Path, values: dict, name: str = "tiny.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(values))
    return path


@pytest.fixture(autouse=True)
def every_test_has_the_data(mirror):
    """Every command here reads a registered data set."""


def pretrain_tiny(directory: Path, config: dict, data_mirror: Path) -> Path:
    """Run `pretrain` on `config` in `directory`, offline from the mirror; return the run directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(data.CACHE_ENV, str(directory / "cache"))
        mp.setenv(data.MIRROR_ENV, str(data_mirror))
        mp.setenv(data.OFFLINE_ENV, "1")
        assert main(["pretrain", "--config", str(write_config(directory, config)), "--out",
                     str(directory / "run")]) == 0
    return directory / "run"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_mirror) -> Path:
    """One finished tiny pretraining run, shared read-only by the tests (copy it to change it)."""
    return pretrain_tiny(tmp_path_factory.mktemp("trained"), TINY, data_mirror)


@pytest.fixture(scope="module")
def long_context(tmp_path_factory, data_mirror) -> Path:
    """A tiny pretraining run with a 256-token context, room for chapter 7's prompts (read-only)."""
    return pretrain_tiny(tmp_path_factory.mktemp("long"), {**TINY, "model": {**TINY["model"], "block_size": 256}},
                        data_mirror)


def error_of(capsys, argv: list[str]) -> str:
    """Run argv, expect exit status 2, and return the one-line error message."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_pretrain_writes_the_whole_run_record(trained):
    names = sorted(p.name for p in trained.iterdir())
    assert names == ["README.md", "checkpoints", "config.json", "eval.json", "metrics.jsonl", "model",
                     "record.json", "tokenizer.json"]
    run = Run.open(trained)
    assert run.kind == "pretrain" and run.config["dataset"] == "the-verdict" and run.config["vocab_size"] == 300
    assert run.config["train"]["max_steps"] == 20 and run.config["model"]["n_embd"] == 16
    metrics = run.metrics()
    assert [r["step"] for r in metrics] == list(range(1, 21))
    assert [r["step"] for r in metrics if "val_loss" in r] == [10, 20]
    elapsed = [r["elapsed_s"] for r in metrics]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    validation = run.evaluations["validation"]
    assert sorted(validation) == ["bits_per_char", "loss", "tokens"]
    assert validation["loss"] < metrics[0]["loss"]                   # it learned something
    assert sorted(p.name for p in run.model_dir.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                               "tokenizer.json"]
    card = (trained / "README.md").read_text()
    assert data.REGISTRY["the-verdict"].sha256 in card and "20 optimizer steps" in card


def test_evaluate_export_and_load_in_transformers(trained, tmp_path, capsys, book_text):
    transformers = pytest.importorskip("transformers")
    run_dir = shutil.copytree(trained, tmp_path / "run")
    assert main(["evaluate", str(run_dir), "the-verdict"]) == 0
    assert "the-verdict: loss " in capsys.readouterr().out
    results = Run.open(run_dir).evaluations["the-verdict"]
    tokenizer = BPETokenizer.load(run_dir / "tokenizer.json")
    text = book_text("the-verdict")
    assert results["tokens"] == len(tokenizer.encode(text)) - 1
    assert results["bits_per_char"] == pytest.approx(results["loss"] * results["tokens"] / results["characters"]
                                                     / 0.6931471805599453)
    assert "refusing to overwrite" in error_of(capsys, ["evaluate", str(run_dir), "the-verdict"])
    assert main(["evaluate", str(run_dir), "the-verdict", "--overwrite", "--stride", "4"]) == 0
    slid = Run.open(run_dir).evaluations["the-verdict"]
    assert (slid["stride"], slid["context"], slid["tokens"]) == (4, 16, results["tokens"])
    assert slid["bits_per_byte"] * slid["bytes"] == pytest.approx(slid["bits_per_char"] * slid["characters"])
    assert "--stride 17 is longer than the context (16)" in error_of(
        capsys, ["evaluate", str(run_dir), "the-verdict", "--overwrite", "--stride", "17"])
    assert "--context 32 is longer than the model's context (16)" in error_of(
        capsys, ["evaluate", str(run_dir), "the-verdict", "--overwrite", "--context", "32"])

    out = tmp_path / "exported"
    assert main(["export", str(run_dir), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer.json"]
    assert "| the-verdict |" in (out / "README.md").read_text()
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    ours = from_pretrained(out)
    idx = torch.randint(0, 300, (3, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)).abs().max().item() < 1e-5
        assert torch.equal(ours(idx), from_pretrained(run_dir / "model")(idx))
    capsys.readouterr()                                            # transformers' loading bar
    assert "already exists and is not empty" in error_of(capsys, ["export", str(run_dir), str(out)])


def test_generate_streams_the_models_continuation(trained, capsys):
    prompt = "I had always thought"
    assert main(["generate", str(trained), "--prompt", prompt, "--max-new-tokens", "24", "--greedy"]) == 0
    text = capsys.readouterr().out
    model, tokenizer = from_pretrained(trained / "model"), BPETokenizer.load(trained / "tokenizer.json")
    new = generate(model, tokenizer.encode(prompt), 24, overflow="slide").sequences[0]
    assert text == prompt + tokenizer.decode(new) + "\n"
    sample = ["generate", str(trained / "model"), "--max-new-tokens", "30", "--seed", "3", "--top-k", "20"]
    assert main(sample) == 0
    first = capsys.readouterr().out
    assert main(sample) == 0
    assert capsys.readouterr().out == first and len(first) > 10


def test_refuses_to_overwrite_or_resume_another_config(trained, tmp_path, capsys):
    config = write_config(tmp_path, TINY)
    err = error_of(capsys, ["pretrain", "--config", str(config), "--out", str(trained)])
    assert err == f"gpt2-core pretrain: error: {trained} is not empty; resume the run there (--resume) " \
                  "or choose a new directory"
    err = error_of(capsys, ["pretrain", "--config", str(config), "--out", str(trained), "--resume", "--max-steps", "30"])
    assert err.endswith("made with another config: it differs from the new one in config.train.max_steps: 20 -> 30")
    assert main(["pretrain", "--config", str(config), "--out", str(trained), "--resume"]) == 0
    assert "is finished" in capsys.readouterr().out


@pytest.mark.parametrize("values, message", [
    ({"train": {"max_step": 5}}, "bad.json: unknown key 'train.max_step'"),
    ({"model": {"n_embd": "16"}}, "bad.json: key 'model.n_embd' must be int, got str '16'"),
    ({"vocab_size": 400}, "bad.json: invalid config: model.vocab_size=300 is smaller than the tokenizer's "
                          "vocab_size=400"),
    ({"dataset": "nope"}, "dataset 'nope' is neither a registered data set (brown, "),
])
def test_bad_config_files_are_named(tmp_path, capsys, values, message):
    config = write_config(tmp_path, {**TINY, **values, "model": {**TINY["model"], **values.get("model", {})},
                                     "train": {**TINY["train"], **values.get("train", {})}}, "bad.json")
    err = error_of(capsys, ["pretrain", "--config", str(config), "--out", str(tmp_path / "run")])
    assert message in err


def test_bad_paths_and_pickles_are_refused(trained, tmp_path, capsys):
    assert "no such model directory" in error_of(capsys, ["generate", str(tmp_path / "absent")])
    weights = tmp_path / "pytorch_model.bin"
    weights.write_bytes(b"pickle")
    assert "refusing to load" in error_of(capsys, ["generate", str(weights)])
    assert "refusing to load pickled weights (pytorch_model.bin)" in error_of(capsys, ["evaluate", str(tmp_path), "x"])
    assert "neither a file nor a registered data set" in error_of(capsys, ["evaluate", str(trained), "absent.txt"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    assert "not UTF-8 text" in error_of(capsys, ["evaluate", str(trained), str(tmp_path / "latin1.txt")])
    assert "does not exist" in error_of(capsys, ["pretrain", "--config", str(tmp_path / "x.json"), "--out", "r"])
    assert "is not a run directory" in error_of(capsys, ["export", str(tmp_path), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", str(trained), "--temperature", "0"])
    assert exit_info.value.code == 2 and "expected a number > 0, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0 and f"usage: gpt2-core {name}" in capsys.readouterr().out


def test_resume_after_the_process_is_killed(tmp_path):
    config = write_config(tmp_path, {**TINY, "train": {**TINY["train"], "max_steps": 200, "eval_interval": 0}})
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "gpt2_core", "pretrain", "--config", str(config), "--out", str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not list((run_dir / "checkpoints").glob("ckpt-*")):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (run_dir / "model").exists(), "the run finished before it was killed"
    assert Run.open(run_dir).last_step < 200
    subprocess.run(command + ["--resume"], env=env, check=True, capture_output=True)
    run = Run.open(run_dir)
    assert [r["step"] for r in run.metrics()] == list(range(1, 201))     # each step exactly once
    assert (run_dir / "checkpoints" / "ckpt-0000200").is_dir() and (run_dir / "model" / "model.safetensors").is_file()


def test_finetune_classifier_writes_a_run_with_test_metrics(long_context, tmp_path, capsys):
    out = tmp_path / "spam"
    assert main(["finetune-classifier", str(long_context), "--out", str(out), "--epochs", "2", "--limit", "160"]) == 0
    assert "test: accuracy " in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "classifier", "config.json", "eval.json",
                                                     "metrics.jsonl"]
    run = Run.open(out)
    assert run.kind == "finetune-classifier" and run.config["base"] == str(long_context)
    assert (run.config["trainable"], run.config["max_length"], run.config["limit"]) == ("all", 64, 160)
    assert run.config["finetune"]["epochs"] == 2
    assert [(r["step"], r["epoch"]) for r in run.metrics()] == [(10, 1), (20, 2)]     # 160 messages, 16 a batch
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "elapsed_s"} <= set(run.metrics()[0])
    test, full = run.evaluations["test"], run.evaluations["full test"]
    assert (test["messages"], full["messages"]) == (300, 5574 - 1045 - 149)
    assert test["accuracy"] == pytest.approx((test["confusion"][0][0] + test["confusion"][1][1]) / 300)
    assert {"precision", "recall", "f1"} <= set(test)
    classifier, tokenizer = load_classifier(out / "classifier")
    labels, predictions, _ = predict(classifier, classification_loader(sms_splits()["test"], tokenizer, max_length=64))
    assert (labels == predictions).float().mean().item() == pytest.approx(test["accuracy"])
    card = (out / "README.md").read_text()
    assert "text classifier" in card and "| test | 300 |" in card and (out / "classifier" / "README.md").is_file()
    assert "is a classifier run, not a language model" in error_of(capsys, ["generate", str(out)])


def test_finetune_classifier_with_lora_saves_merged_weights(long_context, tmp_path):
    out = tmp_path / "lora"
    assert main(["finetune-classifier", str(long_context / "model"), "--out", str(out), "--epochs", "1",
                 "--limit", "32", "--lora-rank", "2", "--max-length", "300"]) == 0
    config = Run.open(out).config
    assert (config["trainable"], config["lora_rank"], config["max_length"]) == ("head", 2, 300)
    classifier, _ = load_classifier(out / "classifier")
    assert classifier.max_length == 256                                      # cut to the context
    assert not any(isinstance(m, LoRALinear) for m in classifier.modules())


def test_finetune_instruct_exports_a_model_that_loads_in_transformers(long_context, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    config = write_config(tmp_path, {"train": {"eval_interval": 2}, "synthetic_train": 10, "synthetic_test": 5})
    out = tmp_path / "instruct"
    assert main(["finetune-instruct", str(long_context), "--out", str(out), "--config", str(config),
                 "--max-steps", "4", "--batch-size", "4"]) == 0
    assert "response perplexity on the test split" in capsys.readouterr().out
    run = Run.open(out)
    assert run.kind == "finetune-instruct" and run.config["mask_prompt"] is True
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4]
    assert [r["step"] for r in run.metrics() if "val_loss" in r] == [2, 4]
    test, rules = run.evaluations["test split"], run.evaluations["rule-checked"]
    assert test["examples"] == 110 and test["response_perplexity"] < test["response_perplexity_base"]
    assert len(run.read_json("test_responses.json")) == 110
    assert rules["items"] == 20 and set(rules["by_task"]) == {"count", "commas", "more_than_three", "parity", "all"}
    assert sorted(p.name for p in (out / "model").iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                                 "tokenizer.json"]
    exported = tmp_path / "exported"
    assert main(["export", str(out), str(exported)]) == 0
    hf = transformers.GPT2LMHeadModel.from_pretrained(exported).eval()
    ours = from_pretrained(out / "model")
    idx = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(idx).logits - ours(idx)).abs().max().item() < 1e-5
        assert not torch.equal(ours(idx), from_pretrained(long_context / "model")(idx))     # it was trained
    assert "instruction-following" in (exported / "README.md").read_text()
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "Name a colour.", "--max-new-tokens", "5", "--greedy"]) == 0


@pytest.mark.parametrize("command, values, message", [
    ("finetune-classifier", {"finetune": {"epoch": 2}},
     "bad.json: unknown key 'finetune.epoch'; known keys here: epochs, "),
    ("finetune-classifier", {"finetune": {"lr": "big"}}, "bad.json: key 'finetune.lr' must be float, got str 'big'"),
    ("finetune-classifier", {"finetune": {"lr": 1e-4, "min_lr": 1e-3}},
     "bad.json: invalid finetune: need 0 <= min_lr <= lr"),
    ("finetune-classifier", {"trainable": "last"}, "trainable must be one of head, last_block, all"),
    ("finetune-classifier", {"lora_rank": 4, "trainable": "all"}, "trainable must be 'head', got 'all'"),
    ("finetune-instruct", {"max_step": 3}, "bad.json: unknown key 'max_step'"),
    ("finetune-instruct", {"train": {"lr": 1e-4, "min_lr": 1e-3}}, "bad.json: invalid train: need 0 <= min_lr <= lr"),
])
def test_bad_finetune_configs_are_named(long_context, tmp_path, capsys, command, values, message):
    config = write_config(tmp_path, values, "bad.json")
    err = error_of(capsys, [command, str(long_context), "--config", str(config), "--out", str(tmp_path / "run")])
    assert message in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["finetune-classifier", "finetune-instruct"])
def test_finetune_refuses_an_existing_run_directory(long_context, trained, command, capsys):
    err = error_of(capsys, [command, str(long_context), "--out", str(trained)])
    assert err == f"gpt2-core {command}: error: {trained} exists and is not empty; choose a new directory " \
                  "(a fine-tuning run cannot be resumed: start it again)"


def test_finetune_instruct_needs_room_for_the_prompts(trained, tmp_path, capsys):
    err = error_of(capsys, ["finetune-instruct", str(trained), "--out", str(tmp_path / "run")])
    assert "train.block_size=256 is longer than the base model's context (16 tokens)" in err
    assert not (tmp_path / "run").exists()
    err = error_of(capsys, ["finetune-instruct", str(trained), "--block-size", "16", "--out", str(tmp_path / "run")])
    assert "the context (16 tokens) is too short for the rule-checked prompts" in err
    assert not (tmp_path / "run").exists()


def test_bad_option_values_are_named(long_context, tmp_path, capsys):
    err = error_of(capsys, ["finetune-classifier", str(long_context), "--trainable", "all", "--lora-rank", "2",
                            "--out", str(tmp_path / "run")])
    assert "invalid options: lora_rank=2 trains the LoRA matrices and the head" in err


def run_shape(run: Run) -> dict:
    """The files of a run and the keys of each of its records."""
    return {"files": sorted(p.name for p in run.directory.iterdir()), "config": sorted(run.config),
            "metrics": [sorted(r) for r in run.metrics()],
            "eval": {name: sorted(results) for name, results in run.evaluations.items()}}


def test_the_cli_and_the_chapter_write_the_same_classifier_run(long_context, tmp_path):
    """Chapter 6 calls finetune_classifier(cfg, run); the CLI parses its options into the same
    config and calls it too: the two run records have the same shape and the same numbers."""
    assert main(["finetune-classifier", str(long_context), "--out", str(tmp_path / "cli"), "--epochs", "1",
                 "--limit", "32", "--seed", "5"]) == 0
    cfg = ClassifierConfig(base=str(long_context), finetune=FinetuneConfig(epochs=1, seed=5), limit=32)
    finetune_classifier(cfg, Run.create(tmp_path / "chapter", CLASSIFIER_KIND, cfg))
    cli, chapter = Run.open(tmp_path / "cli"), Run.open(tmp_path / "chapter")
    assert run_shape(cli) == run_shape(chapter) and cli.config == chapter.config
    assert cli.evaluations == chapter.evaluations


def test_the_cli_and_the_chapter_write_the_same_instruct_run(long_context, tmp_path):
    small = {"train": {"max_steps": 2, "batch_size": 2, "eval_interval": 1}, "synthetic_train": 2,
             "synthetic_test": 1, "response_tokens": 2}
    assert main(["finetune-instruct", str(long_context), "--out", str(tmp_path / "cli"), "--config",
                 str(write_config(tmp_path, small))]) == 0
    cfg = InstructConfig(base=str(long_context), train=TrainConfig(**{**asdict(INSTRUCTION_TRAINING),
                                                                     **small["train"]}),
                         synthetic_train=2, synthetic_test=1, response_tokens=2)
    finetune_instruct(cfg, Run.create(tmp_path / "chapter", INSTRUCT_KIND, cfg))
    cli, chapter = Run.open(tmp_path / "cli"), Run.open(tmp_path / "chapter")
    assert run_shape(cli) == run_shape(chapter) and cli.config == chapter.config
    assert cli.evaluations == chapter.evaluations


def test_the_cli_and_the_chapter_write_the_same_pretrain_run(trained, tmp_path, monkeypatch):
    """`gpt2-core pretrain` and chapter 4's book_model both run pretrain(recipe, run)."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "cache"))
    recipe = config_from_dict(BOOK_RECIPE, TINY, source="TINY")
    book_model(recipe)
    chapter, cli = Run.open(tmp_path / "cache" / "models" / f"book-{recipe_key(recipe)}"), Run.open(trained)
    assert run_shape(chapter) == run_shape(cli) and chapter.config == cli.config
    assert chapter.evaluations["validation"] == pytest.approx(cli.evaluations["validation"])
    assert sorted(chapter.read_json("record.json")) == sorted(cli.read_json("record.json"))


def test_a_job_refuses_a_run_made_for_another_config(long_context, tmp_path):
    cfg = ClassifierConfig(base=str(long_context), limit=8)
    run = Run.create(tmp_path / "run", CLASSIFIER_KIND, ClassifierConfig(base=str(long_context), limit=16))
    with pytest.raises(RunError, match=r"limit: 16 -> 8"):
        finetune_classifier(cfg, run)
