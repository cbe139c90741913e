"""A 2-worker search SIGKILLed mid-round, or in a gradient step, resumes to the same files.

As in test_kill_anywhere, every run is ``autoshrink search`` in a fresh process, and the
kill is a trap in the main process: the workers are SB3 SubprocVecEnv processes, which end
on their own when their pipe to the killed search closes. The resumed search must write
the same policy, episode log and artifact as the search that was never killed: a kill
loses at most the round of 2 episodes in flight. The resume runs as if on another machine
(3 usable cores), so that its default threads differ from the start's: it must compute with
the recorded ones, whatever the load or the machine.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)
from tests.agent.search.test_kill_anywhere import run as run_driver

DRIVER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
point, argv = sys.argv[1], sys.argv[2:]

def after(n, fn):
    calls = [0]
    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return wrapped

if point == "cores3":  # the resume's machine has 3 usable cores: not the start's 2 or 1
    os.sched_getaffinity = lambda pid: {0, 1, 2}
from stable_baselines3 import DDPG
from stable_baselines3.common.vec_env import SubprocVecEnv
units = 4  # smallcnn's
if point == "round":  # round 3 (episodes 4 and 5), its third unit
    SubprocVecEnv.step_wait = after(2 * units + 3, SubprocVecEnv.step_wait)
elif point == "gradient":  # after round 3 ends, before its checkpoint
    DDPG.train = after(2, DDPG.train)
from autoshrink.scripts.cli import main
if __name__ == "__main__":
    sys.exit(main(argv))
"""
POINTS = ("round", "gradient")
COMPARED = ("policy.json", "episodes.jsonl", "model.safetensors")


def run(point: str, argv: list[str], cache: Path) -> int:
    return run_driver(point, argv, cache, DRIVER)


ARGV = ["--flops", "0.5", "--episodes", "8", "--warmup", "2", "--seed", "3", "--final-epochs"]
ARGV += ["1", "--finalists", "2", "--workers", "2", "--threads", "1"]


def search_argv(checkpoint: Path, out: Path) -> list[str]:
    model = ["--model", "smallcnn", "--checkpoint", str(checkpoint)]
    return ["search", *model, *ARGV, "--out", str(out)]


@pytest.fixture(scope="module")
def whole(
    tmp_path_factory: pytest.TempPathFactory,
    smallcnn_checkpoint: Path,  # noqa: F811
    cache_root: Path,
) -> Path:
    """The search never killed."""
    out = tmp_path_factory.mktemp("kill") / "whole"
    assert run("none", search_argv(smallcnn_checkpoint, out), cache_root) == 0
    return out


@pytest.mark.parametrize("point", [POINTS[0], pytest.param(POINTS[1], marks=pytest.mark.slow)])
def test_a_two_worker_search_killed_resumes_to_the_same_files(
    point: str,
    whole: Path,
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
    cache_root: Path,
) -> None:
    out = tmp_path / point
    assert run(point, search_argv(smallcnn_checkpoint, out), cache_root) == -signal.SIGKILL
    assert not (out / "result.json").exists()
    logged = (out / "episodes.jsonl").read_text().splitlines()
    assert 2 <= len(logged) < 8  # killed after a round, before the end
    # The resume runs where the default threads differ from the start's: it must compute
    # with the threads the search started with (the finish's BatchNorm sums depend on them).
    assert run("cores3", ["search", "--resume", "--out", str(out)], cache_root) == 0
    for name in COMPARED:
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
