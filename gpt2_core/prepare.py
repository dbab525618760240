"""`prepare`: a corpus, streamed, into fixed-size token shards for pretraining.

    gpt2-core prepare brown --out data/brown                      # GPT-2's tokenizer (tiktoken)
    gpt2-core prepare corpus.jsonl --field text --out data/web --num-proc 8
    gpt2-core prepare books/ --tokenizer tokenizer.json --out data/books
    gpt2-core prepare tinyshakespeare --separator '\\n\\n' --out data/shakespeare

Each document's tokens are followed by the end-of-text token. A document goes to the validation
split when a hash of its index falls below the validation fraction (`is_val`), so the split is
the same on every run. Tokens fill shards of `shard_tokens` (uint16, or uint32 for a larger
vocabulary); after each shard, the manifest is rewritten as a record of what is finished. Every
file is written atomically (`gpt2_core.files.atomic_write`). Killed and run again with the same
arguments, prepare checks the finished shards against the manifest's sha256 and continues after
them; only the documents whose tokens are not in a finished shard are tokenized again. While it
writes, prepare holds the folder's lock file (`folder_lock`), so a second run on the same folder
is refused, not interleaved; an output folder inside the source folder is refused up front.

Memory stays flat whatever the corpus's size: one shard buffer per split, at most
2 * num_proc + 1 batches of about `batch_chars` characters (and their tokens) in flight, one
JSON line or Parquet record batch, and each worker's tokenizer.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import itertools
import multiprocessing
import os
import re
import shutil
import sys
import types
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from gpt2_core.corpora import CorpusError, Piece, Source, open_source
from gpt2_core.errors import ConfigError
from gpt2_core.files import atomic_write, atomic_write_json, sha256_of
from gpt2_core.shards import (
    FORMAT,
    MANIFEST,
    SPLITS,
    TOKENIZER_COPY,
    VERSION,
    check_shards,
    read_manifest,
    shard_name,
)
from gpt2_core.tokenizer import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    TiktokenTokenizer,
    Tokenizer,
    gpt2_tokenizer,
)

SHARD_TOKENS = 10_000_000
BATCH_CHARS = 1 << 20
SPLIT_RULE = "val if blake2b-64(document index as decimal) < val_fraction * 2**64"
LOCK_FILE = ".prepare.lock"       # held (flock) by the prepare writing the folder
_OURS = re.compile(r"\.(manifest\.json|tokenizer\.json|(train|val)_\d{6}\.bin)\..+\.part")

OnShard = Callable[[str, dict], None]


def is_val(index: int, val_fraction: float) -> bool:
    """Whether document `index` belongs to the validation split (`SPLIT_RULE`)."""
    digest = hashlib.blake2b(str(index).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < val_fraction * 2**64


# --- tokenizers ---------------------------------------------------------------------------------
def shard_tokenizer(spec: str | Path) -> Tokenizer:
    """GPT-2's tokenizer for "gpt2", else the BPETokenizer saved in file `spec`."""
    if str(spec) == "gpt2":
        return gpt2_tokenizer()
    path = Path(spec)
    if not path.is_file():
        raise CorpusError(f"{path}: no such tokenizer file (give 'gpt2' or a tokenizer.json "
                          "written by BPETokenizer.save)")
    try:
        tokenizer = BPETokenizer.load(path)
    except ValueError as e:                       # it names the file and line
        raise CorpusError(f"not a tokenizer file: {e}") from None
    if tokenizer.pattern != GPT2_SPLIT_PATTERN:
        raise CorpusError(f"{path}: prepare cuts long texts where GPT-2's split pattern splits, "
                          "so it needs a tokenizer trained with that pattern")
    return tokenizer


def _batch_encoder(tokenizer: Tokenizer) -> Callable[[list[str]], list[list[int]]]:
    if isinstance(tokenizer, TiktokenTokenizer):
        encoding = tokenizer.encoding
        return lambda texts: encoding.encode_ordinary_batch(texts, num_threads=1)
    return lambda texts: [tokenizer.encode_ordinary(text) for text in texts]


def _encode(encode_batch: Callable[[list[str]], list[list[int]]], texts: list[str]
            ) -> tuple[np.ndarray, np.ndarray]:
    """All of `texts`' token ids in one uint32 array, and each text's count."""
    lists = encode_batch(texts)
    lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    ids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.uint32,
                      count=int(lengths.sum()))
    return ids, lengths


_worker_encode: Callable[[list[str]], list[list[int]]] | None = None


def _start_worker(spec: str) -> None:
    global _worker_encode
    _worker_encode = _batch_encoder(shard_tokenizer(spec))


