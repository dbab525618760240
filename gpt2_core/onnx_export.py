"""A GPT as an ONNX file, and its tokenizer as JSON, for runtimes outside PyTorch (the browser).

Hand-written plumbing for chapter 9 and the book's live pages. `export_onnx` writes one
self-contained ONNX file (protobuf, weights inside, no pickle): input `input_ids` (batch, seq)
int64 with 1 <= seq <= block_size, output `logits` (batch, seq, vocab_size) float32. There is no
KV cache: each step feeds the whole window again, which at the book model's 64-token context costs
2 to 3 ms per step on one CPU thread. `OnnxGPT` runs such a file with onnxruntime and checks its
inputs first.

`tokenizer_json` describes a `BPETokenizer` for the JavaScript in book/_static/live/bpe.js: the
same merges and special tokens, and the pre-tokenisation pattern rewritten in JavaScript's regex
syntax, with every Unicode class (`\\p{L}`, `\\s`, ...) spelled out as the code points Python's
`regex` module puts in it, so that the browser's own Unicode tables play no part.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import regex
import torch
import torch.nn as nn

from gpt2_core.errors import ExportError
from gpt2_core.files import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    strict_json,
)
from gpt2_core.model import GPT
from gpt2_core.tokenizer import ENDOFTEXT, GPT2_SPLIT_PATTERN, BPETokenizer, Tokenizer
from gpt2_core.tokenizer_files import gpt2_bpe_files
from gpt2_core.train import evaluating

INPUT, OUTPUT = "input_ids", "logits"
ONNX_FILE, WEB_TOKENIZER_FILE = "model.onnx", "tokenizer.web.json"
WEB_TOKENIZER_FORMAT = "gpt2_core-bpe-js v1"
MAX_BYTES = 2 ** 31 - 2 ** 24          # protobuf's 2 GiB limit, less room for the graph itself


class _LogitsOnly(nn.Module):
    """`model(input_ids)` with no keyword arguments: the signature the ONNX graph gets."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)


@contextlib.contextmanager
def _plain_linears(model: nn.Module) -> Iterator[None]:
    """Turn decode_layout's DecodeLinear modules back into nn.Linear while the model is traced."""
    from gpt2_core.layout import DecodeLinear

    changed = [m for m in model.modules() if isinstance(m, DecodeLinear)]
    for module in changed:
        module.__class__ = nn.Linear
    try:
        yield
    finally:
        for module in changed:
            module.__class__ = DecodeLinear


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence torch.onnx's progress lines and its internal deprecation warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: GPT, path: str | Path, *,
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write `model` as a self-contained ONNX file; return its path.

    The graph maps input_ids (batch, seq) int64, seq from 1 to block_size, to logits
    (batch, seq, vocab_size) float32. `metadata` goes into the file's metadata_props, with
    gpt2_core.block_size and gpt2_core.vocab_size, which `OnnxGPT` reads back.
    """
    import onnx

    if not isinstance(model, GPT):
        raise TypeError(f"export_onnx expects a gpt2_core.model.GPT, got {type(model).__name__}")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    if size > MAX_BYTES:
        raise ExportError(f"the weights take {size / 2**30:.1f} GiB; a self-contained ONNX file "
                         "holds at most 2 GiB")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.config
    device = next(model.parameters()).device
    example = torch.zeros((1, min(2, config.block_size)), dtype=torch.long, device=device)
    seq = torch.export.Dim("seq", min=1, max=config.block_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with evaluating(model), _plain_linears(model), _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            _LogitsOnly(model).eval(), (example,), dynamic_shapes={INPUT: {0: batch, 1: seq}},
            dynamo=True, verbose=False, external_data=False, input_names=[INPUT],
            output_names=[OUTPUT])
    proto = program.model_proto
    _strip_trace_metadata(proto.graph)
    props = {"gpt2_core.block_size": str(config.block_size),
             "gpt2_core.vocab_size": str(config.vocab_size), **(metadata or {})}
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto)
    return atomic_write_bytes(path, proto.SerializeToString())


def _strip_trace_metadata(graph) -> None:
    """Drop the exporter's notes on each node and value (stack traces, with this machine's
    paths): about 6% of the book model's file, and nothing a runtime reads."""
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del value.metadata_props[:]


