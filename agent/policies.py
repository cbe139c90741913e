"""SB3 policies whose actor learns at its own rate (AMC: actor 1e-4, critic 1e-3).

SB3 gives one learning rate to every optimizer of a policy. :class:`SplitLRMixin` rebuilds
the actor's optimizer after SB3 built the networks, as a subclass of the configured
optimizer that multiplies each step's rate by ``actor_lr_scale``, so the actor follows the
critic's schedule at a fixed ratio and ``learn()`` is untouched. One mixin serves every
actor-critic policy with an ``actor``: TD3's (DDPG and TD3) and SAC's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy


@functools.cache
def _lr_scaled(cls: type[th.optim.Optimizer]) -> type[th.optim.Optimizer]:
    """A subclass of ``cls`` whose step multiplies each group's lr by its ``lr_scale``."""

    def step(self: th.optim.Optimizer, closure: Callable[[], float] | None = None) -> Any:
        scales = [group.get("lr_scale", 1.0) for group in self.param_groups]
        for group, scale in zip(self.param_groups, scales, strict=True):
            group["lr"] = group["lr"] * scale
        try:
            return cls.step(self, closure)
        finally:
            for group, scale in zip(self.param_groups, scales, strict=True):
                group["lr"] = group["lr"] / scale

    return type(f"LRScaled{cls.__name__}", (cls,), {"step": step})


class SplitLRMixin:
    """Gives an SB3 actor-critic policy an actor learning at ``actor_lr_scale`` × the rate.

    Put it first among the bases: ``class P(SplitLRMixin, TD3Policy)``.

    Args:
        actor_lr_scale: The actor's rate over the critic's (1 = SB3's shared rate).
    """

    def __init__(self, *args: Any, actor_lr_scale: float = 1.0, **kwargs: Any) -> None:
        self.actor_lr_scale = float(actor_lr_scale)
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        if self.actor_lr_scale == 1.0:
            return
        policy: Any = self  # the SB3 policy this mixin is part of
        optimizer_class: Any = _lr_scaled(policy.optimizer_class)
        policy.actor.optimizer = optimizer_class(
            policy.actor.parameters(), lr=lr_schedule(1), **policy.optimizer_kwargs
        )
        for group in policy.actor.optimizer.param_groups:
            group["lr_scale"] = self.actor_lr_scale

    def _get_constructor_parameters(self) -> dict[str, Any]:
        base: dict[str, Any] = super()._get_constructor_parameters()  # type: ignore[misc]
        return {**base, "actor_lr_scale": self.actor_lr_scale}


class SplitLRTD3Policy(SplitLRMixin, TD3Policy):
    """TD3Policy (DDPG and TD3) whose actor learns at ``actor_lr_scale`` × the critic's rate."""


class SplitLRSACPolicy(SplitLRMixin, SACPolicy):
    """SACPolicy whose actor learns at ``actor_lr_scale`` × the critic's rate."""
