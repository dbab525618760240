"""The book's data sets: each declared once, fetched through cache -> mirror -> download.

`fetch(name)` returns the path of a verified local copy. Lookup order:

1. the cache directory (``$GPT2_CORE_CACHE``, default ``~/.cache/gpt2_core``);
2. a mirror directory (``$GPT2_CORE_MIRROR``), holding either the final file or its archive;
3. the canonical URLs (skipped when ``$GPT2_CORE_OFFLINE`` is set).

Every file is checked against its sha256 before it is used. Files are written to a temporary
name in the cache and renamed into place (`gpt2_core.files.atomic_write`), so a failed or
corrupt transfer never leaves a half-written file where a later call would find it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from gpt2_core.errors import GPT2CoreError
from gpt2_core.files import atomic_write, sha256_of

CACHE_ENV = "GPT2_CORE_CACHE"
MIRROR_ENV = "GPT2_CORE_MIRROR"
OFFLINE_ENV = "GPT2_CORE_OFFLINE"


@dataclass(frozen=True)
class DataSet:
    """One data set: where it comes from, what it must hash to, and its terms of use."""

    name: str
    filename: str
    sha256: str
    urls: tuple[str, ...]
    license: str
    description: str
    archive_member: str | None = None

    @property
    def archive_name(self) -> str | None:
        """File name of the downloaded archive, when the data set ships inside one."""
        if self.archive_member is None:
            return None
        return urllib.parse.unquote(self.urls[0].rsplit("/", 1)[-1])


class DataError(GPT2CoreError, RuntimeError):
    """A data set could not be provided as a verified local file."""


class ChecksumError(DataError):
    """A file's sha256 differs from the one declared in the registry."""


REGISTRY: dict[str, DataSet] = {}


def register(dataset: DataSet) -> DataSet:
    """Add `dataset` to the registry; names are unique."""
    if dataset.name in REGISTRY:
        raise ValueError(f"data set {dataset.name!r} is already registered")
    REGISTRY[dataset.name] = dataset
    return dataset


register(DataSet(
    name="tinyshakespeare",
    filename="tinyshakespeare.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    urls=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
    license="Public domain (Shakespeare); collected by Andrej Karpathy for char-rnn.",
    description="Tiny Shakespeare: 1,115,394 characters of Shakespeare's plays.",
))
register(DataSet(
    name="the-verdict",
    filename="the-verdict.txt",
    sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
    urls=("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",),
    license="Public domain (Edith Wharton, 1908).",
    description='Edith Wharton, "The Verdict": a 20,479-character short story.',
))
register(DataSet(
    name="instruction-data",
    filename="instruction-data.json",
    sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
    urls=("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",),
    license="Apache-2.0 (Sebastian Raschka, Build a Large Language Model (From Scratch)).",
    description="1,100 Alpaca-style instruction/input/output entries.",
))
register(DataSet(
    name="sms-spam",
    filename="sms_spam_collection.tsv",
    sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
    urls=(
        "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
    ),
    license="CC BY 4.0 (T. A. Almeida, J. M. Gomez Hidalgo, UCI SMS Spam Collection v.1, 2011).",
    description="5,574 SMS messages labelled ham/spam, one 'label<TAB>text' per line.",
    archive_member="SMSSpamCollection",
))
register(DataSet(
    name="brown",
    filename="brown.zip",
    sha256="9b275f9b3b95d7bd66ccfb7cd259f445a13bbe5d1f4107aba09fd3e8364bafa6",
    urls=("https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/brown.zip",),
    license="Non-commercial use only: 'May be used for non-commercial purposes.' (NLTK data index; "
            "W. N. Francis and H. Kucera, Brown University, 1964, revised 1971 and 1979).",
    description="The Brown Corpus as NLTK ships it: 500 documents of American English in 15 genres "
                "(about 1.16M words) as word/TAG tokens; gpt2_core.corpora.brown_documents reads "
                "them back as text.",
))


