"""Real int8 inference on the CPU through torch.ao FX graph-mode quantization (x86/fbgemm).

Below 8 bits the CPU has no kernels, so low-bit savings are real only in storage (the packed
artifact). For policies whose layers are all 8 bits or wider, :func:`to_int8` converts a
(pruned) float model into one that runs int8 convolutions and matmuls:

- weights: int8, symmetric per output channel with levels ``[-127, 127]``, the grid of
  :func:`autoshrink.compression.quantize.quantize_per_channel` at 8 bits (FX folds each
  BatchNorm into its conv first, so the int8 values are those of the folded weights);
- activations: uint8 per tensor with a 7-bit range (0..127, what fbgemm needs on CPUs
  without VNNI), calibrated with a histogram observer on a few batches.

``torch.ao.quantization`` is deprecated upstream in favour of torchao's PT2E flow; it still
ships with torch 2.14 and its deprecation warnings are silenced here. Measured numbers are
in ``docs/benchmarks.md`` (Quantization).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from autoshrink.compression.errors import PolicyError, UnsupportedModelError
from autoshrink.compression.quantize import bake_, remove_activation_quant_

logger = logging.getLogger(__name__)

INT8_MIN_BITS = 8


def select_engine() -> str:
    """Select (and return) the best available quantized CPU engine: x86, fbgemm or qnnpack."""
    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "qnnpack"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            return engine
    raise UnsupportedModelError(f"no quantized CPU engine available (have {engines})")


def _qconfig_mapping(engine: str) -> Any:
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver

    qconfig = QConfig(
        activation=HistogramObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        ),
    )
    return get_default_qconfig_mapping(engine).set_global(qconfig)


def _inputs(batch: Any) -> torch.Tensor:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"calibration batches must be tensors or (tensor, ...), got {type(x)}")
    return x


def to_int8(
    model: nn.Module,
    calib_loader: Iterable[Any],
    n_batches: int = 8,
    bits_by_layer: Mapping[str, int] | None = None,
) -> nn.Module:
    """Convert a float (or 8-bit simulated) model into a real int8 CPU model.

    The input model is not modified: a copy is baked (fake-quant parametrizations removed,
    activation hooks dropped), traced with FX, calibrated and converted.

    Args:
        model: The (pruned) model. It must be FX-traceable.
        calib_loader: Yields input batches or ``(inputs, targets)`` pairs (CPU tensors).
        n_batches: How many batches to calibrate activation ranges on.
        bits_by_layer: The policy's weight bits per layer, if any; every layer must have
            8 bits or more, since the CPU has no lower-precision kernels.

    Returns:
        The int8 model (a ``torch.fx.GraphModule``) in eval mode, on the CPU. It runs on the
        quantized engine selected by :func:`select_engine`.

    Raises:
        PolicyError: If a layer has fewer than 8 bits.
        UnsupportedModelError: If the model cannot be traced or converted.
    """
    low = sorted(n for n, b in (bits_by_layer or {}).items() if b < INT8_MIN_BITS)
    if low:
        raise PolicyError(
            f"int8 inference needs every layer at 8 bits or more; {len(low)} layer(s) are "
            f"below (e.g. {low[0]}): no CPU kernels exist for them, use the packed artifact"
        )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = select_engine()
    work = remove_activation_quant_(bake_(copy.deepcopy(model))).cpu().eval()
    batches = iter(calib_loader)
    try:
        first = _inputs(next(batches))
    except StopIteration as exc:
        raise ValueError("the calibration loader yielded no batch") from exc
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        try:
            prepared = prepare_fx(work, _qconfig_mapping(engine), example_inputs=(first,))
        except Exception as exc:  # FX tracing errors come in many types
            raise UnsupportedModelError(f"cannot trace the model for int8: {exc}") from exc
        with torch.no_grad():
            prepared(first)
            for _, batch in zip(range(n_batches - 1), batches, strict=False):
                prepared(_inputs(batch))
        quantized = convert_fx(prepared)
    logger.info("converted to int8 on engine %s after %d calibration batches", engine, n_batches)
    return quantized.eval()
