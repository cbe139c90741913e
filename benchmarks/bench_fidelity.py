"""Reward fidelity: how well the env's episode reward ranks policies by their real accuracy.

For a set of seeded random policies, realised through the env's hard-budget clamp, the
script computes the reward the env gives under several evaluation settings (BatchNorm
recalibration or not, 0 or N fine-tune steps) and the "truth": the test accuracy of the
same policy after a longer fine-tune. It reports the Spearman rank correlation of each
setting's reward with the truth, and the evaluation time per episode.

Usage::

    .venv/bin/python benchmarks/bench_fidelity.py [--policies 20] [--train-subset 10000]
        [--val-size 2048] [--baseline-epochs 5] [--truth-epochs 2] [--truth-lr 0.02]
        [--mode prune --flops 0.2 | --mode joint --size 0.1] [--json out.json]

Setup:

* ResNet-20 on Fashion-MNIST. Training uses a seeded, class-stratified subset of
  ``--train-subset`` images (for CPU); the env scores on a fixed, seeded subset of
  ``--val-size`` images of the val split; the truth is measured on the whole test split
  (10,000 images).
* The baseline comes from ``compression.baselines.baseline`` (cached). Its cache key does
  not cover the train subset, so it is cached in its own folder,
  ``<cache>/bench-fidelity/train<N>``, and never mixes with a full-data baseline.
* Policy ``i`` proposes actions uniform on ``[0, h_i]`` with ``h_i`` uniform on
  ``[0.3, 1]`` (seeded): high ``h`` proposes large keep-ratios that the clamp cuts back late
  in the network, low ``h`` proposes small ones everywhere. In joint mode the bits action
  is uniform on ``[0, 1]``. Every env replays the same actions, and the script checks that
  it realises the same policy.
* Each setting is a fresh ``CompressionEnv`` built from one ``EnvConfig`` with the
  setting's ``recalibrate_bn``, ``bn_batches``, ``finetune_steps`` and ``finetune_lr``;
  the reward is the env's own (``accuracy``). Time per episode is the evaluator's
  ``eval_seconds + prep_seconds`` (wall) and the process CPU time of the episode.
* Truth: the policy applied (``apply_policy``; in joint mode pruned, fake-quantized,
  fine-tuned and baked like the evaluator does), fine-tuned for ``--truth-epochs`` epochs
  of the train subset (batch 128, cosine from ``--truth-lr``), then scored on test. With
  the default ``--truth-seed`` (= ``--seed``) its data order starts with the same images,
  in the same order, as the env's fine-tune (same seeded permutation), which may inflate
  the correlation of the fine-tuned settings a little; ``--truth-seed 1`` avoids that.
* Correlations: Spearman (and Pearson, which Distiller reported) of each reward with the
  truth, with a seeded bootstrap 95 % interval over policies. "Regret" is the best truth
  minus the truth of the policy the reward ranks first. The MACs ratio of each policy is
  listed as a free predictor, to show what a reward must beat.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fidelity_measure import correlate, log, measure_rewards, measure_truth, setting_stats
from torch.utils.data import TensorDataset

from autoshrink.compression import baselines
from autoshrink.compression.cache import cache_dir
from autoshrink.compression.data import DataSplits, load_dataset
from autoshrink.compression.evaluate import accuracy
from autoshrink.compression.models import ModelSpec
from autoshrink.compression.policy import Policy
from autoshrink.env.config import EnvConfig

# label -> evaluation settings. (a) no recalibration, (b) recalibration only, (c) + N steps.
SETTINGS: dict[str, dict[str, Any]] = {
    "a: no BN recal, 0 steps": dict(recalibrate_bn=False, bn_batches=4, finetune_steps=0),
    "b: BN recal 4 batches, 0 steps": dict(recalibrate_bn=True, bn_batches=4, finetune_steps=0),
    "b: BN recal 16 batches, 0 steps": dict(recalibrate_bn=True, bn_batches=16, finetune_steps=0),
    "c: recal 4 + 20 steps, lr 0.01": dict(
        recalibrate_bn=True, bn_batches=4, finetune_steps=20, finetune_lr=0.01
    ),
    "c: recal 4 + 20 steps, lr 0.05": dict(
        recalibrate_bn=True, bn_batches=4, finetune_steps=20, finetune_lr=0.05
    ),
    "c: recal 4 + 100 steps, lr 0.01": dict(
        recalibrate_bn=True, bn_batches=4, finetune_steps=100, finetune_lr=0.01
    ),
}


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
    assert isinstance(val, TensorDataset)
    n = len(val)
    if size >= n:
        return splits
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values
    x, y = val.tensors
    return dataclasses.replace(splits, val=TensorDataset(x[pick], y[pick]))


def _parse_args() -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--mode", choices=("prune", "joint"), default="prune")
    parser.add_argument("--flops", default="0.2", help="FLOPs (MACs) budget; 'none' for none")
    parser.add_argument("--size", default=None, help="size budget, e.g. 0.1 (joint mode)")
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("--val-size", type=int, default=2048)
    parser.add_argument("--baseline-epochs", type=int, default=5)
    parser.add_argument("--truth-epochs", type=int, default=2)
    parser.add_argument("--truth-lr", type=float, default=0.02)
    parser.add_argument("--truth-batch", type=int, default=128)
    parser.add_argument(
        "--settings", default="all", help="comma-separated setting numbers (0-based) or all"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--truth-seed",
        type=int,
        default=None,
        help="seed of the truth fine-tune's data order; default --seed, which makes its "
        "first batches the same images the env's fine-tune sees",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    return parser.parse_args()


def _prepare(
    args: argparse.Namespace,
) -> tuple[DataSplits, torch.nn.Module, Path, float, float]:
    """The splits (val cut to its subset), the cached baseline, its path, val and test accuracy."""
    splits = load_dataset("fashion-mnist", seed=args.seed, train_subset=args.train_subset)
    splits = with_val_subset(splits, args.val_size, args.seed)
    spec = ModelSpec("resnet20", splits.num_classes, splits.in_channels)
    folder = cache_dir() / "bench-fidelity" / f"train{args.train_subset}"
    t0 = time.process_time()
    with cache_folder(folder):
        model, path = baselines.baseline(
            spec, "fashion-mnist", epochs=args.baseline_epochs, seed=args.seed, splits=splits
        )
    result = baselines.read_result(path)
    base_val = accuracy(model, splits.loader("val", batch_size=256))
    base_test = result.test_accuracy if result else accuracy(model, splits.loader("test", 256))
    log(
        f"baseline {path.name}: val(subset) {base_val:.4f} test {base_test:.4f} "
        f"({f'trained in {result.seconds:.0f}s' if result else 'no record'}; "
        f"this call {time.process_time() - t0:.0f}s CPU)"
    )
    return splits, model, path, base_val, base_test


def _budgets(flops: str | None, size: str | None) -> dict[str, Any]:
    """The env's budgets from ``--flops`` and ``--size``."""
    budgets: dict[str, Any] = {}
    if flops and flops.lower() != "none":
        budgets["flops"] = flops
    if size:
        budgets["size"] = size
    return budgets


