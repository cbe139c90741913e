r"""Transfer: an agent searched on ResNet-20, played zero-shot on ResNet-32, against searching.

For each seed the script searches the *source* model with DDPG, then compares on the
*target* model, at the same budget and with the same final fine-tune
(:func:`autoshrink.agent.search.finish.finish_search`, seeded with the run's seed, for every row):

- ``transfer``: the source agent played once, deterministically, on the target's env
  (:func:`autoshrink.agent.transfer.transfer`; 1 evaluation);
- ``depth map``: the source's best policy stretched over the target by relative depth
  (:func:`autoshrink.compression.policy_map.map_depth`) and proposed through the target's
  budget clamp (:func:`autoshrink.agent.transfer.replay`; 1 evaluation);
- ``fresh ddpg``: a new DDPG search on the target with as many episodes as the source had;
- ``uniform``: the uniform baseline (one keep-ratio and one bit-width, bisected to the
  budget) with the same number of episodes.

It prints a markdown table (final *test* accuracy, mean ± std over seeds; evaluations and
search wall time on the target; realised MACs and bytes ratios; budgets met) and writes
every run's numbers as JSON.

Usage::

    .venv/bin/python benchmarks/bench_transfer.py [--source resnet20] [--target resnet32]
        [--dataset fashion-mnist] [--budget joint:flops=0.5+size=0.1] [--seeds 0,1,2]
        [--episodes 100] [--warmup 25] [--finetune-steps 20] [--final-epochs 2]
        [--train-subset 10000] [--val-size 2048] [--baseline-epochs 5]
        [--source-runs DIR] [--methods transfer,uniform] [--fresh-seeds 0]
        [--out runs/bench-transfer] [--json out.json]

    # a smoke test at toy scale (digits, a minute):
    .venv/bin/python benchmarks/bench_transfer.py --dataset digits --train-subset 0 \\
        --baseline-epochs 1 --episodes 3 --warmup 1 --seeds 0 --final-epochs 0 \\
        --finetune-steps 0 --out /tmp/bench-transfer-smoke

Setup as in ``bench_agents.py`` (whose helpers it imports): a seeded class-stratified
train subset for CPU, a fixed val subset for the env's scores, the whole test split for the
table; baselines cached under ``<cache>/bench-fidelity/train<N>``; one env per model,
shared by every method and seed (its evaluator is a pure function of the realised policy).
Every run goes to ``<out>/<method>/seed<k>``; a finished run is read back, an interrupted
search resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_agents import cache_folder, log, mean_std, parse_budget, with_val_subset

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.config import FinalConfig
from autoshrink.agent.search.finish import finish_search
from autoshrink.agent.search.loop import SearchResult, run_search
from autoshrink.agent.search.transfer import replay, transfer
from autoshrink.compression import baselines
from autoshrink.compression.cache import cache_dir
from autoshrink.compression.data import load_dataset
from autoshrink.compression.models import ModelSpec
from autoshrink.compression.policy import Policy
from autoshrink.compression.policy_map import map_depth
from autoshrink.env.compression_env import CompressionEnv
from autoshrink.env.config import EnvConfig

METHODS = ("transfer", "depth map", "fresh ddpg", "uniform")


def finished(
    env: CompressionEnv,
    out: Path,
    args: argparse.Namespace,
    search: Callable[[CompressionEnv, Path], SearchResult],
    seed: int,
) -> dict[str, Any]:
    """Run ``search`` on ``env`` and the shared final fine-tune (or read the finished run).

    The final fine-tune is seeded with the run's seed, for every method alike.
    """
    path = out / "result.json"
    if path.exists():
        return json.loads(path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    calls0, wall0 = env.evaluator.calls, time.perf_counter()
    result = search(env, out)
    search_s = time.perf_counter() - wall0
    assert result.best_policy is not None
    result.best_policy.save(out / "policy.json")
    final = FinalConfig(epochs=args.final_epochs, lr=args.final_lr, latency_repeats=5)
    report = finish_search(env, result, final, seed=seed)
    report["bench"] = {"evaluations": env.evaluator.calls - calls0, "search_s": search_s}
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def method_runs(
    source_agent: Path, mapped: Policy, seed: int, episodes: int, warmup: int
) -> dict[str, Callable[[CompressionEnv, Path], SearchResult]]:
    """How each method finds its policy on the target env, written to a run folder."""

    def search(algorithm: str) -> Callable[[CompressionEnv, Path], SearchResult]:
        def run(env: CompressionEnv, out: Path) -> SearchResult:
            config = AgentConfig(algorithm, episodes, warmup, seed=seed)
            return run_search(env, config, out, resume=(out / "config.json").exists())

        return run

    return {
        "transfer": lambda env, out: transfer(source_agent, env, out, seed=seed),
        "depth map": lambda env, out: replay(env, mapped, out, seed=seed),
        "fresh ddpg": search("ddpg"),
        "uniform": search("uniform"),
    }


def _parser() -> argparse.ArgumentParser:
    """The command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="resnet20")
    p.add_argument("--target", default="resnet32")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--budget", default="joint:flops=0.5+size=0.1", help="mode:metric=value+...")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--warmup", type=int, default=25)
    p.add_argument("--finetune-steps", type=int, default=None, help="env default when unset")
    p.add_argument("--final-epochs", type=int, default=2)
    p.add_argument("--final-lr", type=float, default=0.02)
    p.add_argument("--train-subset", type=int, default=10000, help="0 = whole train split")
    p.add_argument("--val-size", type=int, default=2048)
    p.add_argument("--baseline-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--source-runs",
        default=None,
        help="reuse finished source searches: DIR/seed<k> (e.g. a bench_agents.py ddpg folder "
        "of the same budget and settings)",
    )
    p.add_argument("--methods", default=",".join(METHODS), help="which of " + ", ".join(METHODS))
    p.add_argument(
        "--fresh-seeds", default=None, help="seeds of the fresh target search (default: --seeds)"
    )
    p.add_argument("--out", default="runs/bench-transfer")
    p.add_argument("--json", default=None)
    return p


