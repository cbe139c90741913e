"""What a resume keeps: its workers and its threads, from every door, in one line.

A search's numbers depend on the threads it computes with, so the threads are resolved
once, when it starts, and recorded; a resume computes with the recorded ones, and asking
for others is refused (as for another worker count).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.config import SearchConfig
from autoshrink.agent.search.resume_rules import (
    ResumeMismatchError,
    resumed_agent,
    with_threads,
)
from autoshrink.compression import device
from autoshrink.compression.errors import AutoshrinkError


def saved(folder: Path, **agent: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = SearchConfig.create(flops=0.5, episodes=6)
    config = replace(config, agent=replace(config.agent, **agent))
    config.save(folder / "config.json")
    return folder


def test_threads_resolve_from_the_cores_never_from_the_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(device, "available_cores", lambda: 6)
    monkeypatch.setattr(device, "machine_load", lambda: 40.0)  # a busy machine changes nothing
    got = with_threads(AgentConfig(workers=2))
    assert (got.threads, got.worker_threads) == (6, 3)
    given = with_threads(AgentConfig(workers=2, threads=1))
    assert (given.threads, given.worker_threads) == (1, 1)  # --threads serves the workers too


def test_a_resume_computes_with_the_threads_its_search_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = saved(tmp_path / "run", workers=2, threads=1, worker_threads=1)
    monkeypatch.setattr(device, "available_cores", lambda: 3)  # another machine, or load
    got = resumed_agent(folder, AgentConfig(workers=2))
    assert (got.threads, got.worker_threads) == (1, 1)


def test_a_resume_of_a_search_that_recorded_no_threads_takes_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = saved(tmp_path / "old")  # written before threads were recorded: null
    monkeypatch.setattr(device, "available_cores", lambda: 4)
    got = resumed_agent(folder, AgentConfig())
    assert (got.threads, got.worker_threads) == (4, 4)


@pytest.mark.parametrize(
    ("asked", "needle"),
    [
        ({"workers": 3}, "is a search on --workers 2, not 3: its resume keeps its workers"),
        ({"workers": 1}, "is a search on --workers 2, not 1"),  # Python's default K
        ({"workers": 2, "threads": 2}, "is a search on --threads 1, not 2"),
    ],
)
def test_a_resume_that_asks_for_other_workers_or_threads_is_refused_in_one_line(
    tmp_path: Path, asked: dict[str, int], needle: str
) -> None:
    folder = saved(tmp_path / "run", workers=2, threads=1, worker_threads=1)
    with pytest.raises(ResumeMismatchError) as info:
        resumed_agent(folder, AgentConfig(**asked))  # type: ignore[arg-type]
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_python_resume_with_another_worker_count_is_refused(tmp_path: Path) -> None:
    """The check lives in the library: ``search(..., resume=True)`` refuses it too."""
    from autoshrink.agent.search.episodes import SearchState
    from autoshrink.agent.search.run import search
    from autoshrink.agent.search.run_folder import RunFolder

    folder = saved(tmp_path / "run", workers=2, threads=1, worker_threads=1)
    RunFolder(folder).save_checkpoint(SearchState(), lambda path: None)
    config = SearchConfig.create(flops=0.5, episodes=6)  # workers 1
    with pytest.raises(ResumeMismatchError, match="--workers 2, not 1"):
        search(config, folder, resume=True)


@pytest.mark.parametrize("bad", [0, -1, True, 1025, 10**8, 1.5])
def test_thread_counts_out_of_range_are_refused(bad: object) -> None:
    with pytest.raises(AutoshrinkError, match="threads must be between 1 and 1,024"):
        AgentConfig(threads=bad)  # type: ignore[arg-type]
