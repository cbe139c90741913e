"""What the agent layer reads of a compression env, as one typed Protocol.

The search loop, the scripted searches, the finish and transfer read a handful of a
:class:`~autoshrink.env.compression_env.CompressionEnv`'s attributes: its config, units,
model, data, baseline, limits and clamp. :class:`SearchEnv` names them, and
:func:`search_env` unwraps a Gymnasium env into it, checking that they are there, so that
no module reaches into ``env.unwrapped`` untyped.

>>> inner = search_env(env)  # doctest: +SKIP
>>> inner.limits  # doctest: +SKIP
{'flops': 20390400.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from autoshrink.compression.errors import AutoshrinkError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from autoshrink.compression.data import DataSplits
    from autoshrink.compression.units import Unit, UnitGraph
    from autoshrink.env.budget import BudgetClamp
    from autoshrink.env.config import EnvConfig

#: The attributes :func:`search_env` checks for.
REQUIRED: tuple[str, ...] = ("config", "graph", "units", "model", "data", "baseline", "limits")


@runtime_checkable
class SearchEnv(Protocol):
    """The part of a compression env that the agent layer uses.

    Attributes:
        config: The env's settings.
        graph: The model's prunable units and layers.
        units: ``graph.units``, in episode order.
        model: The uncompressed, trained model.
        data: Its train, val and test splits.
        baseline: The uncompressed model's value of every budget metric, by budget name.
        limits: Every active budget's absolute bound, by budget name.
        clamp: The feasibility clamp and exact cost model.
        action_dims: What each action entry decides (``keep``, ``bits``).
        evaluator: Scores a policy (its ``scores`` are channel importances, when kept).
    """

    config: EnvConfig
    graph: UnitGraph
    units: list[Unit]
    model: nn.Module
    data: DataSplits
    baseline: dict[str, float]
    limits: dict[str, float]
    clamp: BudgetClamp
    action_dims: tuple[str, ...]
    evaluator: Any

    def encode(
        self,
        channels: Sequence[int],
        bits: Sequence[int],
        sparsity: Sequence[float] | None = None,
    ) -> np.ndarray:
        """The actions that make the env realise this policy unclamped."""
        ...


def search_env(env: gym.Env, needs: Sequence[str] = REQUIRED) -> SearchEnv:
    """``env`` unwrapped, as a :class:`SearchEnv`.

    Args:
        env: A compression env, possibly wrapped.
        needs: The attributes the caller uses; each must be present.

    Raises:
        AutoshrinkError: If the env lacks one of ``needs`` (it is no compression env).
    """
    inner: Any = env.unwrapped
    missing = [name for name in needs if not hasattr(inner, name)]
    if missing:
        raise AutoshrinkError(
            f"{type(inner).__name__} is not a compression env (it has no {missing[0]!r})"
        )
    return inner


def env_device(env: gym.Env) -> torch.device:
    """Where ``env`` scores its policies (``EnvConfig.device`` resolved); the CPU if it says not.

    The finish fine-tunes and tests there too, so a search runs on one device throughout.
    """
    import torch

    device = getattr(env.unwrapped, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


def episode_length(env: gym.Env) -> int:
    """Steps per episode of a compression env: its number of units."""
    inner = env.unwrapped
    for attr in ("n_units", "num_units"):
        value = getattr(inner, attr, None)
        if isinstance(value, int):
            return value
    graph = getattr(inner, "graph", None)
    if graph is not None:
        return len(graph.units)
    raise AutoshrinkError(f"cannot tell the episode length of {type(inner).__name__}")