def _selection(
    p: argparse.ArgumentParser, args: argparse.Namespace
) -> tuple[list[int], list[int], list[str]]:
    """The seeds, the seeds of the fresh search, and the methods (``p.error`` on unknown)."""
    seeds = [int(s) for s in args.seeds.split(",")]
    fresh_seeds = [int(s) for s in (args.fresh_seeds or args.seeds).split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return seeds, fresh_seeds, methods


def _envs(
    args: argparse.Namespace, mode: str, budgets: dict[str, str]
) -> tuple[CompressionEnv, CompressionEnv]:
    """The source's and the target's env, each on its cached baseline."""
    splits = load_dataset(args.dataset, seed=0, train_subset=args.train_subset or None)
    splits = with_val_subset(splits, args.val_size, seed=0)
    envs = {}
    for name in (args.source, args.target):
        spec = ModelSpec(name, splits.num_classes, splits.in_channels)
        with cache_folder(cache_dir() / "bench-fidelity" / f"train{args.train_subset}"):
            model, path = baselines.baseline(
                spec, args.dataset, epochs=args.baseline_epochs, seed=0, splits=splits
            )
        log(f"baseline {path}")
        settings: dict[str, Any] = {"model": name, "dataset": args.dataset, "mode": mode}
        if args.finetune_steps is not None:
            settings["finetune_steps"] = args.finetune_steps
        envs[name] = CompressionEnv(EnvConfig(**settings, **budgets), model=model, data=splits)
    return envs[args.source], envs[args.target]


def _run_seed(
    args: argparse.Namespace,
    source: CompressionEnv,
    target: CompressionEnv,
    seed: int,
    fresh_seeds: list[int],
    methods: list[str],
) -> list[dict[str, Any]]:
    """The source search of ``seed`` (when a method needs it), then each method's run."""
    rows: list[dict[str, Any]] = []
    root = Path(args.out)
    src = Path(args.source_runs or root / "source") / f"seed{seed}"
    mapped = Policy(units={})  # only the source-based methods need the source search
    if {"transfer", "depth map"} & set(methods):
        config = AgentConfig("ddpg", args.episodes, args.warmup, seed=seed)
        found = run_search(source, config, src, resume=(src / "config.json").exists())
        assert found.best_policy is not None
        mapped = map_depth(found.best_policy, target.graph)
    runs = method_runs(src / "agent.zip", mapped, seed, args.episodes, args.warmup)
    for method, search in runs.items():
        if method not in methods or (method == "fresh ddpg" and seed not in fresh_seeds):
            continue
        out = root / method.replace(" ", "-") / f"seed{seed}"
        report = finished(target, out, args, search, seed)
        comp = report["compressed"]
        rows.append({"method": method, "seed": seed, **report})
        log(
            f"seed {seed} {method}: test {comp['accuracy']:.4f}, "
            f"macs {comp.get('macs_ratio', 0):.3f}, bytes {comp.get('bytes_ratio', 0):.4f}, "
            f"evals {report['bench']['evaluations']}, met {report['budgets_met']}"
        )
    return rows


def _print_table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The heading line and the markdown table, one row per method that ran."""
    base = rows[0]["baseline"]["accuracy"] if rows else float("nan")
    print(
        f"{args.source} -> {args.target} on {args.dataset}, {args.budget}, "
        f"{args.episodes} episodes, baseline test {100 * base:.2f} %\n"
    )
    print("| method | evaluations on target | search s | test accuracy | MACs | bytes | met |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        evals = statistics.mean(r["bench"]["evaluations"] for r in mine)
        wall = statistics.mean(r["bench"]["search_s"] for r in mine)
        macs = statistics.mean(r["compressed"].get("macs_ratio", 0) for r in mine)
        size = statistics.mean(r["compressed"].get("bytes_ratio", 0) for r in mine)
        acc = mean_std([r["compressed"]["accuracy"] for r in mine])
        met = sum(bool(r["budgets_met"]) for r in mine)
        print(
            f"| {method} | {evals:.0f} | {wall:.0f} | {acc} | {macs:.3f} | {size:.4f} | "
            f"{met}/{len(mine)} |"
        )


def main() -> None:
    """Search the source per seed, compare the four methods on the target, print the table."""
    p = _parser()
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    seeds, fresh_seeds, methods = _selection(p, args)
    mode, budgets = parse_budget(args.budget)
    source, target = _envs(args, mode, budgets)

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        rows.extend(_run_seed(args, source, target, seed, fresh_seeds, methods))

    _print_table(args, rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
