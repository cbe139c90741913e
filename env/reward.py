"""Reward functions: pure functions of the episode's measured outcome.

Every reward is a function of an :class:`Outcome` (accuracy in [0, 1], the realised costs and
the budget overruns), looked up by name in :data:`REWARD_FUNCTIONS`.

>>> accuracy_reward(Outcome(accuracy=0.9, macs=1e6))
0.9
>>> round(acc_flops_reward(Outcome(accuracy=0.9, macs=1e6)), 4)
-1.3816
>>> penalty_reward(Outcome(accuracy=0.9, macs=1e6, overruns={"flops": 0.1}))
0.8
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Outcome:
    """What an episode produced, as the reward functions see it.

    Args:
        accuracy: Validation accuracy of the compressed model, in [0, 1].
        macs: Realised MACs of the compressed model.
        overruns: Relative overrun per budget metric, ``max(0, value / limit - 1)``;
            all zero under hard budgets.
        penalty_weight: Weight of the summed overruns in :func:`penalty_reward`.
    """

    accuracy: float
    macs: float
    overruns: Mapping[str, float] = field(default_factory=dict)
    penalty_weight: float = 1.0


def overrun(value: float, limit: float) -> float:
    """Relative amount by which ``value`` exceeds ``limit`` (0 when within it)."""
    return max(0.0, value / limit - 1.0)


def accuracy_reward(outcome: Outcome) -> float:
    """AMC's default: the accuracy itself (budgets are enforced by the clamp)."""
    return float(outcome.accuracy)


def acc_flops_reward(outcome: Outcome) -> float:
    """AMC's resource-aware reward ``-error * log(MACs)``: fewer MACs, less negative."""
    error = 1.0 - float(outcome.accuracy)
    return -error * math.log(max(float(outcome.macs), 1.0))


def penalty_reward(outcome: Outcome) -> float:
    """Soft budgets: accuracy minus ``penalty_weight`` times the summed relative overruns."""
    return float(outcome.accuracy) - outcome.penalty_weight * sum(outcome.overruns.values())


REWARD_FUNCTIONS: dict[str, Callable[[Outcome], float]] = {
    "accuracy": accuracy_reward,
    "acc_flops": acc_flops_reward,
    "penalty": penalty_reward,
}
