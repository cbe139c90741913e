"""Fused and subclassed norms are norms: pruned with their channels, the cost stays exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from autoshrink.compression.errors import UnsupportedModelError
from autoshrink.compression.prune import prune
from autoshrink.compression.units import build_units
from tests.compression.exact import assert_exact

X = torch.randn(2, 3, 16, 16)


class BnSilu(nn.BatchNorm2d):
    """A batch norm with its activation fused into forward, as timm's BatchNormAct2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(super().forward(x))


class ChannelsLastNorm(nn.LayerNorm):
    """A LayerNorm over the channels of an NCHW tensor, as timm's LayerNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias)
        return x.permute(0, 3, 1, 2)


class Net(nn.Module):
    """Two conv/norm stages with a residual add around the second, then a classifier."""

    def __init__(self, norm: type[nn.Module] | None = None, **kw: object) -> None:
        super().__init__()
        make = norm or (lambda c: nn.GroupNorm(4, c))
        self.conv1, self.norm1 = nn.Conv2d(3, 16, 3, padding=1), make(16, **kw)
        self.conv2, self.norm2 = nn.Conv2d(16, 24, 3, padding=1), make(24, **kw)
        self.conv3, self.norm3 = nn.Conv2d(24, 24, 1), make(24, **kw)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.norm1(self.conv1(x))))
        y = y + self.norm3(self.conv3(y))
        return self.fc(y.mean((2, 3)))


def _norm_widths(model: nn.Module) -> dict[str, int]:
    return {n: int(m.weight.shape[0]) for n, m in model.named_modules() if n.startswith("norm")}


@pytest.mark.parametrize("norm", [BnSilu, ChannelsLastNorm])
def test_a_subclassed_norm_is_pruned_with_its_channels(norm: type[nn.Module]) -> None:
    model = Net(norm).eval()
    graph = assert_exact(model, X)
    assert graph.unit_names == ("conv1", "conv2") and not graph.frozen
    assert set(graph.coupling.norm_names) == {"norm1", "norm2", "norm3"}


def test_a_norm_op_outside_any_norm_module_freezes_its_units() -> None:
    class Loose(nn.Module):  # normalises with tensors no norm module owns
        def __init__(self, c: int) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(c))
            self.register_buffer("var", torch.ones(c))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.batch_norm(x, self.mean, self.var)

    with pytest.raises(UnsupportedModelError, match=r"layer 'conv1'.*norm outside any norm module"):
        build_units(Net(Loose).eval(), X)


timm = pytest.importorskip("timm")


def test_timm_batchnormact2d_unit_is_exact() -> None:
    from timm.layers import BatchNormAct2d

    model = Net(BatchNormAct2d, act_layer=nn.SiLU).eval()
    graph = assert_exact(model, X)
    assert graph.unit_names == ("conv1", "conv2") and not graph.frozen
    small = dict(prune(model, graph, {"conv1": 0.5, "conv2": 0.5}).named_modules())
    assert isinstance(small["norm1"], BatchNormAct2d) and small["norm1"].num_features == 8


@pytest.mark.parametrize("name", ["GroupNormAct", "LayerNorm2d"])
def test_timm_groupnormact_and_layernorm2d_units_are_exact(name: str) -> None:
    from timm import layers

    norm = getattr(layers, name)
    model = Net((lambda c: norm(c, num_groups=4)) if name == "GroupNormAct" else norm).eval()
    graph = assert_exact(model, X)
    assert graph.unit_names == ("conv1", "conv2") and not graph.frozen


class ConvNeXtBlock(nn.Module):
    """A ConvNeXt block: depthwise conv, channels-last LayerNorm and MLP, layer scale."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.rand(c, 1, 1))  # a parameter of no known module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(F.gelu(self.fc1(y))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class TinyConvNeXt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 16, 4, stride=4), ChannelsLastNorm(16)
        self.blocks = nn.Sequential(ConvNeXtBlock(16), ConvNeXtBlock(16))
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem_norm(self.stem(x))).mean((2, 3)))


def test_convnext_channels_last_blocks_and_layer_scale_are_pruned_exactly() -> None:
    model = TinyConvNeXt().eval()
    graph = assert_exact(model, X, policies=4)
    assert graph.unit_names == ("stem", "blocks.0.fc1", "blocks.1.fc1") and not graph.frozen
    assert {"blocks.0.layer_scale", "blocks.1.layer_scale"} <= set(graph.coupling.norm_names)
    small = prune(model, graph, {"stem": 0.5})
    assert small.blocks[1].layer_scale.shape == (8, 1, 1)
    assert small.blocks[1].norm.weight.numel() == 8
