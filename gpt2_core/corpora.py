"""Corpora as streams of documents: text files, folders, JSON Lines, Parquet, registered data sets.

A `Source` yields each document's text as one or more `Piece`s, never the whole corpus at once: a
long text file arrives in pieces of about `piece_chars` characters, cut only where GPT-2's
pre-tokenizer splits anyway, so tokenizing the pieces one by one gives exactly the tokens of the
whole text (but for one pre-token longer than 4 * `piece_chars`, which is cut where it ends).
Mistakes in the input raise `CorpusError` naming the file and the line or row.

The Brown Corpus (registered as ``brown``; non-commercial use only) comes as NLTK ships it, as
``word/TAG`` tokens; `brown_documents` turns its 500 documents back into readable text.
"""

from __future__ import annotations

import abc
import codecs
import hashlib
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import regex

from gpt2_core import data

PIECE_CHARS = 1 << 20           # characters of a long document tokenized at once
READ_BYTES = 1 << 20            # bytes read from a file at once
PARQUET_ROWS = 1024             # rows per Parquet record batch


class CorpusError(data.DataError):
    """The input cannot be read as a corpus; the message names the file and line or row."""


# --- the Brown Corpus ---------------------------------------------------------------------------
BROWN_GENRES = {"a": "news", "b": "editorial", "c": "reviews", "d": "religion", "e": "hobbies",
                "f": "lore", "g": "belles_lettres", "h": "government", "j": "learned",
                "k": "fiction", "l": "mystery", "m": "science_fiction", "n": "adventure",
                "p": "romance", "r": "humor"}
BROWN_LICENSE = data.REGISTRY["brown"].license
_OPENING = {"``": '"', "(": "(", "[": "[", "{": "{"}          # no space after these
_CLOSING = {"''": '"', ",": ",", ".": ".", ";": ";", ":": ":", "?": "?", "!": "!", ")": ")",
            "]": "]", "}": "}"}                              # no space before these


@dataclass(frozen=True)
class BrownDocument:
    """One of the Brown Corpus's 500 documents as readable text (blank lines between paragraphs)."""

    id: str            # "ca01"
    genre: str         # Brown's category letter, "a" (press: reportage) to "r" (humor)
    genre_name: str    # NLTK's name for it in cats.txt: "news", ...
    text: str


def brown_text(tagged: str) -> str:
    """Readable text of one Brown file: tags dropped, punctuation and quotes rejoined.

    Paragraphs are the file's blank-line separated blocks, one sentence per line. `` and '' become
    a double quote; a lone ' alternates between opening and closing within a paragraph; the
    full stop after an abbreviation that ends a sentence ("Jr. .") is dropped.
    """
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", tagged):
        words = [token.rpartition("/")[0] or token for token in block.split()]
        if not words:
            continue
        out: list[str] = []
        glue = True                                  # no space before the next word
        single_open = False
        for word in words:
            if word == "'":
                single_open = opening = not single_open
                closing = not opening
            else:
                opening, closing = word in _OPENING, word in _CLOSING
            text = _CLOSING.get(word) or _OPENING.get(word) or word
            if text == "." and out and out[-1].endswith("."):
                continue                             # "Jr./np ./." ends a sentence once
            out.append(text if glue or closing else " " + text)
            glue = opening
        paragraphs.append("".join(out))
    return "\n\n".join(paragraphs)


def brown_documents(archive: Path | None = None) -> Iterator[BrownDocument]:
    """The Brown Corpus's documents in id order (ca01 ... cr09), from NLTK's brown.zip.

    `archive` defaults to the registered copy (`data.fetch("brown")`). Non-commercial use only.
    """
    archive = Path(archive) if archive is not None else data.fetch("brown")
    try:
        with zipfile.ZipFile(archive) as zf:
            names = sorted(n for n in zf.namelist() if re.fullmatch(r"brown/c[a-r]\d\d", n))
            categories = _brown_categories(zf, archive)
            for name in names:
                doc_id = name.rsplit("/", 1)[1]
                try:
                    tagged = zf.read(name).decode("utf-8")
                except UnicodeDecodeError as e:
                    raise CorpusError(f"{archive}: {name} is not UTF-8 text ({e.reason} at byte "
                                      f"{e.start})") from None
                yield BrownDocument(doc_id, doc_id[1], categories.get(doc_id, ""),
                                    brown_text(tagged))
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise CorpusError(f"{archive}: cannot read it as the Brown Corpus's zip ({e})") from None


def _brown_categories(zf: zipfile.ZipFile, archive: Path) -> dict[str, str]:
    """cats.txt: document id -> genre name, checked against the id's genre letter."""
    categories = {}
    for number, line in enumerate(zf.read("brown/cats.txt").decode("ascii").splitlines(), 1):
        if line.strip():
            doc_id, name = line.split()
            if BROWN_GENRES.get(doc_id[1]) != name:
                raise CorpusError(f"{archive}: brown/cats.txt, line {number}: {doc_id} is "
                                  f"{name!r}, but its letter says {BROWN_GENRES.get(doc_id[1])!r}")
            categories[doc_id] = name
    return categories


