"""Shared fixtures: an isolated cache per test, and offline by default."""

import pytest


@pytest.fixture(autouse=True)
def isolated_data_dirs(tmp_path, monkeypatch):
    """Give each test its own cache; tests that want the mirror set it themselves."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GPT2_CORE_CACHE", str(cache))
    monkeypatch.setenv("GPT2_CORE_OFFLINE", "1")
    return cache