def _encode_in_worker(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    return _encode(_worker_encode, texts)


@contextmanager
def _bare_main() -> Iterator[None]:
    """Hide the parent's __main__ from workers being started: spawn imports it in each (for a
    script that imports torch: seconds and hundreds of MB); they need only this module."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _tokenized(batches: Iterator[list], spec: str, num_proc: int
               ) -> Iterator[tuple[list, tuple[np.ndarray, np.ndarray]]]:
    """(batch, (ids, lengths)) for each batch of (piece, split), in order, from `num_proc`
    processes; at most 2 * num_proc batches wait in the pool."""
    texts = lambda batch: [piece.text for piece, _ in batch]  # noqa: E731
    if num_proc == 1:
        encode = _batch_encoder(shard_tokenizer(spec))
        for batch in batches:
            yield batch, _encode(encode, texts(batch))
        return
    context = multiprocessing.get_context("spawn")     # no fork of a threaded parent
    pool = ProcessPoolExecutor(num_proc, mp_context=context, initializer=_start_worker,
                               initargs=(spec,))     # a worker that dies raises, never hangs
    try:
        pending: deque = deque()
        for batch in batches:
            with _bare_main():                       # submit starts the workers, when needed
                pending.append((batch, pool.submit(_encode_in_worker, texts(batch))))
            if len(pending) >= 2 * num_proc:
                batch, result = pending.popleft()
                yield batch, result.result()
        while pending:
            batch, result = pending.popleft()
            yield batch, result.result()
    finally:
        pool.shutdown(cancel_futures=True)


# --- writing ------------------------------------------------------------------------------------
class _SplitWriter:
    """Fills one split's shards; positions are [document index, token offset in the document]."""

    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int,
                 records: list[dict], on_flush: Callable[[str, dict], None]) -> None:
        self.out, self.split, self.records, self.on_flush = out, split, records, on_flush
        self.buffer = np.empty(shard_tokens, dtype=dtype)
        self.filled = self.documents = 0
        self.resume = tuple(records[-1]["end"]) if records else (0, 0)  # first unwritten token
        self.start = list(self.resume)
        self.document, self.seen = -1, 0           # current document, its tokens so far

    def feed(self, document: int, tokens: np.ndarray) -> None:
        """The next `tokens` of `document` (tokens before the resume point are dropped)."""
        if document != self.document:
            self.document, self.seen = document, 0
        offset, self.seen = self.seen, self.seen + len(tokens)
        if (document, offset) < self.resume:
            skip = self.resume[1] - offset if document == self.resume[0] else len(tokens)
            tokens, offset = tokens[skip:], offset + min(skip, len(tokens))
        done = 0
        while done < len(tokens):
            if offset + done == 0:
                self.documents += 1                # the document starts in this shard
            n = min(len(self.buffer) - self.filled, len(tokens) - done)
            self.buffer[self.filled:self.filled + n] = tokens[done:done + n]
            self.filled, done = self.filled + n, done + n
            if self.filled == len(self.buffer):
                self.flush([document, offset + done])

    def flush(self, end: list[int]) -> None:
        """Write the buffer as the split's next shard; `end` is the position after it."""
        if not self.filled:
            return
        tokens = self.buffer[:self.filled]
        name = shard_name(self.split, len(self.records))
        atomic_write(self.out / name, tokens.tofile)
        record = {"file": name, "tokens": int(self.filled), "documents": self.documents,
                  "sha256": hashlib.sha256(tokens).hexdigest(), "start": self.start, "end": end}
        self.records.append(record)
        self.filled = self.documents = 0
        self.start = list(end)
        self.on_flush(self.split, record)

    def close(self) -> None:
        """Write the last, shorter shard."""
        self.flush([self.document, self.seen])


# --- reading ------------------------------------------------------------------------------------
def _batches(source: Source, resume: dict[str, int], val_fraction: float, batch_chars: int
             ) -> Iterator[list[tuple[Piece, str]]]:
    """Batches of about `batch_chars` characters of (piece, split), from the first document
    whose split's shards do not hold it yet (`resume`: split -> its document index)."""
    batch, chars = [], 0
    for piece in source.pieces(min(resume.values())):
        split = "val" if is_val(piece.document, val_fraction) else "train"
        if piece.document < resume[split]:
            continue                              # all its tokens are in finished shards
        batch.append((piece, split))
        chars += len(piece.text)
        if chars >= batch_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


# --- the manifest and resuming ------------------------------------------------------------------
def _manifest(settings: dict, records: dict[str, list[dict]], complete: bool) -> dict:
    return {"format": FORMAT, "version": VERSION, "complete": complete, **settings,
            "documents": {s: sum(r["documents"] for r in records[s]) for s in SPLITS},
            "tokens": {s: sum(r["tokens"] for r in records[s]) for s in SPLITS},
            "shards": records}


