"""Batches on real (tiny) searches: a local pool, a failing job, kill and resume, Ray.

Jobs are smallcnn and ResNet-20 on digits with 2-epoch baselines and a few episodes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from autoshrink.agent.batch.results import (
    append_record,
    finished_ids,
    pareto_front,
    read_records,
    repair_tail,
)
from autoshrink.agent.batch.runner import BatchEvent, BatchOptions, import_ray, run_batch
from autoshrink.agent.batch.spec import parse_spec
from autoshrink.agent.search.report import read_result
from autoshrink.compression.errors import AutoshrinkError

ROOT = Path(__file__).resolve().parents[3]

DEFAULTS = """
[defaults]
dataset = "digits"
baseline_epochs = 2
episodes = 3
warmup = 1
final_epochs = 0
final_latency_repeats = 2
"""
GRID = (
    DEFAULTS
    + """
[grid]
models = ["smallcnn", "resnet20"]
budgets = [{ flops = 0.5, size = 0.1 }]
seeds = [0, 1]
"""
)
BAD = '\n[[jobs]]\nmodel = "no_such_net"\n'
COMPARED = ("accuracy", "macs", "params", "bytes")


def run(text: str, out: Path, **options: Any) -> tuple[list[dict[str, Any]], list[BatchEvent]]:
    events: list[BatchEvent] = []
    run_batch(parse_spec(text), out, BatchOptions(**options), events.append)
    return read_records(out / "results.jsonl"), events


def max_running(events: list[BatchEvent]) -> int:
    running = peak = 0
    for event in events:
        running += {"start": 1, "end": -1}.get(event.kind, 0)
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def local_batch(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Any:
    """The 4-job grid plus a job with a bad model name, on 2 local workers."""
    out = tmp_path_factory.mktemp("batch") / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        records, events = run(GRID + BAD, out, workers=2)
    return out, records, events


def test_a_four_job_grid_runs_on_two_local_workers(local_batch):
    out, records, events = local_batch
    grid = [r for r in records if r["settings"]["model"] != "no_such_net"]
    assert len(grid) == 4 and {r["status"] for r in grid} == {"ok"}
    assert {(r["settings"]["model"], r["settings"]["seed"]) for r in grid} == {
        (m, s) for m in ("smallcnn", "resnet20") for s in (0, 1)
    }
    assert max_running(events) == 2
    pids = [r["pid"] for r in records]
    assert len(set(pids)) == len(pids) and os.getpid() not in pids  # a fresh process per job
    for record in grid:
        result, run_dir = record["result"], out / record["run_dir"]
        assert result["budgets_met"] is True and result["episodes"] == 3
        assert result["compressed"]["bytes"] <= 0.1 * result["baseline"]["bytes"]
        assert read_result(run_dir / "result.json") == result
        assert (run_dir / result["artifact"]).is_file() and (run_dir / "policy.json").is_file()
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 and rows[0].startswith("job,status,")
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failing_job_is_recorded_and_the_rest_finish(local_batch):
    _, records, _ = local_batch
    (bad,) = [r for r in records if r["settings"]["model"] == "no_such_net"]
    assert bad["status"] == "failed" and bad["result"] is None
    assert "UnsupportedModelError" in bad["error"] and "no_such_net" in bad["error"]
    assert sum(r["status"] == "ok" for r in records) == 4


def test_running_again_skips_every_recorded_job(local_batch):
    out, records, _ = local_batch
    before = (out / "results.jsonl").read_bytes()
    again, events = run(GRID + BAD, out, workers=2)
    assert [e.kind for e in events] == ["skip"] * 5
    assert (out / "results.jsonl").read_bytes() == before and again == records


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_and_resume_runs_each_job_exactly_once(tmp_path, cache_root):
    spec = tmp_path / "spec.toml"
    spec.write_text(DEFAULTS.replace("episodes = 3", "episodes = 4") + GRID_SMALL)
    out = tmp_path / "out"
    argv = ["batch", str(spec), "--out", str(out), "--workers", "2"]
    env = {**os.environ, "AUTOSHRINK_CACHE": str(cache_root), "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autoshrink.scripts", *argv], env=env, stdout=log, stderr=log
        )
    results = out / "results.jsonl"
    deadline = time.monotonic() + 240
    while not (results.exists() and results.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None, (tmp_path / "log").read_text()
        assert time.monotonic() < deadline, "no job finished in time"
        time.sleep(0.1)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = results.read_bytes()
    done = [json.loads(line)["job"] for line in first.splitlines()]
    assert 1 <= len(done) < 4, "the kill should leave jobs in flight"
    stamps = {j: (out / "runs" / j / "result.json").stat().st_mtime_ns for j in done}
    # the pool's workers die with the driver (no orphan keeps writing a run folder)
    deadline = time.monotonic() + 30
    while (alive := {p for p in workers if Path(f"/proc/{p}").exists()}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert not {p for p in alive if "zombie" not in _state(p)}, "workers outlived the batch"

    from autoshrink.scripts.cli import main

    assert main(argv) == 0
    after = results.read_bytes()
    assert after.startswith(first)
    records = read_records(results)
    ids = [r["job"] for r in records]
    assert sorted(ids) == sorted(j.id for j in parse_spec(spec.read_text()).jobs)
    assert len(ids) == len(set(ids)) == 4 and {r["status"] for r in records} == {"ok"}
    for job, stamp in stamps.items():  # a finished job is never run again
        assert (out / "runs" / job / "result.json").stat().st_mtime_ns == stamp


GRID_SMALL = """
[grid]
models = ["smallcnn"]
budgets = [{ flops = 0.5 }, { size = 0.1 }]
seeds = [0, 1]
"""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "zombie"


def test_the_ray_backend_gives_the_local_results_for_the_same_seeds(local_batch, tmp_path):
    ray = pytest.importorskip("ray")
    local_out, local_records, _ = local_batch
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        records, events = run(GRID, tmp_path / "ray", backend="ray", workers=2)
    finally:
        ray.shutdown()
    assert max_running(events) == 2
    local = {r["job"]: r for r in local_records if r["status"] == "ok"}
    assert sorted(r["job"] for r in records) == sorted(local)
    for record in records:
        mine, theirs = record["result"], local[record["job"]]["result"]
        assert record["status"] == "ok"
        for part in ("baseline", "compressed"):
            for key in COMPARED:
                assert mine[part][key] == theirs[part][key], (record["job"], part, key)
        assert mine["best_reward"] == theirs["best_reward"]
        policy = (tmp_path / "ray" / record["run_dir"] / "policy.json").read_text()
        local_policy = (local_out / record["run_dir"] / "policy.json").read_text()
        assert json.loads(policy)["data"]["units"] == json.loads(local_policy)["data"]["units"]


def test_an_apply_job_plays_a_searched_agent_on_another_model(local_batch, tmp_path):
    out, records, _ = local_batch
    (source,) = [
        r for r in records if r["settings"]["model"] == "smallcnn" and r["settings"]["seed"] == 0
    ]
    text = DEFAULTS + (
        f'\n[[jobs]]\nkind = "apply"\nagent_from = "{out / source["run_dir"]}"\n'
        'model = "resnet20"\nflops = 0.4\n'
    )
    (record,), _ = run(text.replace("episodes = 3\nwarmup = 1\n", ""), tmp_path / "o", workers=1)
    assert record["status"] == "ok", record.get("error")
    result = record["result"]
    assert (result["model"], result["agent"], result["episodes"]) == ("resnet20", "ddpg", 1)
    assert (
        result["budgets_met"] and result["compressed"]["macs"] <= 0.4 * result["baseline"]["macs"]
    )


def test_policy_from_apply_jobs_give_what_the_library_gives(tmp_path, smallcnn_checkpoint):
    from autoshrink.agent.batch.spec import load_spec
    from autoshrink.agent.search.policy_plan import plan_policy, policy_file
    from autoshrink.agent.search.report import realised_costs
    from autoshrink.compression.artifact import load_artifact, read_header
    from autoshrink.compression.counting import count_macs
    from autoshrink.compression.models import ModelSpec, build_model
    from autoshrink.compression.policy import Policy, uniform_policy
    from autoshrink.compression.units import build_units

    def units(name: str) -> Any:
        return build_units(build_model(ModelSpec(name, 10, 1)), torch.zeros(1, 1, 8, 8))

    (tmp_path / "src").mkdir()
    uniform_policy(units("smallcnn"), keep=0.5, bits=4).save(tmp_path / "src" / "policy.json")
    r20 = uniform_policy(units("resnet20"), keep=0.8, bits=6, pinned={"conv1": 8, "fc": 8})
    r20.with_meta(model="resnet20").save(tmp_path / "r20.json")
    torch.manual_seed(0)  # an untrained resnet32: costs do not depend on training
    torch.save(build_model(ModelSpec("resnet32", 10, 1)).state_dict(), tmp_path / "r32.pt")
    apply = '\n[[jobs]]\nkind = "apply"\n'
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[defaults]\ndataset = "digits"\nfinal_epochs = 0\nfinal_latency_repeats = 2\n'
        f'{apply}policy_from = "src"\nmodel = "smallcnn"\ncheckpoint = "{smallcnn_checkpoint}"\n'
        "flops = 0.6\n"
        f'{apply}policy_from = "r20.json"\nmap = "depth"\nmodel = "resnet32"\n'
        'checkpoint = "r32.pt"\nflops = 0.4\nsize = 0.1\n'
        f'{apply}policy_from = "src/policy.json"\nmodel = "smallcnn"\nflops = 0.1\n'
    )
    out = tmp_path / "out"
    run_batch(load_spec(spec), out, BatchOptions(workers=1))
    as_is, mapped, over = read_records(out / "results.jsonl")
    assert over["status"] == "failed" and "does not meet the budgets" in over["error"]
    assert 'map = "depth"' in over["error"]  # the hint names the spec key too
    assert as_is["result"]["source"] == {"policy": str(tmp_path / "src" / "policy.json")} | {
        "map": None
    }
    assert mapped["result"]["source"] == {"policy": str(tmp_path / "r20.json")} | {
        "map": "depth",
        "mapped_from": "resnet20",
    }
    assert mapped["result"]["agent"] == "policy+depth-map"
    assert mapped["result"]["compressed"]["macs_ratio"] <= 0.4  # keep 0.8 alone gives ~0.64
    for record in (as_is, mapped):
        assert record["status"] == "ok", record.get("error")
        s, result, run_dir = record["settings"], record["result"], out / record["run_dir"]
        budgets = {m: s[m] for m in ("flops", "size") if m in s}
        plan = plan_policy(
            policy_file(s["policy_from"]),
            s["model"],
            checkpoint=s["checkpoint"],
            budgets=budgets,
            map_name=s.get("map"),
        )
        env = plan.make_env()
        mine = plan.search_result(env, tmp_path / "lib").best_policy
        assert mine is not None
        costs, comp = realised_costs(env, mine), result["compressed"]
        assert (comp["macs"], comp["params"], comp["bytes"]) == (
            costs["flops"],
            costs["params"],
            costs["size"],
        )
        assert Policy.load(run_dir / "policy.json").units == mine.units
        artifact = run_dir / result["artifact"]  # counted on the shipped model itself
        x = torch.zeros(read_header(artifact).input_shape)
        assert count_macs(load_artifact(artifact), x) == comp["macs"]
        assert result["budgets_met"] is True


def test_a_job_past_its_timeout_is_recorded_and_the_next_job_runs(tmp_path, cache_root):
    # Through the local pool, not in this process: the timeout may stop the job in the
    # middle of an import, and the next job must not inherit that interpreter.
    slow = '[[jobs]]\nmodel = "smallcnn"\nepisodes = 500\ntimeout = 1.5\n'
    quick = '[[jobs]]\nmodel = "smallcnn"\nseed = 1\n'
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        records, _ = run(DEFAULTS + slow + quick, tmp_path / "out", workers=1)
    first, second = sorted(records, key=lambda r: r["settings"].get("seed", 0))
    assert first["status"] == "timeout", first["error"]
    assert "1.5 s" in first["error"] and first["result"] is None
    assert first["wall_time_s"] < 30
    assert second["status"] == "ok", second.get("error")
    assert second["pid"] != first["pid"]  # each job in a fresh process


def test_a_missing_ray_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AutoshrinkError, match=r"autoshrink\[ray\]"):
        import_ray()


def _append_many(path: str, writer: int) -> None:
    for i in range(50):
        append_record(Path(path), {"job": f"w{writer}-{i}", "pad": "x" * 9000})


def test_concurrent_appends_leave_only_whole_lines(tmp_path):
    import multiprocessing

    path = tmp_path / "results.jsonl"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.starmap(_append_many, [(str(path), w) for w in range(4)])
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 201  # each line > PIPE_BUF, none interleaved
    assert sorted(json.loads(line)["job"] for line in lines[:-1]) == sorted(
        f"w{w}-{i}" for w in range(4) for i in range(50)
    )


def test_a_torn_last_line_is_skipped_and_repaired(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, {"job": "a", "status": "ok"})
    append_record(path, {"job": "b", "status": "failed"})
    with open(path, "ab") as fh:
        fh.write(b'{"job": "c", "sta')  # a write cut short
    assert [r["job"] for r in read_records(path)] == ["a", "b"]
    assert repair_tail(path) == len(b'{"job": "c", "sta') and repair_tail(path) == 0
    append_record(path, {"job": "c", "status": "ok"})
    records = read_records(path)
    assert [r["job"] for r in records] == ["a", "b", "c"]
    assert finished_ids(records) == {"a", "b", "c"}
    assert finished_ids(records, retry_failed=True) == {"a", "c"}
    append_record(path, {"job": "b", "status": "ok"})  # a retry: the latest record counts
    assert finished_ids(read_records(path), retry_failed=True) == {"a", "b", "c"}


def test_the_pareto_front_keeps_only_undominated_points():
    points = [(3.0, 0.9), (1.0, 0.5), (2.0, 0.5), (2.0, 0.8), (4.0, 0.85), (0.5, 0.2)]
    assert pareto_front(points) == [5, 1, 3, 0]
    for i, (cost, acc) in enumerate(points):
        dominated = any(c <= cost and a >= acc and (c, a) != (cost, acc) for c, a in points)
        assert (i in pareto_front(points)) != dominated
