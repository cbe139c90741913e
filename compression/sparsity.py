"""Fine-grained sparsity: how many weights a layer zeroes, how they are chosen and stored.

A unit's *sparsity* ``s`` zeroes ``k = floor(s * N)`` of each of its layers' ``N`` weights
(after channel pruning): the ``k`` smallest by magnitude within the layer, as Deep
Compression prunes. The ``N - k`` survivors are quantized at the layer's bits. The mask is
fixed once, on the pruned float weights, and stays fixed through every fine-tune
(:class:`MaskedFakeQuant`): zeroed weights stay zero, and quantization (with a
straight-through estimator) applies to the survivors.

**The storage rule** (:func:`stored_weight_bytes`, shared by the cost model and the
artifact, so the budget clamp sees exactly the bytes the artifact stores before entropy
coding). A quantized layer with ``k > 0`` is stored sparse when that is smaller than dense:

- positions as a bitmask (``ceil(N / 8)`` bytes) or as relative indices, whichever is
  smaller. Relative indices are Deep Compression's gap code with ``r``-bit fields: a field
  ``v < 2**r - 1`` means "skip ``v`` positions, then a survivor", the all-ones field means
  "skip ``2**r - 1`` positions". ``n`` survivors in ``N`` positions need at most
  ``n + floor((N - n) / (2**r - 1))`` fields; the stream is padded with zero fields to that
  count, so its length is a function of ``N``, ``n`` and ``r`` alone (the padding costs next
  to nothing once entropy coded). ``r`` is the width, 1..16, that makes it smallest;
- the ``n = N - k`` survivors' values bit-packed at the layer's bits
  (``ceil(n * bits / 8)``), plus one float32 scale per output channel, as a dense layer.

Every other layer is stored dense (:func:`~autoshrink.compression.cost.tensor_bytes`);
its zeroed weights are stored as zeros.

>>> int(stored_weight_bytes(10_000, 1_000, 4, 16))  # 10 % survivors at 4 bits
1329
>>> int(stored_weight_bytes(10_000, 10_000, 4, 16))  # no sparsity: dense
5064
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from autoshrink.compression.errors import PolicyError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import check_sparsity
from autoshrink.compression.quantize import (
    WeightFakeQuant,
    _unparametrize_,
    fake_quantize_,
    quantizable_layers,
)

if TYPE_CHECKING:
    from autoshrink.compression.policy import Policy
    from autoshrink.compression.unit_graph import UnitGraph

#: Bytes of one per-output-channel scale (as :data:`~autoshrink.compression.cost.SCALE_BYTES`).
_SCALE_BYTES = 4
#: Widths tried for relative indices.
INDEX_WIDTHS = np.arange(1, 17, dtype=np.int64)
#: Position encodings, as the artifact header names them.
BITMASK, RELATIVE = "mask", "rel"


def zeroed_count(numel: Any, sparsity: Any) -> np.ndarray:
    """Weights zeroed: ``floor(sparsity * numel)`` (the one rounding rule; vectorised)."""
    n = np.asarray(numel, dtype=np.int64)
    s = np.asarray(sparsity, dtype=np.float64)
    return np.minimum(np.floor(s * n + 1e-9).astype(np.int64), n)


def relative_fields(numel: Any, kept: Any, width: Any) -> np.ndarray:
    """Fields of the padded relative-index stream: ``n + (N - n) // (2**r - 1)``."""
    n, keep = np.asarray(numel, np.int64), np.asarray(kept, np.int64)
    span = (np.int64(1) << np.asarray(width, np.int64)) - 1
    return keep + (n - keep) // span


def best_index_width(numel: int, kept: int) -> int:
    """The relative-index width ``r`` in 1..16 with the fewest bytes (the smallest on a tie)."""
    sizes = (relative_fields(numel, kept, INDEX_WIDTHS) * INDEX_WIDTHS + 7) // 8
    return int(INDEX_WIDTHS[int(np.argmin(sizes))])


