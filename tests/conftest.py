"""Shared fixtures: an isolated cache for trained baselines, one torch thread, gpu skips."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder per test run, shared by the xdist workers.

    Baselines are trained at most once per run: ``baselines.baseline`` holds a file lock
    while it trains, so a second worker waits for the first and then loads its result.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "autoshrink-cache"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Never read or write the user's real cache from tests."""
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(cache_root))
    yield


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Keep the worker on one thread after a test whose CLI call set ``--threads``."""
    yield
    torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    """Keep each (xdist) worker on one thread: two workers share two cores."""
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``gpu`` where CUDA is not available, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA, and this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