def _chosen_settings(settings: str) -> list[tuple[str, dict[str, Any]]]:
    """The evaluation settings ``--settings`` picks, as (label, setting) pairs."""
    chosen = list(SETTINGS.items())
    if settings != "all":
        chosen = [chosen[int(i)] for i in settings.split(",")]
    return chosen


def _print_setup(
    args: argparse.Namespace,
    *,
    budgets: dict[str, Any],
    n_policies: int,
    macs: list[float],
    base_val: float,
    base_test: float,
    truth: list[float],
    truth_cpu: float,
    cpu_total: float,
    wall_total: float,
) -> None:
    """The paragraph above the table: setup, baseline, truth and cost of the run."""
    budget_text = ", ".join(f"{k}<={v}" for k, v in budgets.items()) or "none"
    print(
        f"ResNet-20 / Fashion-MNIST, mode={args.mode}, budgets {budget_text}, "
        f"{n_policies} policies (MACs ratio {min(macs):.3f}-{max(macs):.3f}), "
        f"train subset {args.train_subset}, val subset {args.val_size}, "
        f"baseline {args.baseline_epochs} epochs: val {base_val:.4f}, test {base_test:.4f}. "
        f"Truth: {args.truth_epochs} epochs fine-tune (lr {args.truth_lr}, batch "
        f"{args.truth_batch}) -> test {statistics.mean(truth):.4f} mean "
        f"[{min(truth):.4f}, {max(truth):.4f}], sd {statistics.stdev(truth):.4f}, "
        f"{truth_cpu:.1f}s CPU per policy. Threads {args.threads}, "
        f"load {os.getloadavg()[0]:.1f}; total {cpu_total:.0f}s CPU, {wall_total:.0f}s wall."
    )


