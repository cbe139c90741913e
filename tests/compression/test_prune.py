"""Pruning removes the right channels, leaves the original alone, and refuses bad policies."""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch_pruning as tp
from torch import nn

from autoshrink.compression.errors import PolicyError
from autoshrink.compression.importance import IMPORTANCES, channel_scores
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.prune import keep_mask, prune, prune_channels
from autoshrink.compression.units import UnitGraph, build_units

X32 = torch.zeros(1, 3, 32, 32)
X64 = torch.zeros(1, 3, 64, 64)


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that outputs are not all alike."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.rand(m.num_features, generator=gen) - 0.5
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
    return model


def _setup(name: str, x: torch.Tensor, seed: int = 1) -> tuple[nn.Module, UnitGraph, dict]:
    torch.manual_seed(seed)
    model = _random_bn(build_model(ModelSpec(name)))
    graph = build_units(model, x)
    rng = random.Random(seed)
    kept = {u.name: u.kept(rng.uniform(0.05, 1.0)) for u in graph.units}
    return model, graph, kept


@pytest.mark.parametrize(
    ("name", "x"),
    [("resnet20", X32), ("mobilenet_v2", X64), ("regnet_x_400mf", X64), ("densenet121", X32)],
)
def test_prune_equals_torch_pruning_group_by_group(name: str, x: torch.Tensor) -> None:
    model, graph, kept = _setup(name, x)
    scores = channel_scores(graph, model, "random")
    ours = prune_channels(model, graph, kept, scores=scores)
    mask = keep_mask(graph, kept, scores)
    ref = copy.deepcopy(model)  # the reference: re-trace, then Group.prune() unit by unit
    dg = tp.DependencyGraph().build_dependency(ref, example_inputs=(x,), verbose=False)
    for u, start in zip(graph.units, graph.coupling.unit_offsets, strict=True):
        removed = [i for i in range(u.c_out) if not mask[start + i]]
        if removed:
            root = ref.get_submodule(u.name)
            fn = dg.get_pruner_of_module(root).prune_out_channels
            dg.get_pruning_group(root, fn, removed).prune()
    a, b = ours.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    ("name", "x"),
    [
        ("resnet20", X32),
        ("mobilenet_v3_small", X64),
        ("efficientnet_b0", X64),
        ("regnet_x_400mf", X64),
        ("densenet121", X32),
        ("vgg11_bn", X32),
    ],
)
def test_pruning_equals_zeroing_the_removed_channels(name: str, x: torch.Tensor) -> None:
    """Removing channels computes what the full model computes with them forced to zero."""
    model, graph, kept = _setup(name, x)
    scores = channel_scores(graph, model, "random", seed=3)
    pruned = prune_channels(model, graph, kept, scores=scores)
    mask = keep_mask(graph, kept, scores)
    handles = []
    for entry in graph.plan:
        gone = torch.as_tensor(entry.target[~mask[entry.root]])
        if entry.dim == "in" or not len(gone):
            continue
        module = model.get_submodule(entry.module)
        last = isinstance(module, nn.Linear)

        def zero(
            _m: nn.Module, _i: object, out: torch.Tensor, gone=gone, last=last
        ) -> torch.Tensor:
            out = out.clone()
            out[(..., gone) if last else (slice(None), gone)] = 0
            return out

        handles.append(module.register_forward_hook(zero))
    inputs = torch.randn(2, *x.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(inputs)
        for h in handles:
            h.remove()
        got = pruned(inputs)
        full = model(inputs)
    scale = want.abs().max()
    assert scale > 0 and not torch.allclose(full, want)  # the zeroing did change something
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4 * float(scale))


