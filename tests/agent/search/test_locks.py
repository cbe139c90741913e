"""One process at a time in a run folder or a batch folder; a dead holder's lock is taken over."""

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
from autoshrink.compression.locking import FolderLockedError, hold
from autoshrink.scripts.cli import main
from tests.agent.search.test_search_toy import tiny
from tests.agent.toy_env import ToyCompressionEnv

ROOT = Path(__file__).resolve().parents[3]
SLOW_SEARCH = """
import sys, time
import torch
torch.set_num_threads(1)
from autoshrink.agent.search.loop import run_search
from tests.agent.search.test_search_toy import tiny
from tests.agent.toy_env import ToyCompressionEnv

class SlowEnv(ToyCompressionEnv):
    def step(self, action):
        time.sleep(0.02)
        return super().step(action)

run_search(SlowEnv(), tiny("random", episodes=2000), sys.argv[1])
"""


def start(code: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=ROOT)


def wait_for(path: Path, proc: subprocess.Popen[bytes], lines: int = 1) -> None:
    deadline = time.monotonic() + 120
    while not (path.exists() and path.read_text().count("\n") >= lines):
        assert proc.poll() is None and time.monotonic() < deadline, "the holder never started"
        time.sleep(0.05)


def test_a_second_search_on_a_busy_folder_is_refused_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    holder = start(SLOW_SEARCH, str(out))
    try:
        wait_for(out / "episodes.jsonl", holder, lines=3)
        before = (out / "episodes.jsonl").read_text()
        with pytest.raises(FolderLockedError, match=f"in use by process {holder.pid}"):
            run_search(ToyCompressionEnv(), tiny("random", episodes=5), out, resume=True)
        assert (out / "episodes.jsonl").read_text().startswith(before)  # nothing rewritten
        # the CLI refuses before it builds anything
        assert main(["search", "--resume", "--out", str(out)]) == 2
        assert f"in use by process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock is stale: a resume takes it over and continues the search
    logged = (out / "episodes.jsonl").read_text().count("\n")
    result = run_search(ToyCompressionEnv(), tiny("random", episodes=logged + 2), out, resume=True)
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == list(range(result.episodes))


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with hold(tmp_path / "f", "search"), hold(tmp_path / "f", "search"):
        pass
    with hold(tmp_path / "f", "search"):  # released: taken again
        pass


def test_a_second_batch_driver_is_refused_and_each_job_is_recorded_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(
        "[defaults]\nbaseline_epochs = 1\nfinal_epochs = 0\nepisodes = 2\n"
        '[grid]\nmodels = ["smallcnn"]\nseeds = [0, 1]\n'
    )
    out = tmp_path / "out"
    driver = "import sys\nfrom autoshrink.scripts.cli import main\nsys.exit(main(sys.argv[1:]))"
    first = start(driver, "batch", str(spec), "--out", str(out), "--workers", "1")
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").exists() or not (out / ".lock").read_text().strip():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert main(["batch", str(spec), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"in use by process {first.pid}" in err and len(err.strip().splitlines()) == 1
    finally:
        assert first.wait(timeout=600) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["job"] for r in records) == sorted({r["job"] for r in records})
    assert len(records) == 2
