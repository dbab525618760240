"""book_model caches a trained recipe as a run directory, the layout the command line writes."""

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from gpt2_core import data, pretrained
from gpt2_core.cli import main
from gpt2_core.model import GPTConfig, from_pretrained
from gpt2_core.pretrained import BOOK_RECIPE, book_model, recipe_key
from gpt2_core.runs import Run
from gpt2_core.runtime import pick_device
from gpt2_core.train import TrainConfig

TINY = replace(BOOK_RECIPE, vocab_size=300,
               model=GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0),
               train=TrainConfig(max_steps=12, batch_size=4, block_size=16, warmup_steps=2, eval_interval=6,
                                 eval_batches=2, seed=3))


def validation_scores(recipe, model, tokenizer) -> tuple[float, float]:
    """(loss, bits per character) of the recipe's held-out text, from scratch: every token after
    the first scored once, in windows of block_size, over the characters those tokens spell."""
    text = data.fetch(recipe.dataset).read_text(encoding="utf-8")
    ids = torch.tensor(tokenizer.encode(text[int(recipe.train_fraction * len(text)):]))
    T, nll = recipe.train.block_size, 0.0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, T):
            window = ids[start:start + T + 1]
            nll += F.cross_entropy(model(window[None, :-1])[0], window[1:], reduction="sum").item()
    characters = len(tokenizer.decode(ids[1:].tolist()))
    return nll / (len(ids) - 1), nll / math.log(2) / characters


def test_book_model_is_a_run_directory(mirror, capsys, monkeypatch):
    seen = []
    trained = book_model(TINY, on_log=seen.append)
    directory = data.cache_dir() / "models" / f"book-{recipe_key(TINY)}"
    run = Run.open(directory)
    assert run.kind == "pretrain" and run.config["model"]["n_embd"] == 16
    assert [r["step"] for r in run.metrics()] == list(range(1, 13)) == [r["step"] for r in seen]
    assert all(r["elapsed_s"] >= 0 for r in run.metrics())
    loss, bits_per_char = validation_scores(TINY, trained.model, trained.tokenizer)
    validation = run.evaluations["validation"]
    tol = 5e-6 if trained.record["device"] == "cpu" else 1e-4   # on CPU one token in 80,000 shows
    assert math.isclose(validation["loss"], loss, rel_tol=tol)
    assert math.isclose(validation["bits_per_char"], bits_per_char, rel_tol=tol)
    assert math.isclose(trained.record["val_bits_per_char"], bits_per_char, rel_tol=tol)
    assert trained.record["device"] == str(pick_device())                # trained on the best device
    assert next(trained.model.parameters()).device.type == "cpu"         # and returned on the CPU
    assert sorted(p.name for p in run.model_dir.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                             "tokenizer.json"]
    assert "## Intended use and limits" in (directory / "README.md").read_text()
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".tmp-")]

    def no_training(*args, **kwargs):
        raise AssertionError("book_model trained again instead of reading its cache")

    monkeypatch.setattr(pretrained, "train", no_training)
    replayed = []
    again = book_model(TINY, on_log=replayed.append)                  # from the cache, log replayed
    assert replayed == seen and again.record == trained.record
    ids = torch.tensor([trained.tokenizer.encode("ROMEO: what")])
    torch.testing.assert_close(again.model(ids), from_pretrained(run.model_dir)(ids))

    assert main(["generate", str(directory), "--prompt", "ROMEO:", "--max-new-tokens", "5", "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")


def test_the_cache_layout_is_part_of_the_key(monkeypatch):
    from gpt2_core import pretrained

    before = recipe_key(TINY)
    monkeypatch.setattr(pretrained, "CACHE_LAYOUT", "another layout")
    assert recipe_key(TINY) != before


def test_the_code_of_pretrained_itself_is_part_of_the_key(monkeypatch):
    import inspect

    from gpt2_core import pretrained

    before = recipe_key(TINY)
    real = inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) + ("# edited\n" if obj is pretrained else ""))
    assert recipe_key(TINY) != before
