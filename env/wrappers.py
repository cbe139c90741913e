"""Wrappers that change one thing about a :class:`CompressionEnv` each.

:class:`DiscretizeAction` turns the Box(0, 1) action into a MultiDiscrete one, for agents
such as PPO with a categorical policy:

>>> import gymnasium as gym
>>> env = DiscretizeAction(gym.make("autoshrink/Compress-v3"))  # doctest: +SKIP
>>> env.action_space  # doctest: +SKIP
MultiDiscrete([9 7])
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class DiscretizeAction(gym.ActionWrapper[Any, np.ndarray, np.ndarray]):
    """Replace the Box(0, 1) action by a MultiDiscrete one: a level per action dimension.

    A keep dimension gets ``keep_levels`` evenly spaced levels of the keep action, from 0
    (index 0) to 1 (the last index); with an odd count the middle level is 0.5, the fair
    share under the default ``keep_action="budget"``. A bits dimension gets one index per
    allowed bit-width, mapped to the centre of that width's bin, so every index selects
    exactly one bit-width. A sparsity dimension (``deep`` and ``sparse`` mode) gets
    ``keep_levels`` evenly spaced levels too, from no sparsity to ``max_sparsity``.

    Args:
        env: A CompressionEnv, possibly wrapped; it must expose ``action_dims`` and
            ``config`` on its unwrapped env.
        keep_levels: Levels of the keep-ratio (at least 2).

    Raises:
        ValueError: If ``keep_levels < 2`` or the env has no ``action_dims``.
    """

    def __init__(self, env: gym.Env[Any, Any], keep_levels: int = 9) -> None:
        super().__init__(env)
        if keep_levels < 2:
            raise ValueError(f"keep_levels must be at least 2, got {keep_levels}")
        dims = getattr(env.unwrapped, "action_dims", None)
        if dims is None:
            raise ValueError("DiscretizeAction needs a CompressionEnv (no action_dims found)")
        n_bits = len(env.unwrapped.config.bit_choices)  # type: ignore[attr-defined]
        self.dims: tuple[str, ...] = tuple(dims)
        self.nvec = np.array([n_bits if d == "bits" else keep_levels for d in self.dims])
        self.action_space = gym.spaces.MultiDiscrete(self.nvec)

    def action(self, action: Any) -> np.ndarray:
        """Map level indices to the Box value the wrapped env decodes."""
        idx = np.asarray(action, dtype=np.int64).reshape(-1)
        out = np.empty(len(self.dims), dtype=np.float32)
        for i, (dim, n) in enumerate(zip(self.dims, self.nvec, strict=True)):
            level = int(np.clip(idx[i], 0, n - 1))
            out[i] = (level + 0.5) / n if dim == "bits" else level / (n - 1)
        return out