# --- sources ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Piece:
    """Part of one document's text; a document's pieces arrive in order, the last one marked."""

    document: int      # the document's index in its source, from 0
    where: str         # the file and line or row it comes from, for error messages
    text: str
    last: bool


class Source(abc.ABC):
    """A corpus: documents in a fixed order, read lazily as pieces of text."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """JSON-able description, with a fingerprint that changes when the input changes."""

    @abc.abstractmethod
    def pieces(self, start: int = 0) -> Iterator[Piece]:
        """The pieces of the documents with index >= `start` (earlier ones are skipped cheaply)."""

    def folder_holding(self, path: str | Path) -> Path | None:
        """The source folder that `path` is (or is inside), read as part of the corpus; or None."""
        return None


def _fingerprint(files: list[Path], root: Path) -> str:
    """sha256 over the files' relative paths, sizes and modification times."""
    entries = []
    for path in files:
        try:
            stat = path.stat()
        except OSError as e:
            raise CorpusError(f"{path}: cannot read it ({e.strerror or e})") from None
        entries.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _read_text(path: Path) -> Iterator[str]:
    """`path` decoded as UTF-8, in chunks; an invalid byte is an error naming its line and byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    try:
        with open(path, "rb") as f:
            while True:
                block = f.read(READ_BYTES)
                pending = decoder.getstate()[0]
                try:
                    text = decoder.decode(block, final=not block)
                except UnicodeDecodeError as e:
                    at = line + (pending + block).count(b"\n", 0, e.start)
                    raise CorpusError(f"{path}, line {at}: not UTF-8 text ({e.reason} at byte "
                                      f"{offset - len(pending) + e.start})") from None
                offset += len(block)
                line += text.count("\n")
                if text:
                    yield text
                if not block:
                    return
    except OSError as e:
        raise CorpusError(f"{path}: cannot read it ({e.strerror or e})") from None


# A cut before a space or newline that follows a letter, digit or punctuation mark: GPT-2's
# pre-tokenizer never joins those two characters, and what follows is split the same either way.
_SAFE_CUT = regex.compile(r"(?r)[\p{L}\p{N}\p{P}](?=[ \n])")


def text_pieces(chunks: Iterator[str], separator: str | None = None,
               piece_chars: int = PIECE_CHARS) -> Iterator[tuple[str, bool]]:
    """(text, ends_a_document) pieces of a text read in `chunks`, in time linear in its size.

    Documents end at each `separator` (dropped) and at the end; a longer stretch than
    `piece_chars` without one is cut where tokenizing the parts equals tokenizing the whole.
    Memory stays within `max(4 * piece_chars, 1024)` characters and a chunk: a stretch that long
    with no such place (one pre-token, e.g. a run of CJK letters) is cut where it ends.
    """
    limit = max(4 * piece_chars, 1024)
    buffer, searched = "", 0                         # buffer[:searched] holds no safe cut
    keep = len(separator) - 1 if separator else 0    # a separator may straddle two chunks
    for chunk in chunks:
        buffer += chunk
        if separator and separator in buffer[max(0, len(buffer) - len(chunk) - keep):]:
            *documents, buffer = buffer.split(separator)
            searched = 0
            for document in documents:
                yield document, True
        while len(buffer) > piece_chars:
            end = len(buffer) - keep
            cut = _SAFE_CUT.search(buffer, max(0, searched - 1), end) if end > 0 else None
            if cut is not None:                      # the last one: none in buffer[at:end]
                at, searched = cut.end(), end - cut.end()
            elif len(buffer) > limit:
                at, searched = end, 0                # no safe cut in `limit` characters
            else:
                searched = max(0, end)
                break                                # no safe cut yet: read on
            yield buffer[:at], False
            buffer = buffer[at:]
    yield buffer, True


class TextFiles(Source):
    """Text files, each one document, or several where `separator` occurs (e.g. "\\n\\n")."""

    def __init__(self, files: list[Path], root: Path, separator: str | None = None,
                 describe_as: dict | None = None, *, folder: bool = False) -> None:
        self.files, self.root, self.separator = files, root, separator
        self._description, self._folder = describe_as, folder

    def folder_holding(self, path: str | Path) -> Path | None:
        """`root` when the source is a folder and `path` is it or inside it."""
        path = Path(path).resolve()
        inside = self._folder and (path == self.root or self.root in path.parents)
        return self.root if inside else None

    def describe(self) -> dict:
        if self._description is not None:
            return {**self._description, "separator": self.separator}
        return {"kind": "text", "path": str(self.root), "files": len(self.files),
                "separator": self.separator, "fingerprint": _fingerprint(self.files, self.root)}

    def pieces(self, start: int = 0) -> Iterator[Piece]:
        index = 0
        for number, path in enumerate(self.files):
            if self.separator is None and number < start:
                index += 1                           # one document per file: skip it unread
                continue
            for text, last in text_pieces(_read_text(path), self.separator):
                if index >= start:
                    yield Piece(index, str(path), text, last)
                index += last


class JsonLines(Source):
    """JSON Lines: one document per non-blank line, the text in the object's `field`."""

    def __init__(self, path: Path, field: str = "text") -> None:
        self.path, self.field = path, field

    def describe(self) -> dict:
        return {"kind": "jsonl", "path": str(self.path), "field": self.field,
                "fingerprint": _fingerprint([self.path], self.path.parent)}

    def pieces(self, start: int = 0) -> Iterator[Piece]:
        index = 0
        try:
            with open(self.path, "rb") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    if index >= start:
                        where = f"{self.path}, line {number}"
                        yield Piece(index, where, self._text(line, where), True)
                    index += 1
        except OSError as e:
            raise CorpusError(f"{self.path}: cannot read it ({e.strerror or e})") from None

    def _text(self, line: bytes, where: str) -> str:
        try:
            record = json.loads(line)
        except ValueError as e:
            raise CorpusError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: a JSON {type(record).__name__}, not an object")
        if self.field not in record:
            raise CorpusError(f"{where}: no field {self.field!r} (the object has: "
                              f"{', '.join(map(repr, record)) or 'no fields'})")
        text = record[self.field]
        if not isinstance(text, str):
            raise CorpusError(f"{where}: field {self.field!r} is a {type(text).__name__}, "
                              "not a string")
        return text


