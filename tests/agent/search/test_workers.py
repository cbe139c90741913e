"""Searches with --workers 2: end to end, reproducible, within budget, equal on Ray.

Each search is ``autoshrink search`` on the tiny smallcnn (4 units) on digits, with a few
episodes; the two workers are SB3 SubprocVecEnv processes (or Ray actors).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from autoshrink.agent.search.report import read_result
from autoshrink.compression.policy import Policy
from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)

FLOPS = 0.5
EPISODES = 6


def search_argv(checkpoint: Path, out: Path, *extra: str) -> list[str]:
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(checkpoint), "--seed", "2"]
    argv += ["--flops", str(FLOPS), "--episodes", str(EPISODES), "--warmup", "2"]
    argv += ["--final-epochs", "1", "--threads", "1", "--out", str(out), "--json", *extra]
    return argv


def episodes(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory,
    smallcnn_checkpoint: Path,  # noqa: F811
    cache_root: Path,
) -> Path:
    """A DDPG search of 6 episodes on 2 local workers."""
    out = tmp_path_factory.mktemp("workers") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        assert main(search_argv(smallcnn_checkpoint, out, "--workers", "2")) == 0
    return out


def test_a_two_worker_search_runs_end_to_end(two_workers: Path) -> None:
    log = episodes(two_workers)
    assert [e["episode"] for e in log] == list(range(EPISODES))
    result = read_result(two_workers / "result.json")
    assert result["episodes"] == EPISODES and result["budgets_met"]
    policy = Policy.load(two_workers / "policy.json")
    assert policy.meta["episode"] == max(log, key=lambda e: e["reward"])["episode"]
    saved = json.loads((two_workers / "config.json").read_text())
    assert saved["data"]["agent"]["data"]["workers"] == 2
    assert (two_workers / result["artifact"]).is_file()
    # the two workers explored: the episodes of one round are different policies
    assert log[0]["keep"] != log[1]["keep"] and log[2]["keep"] != log[3]["keep"]


def test_the_budget_holds_in_every_episode_of_every_worker(two_workers: Path) -> None:
    log = episodes(two_workers)
    for worker in (0, 1):  # a round's episodes are logged in worker order
        mine = log[worker::2]
        assert len(mine) == EPISODES // 2
        for record in mine:
            assert record["budgets_met"], record["episode"]
            assert record["macs_ratio"] <= FLOPS + 1e-9, record["episode"]


def test_the_same_seed_and_workers_give_the_same_policy(
    two_workers: Path,
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
) -> None:
    again = tmp_path / "again"
    assert main(search_argv(smallcnn_checkpoint, again, "--workers", "2")) == 0
    assert (again / "policy.json").read_bytes() == (two_workers / "policy.json").read_bytes()
    assert (again / "episodes.jsonl").read_bytes() == (two_workers / "episodes.jsonl").read_bytes()


@pytest.fixture
def local_ray() -> Any:
    """A local Ray of 2 CPUs, shut down after the test."""
    ray = pytest.importorskip("ray", reason="autoshrink[ray] is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_workers_give_the_local_workers_search_episode_for_episode(
    two_workers: Path,
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
    local_ray: Any,
) -> None:
    out = tmp_path / "ray"
    argv = search_argv(smallcnn_checkpoint, out, "--workers", "2", "--backend", "ray")
    assert main(argv) == 0
    assert local_ray.is_initialized()  # the search used the Ray it found, and left it up
    assert (out / "episodes.jsonl").read_bytes() == (two_workers / "episodes.jsonl").read_bytes()
    assert (out / "policy.json").read_bytes() == (two_workers / "policy.json").read_bytes()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--address", "auto"], "an address is for the ray backend"),
        (["--backend", "ray", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
    ],
)
def test_bad_worker_settings_are_one_line_and_write_nothing(
    extra: list[str],
    message: str,
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    assert main(search_argv(smallcnn_checkpoint, out, *extra)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("x", "must be an integer, got 'x'"),
        ("1.5", "must be an integer, got '1.5'"),
        ("", "must be an integer, got ''"),
        ("0", "must be between 1 and 256, got 0"),
        ("-3", "must be between 1 and 256, got -3"),
        ("100000", "must be between 1 and 256, got 100000"),  # ran out of file handles
    ],
)
def test_a_workers_value_out_of_range_is_refused_by_the_parser(
    value: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--workers", value, "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: argument --workers: {needle}"), err
    assert not (tmp_path / "out").exists()


def test_a_missing_ray_is_one_line_naming_the_extra(
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    argv = search_argv(smallcnn_checkpoint, out, "--workers", "2", "--backend", "ray")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'autoshrink[ray]'" in err[0]
    assert not out.exists()


def test_help_states_the_worker_flags_and_their_defaults() -> None:
    from autoshrink.scripts.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["search"]  # type: ignore[union-attr]
    text = " ".join(sub.format_help().split())
    assert "--workers K" in text and "(default: 1, in this process)" in text
    assert "--backend {local,ray}" in text and "(default: local)" in text
    assert "--address ADDR" in text and "(default: a local Ray)" in text
    assert "with --workers K > 1: the cores divided by K, at least 1" in text


@pytest.mark.parametrize("agent", ["random", "global"])
def test_a_scripted_search_plays_the_same_episodes_on_two_workers_as_on_one(
    agent: str,
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
) -> None:
    logs = []
    for workers in ("1", "2"):
        out = tmp_path / workers
        argv = search_argv(smallcnn_checkpoint, out, "--agent", agent, "--workers", workers)
        assert main([*argv, "--final-epochs", "0"]) == 0
        logs.append((out / "episodes.jsonl").read_bytes())
    assert logs[0] == logs[1]
    assert len(logs[0].splitlines()) == EPISODES


def test_a_worker_that_dies_is_one_error_and_the_other_worker_ends(
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
) -> None:
    import os
    import signal

    from stable_baselines3.common.callbacks import BaseCallback

    from autoshrink.agent.search import SearchConfig
    from autoshrink.agent.search.loop import run_search
    from autoshrink.compression.errors import AutoshrinkError

    processes: list[Any] = []

    class KillOne(BaseCallback):
        def _on_step(self) -> bool:
            processes[:] = list(self.training_env.processes)  # type: ignore[attr-defined]
            if self.num_timesteps == 6:  # mid-episode: worker 1 is gone
                os.kill(processes[1].pid, signal.SIGKILL)
            return True

    config = SearchConfig.create(
        model="smallcnn", checkpoint=str(smallcnn_checkpoint), episodes=4, workers=2, seed=1
    )
    with pytest.raises(AutoshrinkError, match="a search worker died"):
        run_search(config.make_env(), config.agent, tmp_path / "run", callbacks=[KillOne()])
    assert processes and not any(p.is_alive() for p in processes)


def test_a_resume_keeps_the_workers_of_its_search(
    two_workers: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(two_workers, copy)
    before = (copy / "episodes.jsonl").read_bytes()
    argv = ["search", "--resume", "--out", str(copy), "--workers", "3"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a search on --workers 2, not 3: its resume keeps" in err[0]
    assert (copy / "episodes.jsonl").read_bytes() == before


def test_ray_workers_that_need_more_cpus_than_the_cluster_has_fail_at_once(
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
    local_ray: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    argv = search_argv(smallcnn_checkpoint, out, "--workers", "2", "--backend", "ray")
    assert main([*argv, "--threads", "2"]) == 2  # 2 x 2 threads on a 2-CPU Ray: never placed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the Ray cluster has 2 CPUs" in err[0], err
    assert "Traceback" not in err[0]
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
