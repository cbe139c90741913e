from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from torch import nn

import autoshrink.env
from autoshrink.compression.apply import apply_policy
from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.data import DataSplits
from autoshrink.compression.errors import BudgetInfeasibleError
from autoshrink.compression.policy import Policy, kept_channels, layer_bits
from autoshrink.env import CompressionEnv, EnvConfig
from autoshrink.env.evaluator import Evaluation, Evaluator
from autoshrink.env.state import FEATURES

SB3_BOX_HINT = "ignore:We recommend you to use a symmetric"
FAST = {"finetune_steps": 2, "bn_batches": 2, "eval_batches": 2, "baseline_epochs": 2}


def _env(model: nn.Module, data: DataSplits, name: str, **kwargs: Any) -> CompressionEnv:
    return CompressionEnv(EnvConfig(model=name, **{**FAST, **kwargs}), model=model, data=data)


def _run(env: gym.Env[Any, Any], actions: Any) -> tuple[list[np.ndarray], float, dict[str, Any]]:
    obs, _ = env.reset(seed=7)
    seen = [obs]
    reward: Any = 0.0
    info: dict[str, Any] = {}
    done = False
    for a in actions:
        assert not done
        obs, reward, done, truncated, info = env.step(a)
        assert not truncated
        seen.append(obs)
        if not done:
            assert reward == 0.0
    assert done
    return seen, float(reward), info


def _check_registered(env: gym.Env[Any, Any]) -> None:
    inner = env.unwrapped
    assert isinstance(inner, CompressionEnv)
    assert inner.action_space.shape == (2,)
    gym_check_env(inner, skip_render_check=True)
    sb3_check_env(inner, warn=True)
    # the checkers stop before the end of an episode: finish one through the wrappers
    _, reward, info = _run(env, [env.action_space.sample() for _ in inner.units])
    assert reward == info["accuracy"] and info["budgets_met"]


@pytest.mark.slow
@pytest.mark.filterwarnings(SB3_BOX_HINT)
def test_registered_default_env_passes_both_checkers(session_cache: Any) -> None:
    env = gym.make(autoshrink.env.ENV_ID)  # digits + resnet20, 15-epoch baseline (~50 s)
    assert env.unwrapped.config == EnvConfig()  # type: ignore[attr-defined]
    _check_registered(env)


@pytest.mark.filterwarnings(SB3_BOX_HINT)
def test_registered_env_passes_both_checkers(session_cache: Any) -> None:
    # the default (digits, resnet20, joint, default budgets) with a 2-epoch baseline
    env = gym.make(autoshrink.env.ENV_ID, baseline_epochs=2)
    assert env.unwrapped.config == EnvConfig(baseline_epochs=2)  # type: ignore[attr-defined]
    _check_registered(env)


@pytest.mark.filterwarnings(SB3_BOX_HINT)
def test_resnet20_joint_passes_both_checkers(resnet20: nn.Module, digits: DataSplits) -> None:
    env = _env(resnet20, digits, "resnet20", mode="joint", flops=0.4, params="50%", size=0.08)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


def test_episode_meets_budgets_on_the_counted_model(
    resnet20: nn.Module, digits: DataSplits
) -> None:
    env = _env(resnet20, digits, "resnet20", flops=0.35, params=0.4, size=0.07)
    n = len(env.units)
    assert env.observation_space.shape == (len(FEATURES),)
    seen, reward, info = _run(env, np.ones((n, 2), np.float32))
    assert all(env.observation_space.contains(o) for o in seen)
    for key in ("accuracy", "macs", "params", "bytes", "policy"):
        assert key in info
    assert reward == info["accuracy"] and 0.0 <= reward <= 1.0
    assert info["budgets_met"]
    policy = info["policy"]
    assert isinstance(policy, Policy)
    assert Policy.from_dict(info["policy_dict"]) == policy
    # the realised policy, applied for real and counted, meets every budget
    model = apply_policy(resnet20, env.graph, policy)
    bits = {k: b for k, b in layer_bits(policy, env.graph).items() if b < 32}
    counted = {
        "flops": count_macs(model, digits.example_input(1)),
        "params": count_params(model),
        "size": count_bytes(model, bits),
    }
    assert counted == {"flops": info["macs"], "params": info["params"], "size": info["bytes"]}
    for metric, limit in env.limits.items():
        assert counted[metric] <= limit
    # first and last layers pinned to 8 bits in joint mode
    assert set(policy.layers.values()) == {8} and len(policy.layers) == 2


