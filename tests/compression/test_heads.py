"""Attention heads as units: whole heads go, num_heads follows, and the costs stay exact."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.compression.artifact import load_artifact, read_header, save_artifact
from autoshrink.compression.counting import count_macs
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import layer_bits, uniform_policy
from autoshrink.compression.prune import prune, prune_channels
from autoshrink.compression.quantize import quantize_weights_
from autoshrink.compression.units import build_units
from tests.compression.exact import assert_exact

timm = pytest.importorskip("timm")

# Small timm transformers, built by the test itself (random weights, 32x32 inputs).
FACTORIES = textwrap.dedent(
    """
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.vision_transformer import VisionTransformer


    def vit(num_classes=10, in_channels=3):
        return VisionTransformer(img_size=32, patch_size=8, in_chans=in_channels,
            num_classes=num_classes, embed_dim=48, depth=2, num_heads=4)


    def swin(num_classes=10, in_channels=3):
        return SwinTransformer(img_size=32, patch_size=4, window_size=4, in_chans=in_channels,
            num_classes=num_classes, embed_dim=24, depths=(1, 1), num_heads=(2, 4))
    """
)
X = torch.randn(2, 3, 32, 32)


@pytest.fixture
def factories(tmp_path: Path) -> Path:
    path = tmp_path / "transformers.py"
    path.write_text(FACTORIES)
    return path


def _model(factories: Path, name: str) -> tuple[ModelSpec, nn.Module]:
    spec = ModelSpec(f"{factories}:{name}")
    torch.manual_seed(0)
    return spec, build_model(spec).eval()


def test_vit_heads_are_units_and_exact(factories: Path) -> None:
    _, model = _model(factories, "vit")
    graph = assert_exact(model, X, policies=4)
    heads = [u for u in graph.units if u.is_heads]
    assert [u.name for u in heads] == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    assert all(u.c_out == 4 and u.width == 3 * 12 for u in heads)
    assert {"blocks.0.mlp.fc1", "blocks.1.mlp.fc1"} <= set(graph.unit_names)


def test_pruning_heads_updates_num_heads(factories: Path) -> None:
    _, model = _model(factories, "vit")
    graph = build_units(model, X)
    small = prune(model, graph, {"blocks.0.attn.qkv": 0.5})
    attn = small.blocks[0].attn
    assert (attn.num_heads, attn.attn_dim) == (2, 24)
    assert (attn.qkv.out_features, attn.proj.in_features) == (72, 24)
    assert small.blocks[1].attn.num_heads == 4
    assert small(X).shape == (2, 10)


def test_a_removed_head_that_contributed_nothing_changes_nothing(factories: Path) -> None:
    _, model = _model(factories, "vit")
    graph = build_units(model, X)
    with torch.no_grad():
        model.blocks[1].attn.proj.weight[:, 12:24] = 0  # head 1 of block 1 is silent
        want = model(X)
    scores = {u.name: torch.ones(u.c_out) for u in graph.units}
    scores["blocks.1.attn.qkv"] = torch.tensor([1.0, 0.0, 1.0, 1.0])
    small = prune_channels(model, graph, {"blocks.1.attn.qkv": 3}, scores=scores)
    with torch.no_grad():
        assert (small(X) - want).abs().max() <= 1e-5
    # Removing a head that did contribute does change the output: the test can fail.
    scores["blocks.1.attn.qkv"] = torch.tensor([0.0, 1.0, 1.0, 1.0])
    other = prune_channels(model, graph, {"blocks.1.attn.qkv": 3}, scores=scores)
    with torch.no_grad():
        assert (other(X) - want).abs().max() > 1e-4


def test_swin_heads_cut_their_relative_position_bias_columns(factories: Path) -> None:
    _, model = _model(factories, "swin")
    graph = assert_exact(model, X, policies=4)
    heads = [u for u in graph.units if u.is_heads]
    assert [u.c_out for u in heads] == [2, 4]
    small = prune(model, graph, {heads[1].name: 0.5})
    attn = small.layers[1].blocks[0].attn
    assert attn.num_heads == 2 and attn.relative_position_bias_table.shape[1] == 2


def test_head_pruned_artifact_round_trips(factories: Path, tmp_path: Path) -> None:
    spec, model = _model(factories, "vit")
    graph = build_units(model, X)
    policy = uniform_policy(graph, keep=0.5, bits=6)
    pruned = prune(model, graph, policy.keep())
    info = save_artifact(tmp_path / "vit.safetensors", pruned, spec, tuple(X.shape), policy)
    assert read_header(info.path).kept["blocks.0.attn.qkv"] == 2  # heads, not qkv rows
    loaded = load_artifact(info.path, factory=spec.name)
    assert loaded.blocks[0].attn.num_heads == 2
    simulated = quantize_weights_(pruned, layer_bits(policy, graph))
    with torch.no_grad():
        assert (loaded(X) - simulated(X)).abs().max() <= 1e-5


class _Sdpa(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.reshape(2, 3, 16, 8)  # batch, heads, tokens, head dim
        return F.scaled_dot_product_attention(q, q, q)


def test_attention_on_the_cpu_is_counted() -> None:
    # q @ k^T and attn @ v: batch x heads x tokens x tokens x head dim MACs each.
    assert count_macs(_Sdpa(), torch.randn(2, 3 * 16 * 8)) == 2 * (2 * 3 * 16 * 16 * 8)


def test_torchvision_multihead_attention_heads_are_not_units() -> None:
    # nn.MultiheadAttention ties its head width to the embedding: no head unit, and the
    # model is still exact (its MLPs are units).
    from torchvision.models import VisionTransformer

    model = VisionTransformer(32, 8, 2, 4, 48, 96, num_classes=10).eval()
    graph = assert_exact(model, X, policies=2)
    assert not any(u.is_heads for u in graph.units)
    assert any(name.endswith("mlp.0") for name in graph.unit_names)


def test_layers_no_unit_decides_are_pinned_not_left_float(factories: Path) -> None:
    from autoshrink.compression.quantize import pinned_layers

    _, model = _model(factories, "vit")
    pins = pinned_layers(build_units(model, X))
    assert {"patch_embed.proj", "blocks.0.attn.proj", "blocks.1.mlp.fc2", "head"} <= set(pins)
    assert not {"blocks.0.attn.qkv", "blocks.0.mlp.fc1"} & set(pins)
    resnet = build_model(ModelSpec("resnet20"))
    assert pinned_layers(build_units(resnet, torch.zeros(1, 3, 8, 8))) == ("conv1", "fc")


def test_the_per_unit_breakdown_holds_each_units_attention_matmuls(factories: Path) -> None:
    from autoshrink.compression.breakdown import breakdown
    from autoshrink.compression.cost import cost_from_channels

    _, model = _model(factories, "vit")
    graph = build_units(model, X)
    kept = {"blocks.0.attn.qkv": 1, "blocks.1.mlp.fc1": 40}
    table = breakdown(graph, kept, {})
    assert table.after == cost_from_channels(graph, kept)
    assert sum(r.after.macs for r in table.rows) == table.after.macs
    head = next(r for r in table.rows if r.name == "blocks.0.attn.qkv")
    assert (head.kept, head.channels) == (1, 4)  # heads, not qkv rows
    qkv = next(layer for layer in graph.layers if layer.name == "blocks.0.attn.qkv")
    # 1 of 4 heads kept: a quarter of the qkv matmul, plus that head's attention matmuls.
    attention = int(graph.coupling.unit_macs[graph.unit_names.index(head.name)])
    assert head.after.macs == qkv.macs // 4 + attention > qkv.macs // 4
