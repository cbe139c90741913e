"""Batch throughput: the same 8 small searches on local 1 worker, local 2 workers and Ray.

Each configuration runs the same spec in a fresh batch folder, so no job is skipped. The
jobs are smallcnn searches on digits (2-epoch baseline, trained once before any timing),
two budgets × two agents × two seeds, a few episodes each and a 1-epoch final fine-tune,
one torch thread per job. The time is the wall time of :func:`run_batch`, from the call to
its return: it includes starting the pool's processes (spawn, imports) and, for Ray,
starting a local Ray instance (timed separately as well).

Usage::

    .venv/bin/python benchmarks/bench_batch.py [--episodes 6] [--cpus 2]
        [--configs local1,local2,ray] [--out /tmp/bench-batch] [--json out.json]
        [--search-workers K]

``--search-workers K`` sets every job's ``workers`` (episodes its search evaluates at
once, each in its own process); the table shows it in its own column.

It prints a markdown table: wall time, jobs per minute, speed-up over local 1 worker, the
mean job time as the jobs report it, and the load average before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from autoshrink.agent.batch.runner import BatchOptions, run_batch
from autoshrink.agent.batch.spec import parse_spec
from autoshrink.compression.baselines import baseline
from autoshrink.compression.models import ModelSpec

SPEC = """
[defaults]
model = "smallcnn"
dataset = "digits"
baseline_epochs = 2
episodes = {episodes}
warmup = 2
final_epochs = 1
{workers}
[grid]
budgets = [{{ flops = 0.5 }}, {{ flops = 0.3, size = 0.1 }}]
agents = ["ddpg", "random"]
seeds = [0, 1]
"""


def run_config(name: str, text: str, out: Path, cpus: int) -> dict[str, Any]:
    """Run the spec once under configuration ``name`` and return its timings."""
    spec = parse_spec(text)
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    load = os.getloadavg()[0]
    init_s = 0.0
    start = time.perf_counter()
    if name == "ray":
        import ray

        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - start
        options = BatchOptions(backend="ray", workers=cpus)
    else:
        options = BatchOptions(workers=int(name.removeprefix("local")))
    try:
        report = run_batch(spec, folder, options)
    finally:
        if name == "ray":
            import ray

            ray.shutdown()
    wall = time.perf_counter() - start
    ok = sum(r["status"] == "ok" for r in report.records)
    return {
        "config": name,
        "jobs": len(spec.jobs),
        "ok": ok,
        "wall_s": wall,
        "init_s": init_s,
        "jobs_per_min": 60.0 * len(spec.jobs) / wall,
        "mean_job_s": statistics.mean(r["wall_time_s"] for r in report.records),
        "load_before": load,
    }


def main() -> None:
    """Parse the flags, warm the baseline cache, run each configuration, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=6)
    parser.add_argument("--cpus", type=int, default=2, help="workers of the Ray instance")
    parser.add_argument("--configs", default="local1,local2,ray")
    parser.add_argument("--out", default="/tmp/bench-batch")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--search-workers",
        type=int,
        default=1,
        help="episodes each job's search evaluates at once (the spec's workers key; 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    baseline(ModelSpec("smallcnn", 10, 1), "digits", epochs=2)  # cached before timing
    workers = f"workers = {args.search_workers}\n" if args.search_workers > 1 else ""
    text = SPEC.format(episodes=args.episodes, workers=workers)
    rows = [run_config(c, text, Path(args.out), args.cpus) for c in args.configs.split(",")]
    base = next((r["wall_s"] for r in rows if r["config"] == "local1"), None)
    print(
        "| backend | search workers | jobs ok | wall (s) | jobs/min | speed-up | mean job (s) "
        "| load before |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{base / r['wall_s']:.2f}x" if base else "-"
        label = r["config"].replace("local", "local, ").replace(", 1", ", 1 worker")
        label = label.replace(", 2", ", 2 workers")
        if r["config"] == "ray":
            label = f"ray, local instance of {args.cpus} CPUs (init {r['init_s']:.1f} s)"
        print(
            f"| {label} | {args.search_workers} | {r['ok']}/{r['jobs']} | {r['wall_s']:.1f} "
            f"| {r['jobs_per_min']:.2f} "
            f"| {speed} | {r['mean_job_s']:.1f} | {r['load_before']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