def _write_manifest(out: Path, manifest: dict) -> None:
    atomic_write_json(out / MANIFEST, manifest)


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold `out`'s lock file while the block runs: a second prepare on `out` is refused.

    The lock is an flock, so a killed run leaves none behind (only the file, removed next time).
    """
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CorpusError(f"another prepare is writing {out} (it holds {path}); wait for it "
                              "to finish, or give another folder") from None
        if path.exists() and os.path.samestat(os.fstat(fd), path.stat()):
            break                                 # not a file that its last holder removed
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _resume_records(out: Path, settings: dict) -> tuple[dict[str, list[dict]], bool]:
    """The finished shards recorded in `out` (checked by sha256), and whether out is complete."""
    if not (out / MANIFEST).exists():
        others = [p.name for p in out.iterdir()
                  if not _OURS.fullmatch(p.name) and p.name != LOCK_FILE]
        if others:
            raise CorpusError(f"{out} is not empty ({', '.join(sorted(others)[:3])}, ...) and "
                              f"has no {MANIFEST}; give a new or empty folder")
        return {s: [] for s in SPLITS}, False
    manifest = read_manifest(out)
    changed = [k for k in settings if manifest.get(k) != settings[k]]
    if changed:
        raise CorpusError(f"{out / MANIFEST} was written with other settings or input "
                          f"({', '.join(changed)} differ): give a new folder, or delete {out} "
                          "to prepare it again")
    check_shards(out, manifest)
    return {s: list(manifest["shards"][s]) for s in SPLITS}, bool(manifest["complete"])


def prepare(source: Source, out: str | Path, tokenizer: str | Path = "gpt2", *,
            val_fraction: float = 0.1, shard_tokens: int = SHARD_TOKENS, dtype: str = "auto",
            num_proc: int = 1, batch_chars: int = BATCH_CHARS,
            on_shard: OnShard | None = None) -> dict:
    """Tokenize `source` into shards in folder `out` (resuming an unfinished one); the manifest.

    `tokenizer`: "gpt2" or a tokenizer.json (copied into `out`). `dtype`: "auto" (uint16 when
    the vocabulary fits), "uint16" or "uint32". `on_shard(split, record)` sees each new shard.
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    for name, value in (("shard_tokens", shard_tokens), ("num_proc", num_proc),
                        ("batch_chars", batch_chars)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    out = Path(out)
    if (folder := source.folder_holding(out)) is not None:
        raise CorpusError(f"{out} is inside the source folder {folder}: its shards would be "
                          "read as text next time; give a folder outside it")
    tok = shard_tokenizer(tokenizer)
    kind = np.dtype(dtype if dtype != "auto" else
                    ("uint16" if tok.vocab_size <= 2**16 else "uint32"))
    if kind not in (np.uint16, np.uint32):
        raise ConfigError(f"dtype must be auto, uint16 or uint32, got {dtype!r}")
    if tok.eot_token > np.iinfo(kind).max:
        raise CorpusError(f"{tokenizer}: the end-of-text id {tok.eot_token} does not fit "
                          f"{kind.name}; use dtype uint32")
    copy = str(tokenizer) != "gpt2"
    settings = {
        "source": source.describe(),
        "tokenizer": {"name": tok.name, "vocab_size": tok.vocab_size, "eot_token": tok.eot_token,
                      "file": TOKENIZER_COPY if copy else None,
                      "sha256": sha256_of(Path(tokenizer)) if copy else None},
        "dtype": kind.name, "shard_tokens": shard_tokens,
        "split": {"rule": SPLIT_RULE, "val_fraction": val_fraction},
    }
    with folder_lock(out):
        return _write_shards(source, out, tokenizer, settings, num_proc, batch_chars, on_shard)


def _write_shards(source: Source, out: Path, tokenizer: str | Path, settings: dict,
                  num_proc: int, batch_chars: int, on_shard: OnShard | None) -> dict:
    """The part of `prepare` that runs while it holds `out`'s lock: resume or start, tokenize,
    write the shards and the manifest."""
    val_fraction, kind = settings["split"]["val_fraction"], np.dtype(settings["dtype"])
    limit, eot_token = np.iinfo(kind).max, settings["tokenizer"]["eot_token"]
    copy = settings["tokenizer"]["file"] is not None
    records, complete = _resume_records(out, settings)
    if complete:
        return read_manifest(out)
    for stale in out.iterdir():                   # temporary files of a killed run
        if _OURS.fullmatch(stale.name):
            stale.unlink()
    _write_manifest(out, _manifest(settings, records, complete=False))
    if copy:
        atomic_write(out / TOKENIZER_COPY, lambda tmp: shutil.copyfile(tokenizer, tmp))

    def flushed(split: str, record: dict) -> None:
        _write_manifest(out, _manifest(settings, records, complete=False))
        if on_shard is not None:
            on_shard(split, record)

    writers = {s: _SplitWriter(out, s, kind, settings["shard_tokens"], records[s], flushed)
               for s in SPLITS}
    eot = np.array([eot_token], dtype=np.uint32)
    batches = _batches(source, {s: w.resume[0] for s, w in writers.items()}, val_fraction,
                       batch_chars)
    stream = _tokenized(batches, str(tokenizer), num_proc)
    try:
        for batch, (ids, lengths) in stream:
            ends = np.cumsum(lengths)
            for (piece, split), end, length in zip(batch, ends, lengths):
                tokens = ids[end - length:end]
                if length and (top := int(tokens.max())) > limit:
                    raise CorpusError(f"{piece.where}: token id {top} does not fit {kind.name}; "
                                      "use dtype uint32")
                writer = writers[split]
                writer.feed(piece.document, tokens)
                if piece.last and writer.seen:
                    writer.feed(piece.document, eot)
    finally:
        stream.close()                            # stops the worker pool
    for writer in writers.values():
        writer.close()
    manifest = _manifest(settings, records, complete=True)
    empty = [s for s in SPLITS if not manifest["tokens"][s] and (s == "train" or val_fraction)]
    if empty:
        _remove_outputs(out, records, copy)
        counts = ", ".join(f"{n} {s}" for s, n in manifest["documents"].items())
        raise CorpusError(f"the {empty[0]} split got no tokens (documents: {counts}); the split is "
                          "by document, so a corpus that is one long text needs --separator to "
                          f"be cut into documents (e.g. '\\n\\n'); {out} was left empty")
    _write_manifest(out, manifest)
    return manifest


def _remove_outputs(out: Path, records: dict[str, list[dict]], copy: bool) -> None:
    """Remove what this prepare wrote in `out`: shards by their own names, never a name that a
    record gives."""
    for split in SPLITS:
        for number in range(len(records[split])):
            (out / shard_name(split, number)).unlink(missing_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    if copy:
        (out / TOKENIZER_COPY).unlink(missing_ok=True)


# --- command line -------------------------------------------------------------------------------
HELP = "tokenize a corpus into token shards for pretraining (streaming, resumable)"
SOURCE_HELP = ("a text file, a folder of text files, a .jsonl or .parquet file, or a registered "
               "data set (brown: non-commercial use only; tinyshakespeare, the-verdict)")


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def unescape(text: str | None) -> str | None:
    r"""`text` with the escapes \n, \t and \\ replaced by what they stand for."""
    if text is None:
        return None
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m[1]], text)


