"""Shared fixtures: an isolated cache per test, offline by default, and the book's data sets.

Tests reach the real data sets only through the registry (`gpt2_core.data.fetch`), with the
cache, mirror and network settings the test run started with: on a machine with a mirror
(`$GPT2_CORE_MIRROR`, which `make` sets when a mirror folder sits beside the checkout) they come from there, on a
machine with network and no mirror they are downloaded once into the user's cache and verified.
"""

import os
from pathlib import Path

import pytest

from gpt2_core import data

STARTING_ENV = {name: os.environ.get(name) for name in (data.CACHE_ENV, data.MIRROR_ENV, data.OFFLINE_ENV)}


@pytest.fixture(scope="session")
def data_mirror(tmp_path_factory) -> Path:
    """A folder with a verified copy of every registered data set, fetched through the registry."""
    folder = tmp_path_factory.mktemp("data-mirror")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in STARTING_ENV.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        for name in sorted(data.REGISTRY):
            (folder / data.REGISTRY[name].filename).symlink_to(data.fetch(name))
    return folder


@pytest.fixture
def mirror(data_mirror, monkeypatch) -> Path:
    """Point `fetch` at the verified copies, so a test's own empty cache fills from them offline."""
    monkeypatch.setenv(data.MIRROR_ENV, str(data_mirror))
    return data_mirror


@pytest.fixture(scope="session")
def book_text(data_mirror):
    """`book_text(name)`: the text of registered data set `name`."""
    def read(name: str) -> str:
        return (data_mirror / data.REGISTRY[name].filename).read_text(encoding="utf-8")
    return read


@pytest.fixture(autouse=True)
def isolated_data_dirs(tmp_path, monkeypatch):
    """Give each test its own cache; tests that need a data set ask for `mirror`."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_ENV, str(cache))
    monkeypatch.setenv(data.OFFLINE_ENV, "1")
    return cache


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids waiting on a busy second core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def transformers_module():
    """The `transformers` package, for the tests that compare with it; they skip without it."""
    return pytest.importorskip("transformers")
