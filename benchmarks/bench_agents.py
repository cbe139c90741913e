r"""Agent against baselines: final test accuracy at equal evaluations and equal fine-tune.

For each budget, each agent and each seed, the script runs one search with
:func:`autoshrink.agent.search.run_search` (the same number of episodes, i.e. evaluations,
for every agent), then finishes its best policy with
:func:`autoshrink.agent.search.finish.finish_search` (the same final fine-tune for every agent) and
reads the final *test* accuracy. It prints a markdown table of mean ± std over seeds, and
writes every run's numbers as JSON.

Usage::

    .venv/bin/python benchmarks/bench_agents.py [--agents ddpg,random,uniform,global]
        [--seeds 0,1,2] [--budgets prune:flops=0.2,prune:flops=0.1,joint:size=0.05]
        [--episodes 100] [--warmup 25] [--finetune-steps 20] [--final-epochs 2]
        [--train-subset 10000] [--val-size 2048] [--baseline-epochs 5]
        [--out runs/bench-agents] [--json out.json]

    # a smoke test at toy scale (digits, small CNN, seconds):
    .venv/bin/python benchmarks/bench_agents.py --dataset digits --model smallcnn \\
        --train-subset 0 --baseline-epochs 2 --episodes 4 --warmup 2 --seeds 0,1 \\
        --budgets prune:flops=0.5 --final-epochs 1 --out /tmp/bench-smoke

Setup:

* ResNet-20 on Fashion-MNIST by default. Training uses a seeded, class-stratified subset of
  ``--train-subset`` images (for CPU; 0 = all); the env scores on a fixed subset of
  ``--val-size`` val images; test accuracy is measured on the whole test split.
* The baseline is trained once (data seed 0) and cached, in the same folder as
  ``bench_fidelity.py``'s (``<cache>/bench-fidelity/train<N>``), since the cache key of
  ``compression.baselines`` does not cover the train subset.
* With ``--finalists k``, the ``k`` best distinct policies of each search (by search reward,
  at least ``--finalist-spacing`` apart) are each given the final fine-tune and scored on
  the *whole* val split, and the best on val is reported
  (:mod:`autoshrink.agent.search.finalists`); test is touched only by it.
* The final fine-tune of a run is seeded with the run's seed. ``uniform`` and ``global`` are
  deterministic searches, so their spread over seeds is that of the fine-tune alone.
* One env per budget, shared by every agent and seed: its evaluator is a pure function of
  the realised policy (seeded batches and fine-tune), so sharing only saves the CPU of
  re-scoring a policy another run already scored. Seeds vary the agent.
* Every run goes to ``<out>/<budget>/<agent>/seed<k>``; a finished run (with
  ``result.json``) is read back instead of re-run, and an interrupted one resumes, so the
  whole benchmark can be stopped and restarted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.config import FinalConfig
from autoshrink.agent.search.finish import finish_search
from autoshrink.agent.search.loop import run_search
from autoshrink.compression import baselines
from autoshrink.compression.cache import cache_dir
from autoshrink.compression.data import DataSplits, load_dataset
from autoshrink.compression.models import ModelSpec
from autoshrink.env.compression_env import CompressionEnv
from autoshrink.env.config import EnvConfig

DEFAULT_BUDGETS = "prune:flops=0.2,prune:flops=0.1,joint:size=0.05"


def log(message: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def cache_folder(path: Path) -> Iterator[None]:
    """Point ``$AUTOSHRINK_CACHE`` at ``path`` for the duration (baselines of a subset)."""
    old = os.environ.get("AUTOSHRINK_CACHE")
    os.environ["AUTOSHRINK_CACHE"] = str(path)
    try:
        yield
    finally:
        if old is None:
            del os.environ["AUTOSHRINK_CACHE"]
        else:
            os.environ["AUTOSHRINK_CACHE"] = old


def with_val_subset(splits: DataSplits, size: int, seed: int) -> DataSplits:
    """The same splits with val cut to a fixed, seeded subset of ``size`` images."""
    val = splits.val
    if not isinstance(val, TensorDataset) or size <= 0 or size >= len(val):
        return splits
    pick = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))[:size]
    x, y = val.tensors
    return dataclasses.replace(
        splits, val=TensorDataset(x[pick.sort().values], y[pick.sort().values])
    )


def add_setup_arguments(p: argparse.ArgumentParser) -> None:
    """The model, data and baseline flags that :func:`data_and_baseline` reads."""
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-subset", type=int, default=10000, help="0 = whole train split")
    p.add_argument("--val-size", type=int, default=2048)
    p.add_argument("--baseline-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)


def data_and_baseline(args: argparse.Namespace) -> tuple[DataSplits, DataSplits, nn.Module]:
    """The whole splits, the same with the val subset the env scores on, and the baseline.

    Uses ``args.dataset``, ``args.train_subset`` (0 = all), ``args.val_size``, ``args.model``
    and ``args.baseline_epochs``; the baseline is trained once and cached.
    """
    full = load_dataset(args.dataset, seed=0, train_subset=args.train_subset or None)
    splits = with_val_subset(full, args.val_size, seed=0)
    spec = ModelSpec(args.model, splits.num_classes, splits.in_channels)
    folder = cache_dir() / "bench-fidelity" / f"train{args.train_subset}"
    with cache_folder(folder):
        model, path = baselines.baseline(
            spec, args.dataset, epochs=args.baseline_epochs, seed=0, splits=splits
        )
    log(f"baseline {path}")
    return full, splits, model


def parse_budget(text: str) -> tuple[str, dict[str, str]]:
    """``"joint:size=0.05+flops=0.5"`` -> ``("joint", {"size": "0.05", "flops": "0.5"})``."""
    mode, _, rest = text.partition(":")
    budgets = dict(part.split("=", 1) for part in rest.split("+") if part)
    return mode, budgets


def run_one(
    env: CompressionEnv,
    agent: str,
    seed: int,
    args: argparse.Namespace,
    out: Path,
    full: DataSplits,
) -> dict[str, Any]:
    """One search and its final fine-tune (or the finished run's result).

    ``full`` are the splits with the whole val split, on which finalists are scored.
    """
    result_path = out / "result.json"
    earlier = json.loads(result_path.read_text()) if result_path.exists() else None
    if earlier is not None and finish_of(earlier) == (args.finalists, args.finalist_spacing):
        return earlier
    config = AgentConfig(
        algorithm=agent,
        episodes=args.episodes,
        warmup_episodes=args.warmup,
        seed=seed,
    )
    wall0, cpu0 = time.perf_counter(), time.process_time()
    calls0 = env.evaluator.calls
    search = run_search(env, config, out, resume=(out / "config.json").exists())
    final = FinalConfig(
        epochs=args.final_epochs,
        lr=args.final_lr,
        latency_repeats=5,
        finalists=args.finalists,
        finalist_spacing=args.finalist_spacing,
    )
    # The same fine-tune for every agent; its seed is the run's, so that the spread over
    # seeds of a deterministic baseline (uniform, global) is the fine-tune's own.
    report = finish_search(env, search, final, seed=seed, data=full)
    report["bench"] = {
        "evaluations": env.evaluator.calls - calls0,
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
    }
    if earlier is not None:  # a finished search, finished again with other finalists
        report["bench"] = {**earlier["bench"], "refinish_cpu_s": report["bench"]["cpu_s"]}
    result_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def finish_of(report: dict[str, Any]) -> tuple[int, float]:
    """A finished run's finalists count and spacing (0 before spacing existed)."""
    final = report["final"]
    return int(final.get("finalists", 1)), float(final.get("finalist_spacing", 0.0))


def mean_std(values: list[float]) -> str:
    """``mean ± std`` in percent (std over seeds); one seed is its value and ``(1 seed)``."""
    if not values:
        return "-"
    if len(values) == 1:  # a spread of 0.00 would claim a precision one seed cannot give
        return f"{100 * values[0]:.2f} (1 seed)"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def _parse_args() -> argparse.Namespace:
    """The command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", default="ddpg,random,uniform,global")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="mode:metric=value[+...],...")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--warmup", type=int, default=25)
    p.add_argument("--finetune-steps", type=int, default=None, help="env default when unset")
    p.add_argument("--final-epochs", type=int, default=2)
    p.add_argument("--final-lr", type=float, default=0.02)
    p.add_argument(
        "--finalists",
        type=int,
        default=1,
        help="best distinct policies fine-tuned and scored on val; a finished run with "
        "another count is finished again from its search",
    )
    p.add_argument(
        "--finalist-spacing",
        type=float,
        default=FinalConfig.finalist_spacing,
        help="least distance between finalists (mean keep difference per unit); a finished "
        "run with another spacing is finished again from its search",
    )
    add_setup_arguments(p)
    p.add_argument("--out", default="runs/bench-agents")
    p.add_argument("--json", default=None)
    return p.parse_args()


def _run_budget(
    budget: str,
    args: argparse.Namespace,
    agents: list[str],
    seeds: list[int],
    model: nn.Module,
    splits: DataSplits,
    full: DataSplits,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every (agent, seed) run of one budget, on one env the runs share.

    ``extra`` are further env settings (``bench_deep.py``'s ``max_sparsity``).
    """
    rows: list[dict[str, Any]] = []
    mode, given = parse_budget(budget)
    settings: dict[str, Any] = {"model": args.model, "dataset": args.dataset, "mode": mode}
    settings.update(extra or {})
    if args.finetune_steps is not None:
        settings["finetune_steps"] = args.finetune_steps
    env = CompressionEnv(EnvConfig(**settings, **given), model=model, data=splits)
    for agent in agents:
        for seed in seeds:
            out = Path(args.out) / budget.replace(":", "-").replace("=", "") / agent
            report = run_one(env, agent, seed, args, out / f"seed{seed}", full)
            comp = report["compressed"]
            rows.append({"budget": budget, "agent": agent, "seed": seed, **report})
            log(
                f"{budget} {agent} seed {seed}: test {comp['accuracy']:.4f}, "
                f"val {comp.get('val_accuracy_search')}, macs {comp.get('macs_ratio', 0):.3f}, "
                f"bytes {comp.get('bytes_ratio', 0):.4f}, file {comp.get('file_bytes', 0):,} B, "
                f"met {report['budgets_met']}"
            )
    return rows


def _print_table(rows: list[dict[str, Any]], agents: list[str]) -> None:
    """The markdown table: one row per budget, one column per agent."""
    budgets = list(dict.fromkeys(r["budget"] for r in rows))
    print(f"| budget | baseline test | {' | '.join(agents)} |")
    print(f"|---|---|{'---|' * len(agents)}")
    for b in budgets:
        mine = [r for r in rows if r["budget"] == b]
        base = mine[0]["baseline"]["accuracy"]
        cells = [
            mean_std([r["compressed"]["accuracy"] for r in mine if r["agent"] == a]) for a in agents
        ]
        print(f"| {b} | {100 * base:.2f} | {' | '.join(cells)} |")


def main() -> None:
    """Run every (budget, agent, seed), print the markdown table, optionally write JSON."""
    args = _parse_args()
    torch.set_num_threads(args.threads)
    agents = args.agents.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    full, splits, model = data_and_baseline(args)

    rows: list[dict[str, Any]] = []
    for budget in args.budgets.split(","):
        rows.extend(_run_budget(budget, args, agents, seeds, model, splits, full))

    _print_table(rows, agents)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
