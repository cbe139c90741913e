"""Apply a policy to a model: real channel removal, then per-layer weight quantization.

>>> import torch
>>> from autoshrink.compression.models import ModelSpec, build_model
>>> from autoshrink.compression.policy import uniform_policy
>>> from autoshrink.compression.units import build_units
>>> model = build_model(ModelSpec("smallcnn", num_classes=10, in_channels=1))
>>> graph = build_units(model, torch.zeros(1, 1, 8, 8))
>>> small = apply_policy(model, graph, uniform_policy(graph, keep=0.5, bits=4))
>>> small(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

from torch import nn

from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import (
    Policy,
    kept_channels,
    layer_bits,
    validate,
)
from autoshrink.compression.prune import prune_channels
from autoshrink.compression.quantize import quantize_weights_
from autoshrink.compression.sparsity import layer_sparsity, sparsify_
from autoshrink.compression.unit_graph import UnitGraph


def apply_policy(
    model: nn.Module,
    graph: UnitGraph,
    policy: Policy,
    importance: str = "l1",
    scores: Any = None,
) -> nn.Module:
    """Return a new model: ``model`` pruned to the policy's channels, weights quantized.

    Where the policy has a sparsity, each layer's smallest weights are zeroed (by
    magnitude, after pruning) before quantization.

    Units absent from the policy stay whole; layers without bits stay float. The channel
    counts are the realised ones (``Unit.kept``), the same the cost model counts.

    Args:
        model: The uncompressed model; it is not modified.
        graph: Its units, from :func:`~autoshrink.compression.units.build_units`.
        policy: Keep-ratio and bits per unit, plus per-layer bit overrides.
        importance: Which channels go (see :mod:`autoshrink.compression.importance`).
        scores: Precomputed channel scores for ``importance``, to skip recomputing them.

    Returns:
        The compressed model, in eval mode.

    Raises:
        PolicyError: If the policy names units or layers the model does not have.
    """
    validate(policy, graph, allow_missing=True)
    pruned = prune_channels(
        model, graph, kept_channels(policy, graph), importance=importance, scores=scores
    )
    sparsify_(pruned, layer_sparsity(policy, graph))
    bits = {name: b for name, b in layer_bits(policy, graph).items() if b < FLOAT_BITS}
    if bits:
        quantize_weights_(pruned, bits)
    return pruned.eval()
