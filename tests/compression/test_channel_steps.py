"""Hardware-aware channel rounding: measured steps, the one rounding rule, exact costs."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from autoshrink.compression.artifact import load_artifact, save_artifact
from autoshrink.compression.channel_steps import (
    CountTimer,
    candidate_counts,
    channel_steps,
    efficient_counts,
    measure_steps,
    stepped,
    steps_key,
    unit_timer,
)
from autoshrink.compression.cost import Cost, cost
from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.errors import PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy, kept_channels, uniform_policy
from autoshrink.compression.prune import prune
from autoshrink.compression.unit_graph import Unit, UnitGraph
from autoshrink.compression.units import build_units

BLOCK = 16


def _staircase(unit: Unit) -> CountTimer:
    """A fake kernel: time climbs one step per started block of 16 channels."""
    return lambda n: float(math.ceil(n / BLOCK))


def _unit(c_out: int, round_to: int = 1) -> Unit:
    return Unit("c", 0, "conv", False, 3, c_out, 3, 1, 1, 64, 0, 0, ("c",), round_to=round_to)


def test_efficient_counts_keep_the_last_count_of_each_step() -> None:
    counts = list(range(1, 65))
    seconds = [math.ceil(c / BLOCK) for c in counts]
    assert efficient_counts(counts, seconds) == [16, 32, 48, 64]


def test_efficient_counts_keep_every_count_when_time_is_linear() -> None:
    counts = list(range(4, 65, 4))
    assert efficient_counts(counts, [1.0 + 0.1 * c for c in counts]) == counts


def test_a_count_as_slow_as_a_larger_one_is_dropped() -> None:
    counts = [8, 16, 24, 32]
    # 24 costs what 32 costs: keeping 24 would buy nothing
    assert efficient_counts(counts, [1.0, 2.0, 4.0, 4.0]) == [8, 16, 32]


def test_candidates_are_multiples_of_a_grain_that_caps_their_number() -> None:
    assert candidate_counts(_unit(60)) == list(range(1, 61))
    wide = candidate_counts(_unit(512))
    assert wide == list(range(8, 513, 8)) and len(wide) <= 64
    assert candidate_counts(_unit(60, round_to=8)) == [8, 16, 24, 32, 40, 48, 56, 60]


def test_kept_rounds_to_the_nearest_step_monotonically() -> None:
    unit = Unit(**{**_unit(60, round_to=4).__dict__, "steps": (16, 32, 48, 60)})
    seen = [unit.kept(k / 1000) for k in range(1, 1001)]
    assert set(seen) == {16, 32, 48, 60}
    assert seen == sorted(seen)
    assert unit.kept(1.0) == 60 and unit.kept(0.001) == 16
    assert unit.kept(24 / 60) == 32  # a tie goes to the larger count


def test_steps_that_do_not_fit_the_unit_are_refused() -> None:
    graph = build_units(build_model(ModelSpec("smallcnn")), torch.zeros(1, 3, 32, 32), round_to=4)
    unit = graph.units[0]
    n = unit.c_out
    bad_steps = [[], [8, n - 4], [16, 8, n], [8, 8, n], [7, n], [0, n], [8.0, n], str(n), [True, n]]
    for bad in bad_steps:
        with pytest.raises(PolicyError, match="channel steps of unit"):
            graph.with_steps({unit.name: bad})
    with pytest.raises(PolicyError, match="unknown unit"):
        graph.with_steps({"nowhere": [n]})
    assert graph.with_steps({unit.name: [8, n]}).unit(unit.name).steps == (8, n)


# Five architectures: residual adds, plain chain, depthwise, concat, grouped convs.
ARCHITECTURES = [
    ("resnet20", (1, 3, 32, 32)),
    ("smallcnn", (1, 3, 32, 32)),
    ("mobilenet_v2", (1, 3, 64, 64)),
    ("densenet121", (1, 3, 32, 32)),
    ("regnet_x_400mf", (1, 3, 64, 64)),
]


@pytest.mark.parametrize(("name", "shape"), ARCHITECTURES)
def test_hardware_rounding_keeps_the_cost_model_exact(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, num_classes=10)).eval()
    x = torch.zeros(shape)
    graph = build_units(model, x)
    graph = graph.with_steps(measure_steps(graph, timer=_staircase))
    assert any(u.steps for u in graph.units)
    for u in graph.units:  # each step is the last candidate before the time climbs
        candidates = candidate_counts(u)
        for c in u.steps[:-1]:
            after = candidates[candidates.index(c) + 1]
            assert math.ceil(after / BLOCK) > math.ceil(c / BLOCK), (u.name, c)
    rng = random.Random(name)
    for i in range(4):
        keep = {u.name: rng.uniform(0.05, 1.0) for u in graph.units}
        bits = {layer.name: rng.choice((4, 8, 32)) for layer in graph.layers}
        pruned = prune(model, graph, keep, importance="l1").eval()
        got = Cost(count_macs(pruned, x), count_params(pruned), count_bytes(pruned, bits))
        assert got == cost(graph, keep, bits), f"{name} policy {i}"
        modules = dict(pruned.named_modules())
        for u in graph.units:
            kept = u.kept(keep[u.name])
            if u.steps:
                assert kept in u.steps
            root = modules[u.name]
            assert getattr(root, "out_channels", getattr(root, "out_features", None)) == kept


def test_real_measurement_gives_steps_from_the_candidates(tmp_path: Path) -> None:
    model = build_model(ModelSpec("smallcnn")).eval()
    graph = build_units(model, torch.zeros(1, 3, 32, 32))
    unit = graph.units[0]
    timer = unit_timer(graph, unit, batch=2)
    assert timer(unit.c_out) > 0 and timer(unit.kept(0.5)) > 0
    steps = channel_steps(model, graph, batch=1, cache=tmp_path)
    assert set(steps) == {u.name for u in graph.units if not u.is_heads}
    for u in graph.units:
        assert steps[u.name][-1] == u.c_out
        assert set(steps[u.name]) <= set(candidate_counts(u))
    # cached: read back, not measured again
    (cached,) = tmp_path.glob("*.json")
    assert cached.stem == steps_key(model, graph, 1)
    assert channel_steps(model, graph, batch=1, cache=tmp_path) == steps
    rounded = stepped(model, graph)  # the default (the test's own) cache
    assert set(rounded.steps) == set(steps)
    assert all(u.kept(1.0) == u.c_out for u in rounded.units)


def test_a_broken_cache_file_is_measured_again(tmp_path: Path) -> None:
    model = build_model(ModelSpec("smallcnn")).eval()
    graph = build_units(model, torch.zeros(1, 3, 32, 32))
    (tmp_path / f"{steps_key(model, graph, 1)}.json").write_text('{"type": "x"}')
    steps = channel_steps(model, graph, batch=1, cache=tmp_path)
    assert all(steps[u.name][-1] == u.c_out for u in graph.units)


def _stepped_resnet20() -> tuple[torch.nn.Module, UnitGraph]:
    model = build_model(ModelSpec("resnet20")).eval()
    graph = build_units(model, torch.zeros(1, 3, 32, 32))
    return model, graph.with_steps(measure_steps(graph, timer=_staircase))


def test_a_policy_carries_its_steps_wherever_it_is_applied() -> None:
    model, graph = _stepped_resnet20()
    policy = uniform_policy(graph, keep=0.4)
    assert policy.steps == graph.steps and policy.steps
    back = Policy.from_dict(policy.to_dict())
    assert back == policy
    plain = build_units(model, torch.zeros(1, 3, 32, 32))  # as a loader rebuilds it
    want = {u.name: u.kept(0.4) for u in graph.units}
    assert kept_channels(back, plain) == want
    assert want != {u.name: u.kept(0.4) for u in plain.units}  # the steps changed something
    # a policy without steps reads as before
    data = policy.to_dict()
    del data["data"]["steps"]
    assert Policy.from_dict(data).steps == {}


@pytest.mark.parametrize("bad", [[], ["16"], [-16], {"a": 1}, [1.5]])
def test_a_policy_with_malformed_steps_is_refused(bad: object) -> None:
    policy = Policy(units={"conv1": UnitPolicy(keep=0.5)})
    data = policy.to_dict()
    data["data"]["steps"] = {"conv1": bad}
    with pytest.raises(PolicyError, match="'steps' must map"):
        Policy.from_dict(data)


def test_an_artifact_of_a_stepped_policy_loads_back_exactly(tmp_path: Path) -> None:
    model, graph = _stepped_resnet20()
    policy = uniform_policy(graph, keep=0.3, bits=8)
    pruned = prune(model, graph, policy.keep())
    path = tmp_path / "model.safetensors"
    save_artifact(path, pruned, ModelSpec("resnet20"), (1, 3, 32, 32), policy)
    loaded = load_artifact(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded(x).shape == (2, 10)
    shapes = {n: p.shape for n, p in loaded.named_parameters()}
    assert shapes == {n: p.shape for n, p in pruned.named_parameters()}
