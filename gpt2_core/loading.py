"""Models, tokenizers and texts named by a string: what the command line and the jobs start from.

A model source is "book" (chapter 4's model, trained on first use and cached), a model directory
(config.json + model.safetensors + tokenizer.json), a run directory (its exported model/), or an
OpenAI size ("gpt2", ...). Pickled weights are refused: they can run arbitrary code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from gpt2_core import data
from gpt2_core.errors import GPT2CoreError
from gpt2_core.model import GPT, GPT2_SIZES, from_pretrained
from gpt2_core.pretrained import WEIGHTS_ENV, book_model
from gpt2_core.runs import CLASSIFIER_DIR, TOKENIZER_FILE, Run, is_run
from gpt2_core.tokenizer import BPETokenizer, Tokenizer, gpt2_tokenizer

BOOK = "book"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".ckpt"}


class SourceError(GPT2CoreError, ValueError):
    """A model, tokenizer or text source does not exist or cannot be used as asked."""


def base_source(weights: str | None = None) -> str:
    """The model the fine-tuning chapters start from: `weights`, else $GPT2_BOOK_WEIGHTS, else
    "book"."""
    return weights or os.environ.get(WEIGHTS_ENV) or BOOK


def load_model(source: str, device: torch.device | str = "cpu"
               ) -> tuple[GPT, Tokenizer, Run | None]:
    """The model, tokenizer and (for a run directory) run named by `source`, the model on
    `device`."""
    if source == BOOK:
        book = book_model()
        return book.model.to(device), book.tokenizer, None
    path, run = Path(source), None
    if is_run(path):
        run = Run.open(path)
        if run.kind == "finetune-classifier":
            raise SourceError(f"{run.directory} is a classifier run, not a language model; its "
                              f"classifier is in {run.directory / CLASSIFIER_DIR} "
                              "(gpt2_core.classifier.load_classifier)")
        path = run.model_dir
        if not path.is_dir():
            raise SourceError(f"run {run.directory} has no model yet; finish it with "
                              "`pretrain --resume` or write its newest checkpoint out with `export`")
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            raise SourceError(f"refusing to load {path}: pickled weights can run arbitrary code; "
                              "give a directory with model.safetensors")
        raise SourceError(f"{path} is a file; give a model directory "
                          "(config.json + model.safetensors)")
    if not path.is_dir():
        if source in GPT2_SIZES:
            return from_pretrained(source).to(device), gpt2_tokenizer(), None
        raise SourceError(f"{path}: no such model directory, run directory or model name "
                          f"({', '.join([BOOK, *GPT2_SIZES])})")
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not (path / "model.safetensors").is_file():
        raise SourceError(f"{path}: refusing to load pickled weights ({', '.join(pickles)}); "
                          "gpt2_core loads only model.safetensors")
    model = from_pretrained(path).to(device)
    return model, load_tokenizer(path, model.config.vocab_size), run


def load_tokenizer(directory: Path, vocab_size: int) -> Tokenizer:
    """The model directory's tokenizer.json, or GPT-2's tokenizer for a 50,257-token model
    without one."""
    file = directory / TOKENIZER_FILE
    if file.is_file():
        try:
            tokenizer = BPETokenizer.load(file)
        except ValueError as e:          # the tokenizer names the file and line
            raise SourceError(str(e)) from None
    elif vocab_size == gpt2_tokenizer().vocab_size:
        tokenizer = gpt2_tokenizer()
    else:
        raise SourceError(f"{directory} has no {TOKENIZER_FILE}, and its vocabulary "
                          f"({vocab_size}) is not GPT-2's")
    if tokenizer.vocab_size > vocab_size:
        raise SourceError(f"{file}: {tokenizer.vocab_size} token ids do not fit the model's "
                          f"vocabulary ({vocab_size})")
    return tokenizer


def read_text(source: str) -> str:
    """The text of file `source`, or of registered data set `source`."""
    path = Path(source)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise SourceError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if source in data.REGISTRY:
        return data.fetch(source).read_text(encoding="utf-8")
    raise SourceError(f"{source!r} is neither a file nor a registered data set "
                      f"({', '.join(sorted(data.REGISTRY))})")