def test_same_seed_same_actions_same_everything(smallcnn: nn.Module, digits: DataSplits) -> None:
    actions = np.random.default_rng(3).random((4, 2)).astype(np.float32)
    runs = [_run(_env(smallcnn, digits, "smallcnn", finetune_steps=3), actions) for _ in range(2)]
    (obs_a, reward_a, info_a), (obs_b, reward_b, info_b) = runs
    assert all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b, strict=True))
    assert info_a["policy"] == info_b["policy"]
    assert reward_a == reward_b
    assert not info_a["eval_cached"] and not info_b["eval_cached"]


def test_identical_realised_policies_are_scored_once(
    smallcnn: nn.Module, digits: DataSplits
) -> None:
    # without filling the (loose) budget, the proposals decide the channels
    env = _env(
        smallcnn,
        digits,
        "smallcnn",
        mode="prune",
        flops=1.0,
        fill_budget=False,
        keep_action="absolute",
    )
    n = len(env.units)
    _, r1, first = _run(env, np.full((n, 1), 0.5, np.float32))
    # different proposals that round to the same channel counts: the same realised policy
    _, r2, second = _run(env, np.full((n, 1), 0.5 + 1e-4, np.float32))
    assert kept_channels(first["policy"], env.graph) == kept_channels(second["policy"], env.graph)
    assert second["eval_cached"] and r2 == r1
    assert isinstance(env.evaluator, Evaluator)
    assert env.evaluator.calls == 2 and env.evaluator.hits == 1
    _, _, third = _run(env, np.full((n, 1), 0.9, np.float32))
    assert not third["eval_cached"] and env.evaluator.hits == 1


def test_infeasible_budgets_are_refused_with_the_reachable_minimum(
    smallcnn: nn.Module, digits: DataSplits
) -> None:
    with pytest.raises(BudgetInfeasibleError, match=r"smallest reachable is .*% of the original"):
        _env(smallcnn, digits, "smallcnn", flops=0.01)
    with pytest.raises(BudgetInfeasibleError, match="flops budget"):
        _env(smallcnn, digits, "smallcnn", mode="quant", flops=0.5)  # bits do not cut MACs
    with pytest.raises(BudgetInfeasibleError, match="size budget"):
        _env(smallcnn, digits, "smallcnn", size="1KB")


def test_soft_budgets_penalise_overruns(smallcnn: nn.Module, digits: DataSplits) -> None:
    env = _env(smallcnn, digits, "smallcnn", hard=False, flops=0.3, penalty_weight=2.0)
    _, reward, info = _run(env, np.ones((len(env.units), 2), np.float32))
    assert not info["budgets_met"]
    assert info["overruns"]["flops"] == pytest.approx(info["macs"] / env.limits["flops"] - 1)
    assert reward == pytest.approx(info["accuracy"] - 2.0 * sum(info["overruns"].values()))
    assert all(not i for i in [info.get("clamped")])