def position_bytes(numel: Any, kept: Any) -> np.ndarray:
    """Bytes of the smaller position encoding (bitmask or best relative indices); vectorised."""
    n, keep = np.asarray(numel, np.int64), np.asarray(kept, np.int64)
    widths = INDEX_WIDTHS.reshape((-1,) + (1,) * n.ndim)
    rel = ((relative_fields(n, keep, widths) * widths + 7) // 8).min(axis=0)
    return np.minimum((n + 7) // 8, rel)


def sparse_bytes(numel: Any, kept: Any, bits: Any, out_channels: Any) -> np.ndarray:
    """Bytes of a layer stored sparse: positions, packed survivors, scales (vectorised)."""
    keep, b = np.asarray(kept, np.int64), np.asarray(bits, np.int64)
    values = (keep * b + 7) // 8
    return position_bytes(numel, keep) + values + _SCALE_BYTES * np.asarray(out_channels)


def dense_bytes(numel: Any, bits: Any, out_channels: Any) -> np.ndarray:
    """Bytes of a layer stored dense: packed at ``bits`` plus scales, or float32 (vectorised)."""
    n, b = np.asarray(numel, np.int64), np.asarray(bits, np.int64)
    packed = (n * b + 7) // 8 + _SCALE_BYTES * np.asarray(out_channels, np.int64)
    return np.where(b < FLOAT_BITS, packed, 4 * n)


def stores_sparse(numel: Any, kept: Any, bits: Any, out_channels: Any) -> np.ndarray:
    """Whether the storage rule stores a layer sparse (quantized, zeroed some, smaller)."""
    return _rule(numel, kept, bits, out_channels)[0]


def stored_weight_bytes(numel: Any, kept: Any, bits: Any, out_channels: Any) -> np.ndarray:
    """THE storage rule of a weight: sparse where :func:`stores_sparse`, else dense."""
    return _rule(numel, kept, bits, out_channels)[1]


def _rule(numel: Any, kept: Any, bits: Any, out_channels: Any) -> tuple[np.ndarray, np.ndarray]:
    n, keep, b = np.asarray(numel, np.int64), np.asarray(kept, np.int64), np.asarray(bits)
    sparse, dense = sparse_bytes(n, keep, b, out_channels), dense_bytes(n, b, out_channels)
    chosen = (b < FLOAT_BITS) & (keep < n) & (sparse < dense)
    return chosen, np.where(chosen, sparse, dense)


def layer_sparsity(policy: Policy, graph: UnitGraph) -> dict[str, float]:
    """Sparsity per layer: its unit's, for the unit's layers that are not pinned (non-zero only)."""
    out: dict[str, float] = {}
    for unit in graph.units:
        up = policy.units.get(unit.name)
        if up is not None and up.sparsity > 0:
            out.update({n: up.sparsity for n in unit.layers if n not in policy.layers})
    return out


# --- masks -------------------------------------------------------------------------------
def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The survivors of ``weight`` at ``sparsity``: all but the ``k`` smallest ``|w|`` (bool).

    Ties are broken by position (a stable sort), so the mask is a function of the weight.
    """
    flat = weight.detach().reshape(-1).abs().to(torch.float32).cpu()
    k = int(zeroed_count(flat.numel(), sparsity))
    mask = torch.ones(flat.numel(), dtype=torch.bool)
    if k:
        order = torch.sort(flat, stable=True).indices
        mask[order[:k]] = False
    return mask.view(weight.shape).to(weight.device)


def magnitude_masks(model: nn.Module, sparsity: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """One :func:`magnitude_mask` per listed conv/linear layer of ``model``.

    Raises:
        PolicyError: On a name that is not a conv/linear layer, or a bad sparsity.
    """
    layers = quantizable_layers(model)
    out = {}
    for name, s in sparsity.items():
        if name not in layers:
            raise PolicyError(f"no conv or linear layer named {name!r} in the model")
        weight = layers[name].weight
        assert isinstance(weight, torch.Tensor)
        out[name] = magnitude_mask(weight, check_sparsity(s, f"layer {name}"))
    return out


def sparsify_(model: nn.Module, sparsity: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """Zero each listed layer's smallest weights in place; return the masks."""
    masks = magnitude_masks(model, sparsity)
    layers = quantizable_layers(model)
    with torch.no_grad():
        for name, mask in masks.items():
            weight = layers[name].weight
            assert isinstance(weight, torch.Tensor)
            weight.mul_(mask.to(weight.dtype))
    return masks


class MaskedFakeQuant(WeightFakeQuant):
    """Fake quantization (straight-through) of a weight whose zeroed entries stay zero.

    The forward pass sees ``fake_quantize(mask * w)``; the gradient reaches only the
    survivors, and baking keeps the zeros.
    """

    def __init__(self, bits: int, mask: torch.Tensor) -> None:
        super().__init__(bits)
        self.register_buffer("mask", mask.detach().clone(), persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Return the masked, fake-quantized weight."""
        mask: torch.Tensor = self.mask
        return super().forward(weight * mask.to(weight.dtype))


def fake_quantize_sparse_(
    model: nn.Module, bits: Mapping[str, int], sparsity: Mapping[str, float]
) -> nn.Module:
    """Fix magnitude masks on the listed layers, then fake-quantize every layer, in place.

    Layers with a sparsity get :class:`MaskedFakeQuant` (float ones too: bits 32 only
    masks); the rest get plain fake quantization as :func:`fake_quantize_` gives.
    :func:`~autoshrink.compression.quantize.bake_` removes both and leaves zeros.
    """
    masks = sparsify_(model, sparsity)
    fake_quantize_(model, {k: b for k, b in bits.items() if k not in masks})
    layers = quantizable_layers(model)
    for name, mask in masks.items():
        module = layers[name]
        _unparametrize_(module, keep_quantized=False)
        parametrize.register_parametrization(
            module, "weight", MaskedFakeQuant(bits.get(name, FLOAT_BITS), mask)
        )
    return model
