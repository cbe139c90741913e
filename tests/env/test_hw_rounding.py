"""The env with hardware-aware rounding: every realised count is a measured step, costs exact."""

from __future__ import annotations

import numpy as np
from torch import nn

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.counting import count_macs, count_params
from autoshrink.compression.data import DataSplits
from autoshrink.compression.policy import Policy, kept_channels
from autoshrink.env import CompressionEnv, EnvConfig

FAST = {"finetune_steps": 0, "bn_batches": 1, "eval_batches": 1, "baseline_epochs": 2}


def test_episodes_keep_measured_steps_and_meet_the_budget(
    smallcnn: nn.Module, digits: DataSplits
) -> None:
    cfg = EnvConfig(model="smallcnn", mode="prune", flops=0.5, hw_rounding=True, **FAST)
    env = CompressionEnv(cfg, model=smallcnn, data=digits)
    assert all(u.steps and u.steps[-1] == u.c_out for u in env.units)
    plain = CompressionEnv(cfg.replace(hw_rounding=False), model=smallcnn, data=digits)
    assert all(not u.steps for u in plain.units)
    rng = np.random.default_rng(0)
    for _ in range(3):
        env.reset(seed=int(rng.integers(1000)))
        done, info = False, {}
        while not done:
            _, _, done, _, info = env.step(rng.random(1, dtype=np.float32))
        policy = info["policy"]
        assert isinstance(policy, Policy) and policy.steps == env.graph.steps
        assert Policy.from_dict(info["policy_dict"]) == policy
        kept = kept_channels(policy, plain.graph)  # the policy's steps, on a plain graph
        assert all(kept[u.name] in u.steps for u in env.units)
        model = apply_policy(smallcnn, plain.graph, policy)
        x = digits.example_input(1)
        assert (count_macs(model, x), count_params(model)) == (info["macs"], info["params"])
        assert info["budgets_met"] and info["macs"] <= env.limits["flops"]