@pytest.mark.parametrize("mode", ["prune", "quant"])
def test_modes_decide_one_thing(mode: str, smallcnn: nn.Module, digits: DataSplits) -> None:
    budget = {"flops": 0.5} if mode == "prune" else {"size": 0.1}
    env = _env(smallcnn, digits, "smallcnn", mode=mode, **budget)
    assert env.action_space.shape == (1,)
    _, _, info = _run(env, np.full((len(env.units), 1), 0.3, np.float32))
    units = info["policy"].units.values()
    if mode == "prune":
        assert all(u.bits == 32 for u in units) and not info["policy"].layers
        assert any(u.keep < 1 for u in units)
    else:
        assert all(u.keep == 1.0 for u in units) and any(u.bits < 8 for u in units)
        assert set(info["policy"].layers.values()) == {8}


def test_latency_budget_holds_on_the_table(smallcnn: nn.Module, digits: DataSplits) -> None:
    # A tiny model's measured latencies are mostly noise, so the budget is placed between
    # what this table can reach and the original, rather than at a fixed ratio.
    loose = _env(smallcnn, digits, "smallcnn", mode="prune", latency=1.0)
    assert loose.latency is not None
    reachable = loose.clamp.minimum["latency"] / loose.latency.base
    target = (reachable + 1.0) / 2
    env = _env(smallcnn, digits, "smallcnn", mode="prune", latency=target)
    assert env.latency == loose.latency  # loaded from the cache, not measured again
    _, _, info = _run(env, np.ones((len(env.units), 1), np.float32))
    assert info["latency_s"] <= env.limits["latency"]
    assert info["latency_ratio"] <= target + 1e-9
    if reachable < 1.0:  # the table shows savings, so all-ones actions had to be clamped
        assert any(u.keep < 1 for u in info["policy"].units.values())


def test_step_after_the_end_needs_a_reset(smallcnn: nn.Module, digits: DataSplits) -> None:
    env = _env(smallcnn, digits, "smallcnn")
    _run(env, np.zeros((len(env.units), 2), np.float32))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.float32))


def test_evaluator_splits_time_and_fine_tunes_under_quantization(
    smallcnn: nn.Module, digits: DataSplits
) -> None:
    env = _env(smallcnn, digits, "smallcnn", size=0.05)
    _, _, info = _run(env, np.ones((len(env.units), 2), np.float32))
    assert info["eval_seconds"] > 0 and info["prep_seconds"] > 0
    assert isinstance(env.evaluator, Evaluator)
    model, _, _ = env.evaluator.compress(info["policy"])
    # after fine-tuning the baked weights are exactly quantized: re-quantizing is a no-op
    from autoshrink.compression.quantize import quantize_weights_

    bits = {k: b for k, b in layer_bits(info["policy"], env.graph).items() if b < 32}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantize_weights_(model, bits)
    for key, value in model.state_dict().items():
        assert torch.allclose(value, before[key], atol=1e-6), key


class _ConstantEvaluator:
    """Scores every policy 0.5 instantly: isolates the env's own logic."""

    calls = 0

    def __call__(self, policy: Policy) -> Evaluation:
        self.calls += 1
        return Evaluation(0.5, 0.0, 0.0)


def test_random_episodes_through_the_env_end_within_budget(
    resnet20: nn.Module, digits: DataSplits
) -> None:
    cfg = EnvConfig(model="resnet20", flops=0.3, params=0.35, size=0.06, **FAST)
    env = CompressionEnv(cfg, model=resnet20, data=digits, evaluator=_ConstantEvaluator())
    rng = np.random.default_rng(11)
    n = len(env.units)
    clamped = 0
    for episode in range(20):
        actions = rng.random((n, 2)).astype(np.float32) ** rng.uniform(0.2, 2.0)
        _, reward, info = _run(env, actions)
        assert reward == 0.5 and info["budgets_met"]
        assert info["macs"] <= env.limits["flops"]
        assert info["params"] <= env.limits["params"]
        assert info["bytes"] <= env.limits["size"]
        if episode % 5 == 0:
            model = apply_policy(resnet20, env.graph, info["policy"])
            assert count_macs(model, digits.example_input(1)) == info["macs"]
        clamped += int(info["clamped"])
    assert clamped > 0  # the budgets were tight enough for the clamp to act
