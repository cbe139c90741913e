"""A search killed with SIGKILL at an arbitrary moment resumes from its folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoshrink.agent.search.loop import run_search
from tests.agent.search.test_search_toy import tiny
from tests.agent.toy_env import ToyCompressionEnv

SCRIPT = """
import sys, time
import torch
torch.set_num_threads(1)
from autoshrink.agent.search.loop import run_search
from tests.agent.search.test_search_toy import tiny
from tests.agent.toy_env import ToyCompressionEnv

class SlowEnv(ToyCompressionEnv):
    def step(self, action):
        time.sleep(0.01)
        return super().step(action)

run_search(SlowEnv(), tiny(sys.argv[2], episodes=200), sys.argv[1])
"""


@pytest.mark.parametrize("algorithm", ["ddpg", "random"])
def test_sigkill_mid_search_then_resume(tmp_path: Path, algorithm: str) -> None:
    out = tmp_path / "run"
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), algorithm], env=env, cwd=root)
    log = out / "episodes.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("\n") >= 6:
            break
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.05)
    time.sleep(0.037)  # land somewhere inside an episode or a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    logged = log.read_text().count("\n")
    result = run_search(ToyCompressionEnv(), tiny(algorithm, episodes=logged + 3), out, resume=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["episode"] for r in rows] == list(range(logged + 3))
    assert result.episodes == logged + 3
    assert result.best_reward == pytest.approx(max(r["reward"] for r in rows))
