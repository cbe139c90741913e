"""Pruned latency efficiency: does half the MACs run in half the time? ResNet-18, real pruning.

At each MACs target (default 50 % and 25 % of the full model) it builds:

- **autoshrink uniform**: one keep-ratio for every unit, bisected on the exact cost model;
- **autoshrink uniform, hw rounding**: the same on the graph with measured channel steps
  (:mod:`autoshrink.compression.channel_steps`, timed at ``--steps-batch``);
- **Torch-Pruning magnitude**: ``tp.pruner.MagnitudePruner`` (L1 magnitude, the classifier
  ignored), its ``pruning_ratio`` bisected to the same MACs;
- any searched policy given with ``--policy run/policy.json`` (its own steps apply).

Every model is then timed on each runtime (eager in the layout measured fastest for it,
and ``torch.compile``), all models interleaved round by round
(:func:`autoshrink.compression.timing.time_interleaved`). The latency ratio is the median of
the per-round ratios to the full model, with their spread (interquartile range over the
median); **efficiency** is the MACs ratio over the latency ratio (1.0 = latency falls as
fast as MACs).

Usage::

    .venv/bin/python benchmarks/bench_prune_latency.py [--batch 32] [--size 224]
        [--threads 2] [--rounds 10] [--targets 0.5,0.25] [--runtimes eager,compiled]
        [--policy run/policy.json ...] [--steps-batch 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from autoshrink.compression.channel_steps import measure_steps
from autoshrink.compression.cost import cost
from autoshrink.compression.counting import count_macs
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, kept_channels
from autoshrink.compression.prune import prune_channels
from autoshrink.compression.runtime import deployed_layout, runner
from autoshrink.compression.timing import relative_spread, time_interleaved
from autoshrink.compression.units import UnitGraph, build_units


def bisect(value_at: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """The x in [lo, hi] whose ``value_at(x)`` (increasing in x) is closest to ``target``."""
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if value_at(mid) > target else (mid, hi)
    return min((lo, hi), key=lambda x: abs(value_at(x) - target))


def uniform_model(base: nn.Module, graph: UnitGraph, target: float) -> nn.Module:
    """``base`` pruned with one keep-ratio everywhere, at ``target`` of the MACs."""
    full = cost(graph).macs

    def macs(k: float) -> float:
        return cost(graph, dict.fromkeys(graph.unit_names, k)).macs / full

    keep = bisect(macs, target, 0.01, 1.0)
    kept = {u.name: u.kept(keep) for u in graph.units}
    return prune_channels(base, graph, kept).eval()


def tp_model(base: nn.Module, x1: torch.Tensor, target: float) -> nn.Module:
    """``base`` pruned by Torch-Pruning's MagnitudePruner to ``target`` of the MACs."""
    full = count_macs(base, x1)

    def pruned(ratio: float) -> nn.Module:
        model = copy.deepcopy(base)
        imp = tp.importance.MagnitudeImportance(p=1)
        pruner = tp.pruner.MagnitudePruner(
            model, x1, importance=imp, pruning_ratio=ratio, ignored_layers=[model.fc]
        )
        pruner.step()
        return model.eval()

    ratio = bisect(lambda r: -count_macs(pruned(r), x1) / full, -target, 0.0, 0.95)
    return pruned(ratio)


def _models(args: argparse.Namespace) -> dict[str, nn.Module]:
    """The compared models by name, the full model first."""
    torch.manual_seed(0)
    base = build_model(ModelSpec("resnet18", num_classes=1000)).eval()
    x1 = torch.zeros(1, 3, args.size, args.size)
    graph = build_units(base, x1)
    stepped = graph.with_steps(measure_steps(graph, batch=args.steps_batch))
    models: dict[str, nn.Module] = {"full": base}
    for t in args.targets:
        models[f"autoshrink uniform @{t:g}"] = uniform_model(base, graph, t)
        models[f"autoshrink uniform, hw rounding @{t:g}"] = uniform_model(base, stepped, t)
        models[f"Torch-Pruning magnitude @{t:g}"] = tp_model(base, x1, t)
    for path in args.policy:
        policy = Policy.load(path)
        kept = kept_channels(policy, graph)
        label = f"searched {Path(path).parent.name}" + (", hw rounding" if policy.steps else "")
        models[label] = prune_channels(base, graph, kept).eval()
    return models


def _time(
    models: dict[str, nn.Module], x: torch.Tensor, runtime: str, rounds: int
) -> list[dict[str, Any]]:
    """Per model: latency median, ratio to the full model (median of per-round ratios)."""
    layouts = {n: deployed_layout(m, x) if runtime == "eager" else "-" for n, m in models.items()}
    runners = {
        n: runner(m, x, runtime, layouts[n] if runtime == "eager" else "auto")
        for n, m in models.items()
    }
    samples = time_interleaved(runners, x, rounds)
    rows = []
    for name, times in samples.items():
        ratios = [t / b for t, b in zip(times, samples["full"], strict=True)]
        rows.append(
            {
                "runtime": runtime,
                "model": name,
                "layout": layouts[name],
                "latency_ms": 1e3 * statistics.median(times),
                "latency_ratio": statistics.median(ratios),
                "spread": relative_spread(ratios),
            }
        )
    return rows


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32, help="batch size (32)")
    p.add_argument("--size", type=int, default=224, help="image side (224)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (10)")
    p.add_argument("--targets", default="0.5,0.25", help="MACs targets (0.5,0.25)")
    p.add_argument("--runtimes", default="eager,compiled", help="runtimes (eager,compiled)")
    p.add_argument("--policy", action="append", default=[], help="a searched policy.json")
    p.add_argument("--steps-batch", type=int, default=1, help="batch of the step timing (1)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    args.targets = [float(t) for t in args.targets.split(",")]
    return args


def main() -> None:
    """Build the models, time them per runtime, print the table."""
    args = _parse_args()
    torch.set_num_threads(args.threads)
    models = _models(args)
    x1 = torch.zeros(1, 3, args.size, args.size)
    macs = {n: count_macs(m, x1) for n, m in models.items()}
    x = torch.randn(args.batch, 3, args.size, args.size)
    rows = []
    for runtime in args.runtimes.split(","):
        rows += _time(models, x, runtime, args.rounds)
    print(
        f"resnet18, input {args.batch}x3x{args.size}x{args.size}, {args.threads} threads, "
        f"{args.rounds} interleaved rounds, torch {torch.__version__}\n"
    )
    print(
        "| runtime | model | MACs ratio | layout | latency (ms) | latency ratio (spread) "
        "| efficiency |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        r["macs_ratio"] = macs[r["model"]] / macs["full"]
        r["efficiency"] = r["macs_ratio"] / r["latency_ratio"]
        print(
            f"| {r['runtime']} | {r['model']} | {r['macs_ratio']:.3f} | {r['layout']} "
            f"| {r['latency_ms']:.0f} | {r['latency_ratio']:.3f} ({r['spread']:.1%}) "
            f"| {r['efficiency']:.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
