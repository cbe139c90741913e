"""From a policy back to actions: the inverse of the env's action decoding.

Scripted searches and replayed policies give the env realised channels, bits and sparsity
per unit; :func:`encode_actions` finds the action rows that make the env propose exactly
those. With ``keep_action="budget"`` a keep action depends on the units decided before it
(the fair share), so the rows are computed in decision order, as if every earlier unit had
realised its entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from autoshrink.env.budget import keep_for
from autoshrink.env.state import bin_action, bits_action, budget_action

if TYPE_CHECKING:
    from autoshrink.env.compression_env import CompressionEnv


def encode_actions(
    env: CompressionEnv,
    channels: Sequence[int],
    bits: Sequence[int],
    sparsity: Sequence[float] | None = None,
) -> np.ndarray:
    """The action rows, one per unit, that make ``env`` propose this policy.

    Counts below a unit's fewest go to the fewest; bits go to the largest choice not above
    them (to the largest choice from float); sparsity to the largest choice not above it.
    Entries the mode does not search are ignored.

    Raises:
        ValueError: If the lengths do not match the units.
    """
    n = len(env.units)
    spars = list(sparsity) if sparsity is not None else [0.0] * n
    if len(channels) != n or len(bits) != n or len(spars) != n:
        raise ValueError(f"encode needs {n} channel counts and bits, one per unit")
    saved = env._channels, env._bits, env._sparsity
    rows = np.zeros((n, len(env.action_dims)), dtype=np.float32)
    grid = env.clamp.sparsity_choices
    try:
        lows = env.clamp.min_channels
        env._channels = [max(int(c), lo) for c, lo in zip(channels, lows, strict=True)]
        choices = env.clamp.bit_choices  # (32,) where bits are not searched
        env._bits = [max([c for c in choices if c <= b], default=choices[0]) for b in bits]
        env._sparsity = [max([g for g in grid if g <= s + 1e-12], default=0.0) for s in spars]
        for t in range(n):
            for j, dim in enumerate(env.action_dims):
                rows[t, j] = _entry(env, t, dim)
    finally:
        env._channels, env._bits, env._sparsity = saved
    return rows


def _entry(env: CompressionEnv, t: int, dim: str) -> float:
    """The action entry ``dim`` of unit ``t`` for the env's current (encoded) lists."""
    cfg = env.config
    if dim == "bits":
        return bits_action(env._bits[t], cfg.bit_choices)
    if dim == "sparsity":
        return bin_action(env._sparsity[t], env.clamp.sparsity_choices)
    keep = keep_for(env.units[t], env._channels[t])
    if cfg.keep_action == "budget":
        fair = env.fair_keep(t, env._bits[t], env._sparsity[t])
        a = budget_action(keep, fair, cfg.min_keep)
    else:
        span = 1.0 - cfg.min_keep
        a = 1.0 if span <= 0 else (keep - cfg.min_keep) / span
    return min(max(a, 0.0), 1.0)