class OnnxGPT:
    """An ONNX file written by `export_onnx`, run by onnxruntime on the CPU.

    Loading reads the protobuf only (no pickle, no torch.load). Calling it with token ids
    (batch, seq), a NumPy array, tensor or nested list, returns the logits as a NumPy array.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnx
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # a DecodeError from protobuf: not an ONNX file, or truncated
            raise ExportError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e
        props = {p.key: p.value for p in proto.metadata_props}
        missing = [k for k in ("gpt2_core.block_size", "gpt2_core.vocab_size") if k not in props]
        if missing:
            raise ExportError(f"{path}: no {', '.join(missing)} metadata; write it with export_onnx")
        self.path = path
        self.metadata = props
        self.block_size = int(props["gpt2_core.block_size"])
        self.vocab_size = int(props["gpt2_core.vocab_size"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(proto.SerializeToString(), options,
                                                    providers=["CPUExecutionProvider"])

    def check_ids(self, ids: Any) -> np.ndarray:
        """`ids` as an int64 array (batch, seq), or ValueError/TypeError saying what is wrong."""
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        array = np.asarray(ids)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.integer)
                                         or array.size == 0):
            raise TypeError(f"token ids must be integers, got an array of {array.dtype}")
        if array.ndim != 2:
            raise ValueError(f"token ids must have shape (batch, seq), got shape {array.shape}")
        batch, seq = array.shape
        if batch < 1 or not 1 <= seq <= self.block_size:
            raise ValueError(f"shape {array.shape}: need batch >= 1 and 1 <= seq <= "
                             f"block_size={self.block_size}; keep the last {self.block_size} "
                             "tokens of a longer text")
        if array.min() < 0 or array.max() >= self.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got "
                             f"{array.min()}..{array.max()}")
        return array.astype(np.int64, copy=False)

    def __call__(self, ids: Any) -> np.ndarray:
        """Logits (batch, seq, vocab_size) float32 for token ids (batch, seq)."""
        return self.session.run([OUTPUT], {INPUT: self.check_ids(ids)})[0]


# --- the tokenizer for JavaScript --------------------------------------------------------------

@functools.cache
def _all_code_points() -> tuple[tuple[int, str], ...]:
    """Every code point but the surrogates, as (first code point, text) blocks."""
    return tuple((low, "".join(map(chr, range(low, high + 1))))
                 for low, high in ((0, 0xD7FF), (0xE000, sys.maxunicode)))


@functools.cache
def _code_point_ranges(item: str) -> tuple[tuple[int, int], ...]:
    """The code points (surrogates aside) that the one-character regex `item` matches, as ranges."""
    matcher = regex.compile(f"(?:{item})+")
    return tuple((low + m.start(), low + m.end() - 1) for low, text in _all_code_points()
                 for m in matcher.finditer(text))


def _js_class(item: str) -> str:
    """A JavaScript class `[...]` holding exactly the code points that `item` matches in Python."""
    def escape(c: int) -> str:
        return chr(c) if chr(c).isalnum() and c < 128 else f"\\u{{{c:X}}}"
    parts = [escape(a) if a == b else f"{escape(a)}-{escape(b)}" for a, b in
             _code_point_ranges(item)]
    return "[" + "".join(parts) + "]" if parts else "[^\\s\\S]"


_ESCAPES = {"n": "\\n", "r": "\\r", "t": "\\t", "f": "\\f", "v": "\\v"}
_SYNTAX = set("^$\\.*+?()[]{}|/")        # what JavaScript (flag u) lets one escape


class _PatternTranslator:
    """Python `regex` syntax -> JavaScript (flag u), for the constructs tokenizer patterns use.

    Character classes and Unicode escapes become explicit code point classes; possessive
    quantifiers and atomic groups become `(?=(?<aN>X))\\k<aN>`, which matches what X matches
    first and never gives any of it back; `$` becomes Python's "end, or before a final newline"
    and `.` Python's "anything but a newline". Anything else raises ValueError.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern, self.i, self.atomic = pattern, 0, 0

    def translate(self) -> str:
        out = self._sequence()
        if self.i < len(self.pattern):
            raise ValueError(f"unbalanced ')' at {self.i} in {self.pattern!r}")
        return out

    def _fail(self, what: str) -> ValueError:
        return ValueError(f"cannot translate {what} at {self.i} in {self.pattern!r} to JavaScript")

    def _wrap_atomic(self, atom: str) -> str:
        self.atomic += 1
        name = f"a{self.atomic}"
        return f"(?=(?<{name}>{atom}))\\k<{name}>"

    def _sequence(self) -> str:
        """Alternatives up to an unmatched ')' or the end."""
        p, atoms = self.pattern, []
        while self.i < len(p) and p[self.i] != ")":
            c = p[self.i]
            if c == "|":
                atoms.append("|")
                self.i += 1
            elif c in "*+?{":
                if not atoms or atoms[-1] == "|":
                    raise self._fail("a quantifier with nothing before it")
                atoms[-1] = self._quantified(atoms[-1])
            else:
                atoms.append(self._atom())
        return "".join(atoms)

    def _quantified(self, atom: str) -> str:
        p = self.pattern
        if p[self.i] == "{":
            end = p.find("}", self.i)
            if end < 0 or not regex.fullmatch(r"\{\d*(,\d*)?\}", p[self.i:end + 1]):
                raise self._fail("a brace that is not a quantifier")
            quantifier, self.i = p[self.i:end + 1], end + 1
        else:
            quantifier, self.i = p[self.i], self.i + 1
        if self.i < len(p) and p[self.i] == "?":       # lazy: the same in JavaScript
            self.i += 1
            return atom + quantifier + "?"
        if self.i < len(p) and p[self.i] == "+":       # possessive
            self.i += 1
            return self._wrap_atomic(f"(?:{atom}){quantifier}")
        return atom + quantifier

    def _atom(self) -> str:
        p, c = self.pattern, self.pattern[self.i]
        if c == "(":
            return self._group()
        if c == "[":
            end = self._class_end()
            item, self.i = p[self.i:end + 1], end + 1
            return _js_class(item)
        if c == "\\":
            return self._escape()
        self.i += 1
        if c == ".":
            return "[^\\n]"
        if c == "$":
            return "(?=\\n?$)"
        if c == "^":
            return "^"
        return c if c.isalnum() or c not in _SYNTAX else "\\" + c

    def _group(self) -> str:
        p = self.pattern
        for opening, js in (("(?:", "(?:"), ("(?=", "(?="), ("(?!", "(?!"), ("(?<=", "(?<="),
                            ("(?<!", "(?<!"), ("(?>", None)):
            if p.startswith(opening, self.i):
                break
        else:   # a capturing group would change what findall returns; other kinds are not needed
            raise self._fail("a capturing or other kind of group")
        self.i += len(opening)
        inner = self._sequence()
        if self.i >= len(p):
            raise self._fail("an unclosed group")
        self.i += 1
        return self._wrap_atomic(inner) if js is None else f"{js}{inner})"

    def _class_end(self) -> int:
        p, j = self.pattern, self.i + 1
        if j < len(p) and p[j] == "^":
            j += 1
        if j < len(p) and p[j] == "]":
            j += 1
        while j < len(p) and p[j] != "]":
            if p[j] == "[":
                raise self._fail("a nested character class")
            j += 2 if p[j] == "\\" else 1
        if j >= len(p):
            raise self._fail("an unclosed character class")
        return j

    def _escape(self) -> str:
        p = self.pattern
        m = regex.match(r"\\(?:[pP]\{[^}]*\}|[sSdDwW]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}"
                        r"|U[0-9a-fA-F]{8}|.)", p[self.i:], flags=regex.DOTALL)
        if m is None:
            raise self._fail("a trailing backslash")
        text = m.group()
        self.i += len(text)
        letter = text[1]
        if letter in "pPsSdDwW":
            return _js_class(text)
        if letter in "xuU":
            return f"\\u{{{int(text[2:], 16):X}}}"
        if letter in _ESCAPES:
            return _ESCAPES[letter]
        if letter.isalnum():
            raise self._fail(f"the escape {text}")
        return "\\" + letter if letter in _SYNTAX else letter


