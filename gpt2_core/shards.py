"""Token shards on disk: the folder `gpt2_core.prepare` writes, and reading it for training.

A prepared folder holds ``train_000000.bin``, ``train_000001.bin``, ... and ``val_000000.bin``,
...: raw token ids (the manifest's dtype, native little-endian), each shard ``shard_tokens`` long
except the last of its split. ``manifest.json`` lists every shard with its token count, the
documents that start in it, its sha256 and where in the corpus it starts and ends; plus the
tokenizer, the source, the split rule and the shard size. ``"complete": false`` marks a folder
that `prepare` is still writing (or was killed while writing); readers refuse it. `read_manifest`
checks the keys, the dtype, the tokenizer copy's name and that each shard's file is
`shard_name(split, number)`, so a manifest cannot make a reader open (or prepare delete) any other
file.

`Shards` memory-maps one split and reads it as one long token array (``len``, slices and integer
index arrays), so `gpt2_core.train.train` takes it in place of a numpy array. `WindowReader` draws
random, non-overlapping windows of ``block_size + 1`` tokens from it: a fixed order per seed, each
rank its own windows, and a state (`state_dict`) from which a resumed run reads exactly the batches
an uninterrupted one would have.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gpt2_core import data
from gpt2_core.errors import CheckpointError
from gpt2_core.files import sha256_of
from gpt2_core.tokenizer import BPETokenizer, Tokenizer, gpt2_tokenizer

MANIFEST = "manifest.json"
FORMAT = "gpt2_core token shards"
VERSION = 1
SPLITS = ("train", "val")
DTYPES = ("uint16", "uint32")
TOKENIZER_COPY = "tokenizer.json"        # the one file name a manifest's tokenizer may have


class ManifestError(data.DataError):
    """A prepared folder's manifest is missing, incomplete, or disagrees with its shards."""


def shard_name(split: str, number: int) -> str:
    """File name of shard `number` of `split`: train_000000.bin, ..."""
    return f"{split}_{number:06d}.bin"


def read_manifest(folder: str | Path) -> dict:
    """The manifest of prepared folder `folder` (complete or not)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path} does not exist: {folder} is not a prepared folder "
                            "(run `gpt2-core prepare` first)") from None
    except (OSError, ValueError) as e:
        raise ManifestError(f"{path}: cannot read it ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ManifestError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise ManifestError(f"{path}: version {manifest.get('version')}, this code reads {VERSION}")
    _check_manifest(manifest, path)
    return manifest


def _check(ok: bool, path: Path, where: str, what: str) -> None:
    if not ok:
        raise ManifestError(f"{path}: {where} {what}; the folder was not written by prepare, or "
                            "was edited: prepare it again")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_manifest(manifest: dict, path: Path) -> None:
    """Refuse a manifest whose keys, dtype, tokenizer or shard records are not prepare's: a
    shard's file must be shard_name(split, its number), so no record names another file."""
    for key, kind in (("complete", bool), ("dtype", str), ("tokenizer", dict), ("shards", dict)):
        _check(isinstance(manifest.get(key), kind), path, f"key {key!r}",
               f"is {manifest.get(key)!r}, not a {kind.__name__}")
    _check(manifest["dtype"] in DTYPES, path, "dtype", f"{manifest['dtype']!r} is not one of "
                                                        f"{', '.join(DTYPES)}")
    tokenizer = manifest["tokenizer"]
    _check(_count(tokenizer.get("vocab_size")) and tokenizer["vocab_size"] > 0, path,
           "tokenizer.vocab_size", f"is {tokenizer.get('vocab_size')!r}")
    _check(tokenizer.get("file") in (None, TOKENIZER_COPY), path, "tokenizer.file",
           f"is {tokenizer.get('file')!r}, not null or {TOKENIZER_COPY!r}")
    for split in SPLITS:
        records = manifest["shards"].get(split)
        _check(isinstance(records, list), path, f"shards.{split}", "is not a list")
        for number, record in enumerate(records):
            where = f"shards.{split}[{number}]"
            _check(isinstance(record, dict), path, where, "is not an object")
            name = shard_name(split, number)
            _check(record.get("file") == name, path, f"{where}.file",
                   f"is {record.get('file')!r}, not {name!r}")
            for key in ("tokens", "documents"):
                _check(_count(record.get(key)), path, f"{where}.{key}",
                       f"is {record.get(key)!r}, not a count")
            _check(isinstance(record.get("sha256"), str), path, f"{where}.sha256", "is missing")