class Parquet(Source):
    """A Parquet file: one document per row, the text in string column `column`."""

    def __init__(self, path: Path, column: str = "text") -> None:
        self.path, self.column = path, column

    def describe(self) -> dict:
        return {"kind": "parquet", "path": str(self.path), "column": self.column,
                "fingerprint": _fingerprint([self.path], self.path.parent)}

    def _open(self):
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            parquet = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as e:
            raise CorpusError(f"{self.path}: cannot read it as Parquet ({e})") from None
        schema = parquet.schema_arrow
        if self.column not in schema.names:
            raise CorpusError(f"{self.path}: no column {self.column!r} (columns: "
                              f"{', '.join(map(repr, schema.names))})")
        kind = schema.field(self.column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise CorpusError(f"{self.path}: column {self.column!r} holds {kind}, not strings")
        return parquet

    def pieces(self, start: int = 0) -> Iterator[Piece]:
        parquet = self._open()
        row, groups = 0, []
        for group in range(parquet.num_row_groups):  # skip whole row groups before `start`
            rows = parquet.metadata.row_group(group).num_rows
            if row + rows > start or groups:
                groups.append(group)
            else:
                row += rows
        if not groups:
            return
        for batch in parquet.iter_batches(PARQUET_ROWS, row_groups=groups, columns=[self.column]):
            for text in batch.column(0).to_pylist():
                if row >= start:
                    where = f"{self.path}, row {row}"
                    if text is None:
                        raise CorpusError(f"{where}: column {self.column!r} is null")
                    yield Piece(row, where, text, True)
                row += 1


class Brown(Source):
    """The registered Brown Corpus: its 500 documents (non-commercial use only)."""

    def describe(self) -> dict:
        dataset = data.REGISTRY["brown"]
        return {"kind": "registered", "name": "brown", "sha256": dataset.sha256,
                "license": dataset.license}

    def pieces(self, start: int = 0) -> Iterator[Piece]:
        archive = data.fetch("brown")
        for index, document in enumerate(brown_documents(archive)):
            if index >= start:
                yield Piece(index, f"{archive}: {document.id}", document.text, True)


def open_source(spec: str | Path, *, format: str = "auto", field: str = "text",
                separator: str | None = None) -> Source:
    """The corpus named by `spec`: a file, a folder of text files, or a registered data set.

    `format` is "text", "jsonl", "parquet", or "auto" (by suffix: .jsonl/.ndjson, .parquet, else
    text); `field` names the JSON field or Parquet column; `separator` cuts text into documents.
    """
    path = Path(spec)
    if path.is_dir():
        root = path.resolve()                     # relative, ./ or a symlink: one root
        files = sorted((p for p in root.rglob("*") if p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                       key=lambda p: p.relative_to(root).as_posix())
        if not files:
            raise CorpusError(f"{path}: the folder holds no files")
        return TextFiles(files, root, separator, folder=True)
    if path.is_file():
        path = path.resolve()
        kind = format if format != "auto" else {".jsonl": "jsonl", ".ndjson": "jsonl",
                                                ".parquet": "parquet"}.get(path.suffix, "text")
        if kind == "jsonl":
            return JsonLines(path, field)
        if kind == "parquet":
            return Parquet(path, field)
        return TextFiles([path], path.parent, separator)
    name = str(spec)
    if name == "brown":
        return Brown()
    if name in data.REGISTRY and data.REGISTRY[name].filename.endswith(".txt"):
        dataset = data.REGISTRY[name]
        file = data.fetch(name)
        return TextFiles([file], file.parent, separator,
                         describe_as={"kind": "registered", "name": name,
                                      "sha256": dataset.sha256, "license": dataset.license})
    if name in data.REGISTRY:
        raise CorpusError(f"data set {name!r} is not a text corpus; the registered corpora are "
                          f"brown and the .txt data sets")
    raise CorpusError(f"{name}: no such file or folder, and not a registered data set "
                      f"({', '.join(sorted(data.REGISTRY))})")