def js_pattern(pattern: str) -> str:
    """`pattern` (Python `regex` syntax) in JavaScript syntax, for `new RegExp(..., "gu")`."""
    return _PatternTranslator(pattern).translate()


def tokenizer_json(tokenizer: BPETokenizer) -> dict[str, Any]:
    """What bpe.js needs to encode and decode exactly like `tokenizer`.

    Like `BPETokenizer.save`, it stores the byte ids, merges and special tokens; every other
    token's bytes follow from the merges.
    """
    if not isinstance(tokenizer, BPETokenizer):
        raise TypeError(f"expected a BPETokenizer, got {type(tokenizer).__name__}")
    by_bytes = {v: i for i, v in tokenizer.vocab.items() if len(v) == 1}
    byte_ids = [by_bytes[bytes([b])] for b in range(256)]
    derived = {i: bytes([b]) for b, i in enumerate(byte_ids)}
    for a, b, new in tokenizer.merges:
        derived[new] = derived[a] + derived[b]
    if derived != tokenizer.vocab:
        raise ValueError(f"{tokenizer.name}: some tokens are neither bytes nor made by a merge")
    return {"format": WEB_TOKENIZER_FORMAT, "name": tokenizer.name,
            "pattern": tokenizer.pattern, "js_pattern": js_pattern(tokenizer.pattern),
            "vocab_size": tokenizer.vocab_size, "byte_ids": byte_ids,
            "merges": [list(m) for m in tokenizer.merges],
            "special_tokens": tokenizer.special_tokens}


