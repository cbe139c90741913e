"""Measuring for ``bench_fidelity.py``: env rewards, the truth, and their correlations.

The driver (``bench_fidelity.py``) builds the data, the baseline and the env config; this
module samples the policies' actions, replays them in one env per evaluation setting,
measures each policy's truth accuracy, and correlates every setting's reward with it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.data import DataSplits
from autoshrink.compression.evaluate import accuracy, finetune
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import Policy, kept_channels, layer_bits
from autoshrink.compression.prune import prune_channels
from autoshrink.compression.quantize import bake_, fake_quantize_
from autoshrink.env.compression_env import CompressionEnv
from autoshrink.env.config import EnvConfig


def log(message: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def sample_actions(
    n_policies: int, n_units: int, dims: int, seed: int
) -> list[tuple[float, np.ndarray]]:
    """Per policy: its level ``h`` and actions (keep uniform on [0, h], bits on [0, 1])."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_policies):
        h = float(rng.uniform(0.3, 1.0))
        actions = rng.random((n_units, dims))
        actions[:, 0] *= h
        out.append((h, actions.astype(np.float32)))
    return out


def run_setting(
    env: CompressionEnv, actions: list[tuple[float, np.ndarray]]
) -> list[dict[str, Any]]:
    """Replay every policy's actions in ``env``: reward, policy and time per episode."""
    rows = []
    for _, acts in actions:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        env.reset(seed=0)
        info: dict[str, Any] = {}
        reward = 0.0
        for a in acts:
            _, reward, done, _, info = env.step(a)
        assert done
        rows.append(
            {
                "reward": float(reward),
                "accuracy": float(info["accuracy"]),
                "macs_ratio": float(info["macs_ratio"]),
                "bytes_ratio": float(info["bytes_ratio"]),
                "budgets_met": bool(info["budgets_met"]),
                "cached": bool(info["eval_cached"]),
                "eval_s": float(info["eval_seconds"]) + float(info["prep_seconds"]),
                "episode_wall_s": time.perf_counter() - wall0,
                "episode_cpu_s": time.process_time() - cpu0,
                "policy": info["policy"],
            }
        )
    return rows


def truth_accuracy(
    model: torch.nn.Module,
    env: CompressionEnv,
    policy: Policy,
    splits: DataSplits,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> float:
    """Test accuracy of ``policy`` after ``epochs`` epochs of fine-tuning on train."""
    graph = env.graph
    bits = {k: b for k, b in layer_bits(policy, graph).items() if b < FLOAT_BITS}
    scores = env.evaluator.scores
    if bits:  # quantization-aware, as the evaluator does: prune, fake-quantize, tune, bake
        small = prune_channels(model, graph, kept_channels(policy, graph), scores=scores)
        fake_quantize_(small, bits)
    else:
        small = apply_policy(model, graph, policy, scores=scores)
    train = splits.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
    finetune(small, train, steps=epochs * len(train), lr=lr, seed=seed)
    if bits:
        bake_(small)
    return accuracy(small, splits.loader("test", batch_size=256))


def correlate(x: list[float], y: list[float], seed: int, n_boot: int = 2000) -> dict[str, float]:
    """Spearman and Pearson of ``x`` with ``y``, and a bootstrap 95 % interval of Spearman."""
    xa, ya = np.asarray(x), np.asarray(y)
    if np.ptp(xa) == 0:
        return {"spearman": float("nan"), "pearson": float("nan"), "lo": np.nan, "hi": np.nan}
    rho = float(spearmanr(xa, ya).statistic)
    r = float(pearsonr(xa, ya).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(xa), len(xa))
        if np.ptp(xa[idx]) > 0 and np.ptp(ya[idx]) > 0:
            boots.append(spearmanr(xa[idx], ya[idx]).statistic)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"spearman": rho, "pearson": r, "lo": float(lo), "hi": float(hi)}


def measure_rewards(
    chosen: list[tuple[str, dict[str, Any]]],
    base_cfg: EnvConfig,
    model: torch.nn.Module,
    splits: DataSplits,
    n_policies: int,
    seed: int,
) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[float, np.ndarray]], CompressionEnv]:
    """Every setting's rows of :func:`run_setting`, the sampled actions, and the last env.

    The actions are sampled once, from the first env's spaces, and replayed in every
    setting; a setting that realises other policies from them is an error.
    """
    rewards: dict[str, list[dict[str, Any]]] = {}
    actions: list[tuple[float, np.ndarray]] = []
    keys: list[Any] = []
    env: CompressionEnv | None = None
    for label, setting in chosen:
        env = CompressionEnv(base_cfg.replace(**setting), model=model, data=splits)
        if not actions:
            dims = env.action_space.shape[0]
            actions = sample_actions(n_policies, len(env.units), dims, seed)
        t0 = time.process_time()
        rows = run_setting(env, actions)
        these = [env.evaluator.key(r["policy"]) for r in rows]
        if keys and these != keys:
            raise RuntimeError(f"{label}: the same actions realised different policies")
        keys = these
        rewards[label] = rows
        accs = [r["reward"] for r in rows]
        log(
            f"{label}: reward mean {statistics.mean(accs):.4f} "
            f"[{min(accs):.4f}, {max(accs):.4f}], {time.process_time() - t0:.0f}s CPU"
        )
    assert env is not None
    if len(set(keys)) < len(keys):
        log(f"note: {len(keys) - len(set(keys))} duplicate realised policies")
    return rewards, actions, env


def measure_truth(
    model: torch.nn.Module,
    env: CompressionEnv,
    policies: list[Policy],
    splits: DataSplits,
    args: argparse.Namespace,
) -> tuple[list[float], float]:
    """Each policy's :func:`truth_accuracy`, and the CPU seconds per policy."""
    truth = []
    t0 = time.process_time()
    for i, policy in enumerate(policies):
        acc = truth_accuracy(
            model,
            env,
            policy,
            splits,
            args.truth_epochs,
            args.truth_lr,
            args.truth_batch,
            args.seed if args.truth_seed is None else args.truth_seed,
        )
        truth.append(acc)
        log(f"truth {i + 1}/{len(policies)}: test {acc:.4f} ({time.process_time() - t0:.0f}s)")
    truth_cpu = (time.process_time() - t0) / len(policies)
    return truth, truth_cpu


def setting_stats(
    rewards: dict[str, list[dict[str, Any]]], truth: list[float], seed: int
) -> dict[str, dict[str, float]]:
    """Per setting: correlation of its reward with ``truth``, reward range, regret, time."""
    stats: dict[str, dict[str, float]] = {}
    for label, rows in rewards.items():
        reward = [r["reward"] for r in rows]
        stats[label] = correlate(reward, truth, seed) | {
            "mean": statistics.mean(reward),
            "min": min(reward),
            "max": max(reward),
            "regret": max(truth) - truth[int(np.argmax(reward))],
            "eval_s": statistics.median(r["eval_s"] for r in rows),
            "cpu_s": statistics.median(r["episode_cpu_s"] for r in rows),
        }
    return stats
