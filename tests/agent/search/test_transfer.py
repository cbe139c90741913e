"""Transfer: an agent searched on ResNet-20 played once on ResNet-56, and the depth map."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.loop import run_search
from autoshrink.agent.search.transfer import agent_algorithm, policy_actions, replay, transfer
from autoshrink.compression.apply import apply_policy
from autoshrink.compression.artifact import save_artifact
from autoshrink.compression.counting import count_macs, count_params
from autoshrink.compression.data import load_dataset
from autoshrink.compression.errors import CheckpointError, PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy, uniform_policy
from autoshrink.compression.policy_map import map_depth, role
from autoshrink.compression.units import build_units
from autoshrink.env.compression_env import CompressionEnv
from autoshrink.env.config import EnvConfig

FAST = {"finetune_steps": 0, "eval_batches": 1, "bn_batches": 1}


def make_env(name: str, data, **settings) -> CompressionEnv:
    """A real env on an untrained zoo model: budgets and the clamp do not need training."""
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, data.num_classes, data.in_channels))
    return CompressionEnv(EnvConfig(model=name, **FAST, **settings), model=model, data=data)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def r20_agent(digits, tmp_path_factory) -> Path:
    """A DDPG agent after a 3-episode search on ResNet-20 (joint mode)."""
    env = make_env("resnet20", digits, flops=0.5, size=0.1)
    out = tmp_path_factory.mktemp("r20")
    run_search(env, AgentConfig(episodes=3, warmup_episodes=1, seed=0), out)
    return out / "agent.zip"


def graph_of(name: str):
    return build_units(build_model(ModelSpec(name, 10, 1)), torch.zeros(1, 1, 8, 8))


def test_transfer_resnet20_to_resnet56_meets_budgets_on_the_real_model(r20_agent, digits, tmp_path):
    env = make_env("resnet56", digits, flops=0.3, size=0.06)
    result = transfer(r20_agent, env, tmp_path)
    policy = result.best_policy
    assert result.episodes == 1 and result.algorithm == "ddpg"
    assert set(policy.units) == {u.name for u in env.units} and len(policy.units) == 30
    # counted on the real compressed model, not on the cost model
    model = apply_policy(env.model, env.graph, policy)
    x = digits.example_input(1)
    macs, params = count_macs(model, x), count_params(model)
    spec = ModelSpec("resnet56", digits.num_classes, digits.in_channels)
    info = save_artifact(tmp_path / "m.safetensors", model, spec, tuple(x.shape), policy)
    assert macs <= env.limits["flops"] and info.payload_bytes <= env.limits["size"]
    assert macs <= 0.3 * env.baseline["flops"] and info.payload_bytes <= 0.06 * env.baseline["size"]
    assert result.best_metrics["macs"] == macs and result.best_metrics["params"] == params
    assert result.best_metrics["budgets_met"] is True
    # deterministic: the same agent on the same env proposes the same policy
    again = transfer(r20_agent, env, tmp_path)
    assert again.best_policy.units == policy.units


def test_transfer_refuses_another_mode_and_non_learning_agents(r20_agent, digits, tmp_path):
    prune_env = make_env("resnet20", digits, mode="prune", flops=0.5)
    with pytest.raises(PolicyError, match="mode"):
        transfer(r20_agent, prune_env)
    run_search(prune_env, AgentConfig(algorithm="uniform", episodes=1), tmp_path / "u")
    with pytest.raises(CheckpointError, match="non-learning"):
        agent_algorithm(tmp_path / "u" / "agent.zip")
    with pytest.raises(CheckpointError, match="not found"):
        agent_algorithm(tmp_path / "missing.zip")


def test_replay_gives_back_a_fitting_policy_and_clamps_one_over_budget(digits):
    env = make_env("resnet20", digits, flops=0.4, size=0.1)
    # a policy the env realised itself comes back unchanged
    first = replay(env, uniform_policy(env.graph, keep=0.5, bits=4, pinned=env.pinned))
    again = replay(env, first.best_policy)
    assert again.best_policy.units == first.best_policy.units
    assert first.best_metrics["budgets_met"] is True
    # a policy far over budget is cut by the clamp, as an agent's actions would be
    whole = uniform_policy(env.graph, keep=1.0, bits=8, pinned=env.pinned)
    cut = replay(env, whole).best_policy
    assert any(u.keep < 1.0 for u in cut.units.values())
    assert replay(env, whole).best_metrics["macs"] <= env.limits["flops"]
    assert policy_actions(env, whole).shape == (len(env.units), 2)


def test_depth_map_is_the_identity_on_the_same_depth():
    graph = graph_of("resnet20")
    keeps = [0.25, 0.5, 0.75, 1.0]
    units = {
        u.name: UnitPolicy(keep=keeps[i % 4], bits=2 + i % 7, channels=u.c_out)
        for i, u in enumerate(graph.units)
    }
    policy = Policy(units=units, layers={"conv1": 8, "fc": 8})
    mapped = map_depth(policy, graph)
    assert mapped.units == policy.units and mapped.layers == policy.layers


def test_depth_map_stretches_resnet20_over_resnet56_by_role_width_and_position():
    r20, r56 = graph_of("resnet20"), graph_of("resnet56")
    # every source unit gets its own keep-ratio, so the mapping can be read back
    source_of = {round(0.05 + 0.9 * i / 11, 6): u for i, u in enumerate(r20.units)}
    units = {u.name: UnitPolicy(keep=k, channels=u.c_out) for k, u in source_of.items()}
    mapped = map_depth(Policy(units=units, layers={"conv1": 8, "fc": 8}), r56)
    assert list(mapped.units) == [u.name for u in r56.units]
    picked = [source_of[round(mapped.units[u.name].keep, 6)] for u in r56.units]
    for target, source in zip(r56.units, picked, strict=True):
        assert role(source.name) == role(target.name) and source.c_out == target.c_out
        assert mapped.units[target.name].channels == target.c_out
    # order is kept within a role: a deeper target unit never takes an earlier source unit
    for kind in {role(u.name) for u in r56.units}:
        order = [s.index for t, s in zip(r56.units, picked, strict=True) if role(t.name) == kind]
        assert order == sorted(order)
    # first and last blocks of a stage take the stage's first and last blocks
    assert picked[1].name == "layer1.0.conv1" and picked[9].name == "layer1.2.conv1"
    assert mapped.units["layer3.8.conv1"].keep == units["layer3.2.conv1"].keep
    assert mapped.layers == {"conv1": 8, "fc": 8}
