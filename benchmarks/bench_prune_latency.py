"""Does cutting MACs by pruning cut CPU latency? ResNet-18, real channel removal.

Compares the full model with pruned copies: keep 0.5 in every unit, and two policies at
about 50 % of the MACs (a uniform keep-ratio found on the cost model, and one that prunes
only the inside of the residual blocks, leaving the residual widths whole). MACs come from
the cost model (equal to FlopCounterMode counts); latency is one forward pass of a batch.

Usage::

    .venv/bin/python benchmarks/bench_prune_latency.py [--reps 10] [--warmup 2]
        [--batch 32] [--size 224] [--threads 2] [--json out.json]

Repetitions are interleaved: each repetition times every model once, in turn, so that slow
phases of a shared machine hit all models alike. Reported are the median latency per model
and the median, over repetitions, of each model's latency divided by the baseline's in the
same repetition.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autoshrink.compression.cost import Cost, cost
from autoshrink.compression.importance import channel_scores
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.prune import prune
from autoshrink.compression.units import UnitGraph, build_units


def uniform_keep_for(graph: UnitGraph, names: list[str], target: float) -> dict[str, float]:
    """The keep-ratio, the same for ``names``, whose MACs are closest to ``target`` x full."""
    full = cost(graph).macs
    lo, hi = 0.01, 1.0
    for _ in range(40):  # bisection on the exact cost model; MACs grow with keep
        mid = (lo + hi) / 2
        if cost(graph, dict.fromkeys(names, mid)).macs > target * full:
            hi = mid
        else:
            lo = mid
    best = min(
        (lo, hi), key=lambda k: abs(cost(graph, dict.fromkeys(names, k)).macs - target * full)
    )
    return dict.fromkeys(names, best)


def time_once(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds for one forward pass."""
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def _parse_args() -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions (10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions (2)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (32)")
    parser.add_argument("--size", type=int, default=224, help="image side (224)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser.parse_args()


def _policies(graph: UnitGraph) -> Mapping[str, dict[str, float]]:
    """The compared policies, by name: unit -> keep-ratio (empty for the baseline)."""
    inner = [u.name for u in graph.units if u.name.endswith(".conv1") and "layer" in u.name]
    policies: Mapping[str, dict[str, float]] = {
        "baseline": {},
        "keep 0.5 in every unit": {u.name: 0.5 for u in graph.units},
        "uniform keep, ~50 % MACs": uniform_keep_for(graph, list(graph.unit_names), 0.5),
        "block-inner convs only, ~50 % MACs": uniform_keep_for(graph, inner, 0.5),
    }
    return policies


def _measure(
    models: dict[str, nn.Module], x: torch.Tensor, warmup: int, reps: int
) -> dict[str, list[float]]:
    """Seconds per forward pass of each model, over the ``reps`` timed repetitions."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for rep in range(warmup + reps):
            for name, model in models.items():  # interleaved: every model once per repetition
                seconds = time_once(model, x)
                if rep >= warmup:
                    times[name].append(seconds)
    return times


def _rows(
    graph: UnitGraph,
    policies: Mapping[str, dict[str, float]],
    times: dict[str, list[float]],
    full: Cost,
) -> list[dict[str, Any]]:
    """Per policy: its cost against ``full`` and its median latency, absolute and relative."""
    rows = []
    for name, keep in policies.items():
        c = cost(graph, keep)
        ratios = [t / b for t, b in zip(times[name], times["baseline"], strict=True)]
        rows.append(
            {
                "policy": name,
                "keep": round(next(iter(keep.values()), 1.0), 4),
                "macs": c.macs,
                "macs_ratio": c.macs / full.macs,
                "params_ratio": c.params / full.params,
                "latency_ms": 1e3 * statistics.median(times[name]),
                "latency_ratio": statistics.median(ratios),
            }
        )
    return rows


def _print_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The setup line and the markdown table."""
    print(
        f"resnet18, input {args.batch}x3x{args.size}x{args.size}, {args.threads} threads, "
        f"{args.reps} interleaved repetitions (medians)\n"
    )
    print("| policy | keep | GMACs | MACs ratio | params ratio | latency (ms) | latency ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['policy']} | {r['keep']:.3f} | {r['macs'] / 1e9:.2f} | {r['macs_ratio']:.3f} "
            f"| {r['params_ratio']:.3f} | {r['latency_ms']:.0f} | {r['latency_ratio']:.3f} |"
        )


def main() -> None:
    """Run the benchmark and print a markdown table."""
    args = _parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = build_model(ModelSpec("resnet18", num_classes=1000))
    graph = build_units(base, torch.zeros(1, 3, args.size, args.size))
    scores = channel_scores(graph, base, "l1")
    policies = _policies(graph)
    models = {
        name: prune(base, graph, keep, scores=scores).eval() for name, keep in policies.items()
    }
    full = cost(graph)
    x = torch.randn(args.batch, 3, args.size, args.size)
    times = _measure(models, x, args.warmup, args.reps)
    rows = _rows(graph, policies, times, full)
    _print_table(args, rows)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "times": times}, fh, indent=1)


if __name__ == "__main__":
    main()
