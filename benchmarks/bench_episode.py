"""Episode time of the default environment, split into evaluation and framework overhead.

"Evaluation" is the forward and backward passes an episode needs (BatchNorm recalibration,
the fine-tune, scoring on val). Everything else is overhead: the per-step clamp and
observation, pruning (the one deep copy per episode), quantizing, bookkeeping.

Usage::

    .venv/bin/python benchmarks/bench_episode.py [--episodes 10] [--threads 1]
        [--finetune-steps N] [--json out.json]

Each episode uses fresh seeded random actions, so no evaluation comes from the cache. The
first episode is a warm-up and is not counted. Medians over episodes are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import autoshrink.env
from autoshrink.env import CompressionEnv


def run_episode(env: CompressionEnv, rng: np.random.Generator) -> dict[str, float]:
    """One episode with random actions; seconds spent where."""
    start = time.perf_counter()
    env.reset(seed=0)
    steps = 0.0
    info: dict[str, Any] = {}
    for _ in env.units:
        action = rng.random(env.action_space.shape).astype(np.float32)
        t0 = time.perf_counter()
        _, _, done, _, info = env.step(action)
        if not done:
            steps += time.perf_counter() - t0
    total = time.perf_counter() - start
    evaluation = float(info["eval_seconds"])
    prep = float(info["prep_seconds"])
    return {
        "total": total,
        "evaluation": evaluation,
        "prune_quantize": prep,
        "steps": steps,
        "rest": total - evaluation - prep - steps,
        "overhead": total - evaluation,
        "accuracy": float(info["accuracy"]),
        "cached": float(info["eval_cached"]),
    }


def main() -> None:
    """Measure and print a markdown table (and optionally write JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--finetune-steps", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kwargs = {} if args.finetune_steps is None else {"finetune_steps": args.finetune_steps}
    t0 = time.perf_counter()
    env = gym.make(autoshrink.env.ENV_ID, **kwargs).unwrapped
    assert isinstance(env, CompressionEnv)
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    run_episode(env, rng)  # warm-up: lazy initialisation, first kernels
    rows = [run_episode(env, rng) for _ in range(args.episodes)]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    share = {k: med[k] / med["total"] for k in med if k not in ("accuracy", "cached")}
    cfg = env.config
    print(
        f"model={cfg.model} dataset={cfg.dataset} mode={cfg.mode} units={len(env.units)} "
        f"finetune_steps={cfg.finetune_steps} bn_batches={cfg.bn_batches} "
        f"threads={args.threads} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
        f"episodes={args.episodes} build={build:.1f}s"
    )
    print("| part | median s/episode | share |")
    print("|---|---|---|")
    names = {
        "total": "episode (wall)",
        "evaluation": "evaluation: forward+backward (BN recal, fine-tune, val)",
        "overhead": "overhead: everything else",
        "prune_quantize": "  of which pruning (deep copy) + quantizing",
        "steps": "  of which steps (decode, clamp, observation)",
        "rest": "  of which end of episode bookkeeping, reset",
    }
    for key, label in names.items():
        print(f"| {label} | {med[key]:.4f} | {share[key]:.1%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"median": med, "share": share, "episodes": rows}, f, indent=2)


if __name__ == "__main__":
    main()