def test_original_is_untouched_and_shares_no_storage() -> None:
    model, graph, kept = _setup("resnet20", X32)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = prune_channels(model, graph, kept, importance="l1")
    assert pruned is not model and pruned.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.conv1.out_channels == 16
    ours = {t.data_ptr() for t in (*pruned.parameters(), *pruned.buffers())}
    theirs = {t.data_ptr() for t in (*model.parameters(), *model.buffers())}
    assert not ours & theirs
    with torch.no_grad():
        for p in pruned.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_keep_one_everywhere_is_an_identical_copy() -> None:
    model, graph, _ = _setup("mobilenet_v2", X64)
    same = prune(model, graph, {u.name: 1.0 for u in graph.units})
    inputs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(same(inputs), model(inputs), rtol=0, atol=0)


@pytest.mark.parametrize("keep", [0, 0.0, 1.5, -0.5, float("nan")])
def test_bad_keep_ratios_are_policy_errors(keep: float) -> None:
    model, graph, _ = _setup("resnet20", X32)
    with pytest.raises(PolicyError, match=r"keep-ratio of unit conv1 must"):
        prune(model, graph, {"conv1": keep})


def test_unknown_units_and_bad_counts_are_policy_errors() -> None:
    model, graph, _ = _setup("resnet20", X32)
    with pytest.raises(PolicyError, match=r"unknown unit 'layer9.conv1'; units are conv1"):
        prune(model, graph, {"layer9.conv1": 0.5})
    with pytest.raises(PolicyError, match="keeps 0 channels"):
        prune_channels(model, graph, {"conv1": 0})
    regnet = build_model(ModelSpec("regnet_x_400mf"))
    g = build_units(regnet, X64)
    grouped = next(u for u in g.units if u.channel_groups > 1)
    with pytest.raises(PolicyError, match=f"multiples of {grouped.channel_groups}"):
        prune_channels(regnet, g, {grouped.name: grouped.c_out - 1})


def test_grouped_units_keep_the_same_positions_in_every_group() -> None:
    model, graph, kept = _setup("regnet_x_400mf", X64)
    mask = keep_mask(graph, kept, channel_scores(graph, model, "l1"))
    for u, start in zip(graph.units, graph.coupling.unit_offsets, strict=True):
        unit_mask = mask[start : start + u.c_out].reshape(u.channel_groups, -1)
        assert (unit_mask == unit_mask[0]).all()
        assert unit_mask.sum() == kept[u.name]


def test_l1_prunes_the_weakest_channel_first() -> None:
    model = build_model(ModelSpec("smallcnn"))
    graph = build_units(model, X32)
    with torch.no_grad():
        model.features[0][0].weight[5] *= 1e-3  # channel 5 of the first unit is weakest
    pruned = prune_channels(model, graph, {"features.0.0": 31})
    kept_rows = [i for i in range(32) if i != 5]
    torch.testing.assert_close(pruned.features[0][0].weight, model.features[0][0].weight[kept_rows])


@pytest.mark.parametrize("importance", IMPORTANCES)
def test_every_importance_scores_every_channel(importance: str) -> None:
    model = build_model(ModelSpec("mobilenet_v3_small"))
    graph = build_units(model, torch.zeros(1, 3, 32, 32))
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    flags = [p.requires_grad for p in model.parameters()]
    scores = channel_scores(graph, model, importance, batch=batch)
    assert list(scores) == list(graph.unit_names)
    for u in graph.units:
        assert scores[u.name].shape == (u.c_out,) and torch.isfinite(scores[u.name]).all()
    assert any(float(s.std()) > 0 for s in scores.values())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()) and not model.training
    pruned = prune(model, graph, {u.name: 0.5 for u in graph.units}, scores=scores)
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_gradient_scores_need_a_batch_and_names_are_checked() -> None:
    model, graph, _ = _setup("resnet20", X32)
    with pytest.raises(PolicyError, match="needs a batch"):
        prune(model, graph, {"conv1": 0.5}, importance="taylor")
    with pytest.raises(PolicyError, match="unknown importance 'l3'"):
        prune(model, graph, {"conv1": 0.5}, importance="l3")
    with pytest.raises(PolicyError, match=r"scores of unit conv1 must have shape \(16,\)"):
        prune(model, graph, {"conv1": 0.5}, scores={"conv1": torch.ones(3)})
