from __future__ import annotations

import math

import pytest

from autoshrink.env.reward import (
    REWARD_FUNCTIONS,
    Outcome,
    acc_flops_reward,
    accuracy_reward,
    overrun,
    penalty_reward,
)


def test_accuracy_reward_is_accuracy() -> None:
    assert accuracy_reward(Outcome(accuracy=0.73, macs=10)) == 0.73


def test_acc_flops_prefers_fewer_macs_and_higher_accuracy() -> None:
    base = acc_flops_reward(Outcome(accuracy=0.9, macs=1e6))
    assert base == pytest.approx(-0.1 * math.log(1e6))
    assert acc_flops_reward(Outcome(accuracy=0.9, macs=5e5)) > base
    assert acc_flops_reward(Outcome(accuracy=0.95, macs=1e6)) > base
    assert acc_flops_reward(Outcome(accuracy=1.0, macs=1e6)) == 0.0


def test_penalty_reward_subtracts_weighted_overruns() -> None:
    out = Outcome(accuracy=0.9, macs=1, overruns={"flops": 0.2, "size": 0.1}, penalty_weight=2)
    assert penalty_reward(out) == pytest.approx(0.9 - 2 * 0.3)
    assert penalty_reward(Outcome(accuracy=0.9, macs=1)) == 0.9


def test_overrun() -> None:
    assert overrun(90, 100) == 0.0
    assert overrun(150, 100) == pytest.approx(0.5)


def test_registry_names() -> None:
    assert set(REWARD_FUNCTIONS) == {"accuracy", "acc_flops", "penalty"}