def add_options(p: argparse.ArgumentParser) -> None:
    """prepare's options, less its SOURCE."""
    p.add_argument("--out", type=Path, required=True, help="output folder: new, empty, or an "
                                                           "unfinished one to resume")
    p.add_argument("--tokenizer", default="gpt2", help="'gpt2' (tiktoken) or a tokenizer.json "
                                                       "saved by BPETokenizer.save")
    p.add_argument("--format", choices=("auto", "text", "jsonl", "parquet"), default="auto",
                   help="how to read a file (default: by suffix)")
    p.add_argument("--field", default="text", help="JSON field or Parquet column of the text")
    p.add_argument("--separator", help=r"cut text files into documents where this string "
                                       r"occurs; \n, \t escapes (e.g. '\n\n')")
    p.add_argument("--val-fraction", type=_fraction, default=0.1,
                   help="share of documents held out for validation (default: 0.1)")
    p.add_argument("--shard-tokens", type=_at_least_one, default=SHARD_TOKENS,
                   help=f"tokens per shard (default: {SHARD_TOKENS:,})")
    p.add_argument("--dtype", choices=("auto", "uint16", "uint32"), default="auto")
    p.add_argument("--num-proc", type=_at_least_one, default=os.cpu_count() or 1,
                   help="tokenizing processes (default: one per CPU)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """SOURCE and prepare's options."""
    p.add_argument("source", help=SOURCE_HELP)
    add_options(p)


def run(args: argparse.Namespace) -> None:
    """Run prepare from parsed arguments, printing each shard and a summary."""
    source = open_source(args.source, format=args.format, field=args.field,
                         separator=unescape(args.separator))
    described = source.describe()
    if "license" in described:
        print(f"{described['name']}: {described['license']}")

    def report(split: str, record: dict) -> None:
        print(f"wrote {args.out / record['file']}: {record['tokens']:,} tokens", flush=True)
    manifest = prepare(source, args.out, args.tokenizer, val_fraction=args.val_fraction,
                       shard_tokens=args.shard_tokens, dtype=args.dtype, num_proc=args.num_proc,
                       on_shard=report)
    print(", ".join(f"{s}: {manifest['tokens'][s]:,} tokens, {manifest['documents'][s]:,} "
                    f"documents, {len(manifest['shards'][s])} shards" for s in SPLITS)
          + f" ({manifest['dtype']}) in {args.out}")

