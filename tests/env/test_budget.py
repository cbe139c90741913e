"""The budget guarantee: any action sequence ends with a policy that meets every budget.

The property test drives the clamp exactly as the env does (decode, round, clamp) over many
random action sequences and random feasible budgets, on a residual, a depthwise and a plain
network; for a subset the final policy is applied to the real model (channels removed) and
the result is *counted*, not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from autoshrink.compression.cost import cost_from_channels
from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.errors import BudgetInfeasibleError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.quantize import first_and_last_layers
from autoshrink.compression.units import UnitGraph, build_units
from autoshrink.env.budget import BudgetClamp, keep_for, realisable_channels
from autoshrink.env.state import decode_action

ARCHS = {
    "resnet20": ((1, 1, 8, 8), 1),  # residual
    "mobilenet_v2": ((1, 3, 32, 32), 1),  # depthwise
    "smallcnn": ((1, 1, 8, 8), 4),  # plain, with channel rounding
}
BITS = (2, 3, 4, 5, 6, 7, 8)


@dataclass
class Arch:
    name: str
    model: nn.Module
    graph: UnitGraph
    example: torch.Tensor
    baseline: dict[str, float]


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request: pytest.FixtureRequest) -> Arch:
    name = request.param
    shape, round_to = ARCHS[name]
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, num_classes=10, in_channels=shape[1])).eval()
    example = torch.zeros(*shape)
    graph = build_units(model, example, round_to=round_to)
    full = cost_from_channels(graph, {u.name: u.c_out for u in graph.units})
    baseline = {"flops": full.macs, "params": full.params, "size": full.bytes}
    return Arch(name, model, graph, example, {k: float(v) for k, v in baseline.items()})


def _clamp(arch: Arch, limits: dict[str, float], joint: bool, min_keep: float) -> BudgetClamp:
    pinned = dict.fromkeys(first_and_last_layers(arch.graph), 8) if joint else {}
    return BudgetClamp(
        arch.graph,
        limits,
        arch.baseline,
        min_keep=min_keep,
        bit_choices=BITS if joint else (32,),
        pinned=pinned,
    )


def _episode(clamp: BudgetClamp, actions: np.ndarray, mode: str, min_keep: float) -> Any:
    channels = list(clamp.max_channels)
    bits = list(clamp.max_bits)
    for t, unit in enumerate(clamp.units):
        keep, b = decode_action(actions[t], mode, min_keep, BITS)
        channels[t], bits[t] = clamp.clamp(t, channels, bits, (unit.kept(keep), b))
    return channels, bits


def _random_limits(clamp0: BudgetClamp, arch: Arch, rng: np.random.Generator) -> dict[str, float]:
    metrics = [m for m in ("flops", "params", "size") if rng.random() < 0.6] or ["flops"]
    limits = {}
    for m in metrics:
        lo = clamp0.minimum[m]
        # sometimes exactly the tightest reachable budget, otherwise anywhere up to whole
        frac = 0.0 if rng.random() < 0.15 else rng.random() ** 2
        limits[m] = lo + frac * (arch.baseline[m] - lo)
    return limits


def _counted(
    arch: Arch, clamp: BudgetClamp, channels: list[int], bits: list[int]
) -> dict[str, int]:
    from autoshrink.compression.prune import prune_channels

    kept = dict(zip(clamp.names, channels, strict=True))
    model = prune_channels(arch.model, arch.graph, kept)
    low = {k: b for k, b in clamp.bits_by_layer(bits).items() if b < 32}
    return {
        "flops": count_macs(model, arch.example),
        "params": count_params(model),
        "size": count_bytes(model, low),
    }


def test_any_action_sequence_meets_random_budgets(arch: Arch) -> None:
    rng = np.random.default_rng(list(ARCHS).index(arch.name))
    n = len(arch.graph.units)
    sequences = 80
    counted = 0
    for i in range(sequences):
        joint = i % 4 != 3
        mode = "joint" if joint else "prune"
        k = 2 if joint else 1
        min_keep = 0.2 if i % 5 else 0.1
        reference = _clamp(arch, {}, joint, min_keep)
        limits = _random_limits(reference, arch, rng)
        clamp = _clamp(arch, limits, joint, min_keep)
        if i % 8 == 0:
            actions = np.ones((n, k))
        elif i % 8 == 1:
            actions = np.zeros((n, k))
        else:
            actions = rng.random((n, k))
            actions[rng.random(n) < 0.2] = 1.0  # greedy units: the clamp must bite
        channels, bits = _episode(clamp, actions, mode, min_keep)
        if i % 2:  # the env's default end of episode: grow the channels to the budget
            filled = clamp.fill(channels, bits)
            assert all(f >= c for f, c in zip(filled, channels, strict=True))
            channels = filled
        for t, unit in enumerate(clamp.units):
            assert channels[t] in realisable_channels(unit, min_keep)
            assert bits[t] in (BITS if joint else (32,))
        estimated = clamp.measure(channels, bits)
        for m, limit in limits.items():
            assert estimated[m] <= limit, (arch.name, i, m)
        if i % 10 == 0:  # counted on the really pruned model, not estimated
            real = _counted(arch, clamp, channels, bits)
            counted += 1
            for m, limit in limits.items():
                assert real[m] <= limit, (arch.name, i, m, real[m], limit)
                assert real[m] == estimated[m]
    assert counted >= sequences // 10


def test_feasible_proposal_is_taken_and_clamp_is_tight(arch: Arch) -> None:
    reference = _clamp(arch, {}, True, 0.2)
    limit = reference.minimum["flops"] + 0.3 * (arch.baseline["flops"] - reference.minimum["flops"])
    clamp = _clamp(arch, {"flops": limit}, True, 0.2)
    channels, bits = list(clamp.max_channels), list(clamp.max_bits)
    # the first unit wants everything: it gets the largest count that still leaves room
    unit = clamp.units[0]
    c, b = clamp.clamp(0, channels, bits, (unit.c_out, 8))
    suffix_c, suffix_b = clamp.min_channels[1:], clamp.min_bits[1:]
    assert clamp.feasible([c, *suffix_c], [b, *suffix_b])
    larger = [x for x in realisable_channels(unit, 0.2) if x > c]
    if larger:
        assert not clamp.feasible([larger[0], *suffix_c], [b, *suffix_b])
    # a proposal that fits is taken unchanged
    small = clamp.min_channels[0]
    assert clamp.clamp(0, channels, bits, (small, 2)) == (small, 2)


def test_tightest_budget_forces_every_unit_to_its_minimum(arch: Arch) -> None:
    reference = _clamp(arch, {}, True, 0.2)
    lo = reference.minimum["size"]
    clamp = _clamp(arch, {"size": lo}, True, 0.2)
    channels, bits = _episode(clamp, np.ones((len(clamp.units), 2)), "joint", 0.2)
    assert clamp.measure(channels, bits)["size"] == lo
    assert channels == clamp.min_channels
    for t, layers in enumerate(clamp._unit_layers):
        if layers:  # a unit whose layers are all pinned has bits that cost nothing
            assert bits[t] == clamp.min_bits[t]


def test_bits_are_lowered_only_when_channels_cannot_help(arch: Arch) -> None:
    reference = _clamp(arch, {}, True, 0.2)
    clamp = _clamp(arch, {"size": reference.minimum["size"] * 1.02}, True, 0.2)
    t = next(i for i, layers in enumerate(clamp._unit_layers) if layers)
    unit = clamp.units[t]
    prefix_c, prefix_b = clamp.min_channels[:t], clamp.min_bits[:t]
    suffix_c, suffix_b = clamp.min_channels[t + 1 :], clamp.min_bits[t + 1 :]
    c, b = clamp.clamp(t, [*prefix_c, 0], [*prefix_b, 0], (unit.c_out, 8))
    assert clamp.feasible([*prefix_c, c, *suffix_c], [*prefix_b, b, *suffix_b])
    fewest = clamp.min_channels[t]
    if b < 8:  # lowered: then even the fewest channels at any higher bits do not fit
        for higher in (x for x in BITS if x > b):
            assert not clamp.feasible(
                [*prefix_c, fewest, *suffix_c], [*prefix_b, higher, *suffix_b]
            )
    larger = [x for x in realisable_channels(unit, 0.2) if x > c]
    if larger:  # and the channel count is the largest that fits at those bits
        assert not clamp.feasible([*prefix_c, larger[0], *suffix_c], [*prefix_b, b, *suffix_b])


def test_infeasible_budget_states_smallest_reachable(arch: Arch) -> None:
    reference = _clamp(arch, {}, True, 0.2)
    smallest = reference.minimum["flops"]
    with pytest.raises(BudgetInfeasibleError, match="smallest reachable") as info:
        _clamp(arch, {"flops": 0.9 * smallest}, True, 0.2)
    ratio = f"{smallest / arch.baseline['flops']:.2%}"
    assert ratio in str(info.value)
    _clamp(arch, {"flops": smallest}, True, 0.2)  # exactly reachable is accepted


def test_keep_for_realises_every_count(arch: Arch) -> None:
    for unit in arch.graph.units:
        for c in realisable_channels(unit, 0.05):
            assert unit.kept(keep_for(unit, c)) == c


def test_fill_grows_an_underspent_policy_until_a_budget_binds(arch: Arch) -> None:
    reference = _clamp(arch, {}, True, 0.2)
    for metric in ("flops", "params", "size"):
        lo = reference.minimum[metric]
        limit = lo + 0.4 * (arch.baseline[metric] - lo)
        clamp = _clamp(arch, {metric: limit}, True, 0.2)
        bits = [8] * len(clamp.units)
        start = list(clamp.min_channels)
        filled = clamp.fill(start, bits)
        assert clamp.feasible(filled, bits)
        assert all(f >= c for f, c in zip(filled, start, strict=True))
        spent = clamp.measure(filled, bits)[metric]
        # the budget binds (at least 80 % of it spent: channel counts are discrete), unless
        # every unit is whole
        assert spent <= limit
        assert filled == clamp.max_channels or spent >= 0.8 * limit, (arch.name, metric)
        for t, unit in enumerate(clamp.units):
            assert filled[t] in realisable_channels(unit, 0.2)


def test_fill_keeps_a_policy_without_room_or_without_budgets(arch: Arch) -> None:
    reference = _clamp(arch, {}, True, 0.2)
    bits = [8] * len(reference.units)
    start = list(reference.min_channels)
    assert reference.fill(start, bits) == start  # no budgets: nothing to fill
    tight = _clamp(arch, {"flops": reference.minimum["flops"]}, True, 0.2)
    assert tight.fill(start, [2] * len(start)) == start
    loose = _clamp(arch, {"flops": arch.baseline["flops"]}, False, 0.2)
    assert loose.fill(start, [32] * len(start)) == loose.max_channels


def test_fair_keep_is_the_largest_uniform_share_of_what_is_left(arch: Arch) -> None:
    reference = _clamp(arch, {}, True, 0.2)
    assert reference.fair_keep(0, reference.min_channels, reference.min_bits, 8) == 1.0
    lo, hi = reference.minimum["flops"], arch.baseline["flops"]
    clamp = _clamp(arch, {"flops": lo + 0.3 * (hi - lo)}, True, 0.2)
    n = len(clamp.units)
    rng = np.random.default_rng(0)
    for t in (0, n // 3, n - 1):
        # a feasible decided prefix: random actions through the clamp
        channels, bits = _episode(clamp, rng.uniform(0, 1, (n, 2)), "joint", 0.2)
        k = clamp.fair_keep(t, channels, bits, 8)
        rest = clamp.units[t:]
        share = [u.kept(k) for u in rest]
        suffix_bits = [8] * len(rest)
        assert clamp.feasible([*channels[:t], *share], [*bits[:t], *suffix_bits])
        if k < 1.0:  # a little more for every undecided unit no longer fits
            more = [u.kept(min(1.0, k + 0.03)) for u in rest]
            assert not clamp.feasible([*channels[:t], *more], [*bits[:t], *suffix_bits])
        else:
            assert k == 1.0
