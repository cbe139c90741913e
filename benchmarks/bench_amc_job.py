"""Seconds per episode of the AMC-equivalent job: where the framework's overhead stands.

The job is the one measured against NNI's AMCPruner (docs/benchmarks.md, "Episode
overhead"): ResNet-20 at 1x28x28 on Fashion-MNIST, prune mode at 50 % of the MACs, no
fine-tune in an episode (BN recalibration on 4 batches, then accuracy on 2,048 val
images), 6 DDPG episodes (2 random warm-up). The baseline's weights are random (saved to a
temporary checkpoint), since an episode's time does not depend on them. Only the search
is timed (``run_search``: episodes, learning, checkpoints), not the finish.

Usage::

    .venv/bin/python benchmarks/bench_amc_job.py [--rounds 3] [--profile out.prof]

Run it with one torch thread on a quiet machine; each round is a fresh search in a fresh
folder, and the median and range of the rounds are printed, split into the evaluation's
forward passes, pruning, and the framework's rest.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from autoshrink.agent.search.config import SearchConfig
from autoshrink.agent.search.loop import run_search
from autoshrink.compression.models import ModelSpec, build_model

EPISODES = 6
LABELS = {
    "wall": "episode (wall)",
    "evaluation": "evaluation: BN recalibration and scoring (forward passes)",
    "prune": "pruning the episode's model (the evaluator's other time)",
    "rest": "framework: steps, agent, log, checkpoint, TensorBoard",
}


def job(checkpoint: Path) -> SearchConfig:
    """The AMC-equivalent search."""
    return SearchConfig.create(
        model="resnet20",
        dataset="fashion-mnist",
        checkpoint=str(checkpoint),
        mode="prune",
        flops=0.5,
        finetune_steps=0,
        eval_batches=32,
        episodes=EPISODES,
    )


class Recorder:
    """The env's evaluator, adding up the seconds of its evaluations."""

    def __init__(self, evaluator: Any) -> None:
        self.evaluator, self.compute, self.other = evaluator, 0.0, 0.0

    def __call__(self, policy: Any) -> Any:
        """Evaluate as the evaluator does, and count its forward/backward and other time."""
        result = self.evaluator(policy)
        self.compute += result.compute_seconds
        self.other += result.other_seconds
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.evaluator, name)


def one_round(checkpoint: Path, profile: cProfile.Profile | None) -> dict[str, float]:
    """Seconds per episode of one fresh search: in all, evaluating, pruning, the rest."""
    config = job(checkpoint)
    t0 = time.perf_counter()
    env = config.make_env()
    build = time.perf_counter() - t0
    recorder = Recorder(env.unwrapped.evaluator)
    env.unwrapped.evaluator = recorder
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        if profile is not None:
            profile.enable()
        run_search(env, config.agent, Path(out) / "run", final=config.final)
        if profile is not None:
            profile.disable()
        wall = (time.perf_counter() - t0) / EPISODES
    evaluation, prune = recorder.compute / EPISODES, recorder.other / EPISODES
    rest = wall - evaluation - prune
    return {"build": build, "wall": wall, "evaluation": evaluation, "prune": prune, "rest": rest}


def main() -> None:
    """Measure and print the median seconds per episode over rounds, with the spread."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh searches (default: 3)")
    parser.add_argument("--profile", default=None, help="write a cProfile of all rounds here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "resnet20.pt"
        torch.manual_seed(0)
        torch.save(build_model(ModelSpec("resnet20", 10, 1)).state_dict(), checkpoint)
        one_round(checkpoint, None)  # warm-up: imports, dataset cache, first kernels
        rounds = [one_round(checkpoint, profile) for _ in range(args.rounds)]
    print(
        f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus, 1 torch thread, "
        f"{args.rounds} rounds of {EPISODES} episodes; env build "
        f"{statistics.median(r['build'] for r in rounds):.2f} s"
    )
    print("| seconds per episode | median | range |")
    print("|---|---|---|")
    for key, label in LABELS.items():
        values = [r[key] for r in rounds]
        low, high = min(values), max(values)
        print(f"| {label} | {statistics.median(values):.3f} | {low:.3f}-{high:.3f} |")
    if profile is not None:
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