def check_shards(folder: str | Path, manifest: dict, *, hashes: bool = True) -> None:
    """Check that every shard in `manifest` exists with its size (and, if `hashes`, its sha256)."""
    folder = Path(folder)
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split in SPLITS:
        for record in manifest["shards"][split]:
            path = folder / record["file"]
            if not path.is_file():
                raise ManifestError(f"{path} is missing; {folder / MANIFEST} lists it")
            size = path.stat().st_size
            if size != record["tokens"] * itemsize:
                raise ManifestError(f"{path} has {size:,} bytes; {folder / MANIFEST} says "
                                    f"{record['tokens']:,} tokens of {manifest['dtype']}")
            if hashes and (actual := sha256_of(path)) != record["sha256"]:
                raise ManifestError(f"{path} has sha256 {actual}; {folder / MANIFEST} says "
                                    f"{record['sha256']}. The shard is corrupt or from another "
                                    "run; prepare the folder again")


def folder_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer a prepared folder was written with: its tokenizer.json, or GPT-2's."""
    file = read_manifest(folder)["tokenizer"]["file"]
    return BPETokenizer.load(Path(folder) / file) if file else gpt2_tokenizer()


def is_prepared(dataset: str | Path) -> bool:
    """Whether `dataset` names a folder written by `gpt2-core prepare`."""
    return (Path(dataset) / MANIFEST).is_file()


def open_prepared(folder: str | Path, vocab_size: int, block_size: int
                  ) -> tuple[Tokenizer, Shards, Shards]:
    """A prepared folder's tokenizer and its train and val splits, checked against a model of
    `vocab_size` tokens trained on windows of `block_size` + 1 tokens."""
    train, val = Shards(folder, "train"), Shards(folder, "val")
    if train.vocab_size > vocab_size:
        raise ValueError(f"{folder}: token ids up to {train.vocab_size - 1} do not fit "
                         f"model.vocab_size={vocab_size}")
    if len(val) < block_size + 1:
        raise ValueError(f"{folder}: the val split has {len(val):,} tokens, fewer than one "
                         f"window of block_size + 1 = {block_size + 1}")
    return folder_tokenizer(folder), train, val


