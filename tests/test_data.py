"""The data registry: cache -> mirror -> download, with every file verified before use."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from gpt2_core import data

CONTENT = b"label\ttext\nham\thello there\n"


def declare(monkeypatch, content=CONTENT, archive_member=None, urls=("file:///nonexistent/demo.txt",)):
    dataset = data.DataSet(name="demo", filename="demo.tsv", sha256=hashlib.sha256(content).hexdigest(),
                           urls=urls, license="test", description="test data",
                           archive_member=archive_member)
    monkeypatch.setitem(data.REGISTRY, "demo", dataset)
    return dataset


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_mirror_copy_is_verified_and_cached(tmp_path, monkeypatch, isolated_data_dirs):
    declare(monkeypatch)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo.tsv").write_bytes(CONTENT)
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    path = data.fetch("demo")
    assert path == isolated_data_dirs / "demo.tsv" and path.read_bytes() == CONTENT
    (mirror / "demo.tsv").unlink()
    assert data.fetch("demo") == path  # served from the cache now


def test_hash_mismatch_raises_and_leaves_nothing(tmp_path, monkeypatch, isolated_data_dirs):
    dataset = declare(monkeypatch)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo.tsv").write_bytes(CONTENT + b"tampered")
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    with pytest.raises(data.ChecksumError, match=f"mirror file .*demo.tsv has sha256 .*expected {dataset.sha256}"):
        data.fetch("demo")
    assert leftovers(isolated_data_dirs) == []


def test_corrupt_cache_is_replaced_not_used(tmp_path, monkeypatch, isolated_data_dirs):
    declare(monkeypatch)
    isolated_data_dirs.mkdir()
    (isolated_data_dirs / "demo.tsv").write_bytes(b"half a fi")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "demo.tsv").write_bytes(CONTENT)
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    assert data.fetch("demo").read_bytes() == CONTENT


def test_offline_without_mirror_says_what_is_missing(monkeypatch):
    dataset = declare(monkeypatch)
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    with pytest.raises(data.DataError) as info:
        data.fetch("demo")
    message = str(info.value)
    assert "demo.tsv" in message and dataset.sha256 in message and data.MIRROR_ENV in message


def test_mirror_without_the_file_and_a_missing_mirror_folder(tmp_path, monkeypatch):
    declare(monkeypatch)
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path))
    with pytest.raises(data.DataError, match=f"the mirror {tmp_path} has no demo.tsv"):
        data.fetch("demo")
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "absent"))
    with pytest.raises(data.DataError, match="not a directory"):
        data.fetch("demo")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(data.DataError, match="unknown data set 'nope'; known: .*tinyshakespeare"):
        data.fetch("nope")


def online(monkeypatch, tmp_path):
    source = tmp_path / "remote.tsv"
    source.write_bytes(CONTENT)
    declare(monkeypatch, urls=(source.as_uri(),))
    monkeypatch.delenv(data.OFFLINE_ENV)
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    return source


def test_download_lands_in_the_cache(tmp_path, monkeypatch, isolated_data_dirs):
    online(monkeypatch, tmp_path)
    assert data.fetch("demo").read_bytes() == CONTENT
    assert leftovers(isolated_data_dirs) == ["demo.tsv"]


def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch, isolated_data_dirs):
    source = online(monkeypatch, tmp_path)

    def broken_download(url, out):
        Path(out).write_bytes(CONTENT[:5])
        raise OSError("connection reset")

    monkeypatch.setattr(data, "_download", broken_download)
    with pytest.raises(data.DataError, match=f"{source.as_uri()}: connection reset"):
        data.fetch("demo")
    assert leftovers(isolated_data_dirs) == []


def test_archive_in_mirror_is_unpacked(tmp_path, monkeypatch):
    dataset = declare(monkeypatch, archive_member="Member", urls=("https://example.org/demo%2Bdata.zip",))
    assert dataset.archive_name == "demo+data.zip"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "demo+data.zip", "w") as zf:
        zf.writestr("Member", CONTENT)
        zf.writestr("readme", b"about")
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    assert data.fetch("demo").read_bytes() == CONTENT


@pytest.mark.parametrize("archive_bytes, error", [
    (b"PK\x03\x04 this is not really a zip", "not a valid zip archive"),
    (None, "has no member 'Member'"),
])
def test_bad_archive_is_a_clear_error(tmp_path, monkeypatch, isolated_data_dirs, archive_bytes, error):
    declare(monkeypatch, archive_member="Member", urls=("https://example.org/demo.zip",))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    if archive_bytes is None:
        with zipfile.ZipFile(mirror / "demo.zip", "w") as zf:
            zf.writestr("Other", CONTENT)
    else:
        (mirror / "demo.zip").write_bytes(archive_bytes)
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    with pytest.raises(data.DataError, match=error):
        data.fetch("demo")
    assert leftovers(isolated_data_dirs) == []


@pytest.mark.parametrize("name", sorted(data.REGISTRY))
def test_every_registered_data_set_is_provided_verified(name, mirror):
    assert data.sha256_of(data.fetch(name)) == data.REGISTRY[name].sha256
