"""Files and folders that appear whole or not at all, readable by everyone, and their checksums.

Every writer in the package goes through these: a temporary name in the target's own folder,
flushed to disk, then one rename. A crash leaves the old file (or nothing), never half a file.
Temporary files from `tempfile` are private to their owner (0600); what lands is 0644 (files)
and 0755 (folders), so an exported model can be read by other users.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_MODE, FOLDER_MODE = 0o644, 0o755


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush `path` (a file's contents, or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    _fsync(folder)                            # the rename itself survives a crash


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Create `path` through write(tmp) on a temporary file beside it; return `path`."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def strict_json(obj: Any, **options: Any) -> str:
    """`obj` as strict JSON: NaN and infinities raise ValueError instead of being written."""
    return json.dumps(obj, allow_nan=False, **options)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write `obj` as strict JSON (UTF-8, trailing newline) to `path` atomically."""
    return atomic_write_text(path, strict_json(obj, indent=indent) + "\n")


@contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder beside `target`; on success it is renamed to `target`.

    `target` must not exist (or be an empty folder). On an exception the folder is removed and
    `target` is left as it was. Files and folders inside get FILE_MODE and FOLDER_MODE and are
    flushed to disk before the rename, so a renamed folder never holds empty files.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        yield tmp
        for entry in tmp.rglob("*"):
            entry.chmod(FOLDER_MODE if entry.is_dir() else FILE_MODE)
            _fsync(entry)
        tmp.chmod(FOLDER_MODE)
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync_folder(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
