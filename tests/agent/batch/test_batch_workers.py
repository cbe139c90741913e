"""Batch jobs that set ``workers``: checked in the spec, run with their own workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoshrink.agent.batch.results import read_records
from autoshrink.agent.batch.runner import BatchOptions, default_workers, run_batch
from autoshrink.agent.batch.spec import SpecError, parse_spec

SPEC = """
[defaults]
model = "smallcnn"
dataset = "digits"
baseline_epochs = 2
episodes = 4
warmup = 2
final_epochs = 0
final_latency_repeats = 2

[[jobs]]
workers = 2

[[jobs]]
seed = 1
"""


def test_a_job_may_set_workers_and_then_occupies_that_many_cores() -> None:
    two, one = parse_spec(SPEC).jobs
    assert two.search_config().agent.workers == 2 and one.search_config().agent.workers == 1
    assert two.cores == 2 and one.cores == 1
    assert default_workers([two, one], cpus=4) == 2  # 4 cores, 2 a job


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("workers = 0", "workers must be a positive integer, got 0"),
        ('workers = "2"', "workers must be a positive integer, got '2'"),
        ('backend = "slurm"', "backend must be one of"),
        ('address = "auto"', "an address is for the ray backend"),
    ],
)
def test_bad_worker_settings_name_their_line(line: str, expected: str) -> None:
    text = f'[[jobs]]\nmodel = "smallcnn"\n{line}\n'
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.toml")
    assert "line 3 (jobs[0]." in str(info.value) and expected in str(info.value)


def test_a_batch_job_with_two_workers_runs_its_search_on_them(
    tmp_path: Path, cache_root: Path
) -> None:
    out = tmp_path / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        run_batch(parse_spec(SPEC), out, BatchOptions(workers=1, threads=1))
    records = {r["settings"].get("workers", 1): r for r in read_records(out / "results.jsonl")}
    assert set(records) == {1, 2}
    for workers, record in records.items():
        assert record["status"] == "ok", record.get("error")
        run = out / record["run_dir"]
        saved = json.loads((run / "config.json").read_text())
        assert saved["data"]["agent"]["data"]["workers"] == workers
        lines = (run / "episodes.jsonl").read_text().splitlines()
        assert len(lines) == 4 and all(json.loads(x)["budgets_met"] for x in lines)