def cache_dir() -> Path:
    """Directory of verified local copies."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gpt2_core")


def mirror_dir() -> Path | None:
    """Directory holding pre-downloaded copies, or None when no mirror is configured."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value) if value else None


def _verify(path: Path, dataset: DataSet, source: str) -> None:
    actual = sha256_of(path)
    if actual != dataset.sha256:
        raise ChecksumError(
            f"{dataset.name}: {source} has sha256 {actual}, expected {dataset.sha256}. "
            "The file is corrupt or a different version; it was not used."
        )


def _install(produce, dataset: DataSet, source: str) -> Path:
    """Write a file through `produce(tmp_path)`, verify it, then rename it into the cache."""
    target = cache_dir() / dataset.filename
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        produce(tmp)
        _verify(tmp, dataset, source)
    return atomic_write(target, write)


def _extract_member(archive: Path, dataset: DataSet, out: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            with zf.open(dataset.archive_member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as e:
        raise DataError(f"{dataset.name}: {archive} is not a valid zip archive ({e})") from e
    except KeyError as e:
        raise DataError(
            f"{dataset.name}: archive {archive} has no member {dataset.archive_member!r}"
        ) from e


def _download(url: str, out: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(out, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(out).name.split(".part")[0]) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                f.write(block)
                bar.update(len(block))


def _from_mirror(dataset: DataSet, mirror: Path) -> Path | None:
    direct = mirror / dataset.filename
    if direct.is_file():
        return _install(lambda tmp: shutil.copyfile(direct, tmp), dataset, f"mirror file {direct}")
    if dataset.archive_name is not None:
        archive = mirror / dataset.archive_name
        if archive.is_file():
            return _install(lambda tmp: _extract_member(archive, dataset, tmp), dataset,
                            f"{dataset.archive_member} in mirror archive {archive}")
    return None


def _from_urls(dataset: DataSet) -> Path:
    failures = []
    for url in dataset.urls:
        try:
            if dataset.archive_member is None:
                return _install(lambda tmp: _download(url, tmp), dataset, f"download from {url}")
            with tempfile.TemporaryDirectory() as tmpdir:
                archive = Path(tmpdir) / (dataset.archive_name or "archive.zip")
                _download(url, archive)
                return _install(lambda tmp: _extract_member(archive, dataset, tmp), dataset,
                                f"{dataset.archive_member} in archive from {url}")
        except (urllib.error.URLError, OSError) as e:
            failures.append(f"{url}: {e}")
    raise DataError(f"{dataset.name}: every download failed:\n  " + "\n  ".join(failures)
                    + "\n" + _how_to_provide(dataset))


def _how_to_provide(dataset: DataSet) -> str:
    names = dataset.filename + (f" (or its archive {dataset.archive_name})" if dataset.archive_name else "")
    return (f"To provide it offline, put {names} with sha256 {dataset.sha256} into the directory "
            f"named by ${MIRROR_ENV} (or into {cache_dir()}).")


def fetch(name: str) -> Path:
    """Return the path of a verified local copy of registered data set `name`."""
    try:
        dataset = REGISTRY[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
    return fetch_dataset(dataset)


def fetch_dataset(dataset: DataSet) -> Path:
    """Return the path of a verified local copy of `dataset`: cache, then mirror, then download."""
    cached = cache_dir() / dataset.filename
    if cached.is_file():
        if sha256_of(cached) == dataset.sha256:
            return cached
        cached.unlink()
    mirror = mirror_dir()
    if mirror is not None:
        if not mirror.is_dir():
            raise DataError(f"{dataset.name}: ${MIRROR_ENV} points at {mirror}, which is not a directory")
        found = _from_mirror(dataset, mirror)
        if found is not None:
            return found
    if os.environ.get(OFFLINE_ENV):
        where = f"the mirror {mirror} has no {dataset.filename}" if mirror else f"${MIRROR_ENV} is not set"
        raise DataError(f"{dataset.name}: not cached, {where}, and ${OFFLINE_ENV} forbids downloads. "
                        + _how_to_provide(dataset))
    return _from_urls(dataset)
