"""prepare: corpora into token shards: contents, split, manifest, resume, errors, the commands."""

import hashlib
import json

import numpy as np
import pytest

from gpt2_core import cli, corpora, launch, prepare, shards
from gpt2_core.runs import Run
from gpt2_core.tokenizer import BPETokenizer, gpt2_tokenizer

EOT = 50256
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hum".split()


def documents(n: int = 40) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"{i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(1, 30))))
            for i in range(n)]


def jsonl(path, texts) -> corpora.Source:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return corpora.open_source(path)


def expected(texts, split: str, val_fraction: float = 0.1) -> list[int]:
    tok = gpt2_tokenizer()
    out = []
    for i, text in enumerate(texts):
        if prepare.is_val(i, val_fraction) == (split == "val"):
            out += tok.encode_ordinary(text) + [EOT]
    return out


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_shards_hold_each_document_once_then_end_of_text(tmp_path):
    texts = documents()
    manifest = prepare.prepare(jsonl(tmp_path / "c.jsonl", texts), tmp_path / "out",
                               shard_tokens=50)
    assert manifest["complete"] and manifest["dtype"] == "uint16"
    for split in ("train", "val"):
        records = manifest["shards"][split]
        assert [r["file"] for r in records] == [f"{split}_{i:06d}.bin" for i in range(len(records))]
        assert all(r["tokens"] == 50 for r in records[:-1]) and 0 < records[-1]["tokens"] <= 50
        tokens = np.concatenate([np.fromfile(tmp_path / "out" / r["file"], dtype=np.uint16)
                                 for r in records])
        assert tokens.tolist() == expected(texts, split)
        assert manifest["documents"][split] == sum(
            prepare.is_val(i, 0.1) == (split == "val") for i in range(len(texts)))
        assert manifest["tokens"][split] == len(tokens)
    assert manifest["documents"]["val"] > 0
    assert manifest["tokenizer"] == {"name": "gpt2", "vocab_size": 50257, "eot_token": EOT,
                                     "file": None, "sha256": None}
    # The file itself, checked against the shards' bytes and the documents' token counts.
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["complete"] is True and on_disk["dtype"] == "uint16"
    sizes = [len(gpt2_tokenizer().encode_ordinary(t)) + 1 for t in texts]   # text + end-of-text
    for split in ("train", "val"):
        ours = [i for i in range(len(texts)) if prepare.is_val(i, 0.1) == (split == "val")]
        position, written = [0, 0], 0
        for r in on_disk["shards"][split]:
            content = (tmp_path / "out" / r["file"]).read_bytes()
            assert r["sha256"] == hashlib.sha256(content).hexdigest()
            assert 2 * r["tokens"] == len(content)                  # uint16
            assert r["start"] == position
            written += r["tokens"]
            document, offset = position = r["end"]        # [document index, token offset in it]
            assert sum(sizes[i] for i in ours if i < document) + offset == written
        assert on_disk["tokens"][split] == written == sum(sizes[i] for i in ours)
        assert on_disk["documents"][split] == len(ours)


