"""Planning a policy's application: as it is, stretched, or replayed through the clamp."""

from __future__ import annotations

import pytest
import torch

from autoshrink.agent.search.policy_plan import plan_policy, policy_file
from autoshrink.compression.errors import AutoshrinkError, PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, uniform_policy
from autoshrink.compression.units import build_units


def policy_of(name: str, **kwargs) -> Policy:
    graph = build_units(build_model(ModelSpec(name, 10, 1)), torch.zeros(1, 1, 8, 8))
    return uniform_policy(graph, **kwargs).with_meta(model=name)


def test_policy_file_is_the_file_or_a_run_folders_policy(tmp_path):
    assert policy_file(tmp_path) == tmp_path / "policy.json"
    assert policy_file(tmp_path / "p.json") == tmp_path / "p.json"


def test_as_is_takes_the_budgets_recorded_in_the_policy(tmp_path):
    policy = policy_of("smallcnn", keep=0.5, bits=4)
    policy = policy.with_meta(budgets={"macs": 9e9, "bytes": 8e8, "latency_s": 1e-3})
    policy.save(tmp_path / "p.json")
    plan = plan_policy(tmp_path / "p.json", "smallcnn", seed=3)
    assert (plan.replay, plan.algorithm, plan.model) == (False, "policy", None)
    assert plan.source == {"policy": str(tmp_path / "p.json")}
    cfg = plan.config
    assert (cfg.model, cfg.dataset, cfg.mode, cfg.seed) == ("smallcnn", "digits", "joint", 3)
    assert set(cfg.budgets) == {"flops", "size"}  # latency is not carried over
    assert (cfg.flops.value, cfg.flops.relative, cfg.size.value) == (9e9, False, 8e8)
    assert plan.policy.units == policy.units


def test_a_map_with_budgets_replays_and_without_is_applied_as_it_is():
    source = policy_of("resnet20", keep=0.8, bits=6, pinned={"conv1": 8, "fc": 8})
    fitted = plan_policy(source, "resnet32", budgets={"flops": 0.4}, map_name="depth")
    assert (fitted.replay, fitted.algorithm) == (True, "policy+depth-map")
    assert fitted.source == {"policy": None, "map": "depth", "mapped_from": "resnet20"}
    assert len(fitted.policy.units) == 18 and fitted.config.flops.value == 0.4
    assert fitted.config.first_last_bits == 8
    stretched = plan_policy(source, "resnet32", map_name="depth")
    assert (stretched.replay, stretched.algorithm) == (False, "policy+depth-map")
    assert stretched.config.flops.value == 1.0


def test_refusals_keep_the_cli_messages():
    policy = policy_of("smallcnn", keep=0.5, bits=4)
    with pytest.raises(PolicyError, match="does not meet the budgets: flops"):
        plan_policy(policy, "smallcnn", budgets={"flops": 0.1})
    with pytest.raises(PolicyError, match="missing units"):
        plan_policy(policy, "resnet20")
    with pytest.raises(AutoshrinkError, match="set by the policy"):
        plan_policy(policy, "smallcnn", settings={"mode": "prune"})
    with pytest.raises(AutoshrinkError, match="unknown map 'width'"):
        plan_policy(policy, "smallcnn", map_name="width")
