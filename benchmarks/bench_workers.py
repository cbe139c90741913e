"""Episodes per hour against --workers K: the same seeded search at K = 1 and K = 2.

Usage::

    .venv/bin/python benchmarks/bench_workers.py --rounds 2 --write   # the measurement
    .venv/bin/python benchmarks/bench_workers.py --episodes 4 --finetune-steps 5 --final-epochs 0

Each search is ``autoshrink search`` in a fresh process, exactly as a user runs it:
ResNet-20 on Fashion-MNIST (``--dataset``), joint mode with the default budgets, DDPG,
``--episodes`` episodes of ``--finetune-steps`` fine-tune steps each, seed 0, one torch
thread per process (``--threads 1``: the search's own process, and each worker), then a
``--final-epochs`` final fine-tune of ``--finalists`` finalists. Only the search is timed
(``search_time_s`` of ``result.json``: from the start of the search, worker start-up
included, to its last episode); the final fine-tune is not, but its test accuracy is
reported. The baseline is trained (on every core; 5 epochs on Fashion-MNIST, about half an
hour on 2 cores) or loaded once, before any timing.

The K values run one after the other, never at once (they would share the cores), in
``--rounds`` rounds whose order alternates (1 2, then 2 1, ...), so that a drift of the
machine's load does not favour one K. It prints a markdown table: per K, the median
search time and its range over the rounds, episodes per hour, the ratio to K = 1, the
best search reward and the final test accuracy, and the load average before each run.
``--write`` puts the table in ``docs/benchmarks.md`` between its markers (every other
section is left as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_gpu import write_section

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START = "<!-- bench_workers: start -->"
END = "<!-- bench_workers: end -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2", help="the K values, comma-separated (1,2)")
    p.add_argument("--episodes", type=int, default=40, help="episodes per search (40)")
    p.add_argument("--warmup", type=int, default=None, help="random episodes (the default)")
    p.add_argument("--finetune-steps", type=int, default=100, help="per episode (100)")
    p.add_argument("--final-epochs", type=int, default=1, help="final fine-tune epochs (1)")
    p.add_argument("--finalists", type=int, default=1, help="finalists fine-tuned (1)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--checkpoint", default=None, help="trained weights (default: the cache's)")
    p.add_argument("--rounds", type=int, default=1, help="runs of every K, order alternating")
    p.add_argument("--write", action="store_true", help=f"write the table into {DOCS.name}")
    p.add_argument("--docs", type=Path, default=DOCS)
    args = p.parse_args(argv)
    args.warm = False
    return args


def search_argv(args: argparse.Namespace, workers: int, out: Path) -> list[str]:
    """The ``autoshrink search`` command line of one run."""
    argv = ["search", "--model", args.model, "--dataset", args.dataset, "--seed", "0"]
    argv += ["--episodes", str(args.episodes), "--finetune-steps", str(args.finetune_steps)]
    argv += ["--final-epochs", str(args.final_epochs), "--finalists", str(args.finalists)]
    argv += ["--workers", str(workers), "--device", "cpu"]
    argv += [] if args.warm else ["--threads", "1"]  # the warm-up trains on every core
    if args.warmup is not None:
        argv += ["--warmup", str(args.warmup)]
    if args.checkpoint is not None:
        argv += ["--checkpoint", args.checkpoint]
    return [*argv, "--out", str(out), "--json"]


def run_search(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    """One search in a fresh process; its timing, reward and test accuracy."""
    load = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="bench_workers-") as tmp:
        argv = search_argv(args, workers, Path(tmp) / "run")
        cmd = [sys.executable, "-m", "autoshrink.scripts", *argv]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"bench_workers: the K={workers} search failed:\n{done.stderr}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = float(report["search_time_s"])
    row = {"workers": workers, "episodes": report["episodes"], "search_s": seconds}
    row |= {"best_reward": report["best_reward"], "load": load}
    row["test_accuracy"] = report["compressed"]["accuracy"]
    print(f"bench_workers: K={workers}: {seconds:.1f} s, {row}", file=sys.stderr, flush=True)
    return row


def warm_up(args: argparse.Namespace) -> None:
    """Train or load the baseline (and prepare the data) before any timing."""
    settings = argparse.Namespace(**{**vars(args), "episodes": 1, "finetune_steps": 0})
    settings.final_epochs, settings.warmup, settings.warm = 0, 0, True
    start = time.perf_counter()
    run_search(settings, 1)
    print(f"bench_workers: baseline ready in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def measure(args: argparse.Namespace, ks: list[int]) -> list[dict[str, Any]]:
    """Every K, ``args.rounds`` times, in alternating order."""
    rows = []
    for r in range(args.rounds):
        for k in ks if r % 2 == 0 else ks[::-1]:
            rows.append(run_search(args, k))
    return rows


def table(args: argparse.Namespace, rows: list[dict[str, Any]], ks: list[int]) -> str:
    """The markdown section: the settings, one row per K, and how to reproduce it."""
    by_k = {k: [r for r in rows if r["workers"] == k] for k in ks}
    median = {k: statistics.median(r["search_s"] for r in by_k[k]) for k in ks}
    base = median[ks[0]]
    lines = [
        f"`{' '.join(['bench_workers.py', *sys.argv[1:]])}` on {time.strftime('%Y-%m-%d')}: "
        f"{args.model} on {args.dataset}, DDPG, {args.episodes} episodes of "
        f"{args.finetune_steps} fine-tune steps, one torch thread per process, "
        f"{os.cpu_count()} logical cores, {args.rounds} round(s), order alternating.",
        "",
        "| K | runs | search s (median, range) | episodes/hour | vs K=1 "
        "| best reward | final test acc | load before |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in ks:
        runs, secs = by_k[k], [r["search_s"] for r in by_k[k]]
        per_hour = 3600.0 * runs[0]["episodes"] / median[k]
        rewards = ", ".join(f"{r['best_reward']:.4f}" for r in runs)
        accs = ", ".join(f"{r['test_accuracy']:.2%}" for r in runs)
        loads = ", ".join(f"{r['load']:.1f}" for r in runs)
        lines.append(
            f"| {k} | {len(runs)} | {median[k]:.1f} ({min(secs):.1f}–{max(secs):.1f}) "
            f"| {per_hour:.0f} | {base / median[k]:.2f}× | {rewards} | {accs} | {loads} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Warm up, measure every K, print the table and write it if asked."""
    args = parse_args(argv)
    ks = [int(k) for k in args.workers.split(",")]
    warm_up(args)
    section = table(args, measure(args, ks), ks)
    print(section, end="")
    if args.write:
        write_section(args.docs, section, START, END)
        print(f"bench_workers: wrote its section of {args.docs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