def test_the_split_is_by_a_hash_of_the_document_index():
    def rule(i):                                   # prepare.SPLIT_RULE, as the manifest states it
        digest = hashlib.blake2b(str(i).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") < 0.1 * 2**64
    picks = [prepare.is_val(i, 0.1) for i in range(20_000)]
    assert picks[:1000] == [rule(i) for i in range(1000)]
    assert 0.09 < np.mean(picks) < 0.11
    assert picks[:20] == [prepare.is_val(i, 0.1) for i in range(20)]       # no hidden state
    assert [prepare.is_val(i, 0.2) for i in range(200)] >= picks[:200]     # nested fractions
    assert not any(prepare.is_val(i, 0.0) for i in range(1000))


def test_a_text_file_is_one_document_unless_a_separator_cuts_it(tmp_path):
    (tmp_path / "t.txt").write_text("\n\n".join(documents(30)))
    whole = corpora.open_source(tmp_path / "t.txt")
    with pytest.raises(corpora.CorpusError, match="split got no tokens .* --separator"):
        prepare.prepare(whole, tmp_path / "one")
    assert list((tmp_path / "one").iterdir()) == []
    cut = corpora.open_source(tmp_path / "t.txt", separator="\n\n")
    manifest = prepare.prepare(cut, tmp_path / "many")
    assert manifest["documents"]["train"] + manifest["documents"]["val"] == 30


class Killed(Exception):
    pass


def kill_after(n: int):
    written = []

    def on_shard(split, record):
        written.append(record)
        if len(written) == n:
            raise Killed
    return on_shard


def test_a_killed_run_resumes_to_the_same_folder(tmp_path, monkeypatch):
    texts = documents(60)
    source = jsonl(tmp_path / "c.jsonl", texts)
    prepare.prepare(source, tmp_path / "whole", shard_tokens=64)
    with pytest.raises(Killed):
        prepare.prepare(source, tmp_path / "resumed", shard_tokens=64, on_shard=kill_after(5))
    partial = shards.read_manifest(tmp_path / "resumed")
    assert not partial["complete"] and len(partial["shards"]["train"]) == 5
    (tmp_path / "resumed" / ".train_000005.bin.x1y2.part").write_bytes(b"half")  # a kill's leftover
    encoded, encode_texts = [], prepare._encode

    def spy(encode, batch):
        encoded.extend(batch)
        return encode_texts(encode, batch)
    monkeypatch.setattr(prepare, "_encode", spy)
    prepare.prepare(source, tmp_path / "resumed", shard_tokens=64)
    assert folder_bytes(tmp_path / "resumed") == folder_bytes(tmp_path / "whole")
    resume_at = partial["shards"]["train"][-1]["end"][0]
    skipped = [t for i, t in enumerate(texts) if i < resume_at and not prepare.is_val(i, 0.1)]
    assert not set(skipped) & set(encoded)           # finished documents are not tokenized again


def test_resume_refuses_a_shard_that_differs_from_the_manifest(tmp_path):
    source = jsonl(tmp_path / "c.jsonl", documents(60))
    with pytest.raises(Killed):
        prepare.prepare(source, tmp_path / "out", shard_tokens=64, on_shard=kill_after(3))
    shard = tmp_path / "out" / "train_000001.bin"
    shard.write_bytes(b"\x00\x01" + shard.read_bytes()[2:])
    with pytest.raises(shards.ManifestError, match="train_000001.bin has sha256 .* says"):
        prepare.prepare(source, tmp_path / "out", shard_tokens=64)


def test_resume_refuses_other_settings_or_a_folder_it_did_not_write(tmp_path):
    source = jsonl(tmp_path / "c.jsonl", documents(60))
    with pytest.raises(Killed):
        prepare.prepare(source, tmp_path / "out", shard_tokens=64, on_shard=kill_after(2))
    with pytest.raises(corpora.CorpusError, match="other settings or input \\(shard_tokens"):
        prepare.prepare(source, tmp_path / "out", shard_tokens=32)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(corpora.CorpusError, match="is not empty \\(notes.txt"):
        prepare.prepare(source, tmp_path / "mine")


def test_bad_input_is_named_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in documents(30)) + "[1]\n")
    with pytest.raises(corpora.CorpusError, match="c.jsonl, line 31: a JSON list"):
        prepare.prepare(corpora.open_source(path), tmp_path / "out", shard_tokens=40)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert not [n for n in names if n.endswith(".part")] and "manifest.json" in names
    assert not shards.read_manifest(tmp_path / "out")["complete"]
    with pytest.raises(shards.ManifestError, match="incomplete"):
        shards.Shards(tmp_path / "out")


