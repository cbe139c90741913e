"""Deep and sparse modes: three decisions per unit, and the budget on the realised model."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import autoshrink.env
from autoshrink.compression.apply import apply_policy
from autoshrink.compression.artifact_payload import encode, sparse_plan
from autoshrink.compression.counting import count_macs
from autoshrink.compression.data import DataSplits
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, kept_channels, layer_bits
from autoshrink.compression.quantize import quantizable_layers
from autoshrink.compression.sparsity import layer_sparsity, zeroed_count
from autoshrink.env.compression_env import CompressionEnv
from autoshrink.env.config import EnvConfig
from autoshrink.env.evaluator import Evaluation

NO_FINETUNE = {"finetune_steps": 0, "bn_batches": 1, "eval_batches": 1}


class _Constant:
    def __call__(self, policy: Policy) -> Evaluation:
        return Evaluation(0.5, 0.0, 0.0)


def _episode(env: CompressionEnv, actions: np.ndarray) -> dict[str, Any]:
    env.reset(seed=0)
    info: dict[str, Any] = {}
    for a in actions:
        _, _, done, _, info = env.step(a)
    assert done
    return info


def _realised(model: nn.Module, env: CompressionEnv, policy: Policy) -> tuple[nn.Module, int]:
    """The compressed model and its stored bytes before entropy coding, as the artifact packs."""
    small = apply_policy(model, env.graph, policy)
    bits = {k: b for k, b in layer_bits(policy, env.graph).items() if b < FLOAT_BITS}
    plan = sparse_plan(small, bits, layer_sparsity(policy, env.graph))
    tensors, _ = encode(small, bits, plan)
    return small, sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.fixture(scope="module")
def random_resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("resnet20", 10, 1)).eval()


@pytest.mark.parametrize(
    ("mode", "budgets", "episodes"),
    [("deep", {"size": 0.03, "flops": 0.5}, 140), ("sparse", {"size": 0.04}, 70)],
)
def test_budget_holds_on_random_action_sequences(
    mode: str,
    budgets: dict[str, float],
    episodes: int,
    random_resnet20: nn.Module,
    digits: DataSplits,
) -> None:
    cfg = EnvConfig(model="resnet20", mode=mode, **budgets, **NO_FINETUNE)  # type: ignore[arg-type]
    env = CompressionEnv(cfg, model=random_resnet20, data=digits, evaluator=_Constant())
    assert env.action_space.shape == (3 if mode == "deep" else 2,)
    rng = np.random.default_rng(5)
    n, k = len(env.units), env.action_space.shape[0]
    clamped = 0
    for _ in range(episodes):
        actions = rng.random((n, k)).astype(np.float32) ** rng.uniform(0.2, 2.0)
        info = _episode(env, actions)
        small, stored = _realised(random_resnet20, env, info["policy"])
        assert stored == info["bytes"] <= env.limits["size"]  # on the realised model
        if "flops" in env.limits:
            assert count_macs(small, digits.example_input(1)) == info["macs"]
            assert info["macs"] <= env.limits["flops"]
            assert info["nonzero_macs"] < info["macs"]
        clamped += int(info["clamped"])
    assert clamped > 0


def test_sparsity_is_realised_by_magnitude(random_resnet20: nn.Module, digits: DataSplits) -> None:
    env = CompressionEnv(
        EnvConfig(model="resnet20", mode="deep", size=0.2, **NO_FINETUNE),  # type: ignore[arg-type]
        model=random_resnet20,
        data=digits,
        evaluator=_Constant(),
    )
    actions = np.tile(np.array([1.0, 0.5, 0.9], np.float32), (len(env.units), 1))
    info = _episode(env, actions)
    policy = info["policy"]
    sparsity = layer_sparsity(policy, env.graph)
    assert sparsity and set(sparsity.values()) == {0.48}  # bin 48 of 0..0.95
    small = apply_policy(random_resnet20, env.graph, policy)
    for name, s in sparsity.items():
        w = quantizable_layers(small)[name].weight
        assert int((w == 0).sum()) >= int(zeroed_count(w.numel(), s))
    assert not set(policy.layers) & set(sparsity)  # pinned layers stay dense
    # encode inverts the decoding, sparsity included
    kept = kept_channels(policy, env.graph)
    rows = env.encode(
        [kept[u.name] for u in env.units],
        [policy.units[u.name].bits for u in env.units],
        [policy.units[u.name].sparsity for u in env.units],
    )
    assert _episode(env, rows)["policy"] == policy


def test_v3_is_registered_and_v2_still_is() -> None:
    assert autoshrink.env.ENV_ID == "autoshrink/Compress-v3"
    for env_id in ("autoshrink/Compress-v3", "autoshrink/Compress-v2"):
        assert gym.spec(env_id).entry_point == "autoshrink.env.compression_env:CompressionEnv"


def test_discrete_sparsity_levels_span_none_to_the_most(
    random_resnet20: nn.Module, digits: DataSplits
) -> None:
    from autoshrink.env.wrappers import DiscretizeAction

    cfg = EnvConfig(model="resnet20", mode="sparse", size=1.0, **NO_FINETUNE)  # type: ignore[arg-type]
    env = CompressionEnv(cfg, model=random_resnet20, data=digits, evaluator=_Constant())
    wrapped = DiscretizeAction(env, keep_levels=5)
    assert list(wrapped.action_space.nvec) == [5, len(cfg.bit_choices)]
    wrapped.reset()
    _, _, _, _, info = wrapped.step(np.array([0, 0]))
    assert info["sparsity"] == 0.0
    _, _, _, _, info = wrapped.step(np.array([4, 0]))
    assert info["sparsity"] == cfg.max_sparsity
