"""Independent counters on real models: the ground truth the cost model is tested against.

>>> from torch import nn
>>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
>>> count_macs(model, torch.zeros(1, 3, 4, 4)), count_params(model)
(4736, 1514)
>>> count_bytes(model, {"0": 4}) < count_bytes(model)
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autoshrink.compression.attention import count_cpu_attention
from autoshrink.compression.cost import tensor_bytes
from autoshrink.compression.errors import PolicyError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.unit_graph import LAYER_TYPES


def run_counted(model: nn.Module, example_input: torch.Tensor) -> tuple[Any, FlopCounterMode]:
    """Run ``model`` once under ``FlopCounterMode``: its (detached) output and the counter.

    Attention on the CPU counts as FlopCounterMode counts it on a GPU
    (:func:`~autoshrink.compression.attention.count_cpu_attention`). Gradients stay on:
    FlopCounterMode's module tracker fails under ``no_grad`` on models that pass a
    parameter along in a tuple (timm's PiT and CaiT); the graph goes with the output.
    """
    count_cpu_attention()
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        out = model(example_input)
    return (out.detach() if isinstance(out, torch.Tensor) else out), counter


def stored_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The buffers a state dict stores: every persistent one, once."""
    seen: dict[int, torch.Tensor] = {}
    for m in model.modules():
        for name, b in m._buffers.items():
            if b is not None and name not in m._non_persistent_buffers_set:
                seen.setdefault(id(b), b)
    return list(seen.values())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass: ``FlopCounterMode`` flops // 2.

    The pass runs with gradients on; whatever the model caches in it (timm's LeViT keeps
    its attention biases) is put back as it was, so the model stays deep-copyable.
    """
    from autoshrink.compression._pristine import untouched

    with untouched(model):
        return int(run_counted(model, example_input)[1].get_total_flops()) // 2


def count_params(model: nn.Module) -> int:
    """Parameter elements (shared parameters once)."""
    return sum(p.numel() for p in model.parameters())


def count_bytes(model: nn.Module, bits: Mapping[str, int] | None = None) -> int:
    """Payload bytes by :func:`~autoshrink.compression.cost.tensor_bytes`, from the tensors.

    Every parameter and floating-point buffer that a state dict stores counts; integer
    buffers (such as BatchNorm's ``num_batches_tracked``) and non-persistent ones (a
    model recomputes them when built, so an artifact does not store them) do not.

    Args:
        model: The model.
        bits: Weight bits per conv/linear layer name (missing: 32, i.e. float).

    Raises:
        PolicyError: If a name in ``bits`` is not a conv/linear layer of ``model``.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)}
    quantized: dict[int, tuple[int, int]] = {}
    for name, b in (bits or {}).items():
        if name not in layers:
            raise PolicyError(f"no conv or linear layer named {name!r} in the model")
        weight = layers[name].weight
        quantized[id(weight)] = (int(b), int(weight.shape[0]))
    total = 0
    for t in [*model.parameters(), *stored_buffers(model)]:
        if not t.is_floating_point():
            continue
        b, out = quantized.get(id(t), (FLOAT_BITS, 0))
        total += tensor_bytes(t.numel(), b, out)
    return total