def write_tokenizer_json(tokenizer: BPETokenizer, path: str | Path) -> Path:
    """Write `tokenizer_json(tokenizer)` to `path` (compact JSON, UTF-8); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, tokenizer_json(tokenizer))
    return path


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, strict_json(value, ensure_ascii=False, separators=(",", ":")))


def export_code_key() -> str:
    """Hash of the code behind a web export: this module (the graph, the pattern translator)
    and the `regex` module's version (its Unicode tables); part of a cached export's key."""
    digest = hashlib.sha256(inspect.getsource(sys.modules[__name__]).encode())
    digest.update(regex.__version__.encode())
    return digest.hexdigest()[:16]


def gpt2_tokenizer_json(encoder: str, vocab_bpe: str) -> dict[str, Any]:
    """bpe.js's description of GPT-2's tokenizer: its split pattern and the URLs, relative to
    the JSON file, of GPT-2's own `encoder.json` and `vocab.bpe`, which bpe.js reads."""
    return {"format": WEB_TOKENIZER_FORMAT, "name": "gpt2", "pattern": GPT2_SPLIT_PATTERN,
            "js_pattern": js_pattern(GPT2_SPLIT_PATTERN), "vocab_size": 50257,
            "special_tokens": {ENDOFTEXT: 50256},
            "gpt2_files": {"encoder": encoder, "vocab_bpe": vocab_bpe}}


def export_for_web(model: GPT, tokenizer: Tokenizer, directory: str | Path, *,
                   metadata: Mapping[str, str] | None = None) -> Path:
    """Write what the book's live pages load into `directory` (absent or empty); return it.

    model.onnx (`export_onnx`), model.json (its shape, for the page) and tokenizer.web.json:
    `tokenizer_json` of a BPETokenizer, or for GPT-2's tokenizer `gpt2_tokenizer_json` beside
    copies of GPT-2's two files. The folder appears whole (`files.atomic_directory`) or not at
    all, so a failed export can be retried into the same directory.
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ExportError(f"{directory} exists and is not empty; give a new directory")
    if isinstance(tokenizer, BPETokenizer):
        spec = tokenizer_json(tokenizer)
    elif tokenizer.vocab_size == 50257 and tokenizer.name == "gpt2":
        spec = gpt2_tokenizer_json("encoder.json", "vocab.bpe")
    else:
        raise TypeError(f"cannot describe {tokenizer!r} for the browser: give a BPETokenizer "
                        "or GPT-2's tokenizer")
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids, more than the model's "
                         f"vocabulary ({model.config.vocab_size})")
    c = model.config
    info = {"format": "gpt2_core-live v1", "block_size": c.block_size, "vocab_size": c.vocab_size,
            "n_layer": c.n_layer, "n_head": c.n_head, "n_embd": c.n_embd,
            "parameters": model.num_parameters(), "tokenizer": tokenizer.name,
            "eot_token": tokenizer.eot_token, **(metadata or {})}
    with atomic_directory(directory) as tmp:
        export_onnx(model, tmp / ONNX_FILE, metadata=metadata)
        atomic_write_json(tmp / "model.json", info)
        if "gpt2_files" in spec:
            for file in gpt2_bpe_files():
                shutil.copyfile(file, tmp / file.name)
        _write_json(tmp / WEB_TOKENIZER_FILE, spec)
    return directory
