"""A tiny stand-in for CompressionEnv: the same API, a cheap analytic reward.

Units have 16 channels each; the action is Box(0, 1, (2,)) as in joint mode (keep, bits).
A hard FLOPs-like budget is clamped per step, as the real env does, and the reward is a
smooth function of the realised policy, so agents have something to learn.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from autoshrink.compression.policy import Policy, UnitPolicy

BITS = (2, 3, 4, 5, 6, 7, 8)


class ToyCompressionEnv(gym.Env[np.ndarray, np.ndarray]):
    """n_units steps; reward = accuracy proxy at the end; info carries policy and metrics."""

    def __init__(self, n_units: int = 4, budget: float = 0.5, min_keep: float = 0.2) -> None:
        self.n_units = n_units
        self.budget = budget
        self.min_keep = min_keep
        self.channels = 16
        self.action_space = gym.spaces.Box(0.0, 1.0, (2,), dtype=np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (4,), dtype=np.float32)
        self.weights = np.linspace(1.0, 0.3, n_units)  # earlier units matter more
        self.evaluations = 0
        self.baseline = {"flops": 1000.0 * n_units, "params": 100.0 * n_units}

    def _obs(self) -> np.ndarray:
        t = self.t / self.n_units
        used = sum(self.keeps) / self.n_units
        prev = self.keeps[-1] if self.keeps else 1.0
        return np.array([t, used, self.budget, prev], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t, self.keeps, self.bits = 0, [], []
        return self._obs(), {}

    def step(self, action: np.ndarray):
        a = np.clip(np.asarray(action, dtype=np.float64), 0, 1)
        keep = self.min_keep + a[0] * (1 - self.min_keep)
        bits = BITS[min(int(a[1] * len(BITS)), len(BITS) - 1)]
        # hard budget on the mean keep: later units at min_keep
        rest = self.n_units - self.t - 1
        cap = self.budget * self.n_units - sum(self.keeps) - rest * self.min_keep
        keep = max(self.min_keep, min(keep, cap))
        kept = max(1, round(keep * self.channels))
        self.keeps.append(kept / self.channels)
        self.bits.append(bits)
        self.t += 1
        done = self.t == self.n_units
        reward, info = 0.0, {}
        if done:
            self.evaluations += 1
            k, b = np.array(self.keeps), np.array(self.bits)
            acc = float(0.5 + 0.4 * np.dot(self.weights, k) / self.weights.sum() + 0.01 * b.mean())
            macs = float(1000 * k.sum())
            policy = Policy(
                units={
                    f"u{i}": UnitPolicy(keep=float(kk), bits=int(bb), channels=self.channels)
                    for i, (kk, bb) in enumerate(zip(k, b, strict=True))
                }
            )
            info = {
                "accuracy": acc,
                "macs": macs,
                "params": float(100 * k.sum()),
                "bytes": float(k.dot(b) * 50),
                "policy": policy,
            }
            reward = acc
        return self._obs(), reward, done, False, info
