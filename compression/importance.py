"""Which channels go: one score per channel of every unit, from Torch-Pruning's scorers.

Scores are computed once per model (:func:`channel_scores`); pruning to any keep-ratio then
keeps each unit's top-k channels, so a search can cache them for all its episodes.

=========  =====================================================================
name       scorer
=========  =====================================================================
l1, l2     ``GroupMagnitudeImportance(p=1 | 2)``: weight norm over the whole group
taylor     ``GroupTaylorImportance``: |weight x gradient| (needs a batch)
hessian    ``GroupHessianImportance``: weight² x mean squared per-sample gradient
bn         ``BNScaleImportance``: |BatchNorm scale| (l1 for groups without BN)
random     seeded uniform noise (for tests and baselines)
=========  =====================================================================

Attention heads (:mod:`.attention`) have no DepGraph group; each head is scored by the same
rule over its own ``qkv`` rows and ``proj`` columns (:func:`~.attention.head_scores`).

>>> from autoshrink.compression.models import ModelSpec, build_model
>>> from autoshrink.compression.units import build_units
>>> model = build_model(ModelSpec("smallcnn", in_channels=1))
>>> graph = build_units(model, torch.zeros(1, 1, 8, 8))
>>> scores = channel_scores(graph, model, "l1")
>>> [tuple(s.shape) for s in scores.values()]
[(32,), (64,), (64,), (128,)]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from autoshrink.compression._pristine import untouched
from autoshrink.compression._tp_compat import tolerant_index_mapping
from autoshrink.compression.attention import head_scores
from autoshrink.compression.errors import PolicyError, UnsupportedModelError
from autoshrink.compression.unit_graph import UnitGraph

IMPORTANCES: tuple[str, ...] = ("l1", "l2", "taylor", "hessian", "bn", "random")
NEEDS_BATCH: frozenset[str] = frozenset({"taylor", "hessian"})

_SCORERS: dict[str, Callable[[], Any]] = {
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.GroupTaylorImportance(),
    "hessian": lambda: tp.importance.GroupHessianImportance(),
    "bn": lambda: tp.importance.BNScaleImportance(),
}


def check_importance(name: str, batch: tuple[Tensor, Tensor] | None = None) -> None:
    """Raise PolicyError if ``name`` is unknown or needs a batch that is missing."""
    if name not in IMPORTANCES:
        raise PolicyError(f"unknown importance {name!r}: use one of {', '.join(IMPORTANCES)}")
    if name in NEEDS_BATCH and batch is None:
        raise PolicyError(f"importance {name!r} needs a batch (inputs, labels) for gradients")


@contextmanager
def _scratch_grads(model: nn.Module) -> Iterator[None]:
    """Let every parameter take a gradient, then restore flags and drop the gradients."""
    flags = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    for p, _, _ in flags:
        p.requires_grad_(True)
        p.grad = None
    model.eval()  # gradients without touching BatchNorm statistics
    try:
        with torch.enable_grad():
            yield
    finally:
        for p, flag, grad in flags:
            p.requires_grad_(flag)
            p.grad = grad
        for m, training in modes:
            m.training = training


def _fill_grads(
    model: nn.Module, name: str, batch: tuple[Tensor, Tensor], loss_fn: Callable[..., Tensor]
) -> None:
    x, y = batch
    if name == "taylor":
        loss_fn(model(x), y).backward()
        return
    # Hessian (OBD) wants E[g²] over samples. Torch-Pruning's accumulate_grad keys its sums
    # inconsistently and keeps only the last sample, so accumulate here and hand the scorer
    # the mean squared gradient through ``.grad`` (which it uses when it has nothing stored).
    params = [p for p in model.parameters()]
    sums = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        for s, p in zip(sums, params, strict=True):
            if p.grad is not None:
                s += p.grad.detach() ** 2
    for s, p in zip(sums, params, strict=True):
        p.grad = s / len(x)


def _check_widths(graph: UnitGraph, modules: dict[str, nn.Module]) -> None:
    """Check that every unit's leading layer has the graph's output width.

    Args:
        graph: The unit graph.
        modules: The model's modules by name.

    Raises:
        UnsupportedModelError: If a unit's layer is missing or has another width.
    """
    for u in graph.units:
        m = modules.get(u.name)
        n = getattr(m, "out_channels", getattr(m, "out_features", None))
        if n != u.c_out * u.width:
            raise UnsupportedModelError(
                f"the model does not match the unit graph: layer {u.name} has {n} output "
                f"channels, the graph expects {u.c_out * u.width}"
            )


def _dependency_graph(model: nn.Module, example: Tensor) -> tp.DependencyGraph:
    """Trace ``model`` on ``example`` into Torch-Pruning's DepGraph, warnings silenced."""
    with warnings.catch_warnings(), tolerant_index_mapping():
        warnings.simplefilter("ignore")  # build_units has already judged this graph
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=(example,), verbose=False
        )