def _print_table(
    stats: dict[str, dict[str, float]],
    free: dict[str, float],
    truth: list[float],
    truth_cpu: float,
    truth_epochs: int,
) -> None:
    """The markdown table: one row per setting, then the free predictor and the truth."""
    print(
        "| setting | Spearman ρ [95 % CI] | Pearson r | reward mean [min, max] | regret "
        "| eval s/episode (wall) | CPU s/episode |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, s in stats.items():
        print(
            f"| {label} | {s['spearman']:.2f} [{s['lo']:.2f}, {s['hi']:.2f}] "
            f"| {s['pearson']:.2f} | {s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}] "
            f"| {s['regret']:.3f} | {s['eval_s']:.2f} | {s['cpu_s']:.2f} |"
        )
    print(
        f"| (free predictor: MACs ratio) | {free['spearman']:.2f} "
        f"[{free['lo']:.2f}, {free['hi']:.2f}] | {free['pearson']:.2f} | - | - | 0 | 0 |"
    )
    print(
        f"| (truth: {truth_epochs}-epoch fine-tune, test) | 1 | 1 "
        f"| {statistics.mean(truth):.3f} [{min(truth):.3f}, {max(truth):.3f}] | 0 | - "
        f"| {truth_cpu:.1f} |"
    )


def _write_json(
    out_path: str,
    args: argparse.Namespace,
    *,
    path: Path,
    base_val: float,
    base_test: float,
    truth: list[float],
    macs: list[float],
    actions: list[tuple[float, np.ndarray]],
    stats: dict[str, dict[str, float]],
    free: dict[str, float],
    rewards: dict[str, list[dict[str, Any]]],
    policies: list[Policy],
    cpu_total: float,
    wall_total: float,
) -> None:
    """Every number of the run, rewards without their policies, to ``out_path``."""
    out = {
        "args": vars(args),
        "baseline": {"path": str(path), "val": base_val, "test": base_test},
        "truth": truth,
        "macs_ratio": macs,
        "levels": [h for h, _ in actions],
        "stats": stats,
        "free_macs": free,
        "rewards": {
            k: [{kk: v for kk, v in r.items() if kk != "policy"} for r in rows]
            for k, rows in rewards.items()
        },
        "policies": [p.to_dict() for p in policies],
        "cpu_s": cpu_total,
        "wall_s": wall_total,
    }
    Path(out_path).write_text(json.dumps(out, indent=2, default=float))


def main() -> None:
    """Measure, print a markdown table, and optionally write JSON."""
    args = _parse_args()
    torch.set_num_threads(args.threads)
    cpu_start, wall_start = time.process_time(), time.perf_counter()

    splits, model, path, base_val, base_test = _prepare(args)
    budgets = _budgets(args.flops, args.size)
    base_cfg = EnvConfig(
        model="resnet20", dataset="fashion-mnist", mode=args.mode, seed=args.seed, **budgets
    )
    chosen = _chosen_settings(args.settings)
    rewards, actions, env = measure_rewards(
        chosen, base_cfg, model, splits, args.policies, args.seed
    )
    policies = [r["policy"] for r in next(iter(rewards.values()))]
    truth, truth_cpu = measure_truth(model, env, policies, splits, args)

    macs = [r["macs_ratio"] for r in next(iter(rewards.values()))]
    stats = setting_stats(rewards, truth, args.seed)
    free = correlate(macs, truth, args.seed)

    cpu_total = time.process_time() - cpu_start
    wall_total = time.perf_counter() - wall_start
    _print_setup(
        args,
        budgets=budgets,
        n_policies=len(policies),
        macs=macs,
        base_val=base_val,
        base_test=base_test,
        truth=truth,
        truth_cpu=truth_cpu,
        cpu_total=cpu_total,
        wall_total=wall_total,
    )
    print()
    _print_table(stats, free, truth, truth_cpu, args.truth_epochs)
    if args.json:
        _write_json(
            args.json,
            args,
            path=path,
            base_val=base_val,
            base_test=base_test,
            truth=truth,
            macs=macs,
            actions=actions,
            stats=stats,
            free=free,
            rewards=rewards,
            policies=policies,
            cpu_total=cpu_total,
            wall_total=wall_total,
        )


if __name__ == "__main__":
    main()
