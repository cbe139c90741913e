"""Units are DepGraph groups with stable names, one rounding rule, and clear refusals."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from autoshrink.compression.errors import PolicyError, UnsupportedModelError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.units import Unit, UnitGraph, build_units
from tests.compression.exact import assert_exact

X32 = torch.zeros(1, 3, 32, 32)


def _graph(name: str, shape: tuple[int, ...] = (1, 3, 32, 32), **kw: object) -> UnitGraph:
    return build_units(build_model(ModelSpec(name)), torch.zeros(shape), **kw)  # type: ignore[arg-type]


def _unit(n: int, r: int) -> Unit:
    return Unit("u", 0, "conv", False, 3, n, 3, 1, 1, 1, 0, 0, ("u",), r)


@given(n=st.integers(1, 512), r=st.sampled_from([1, 2, 4, 8, 16]), keep=st.floats(0.0001, 1.0))
def test_kept_is_rounded_bounded_and_monotone(n: int, r: int, keep: float) -> None:
    unit = _unit(n, r)
    k = unit.kept(keep)
    assert min(r, n) <= k <= n
    assert k % r == 0 or k == n
    assert unit.kept(1.0) == n
    assert unit.kept(min(1.0, keep * 1.5)) >= k
    assert abs(k - keep * n) <= r / 2 or k in (min(r, n), n)


@pytest.mark.parametrize("keep", [0, 0.0, -0.2, 1.5, float("nan"), float("inf"), True, "0.5"])
def test_kept_rejects_keep_ratios_outside_0_1(keep: object) -> None:
    with pytest.raises(PolicyError, match="unit u"):
        _unit(16, 1).kept(keep)  # type: ignore[arg-type]


def test_resnet20_units_follow_execution_order_and_skip_the_classifier() -> None:
    g = _graph("resnet20")
    layer_names = [layer.name for layer in g.layers]
    assert layer_names[0] == "conv1" and layer_names[-1] == "fc"
    by_name = {layer.name: layer for layer in g.layers}
    assert by_name["fc"].unit is None
    # One residual unit per stage (stem + all conv2 + shortcuts), one per block's conv1.
    assert len(g.units) == 3 + 9
    assert [u.index for u in g.units] == list(range(len(g.units)))
    positions = [layer_names.index(u.name) for u in g.units]
    assert positions == sorted(positions)
    stem = g.unit("conv1")
    assert stem.layers[0] == "conv1" and set(stem.layers) >= {"layer1.0.conv2", "layer1.2.conv2"}
    assert all(by_name[name].unit == "conv1" for name in stem.layers)
    assert stem.c_out == 16 and stem.fmap == 32 * 32 and stem.kind == "conv"
    assert stem.macs == sum(by_name[name].macs for name in stem.layers)
    assert g.unit("layer2.0.conv1").stride == 2


def test_unit_names_are_stable_across_builds() -> None:
    for name in ("resnet20", "mobilenet_v2"):
        first, second = _graph(name), _graph(name)
        assert first.unit_names == second.unit_names
        assert first.units == second.units and first.layers == second.layers


def test_depthwise_units_are_flagged() -> None:
    g = _graph("mobilenet_v2")
    dw = [u for u in g.units if u.depthwise]
    assert dw and all(
        any(n.endswith("conv.1.0") or n.endswith("conv.0.0") for n in u.layers) for u in dw
    )
    assert not g.unit("features.2.conv.2").depthwise  # a projection conv: no dw inside


def test_grouped_convs_are_balanced_over_their_groups() -> None:
    model = build_model(ModelSpec("regnet_x_400mf"))
    g = build_units(model, torch.zeros(1, 3, 64, 64), round_to=8)
    grouped = [u for u in g.units if u.channel_groups > 1]
    assert grouped
    rng = random.Random(0)
    for u in grouped:
        assert u.round_to == math.lcm(8, u.channel_groups)
        assert u.kept(rng.uniform(0.05, 1)) % u.channel_groups == 0
        start = g.coupling.unit_offsets[u.index]
        touched = {
            e.module for e in g.plan if ((e.root >= start) & (e.root < start + u.c_out)).any()
        }
        assert any(getattr(model.get_submodule(n), "groups", 1) > 1 for n in touched)


def test_shufflenet_prunes_its_branches_and_freezes_the_shuffled_stream() -> None:
    model = build_model(ModelSpec("shufflenet_v2_x0_5"))
    graph = assert_exact(model, torch.randn(1, 3, 64, 64), policies=2)
    names = {n for n, _ in model.named_modules() if n}
    assert len(graph.units) >= 12 and graph.frozen
    for root, why in graph.frozen.items():  # every reason names a real layer
        assert root in names and any(part in names for part in why.split("'")), why
    assert any("View" in why or "Transpose" in why for why in graph.frozen.values())


class _Scale(nn.Module):
    """An unknown module with a per-channel parameter."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Odd(nn.Module):
    def __init__(self, middle: nn.Module) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.middle = middle
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.middle(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def test_a_per_channel_parameter_of_an_unknown_module_is_cut_with_its_group() -> None:
    graph = assert_exact(_Odd(_Scale(8)).eval(), X32)
    assert graph.unit_names == ("conv1", "conv2") and "middle.gamma" in graph.coupling.norm_names


class _Mix(nn.Module):
    """An unknown module that mixes its channels through a parameter."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.eye(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,cd->bdhw", x, self.mix)


def test_an_unknown_module_mixing_channels_freezes_its_group() -> None:
    graph = build_units(_Odd(_Mix(8)), X32)
    assert graph.unit_names == ("conv2",) and list(graph.frozen) == ["conv1"]
    assert "'conv1'" in graph.frozen["conv1"] or "middle.mix" in graph.frozen["conv1"]
    ignored = build_units(_Odd(_Scale(8)), X32, ignored_layers=["conv1"])  # the user's way
    assert ignored.unit_names == ("conv2",) and "ignored" in ignored.frozen["conv1"]


class _Flip(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1)  # reverses the channels


def test_channel_reordering_op_freezes_the_unit_naming_the_layer_before_it() -> None:
    graph = build_units(_Odd(_Flip()), X32)
    assert graph.unit_names == ("conv2",)
    assert re.search(r"Flip.*'conv1'", graph.frozen["conv1"]), graph.frozen


def test_a_model_with_every_unit_frozen_is_refused_naming_a_layer() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), _Flip(), nn.Conv2d(8, 8, 3), nn.Flatten(1))
    with pytest.raises(UnsupportedModelError, match=r"no prunable unit left.*layer '0'.*Flip"):
        build_units(model, X32)


class _InputMix(nn.Module):
    """The stem's output is added to the (unprunable) input: cutting the stem breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.stem(x) + x.flip(1)).mean((2, 3)))


def test_a_unit_whose_pruned_model_breaks_is_frozen_by_the_check() -> None:
    graph = build_units(_InputMix(), X32)
    assert graph.unit_names == ("conv",)
    # The reason quotes the error's own first line, so the user has something to act on.
    assert re.fullmatch(
        r"pruning it breaks the forward pass \(RuntimeError: The size of tensor a \(\d+\) "
        r"must match the size of tensor b \(3\).*\)",
        graph.frozen["stem"],
    ), graph.frozen["stem"]
    assert "the model input" not in graph.frozen["stem"]
    unchecked = build_units(_InputMix(), X32, verify=False)  # what the trace alone believes
    assert unchecked.unit_names == ("stem", "conv")


def test_ignored_layers_fix_their_group_and_unknown_names_are_refused() -> None:
    model = build_model(ModelSpec("resnet20"))
    g = build_units(model, X32, ignored_layers=["layer1.0.conv1", model.layer2[1].conv1])
    assert "layer1.0.conv1" not in g.unit_names and "layer2.1.conv1" not in g.unit_names
    assert len(g.units) == 12 - 2
    with pytest.raises(UnsupportedModelError, match="nope"):
        build_units(model, X32, ignored_layers=["nope"])
    with pytest.raises(UnsupportedModelError, match="round_to"):
        build_units(model, X32, round_to=0)


def test_build_leaves_the_model_as_it_was() -> None:
    model = build_model(ModelSpec("resnet20")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_units(model, X32)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_round_to_larger_than_a_unit_keeps_it_whole() -> None:
    g = _graph("smallcnn", round_to=64)
    first = g.unit("features.0.0")  # 32 channels < 64
    assert first.kept(0.1) == 32 and g.unit("features.3.0").kept(0.1) == 64


class _Cached(nn.Module):
    """Caches a tensor made from a parameter on its first eval forward, as timm's LeViT,
    EfficientFormer(V2) and TinyViT cache their attention biases (in a plain dict)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(8))
        self.cache: dict[str, torch.Tensor] = {}
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            scale = self.scale * 2
        else:
            if str(x.device) not in self.cache:
                self.cache[str(x.device)] = self.scale * 2
            scale = self.cache[str(x.device)]
        y = self.conv2(torch.relu(self.conv(x))) * scale.view(1, -1, 1, 1)
        return self.fc(y.mean((2, 3)))


def test_build_leaves_a_caching_model_uncached_and_deep_copyable() -> None:
    import copy

    model = _Cached().eval()
    graph = build_units(model, X32)
    assert model.cache == {}  # the forward passes of tracing left nothing behind
    copy.deepcopy(model)  # a cached tensor tied to the trace's graph would refuse this
    assert "conv" in graph.unit_names and not model.training
    with torch.no_grad():
        model(X32)  # the model's own cache still works, with a tensor of its own
    assert set(model.cache) == {"cpu"}


def test_counting_macs_leaves_a_caching_model_deep_copyable() -> None:
    import copy

    from autoshrink.compression.counting import count_macs

    model = _Cached().eval()
    assert count_macs(model, X32) > 0
    assert model.cache == {}
    copy.deepcopy(model)


def test_pruning_a_caching_model_leaves_it_deep_copyable() -> None:
    import copy

    from autoshrink.compression.prune import prune

    model = _Cached().eval()
    graph = build_units(model, X32)
    small = prune(model, graph, {u.name: 0.5 for u in graph.units})  # scores trace it
    assert model.cache == {} and small.cache == {}
    copy.deepcopy(model)
    with torch.no_grad():
        assert small(X32).shape == (1, 4)