def test_a_token_id_that_does_not_fit_the_dtype_is_named(tmp_path):
    vocab = {70_000 + b: bytes([b]) for b in range(256)}            # ids above uint16's range
    tokenizer = BPETokenizer(vocab, [], {"<|endoftext|>": 60_000}, name="wide").save(
        tmp_path / "wide.json")
    source = jsonl(tmp_path / "c.jsonl", ["", "hello"])
    with pytest.raises(corpora.CorpusError, match="c.jsonl, line 2: token id 70111 does not fit "
                                                  "uint16"):
        prepare.prepare(source, tmp_path / "out", tokenizer, dtype="uint16", val_fraction=0.0)
    manifest = prepare.prepare(source, tmp_path / "auto", tokenizer, val_fraction=0.0)
    assert manifest["dtype"] == "uint32"
    assert np.fromfile(tmp_path / "auto" / "train_000000.bin", dtype=np.uint32).tolist() == [
        70_000 + b for b in b"hello"] + [60_000]


def test_a_book_tokenizer_is_copied_and_recorded(tmp_path, mirror):
    tok = BPETokenizer.train(" ".join(WORDS) * 20, vocab_size=300, name="tiny")
    file = tok.save(tmp_path / "tiny.json")
    manifest = prepare.prepare(corpora.open_source("brown"), tmp_path / "out", file)
    assert manifest["tokenizer"]["name"] == "tiny" and manifest["tokenizer"]["file"] == (
        "tokenizer.json")
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == file.read_bytes()
    assert manifest["documents"] == {"train": 451, "val": 49}
    assert manifest["source"]["license"].startswith("Non-commercial use only")
    first = np.fromfile(tmp_path / "out" / "train_000000.bin", dtype=np.uint16)[:40]
    assert tok.decode(first.tolist()).startswith("The Fulton County Grand Jury said Friday")


def test_two_processes_write_what_one_writes(tmp_path):
    source = jsonl(tmp_path / "c.jsonl", documents(200))
    prepare.prepare(source, tmp_path / "one", shard_tokens=300, batch_chars=500)
    prepare.prepare(source, tmp_path / "two", shard_tokens=300, batch_chars=500, num_proc=2)
    assert folder_bytes(tmp_path / "two") == folder_bytes(tmp_path / "one")


def test_the_prepare_command(tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    jsonl(path, documents())
    assert cli.main(["prepare", str(path), "--out", str(tmp_path / "out"), "--num-proc", "1",
                     "--shard-tokens", "100"]) == 0
    assert "train: " in capsys.readouterr().out
    assert shards.read_manifest(tmp_path / "out")["complete"]
    path.write_text('{"text": 1}\n')
    assert cli.main(["prepare", str(path), "--out", str(tmp_path / "bad")]) == 2
    assert "c.jsonl, line 1: field 'text' is a int" in capsys.readouterr().err


def test_launch_prepares_with_its_old_flags_and_trains_from_the_shards(tmp_path, mirror,
                                                                       one_thread):
    tok = BPETokenizer.train(" ".join(WORDS) * 20, vocab_size=300, name="tiny")
    file = tok.save(tmp_path / "tiny.json")
    folder, run = tmp_path / "data", tmp_path / "run"
    launch.main(["prepare", "--dataset", "the-verdict", "--tokenizer", str(file),
                 "--out", str(folder), "--num-proc", "1"])
    manifest = shards.read_manifest(folder)
    assert manifest["source"]["name"] == "the-verdict" and manifest["documents"]["val"] > 0
    launch.main(["train", "--data", str(folder), "--out", str(run), "--max-steps", "2",
                 "--batch-size", "4", "--block-size", "16", "--warmup-steps", "1",
                 "--eval-interval", "2", "--eval-batches", "1", "--log-interval", "1"])
    record = Run.open(run)
    assert record.kind == "pretrain" and record.config["dataset"] == str(folder)
    assert [r["step"] for r in record.metrics()] == [1, 2] and np.isfinite(record.metrics()[-1]["val_loss"])
    assert np.isfinite(record.evaluations["validation"]["loss"])
    assert (run / "model" / "model.safetensors").is_file() and (run / "tokenizer.json").is_file()
