"""What the deterministic scripted searches read of a CompressionEnv.

:class:`EnvView` gives ``uniform``, ``global`` and ``deep-compression``
(:mod:`autoshrink.agent.scripted`) the units, the clamp's exact feasibility test, the
action encoding and the weight statistics they rank by, without their reaching into the env.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from autoshrink.agent.env_view import search_env


class EnvView:
    """What the deterministic scripted searches read of a CompressionEnv: units, clamp, decoding.

    Args:
        env: A :class:`~autoshrink.env.compression_env.CompressionEnv`, possibly wrapped.
    """

    def __init__(self, env: gym.Env) -> None:
        inner = search_env(env, ("clamp", "config", "units", "action_dims"))
        self.env = inner
        self.clamp = inner.clamp
        self.config = inner.config
        self.units = list(inner.units)
        self.dims: tuple[str, ...] = tuple(inner.action_dims)
        self.min_keep = float(self.config.min_keep)
        self.bit_choices: tuple[int, ...] = tuple(self.config.bit_choices)

    def bit_options(self) -> list[int]:
        """Bit-widths a whole-model candidate may use, highest first (32 alone if unsearched)."""
        return sorted(self.clamp.bit_choices, reverse=True)

    def sparsity_options(self) -> list[float]:
        """Sparsities a whole-model candidate may use: none, half, 3/4, 9/10, the largest."""
        grid = self.clamp.sparsity_choices
        top = grid[-1]
        return sorted({0.0, *(s for s in (0.5, 0.75, 0.9) if s < top), top})

    def decode_keep(self, a: float) -> float:
        """The keep-ratio ``min_keep + a * (1 - min_keep)``: one scale for a uniform sweep."""
        return self.min_keep + a * (1.0 - self.min_keep)

    def min_channels(self) -> list[int]:
        """Every unit at its fewest channels."""
        return list(self.clamp.min_channels)

    def max_channels(self) -> list[int]:
        """Every unit whole."""
        return list(self.clamp.max_channels)

    def round_up(self, i: int, channels: int) -> int:
        """The smallest channel count unit ``i`` can realise that is at least ``channels``."""
        choices = self.clamp.choices[i]
        return next((c for c in choices if c >= channels), choices[-1])

    def feasible(
        self, channels: Sequence[int], bits: int, sparsity: Sequence[float] | None = None
    ) -> bool:
        """Whether every unit at ``channels`` with ``bits`` (and sparsity) meets every budget."""
        return bool(self.clamp.feasible(list(channels), [bits] * len(self.units), sparsity))

    def actions(
        self, channels: Sequence[int], bits: int, sparsity: Sequence[float] | None = None
    ) -> np.ndarray:
        """The action rows that make the env realise this policy unclamped."""
        rows = self.env.encode(list(channels), [bits] * len(self.units), sparsity)
        return np.asarray(rows, np.float64)

    def unit_magnitudes(self) -> list[np.ndarray]:
        """``|w|`` of every weight each unit's sparsity reaches (its unpinned layers)."""
        pinned = set(getattr(self.env, "pinned", {}))
        out = []
        for unit in self.units:
            parts = [
                self.env.model.get_submodule(name).weight.detach().abs().reshape(-1).numpy()
                for name in unit.layers
                if name not in pinned
            ]
            out.append(np.concatenate(parts) if parts else np.zeros(0))
        return out

    def channel_scores(self) -> list[np.ndarray]:
        """Each unit's channel importance (the env's criterion), divided by the unit's mean.

        Dividing by the mean is Torch-Pruning's default normaliser for global pruning: it
        makes scores of layers with different weight scales comparable.
        """
        from autoshrink.compression.importance import channel_scores

        importance = self.config.importance
        if importance in ("taylor", "hessian"):  # needs gradients: rank by magnitude instead
            importance = "l1"
        raw = channel_scores(self.env.graph, self.env.model, importance)
        out = []
        for unit in self.units:
            s = raw[unit.name].double().numpy()
            out.append(s / s.mean() if s.mean() > 0 else np.ones_like(s))
        return out