class Shards:
    """One split of a prepared folder, memory-mapped, read as one array of `len(self)` tokens.

    Indexing takes an int, a slice (step 1), or an integer array of any shape, like a numpy
    array; a read may span shards. `verify=True` also checks every shard's sha256.
    """

    def __init__(self, folder: str | Path, split: str = "train", *, verify: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        if not self.manifest.get("complete"):
            raise ManifestError(f"{self.folder / MANIFEST} is incomplete: prepare is still writing "
                                "the folder or was stopped; run it again to finish")
        check_shards(folder, self.manifest, hashes=verify)
        self.dtype = np.dtype(self.manifest["dtype"])
        records = self.manifest["shards"][split]
        self._maps = [np.memmap(self.folder / r["file"], dtype=self.dtype, mode="r")
                      for r in records if r["tokens"]]
        self.offsets = np.cumsum([0] + [len(m) for m in self._maps])   # each shard's first token

    @property
    def vocab_size(self) -> int:
        """Size of the tokenizer's vocabulary (every id is below it)."""
        return int(self.manifest["tokenizer"]["vocab_size"])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens start .. start + length - 1 (a copy, across shards if need be)."""
        if start < 0 or length < 0 or start + length > len(self):
            raise IndexError(f"tokens {start}..{start + length} are outside 0..{len(self)}")
        if not length:
            return np.empty(0, dtype=self.dtype)
        parts, shard = [], int(np.searchsorted(self.offsets, start, side="right")) - 1
        while length > 0:
            begin = start - int(self.offsets[shard])
            part = self._maps[shard][begin:begin + length]
            parts.append(part)
            start, length, shard = start + len(part), length - len(part), shard + 1
        return np.concatenate(parts) if len(parts) != 1 else np.array(parts[0])

    def __getitem__(self, index) -> np.ndarray | np.integer:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("Shards slices take no step")
            return self.read(start, max(0, stop - start))
        flat = np.asarray(index, dtype=np.int64)
        if flat.ndim == 0:
            position = int(flat) + (len(self) if flat < 0 else 0)
            return self.read(position, 1)[0]
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token index out of range 0..{len(self) - 1}")
        out = np.empty(flat.shape, dtype=self.dtype)
        shard = np.searchsorted(self.offsets, flat, side="right") - 1
        for s in np.unique(shard):
            where = shard == s
            out[where] = self._maps[s][flat[where] - self.offsets[s]]
        return out


class WindowReader:
    """Batches of random windows of `block_size` + 1 tokens from `tokens` (a `Shards` or array).

    The token stream is cut into non-overlapping window slots, shifted by a per-epoch offset; each
    epoch visits every slot once in an order fixed by (seed, epoch). Global step `step` takes the
    next `batch_size * world_size` slots and rank `rank` the `batch_size` of them from
    `rank * batch_size` on, so ranks never share a window within an epoch. `next_batch` advances
    `step`; `state_dict` / `load_state_dict` save and restore it. Memory: the current epoch's order,
    8 bytes per slot.
    """

    def __init__(self, tokens, block_size: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank} and {world_size}")
        self.tokens, self.block_size, self.batch_size = tokens, block_size, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.window = block_size + 1
        self.slots = (len(tokens) - block_size) // self.window    # room for any offset < window
        if self.slots < batch_size * world_size:
            raise ValueError(f"{len(tokens):,} tokens hold {max(self.slots, 0)} windows of "
                             f"{self.window} tokens, fewer than one global batch of "
                             f"{batch_size * world_size}")
        self.step = 0
        self._epoch: tuple[int, int, np.ndarray] | None = None     # (epoch, offset, order)

    def _order(self, epoch: int) -> tuple[int, np.ndarray]:
        if self._epoch is None or self._epoch[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._epoch = (epoch, int(rng.integers(self.window)), rng.permutation(self.slots))
        return self._epoch[1], self._epoch[2]

    def starts(self, step: int) -> np.ndarray:
        """First token of each of this rank's windows at global step `step`: (batch_size,)."""
        first = (step * self.world_size + self.rank) * self.batch_size
        starts = []
        for position in range(first, first + self.batch_size):
            epoch, slot = divmod(position, self.slots)
            offset, order = self._order(epoch)
            starts.append(offset + int(order[slot]) * self.window)
        return np.array(starts, dtype=np.int64)

    def batch(self, step: int) -> np.ndarray:
        """This rank's windows at global step `step`: (batch_size, block_size + 1) int64."""
        return np.stack([np.asarray(self.tokens[s:s + self.window], dtype=np.int64)
                         for s in self.starts(step)])

    def next_batch(self) -> np.ndarray:
        """The batch at `self.step`, then step + 1. Inputs: [:, :-1]; targets: [:, 1:]."""
        windows = self.batch(self.step)
        self.step += 1
        return windows

    def state_dict(self) -> dict:
        """JSON-able position: the next step, and what it is only valid with."""
        return {"step": self.step, "seed": self.seed, "block_size": self.block_size,
                "global_batch": self.batch_size * self.world_size, "tokens": len(self.tokens)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (from `state_dict`; the world size may differ, not the rest)."""
        if not state:
            raise CheckpointError("the checkpoint holds no reader position: it was written by a "
                                  "run that did not read windows; resume it the same way")
        mine = self.state_dict()
        different = [k for k in mine if k != "step" and state.get(k) != mine[k]]
        if different:
            raise CheckpointError("the saved reader state is for another reader: " + ", ".join(
                f"{k} {state.get(k)} != {mine[k]}" for k in different))
        self.step = int(state["step"])
