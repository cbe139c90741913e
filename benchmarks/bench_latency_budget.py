"""A latency-budget search on each runtime: the table's estimate against a fresh measurement.

Reproduce the "Latency budgets" table of docs/benchmarks.md on a quiet machine with::

    .venv/bin/python benchmarks/bench_latency_budget.py

For each runtime (eager, compiled, onnxruntime) it runs ``autoshrink search`` on ResNet-20
(digits by default) with ``--latency 0.6 --mode prune``, through the library
(:func:`autoshrink.agent.search.search`), in a fresh cache folder, so that each runtime's
latency table is measured (interleaved ratios to the full model) in this run. The table's
estimate and the fresh interleaved measurement of the shipped model against the baseline
(``result.json``'s ``latency_check``) are printed as the ratio of each to the budget
(1.0 = exactly at the budget; above 1 = the budget is broken), with the measurement's spread.
Table and check run at ``--latency-batch`` (default 32): at batch 1 on 8x8 digits, eager
ResNet-20 is per-operator overhead, and the table put its fewest channels at 0.82 of the
full model, so a 0.6 budget is refused; a runtime whose floor is above the budget gets a
"not reachable" row naming the floor.

Smoke run: ``--runtimes eager --episodes 2 --final-epochs 0 --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from autoshrink.compression.errors import BudgetInfeasibleError


def one_search(runtime: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """One search under ``--latency`` on ``runtime``; the row of the table."""
    from autoshrink.agent.search import SearchConfig, search

    config = SearchConfig.create(
        model=args.model,
        dataset=args.dataset,
        mode="prune",
        latency=args.latency,
        runtime=runtime,
        episodes=args.episodes,
        agent=args.agent,
        seed=args.seed,
        final_epochs=args.final_epochs,
        final_latency_repeats=args.rounds,
        latency_batch=args.latency_batch,
    )
    start = time.perf_counter()
    try:
        result = search(config, out / runtime)
    except BudgetInfeasibleError as exc:  # the table's floor is above the budget
        return {"runtime": runtime, "infeasible": str(exc)}
    check, comp = result["latency_check"], result["compressed"]
    return {
        "runtime": runtime,
        "estimate_over_budget": check["estimate_over_budget"],
        "measured_over_budget": check["measured_over_budget"],
        "measured_ratio": check["measured_ratio"],
        "spread": check["spread"],
        "met_by_measurement": check["met_by_measurement"],
        "macs_ratio": comp.get("macs_ratio"),
        "accuracy_points": 100
        * (result["compressed"]["accuracy"] - result["baseline"]["accuracy"]),
        "seconds": time.perf_counter() - start,
        "warning": check["warning"],
    }


def fresh_latency_cache(folder: Path) -> None:
    """Point the cache at ``folder``: the real cache's entries but no latency tables.

    So every runtime's table is measured in this run, while baselines and datasets are
    not trained or prepared again.
    """
    from autoshrink.compression.cache import cache_dir

    real = cache_dir()
    folder.mkdir(parents=True)
    for entry in real.iterdir() if real.is_dir() else []:
        if entry.name != "latency":
            (folder / entry.name).symlink_to(entry.resolve())
    os.environ["AUTOSHRINK_CACHE"] = str(folder)


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """The Markdown table."""
    print(
        f"\n### Latency budget {args.latency} on each runtime ({args.model}, {args.dataset}, "
        f"batch {args.latency_batch}, {args.threads} threads, {args.episodes} episodes of "
        f"{args.agent})\n"
    )
    print(
        "| runtime | estimate / budget | measured / budget | measured ratio | spread "
        "| met by measurement | MACs ratio | accuracy (pts) | time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "infeasible" in r:
            print(f"| {r['runtime']} | not reachable: {r['infeasible']} |")
            continue
        print(
            f"| {r['runtime']} | {r['estimate_over_budget']:.3f} | "
            f"**{r['measured_over_budget']:.3f}** | {r['measured_ratio']:.3f} | "
            f"{r['spread']:.1%} | {'yes' if r['met_by_measurement'] else 'NO'} | "
            f"{r['macs_ratio']:.3f} | {r['accuracy_points']:+.2f} | {r['seconds']:.0f} |"
        )
    for r in rows:
        if r.get("warning"):
            print(f"\nwarning ({r['runtime']}): {r['warning']}")


def main() -> None:
    """Parse the options, run one search per runtime, print Markdown (and JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtimes", nargs="+", default=["eager", "compiled", "onnxruntime"])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--latency", default="0.6", help="the latency budget")
    p.add_argument("--agent", default="ddpg")
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--final-epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=30, help="interleaved rounds of the check")
    p.add_argument("--latency-batch", type=int, default=32, help="batch of the table and the check")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folders (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "runs"
        fresh_latency_cache(Path(tmp) / "cache")
        rows = [one_search(runtime, args, out) for runtime in args.runtimes]
    print_table(rows, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
