"""A seeded search SIGKILLed anywhere and resumed is the search that was never killed.

Each run is ``autoshrink search`` in a fresh process. A kill run installs one trap that
sends the process SIGKILL at a chosen moment: mid-episode in the random warm-up, mid-
episode while learning, inside a gradient step, in a finalist's fine-tune, and after the
artifact is written but before ``result.json``. ``autoshrink search --resume`` then
finishes the search, and its policy, episode log and artifact must be the same bytes as
the uninterrupted run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[3]
DRIVER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
point, argv = sys.argv[1], sys.argv[2:]

def die(*_, **__):
    os.kill(os.getpid(), signal.SIGKILL)

def after(n, fn, then=die):
    calls = [0]
    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            then()
        return fn(*a, **k)
    return wrapped

from stable_baselines3 import DDPG
import autoshrink.agent.search.finish as finish
import autoshrink.compression.evaluate as evaluate
from autoshrink.env.compression_env import CompressionEnv
units = 4  # smallcnn's
if point == "warmup":  # episode 1, third unit
    CompressionEnv.step = after(units + 3, CompressionEnv.step)
elif point == "learning":  # episode 6, second unit
    CompressionEnv.step = after(6 * units + 2, CompressionEnv.step)
elif point == "gradient":  # the fifth training call: after an episode, before its checkpoint
    DDPG.train = after(5, DDPG.train)
elif point == "finalist":  # inside the first finalist's fine-tune
    evaluate.finetune = after(1, evaluate.finetune)
elif point == "result":  # the artifact is written, result.json not yet
    finish.build_result = after(1, finish.build_result)
from autoshrink.scripts.cli import main
sys.exit(main(argv))
"""
POINTS = ("warmup", "learning", "gradient", "finalist", "result")
COMPARED = ("policy.json", "episodes.jsonl", "model.safetensors")


def run(point: str, argv: list[str], cache: Path, driver: str = DRIVER) -> int:
    """``driver`` (with its kill ``point``) on ``argv`` in a fresh process; its exit code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTOSHRINK_CACHE": str(cache)}
    env["OMP_NUM_THREADS"] = "1"
    code = [sys.executable, "-c", driver, point, *argv]
    return subprocess.run(code, env=env, cwd=ROOT, capture_output=True, check=False).returncode


def test_a_search_killed_anywhere_resumes_to_the_same_files(
    tmp_path: Path,
    smallcnn_checkpoint: Path,  # noqa: F811
    cache_root: Path,
) -> None:
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--flops", "0.5", "--episodes", "8", "--warmup", "3", "--seed", "3"]
    argv += ["--final-epochs", "1", "--finalists", "2"]
    whole = tmp_path / "whole"
    assert run("none", [*argv, "--out", str(whole)], cache_root) == 0
    for point in POINTS:
        out = tmp_path / point
        assert run(point, [*argv, "--out", str(out)], cache_root) == -signal.SIGKILL, point
        assert not (out / "result.json").exists(), point
        assert run("none", ["search", "--resume", "--out", str(out)], cache_root) == 0, point
        for name in COMPARED:
            assert (out / name).read_bytes() == (whole / name).read_bytes(), (point, name)