def _group_scores(dg: Any, root: nn.Module, n: int, scorer: Any, fallback: Any) -> Tensor:
    """Scores of the ``n`` channels of the DepGraph group led by ``root``."""
    pruner = dg.get_pruner_of_module(root)
    with tolerant_index_mapping(again=False):
        group = dg.get_pruning_group(root, pruner.prune_out_channels, list(range(n)))
    imp = scorer(group)
    # No signal (e.g. "bn" on a group without BatchNorm, or all-zero gradients, which the
    # scorer's mean-normalisation turns into NaN): rank by weight magnitude.
    if imp is None or not bool(torch.isfinite(imp).all()) or not bool(imp.any()):
        imp = fallback(group)
    if imp is None:  # only depthwise convs, which the magnitude scorer skips
        weight = root.weight
        assert isinstance(weight, Tensor)
        imp = weight.detach().abs().flatten(1).sum(1)
    return imp.detach().float().cpu().clone()


def channel_scores(
    graph: UnitGraph,
    model: nn.Module,
    importance: str = "l1",
    batch: tuple[Tensor, Tensor] | None = None,
    loss_fn: Callable[..., Tensor] | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """One score per channel of every unit of ``graph``; higher means keep.

    The model is traced once (DepGraph) and left as it was: weights, gradients, training
    mode, and whatever its forward caches (timm's LeViT keeps its attention biases).
    Gradients for ``taylor``/``hessian`` come from ``batch`` in eval mode.

    Args:
        graph: The units of ``model`` (from :func:`build_units` on the same architecture).
        model: The model to score.
        importance: One of :data:`IMPORTANCES`.
        batch: ``(inputs, labels)`` for the gradient-based scores.
        loss_fn: Loss for those gradients; cross-entropy by default.
        seed: Seed of the ``random`` scores.

    Returns:
        A float tensor of ``unit.c_out`` scores per unit name.

    Raises:
        PolicyError: On an unknown importance, or a missing batch.
        UnsupportedModelError: If ``model`` does not have the graph's layers.
    """
    check_importance(importance, batch)
    modules = dict(model.named_modules())
    _check_widths(graph, modules)
    if importance == "random":
        gen = torch.Generator().manual_seed(seed)
        return {u.name: torch.rand(u.c_out, generator=gen) for u in graph.units}
    scorer = _SCORERS[importance]()
    fallback = tp.importance.GroupMagnitudeImportance(p=1)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = torch.zeros(graph.input_shape, device=device)
    scores: dict[str, Tensor] = {}
    with untouched(model), _scratch_grads(model):  # a cache the trace fills goes, too
        if batch is not None and importance in NEEDS_BATCH:
            _fill_grads(model, importance, batch, loss_fn or nn.functional.cross_entropy)
        dg = _dependency_graph(model, example)
        heads = {h.qkv: h for h in graph.heads}
        for u in graph.units:
            if u.name in heads:  # no DepGraph group to score: whole heads, scored by hand
                scores[u.name] = head_scores(model, heads[u.name], importance)
                continue
            scores[u.name] = _group_scores(dg, modules[u.name], u.c_out, scorer, fallback)
    return scores
