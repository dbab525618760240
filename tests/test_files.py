"""gpt2_core.files: whole-or-nothing writes, readable modes, checksums."""

import hashlib
import stat

import pytest

from gpt2_core.files import (atomic_directory, atomic_write, atomic_write_json, atomic_write_text,
                             sha256_of)
from gpt2_core.model import GPT, GPTConfig, save_pretrained


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_is_readable_by_everyone_and_leaves_nothing_on_failure(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")
    assert path.read_text() == "old" and mode(path) == 0o644

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_text() == "old"                     # the old file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]   # no .part left behind


def test_atomic_write_json_and_sha256(tmp_path):
    path = atomic_write_json(tmp_path / "x.json", {"b": 1})
    assert path.read_text() == '{\n "b": 1\n}\n'
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(ValueError):
        with atomic_directory(target) as tmp:
            (tmp / "weights").write_text("partial")
            raise ValueError("interrupted")
    assert list(tmp_path.iterdir()) == []                # neither target nor temporary folder
    with atomic_directory(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "f").write_text("x")
    assert (target / "sub" / "f").read_text() == "x"
    assert mode(target) == 0o755 and mode(target / "sub") == 0o755
    assert mode(target / "sub" / "f") == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_saved_model_files_are_readable_by_other_users(tmp_path):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    out = save_pretrained(model, tmp_path / "m")
    assert {p.name: mode(p) for p in out.iterdir()} == {"config.json": 0o644,
                                                        "model.safetensors": 0o644}
