"""Real int8 inference on the CPU through torchao's PT2E flow and ``torch.compile``.

Below 8 bits the CPU has no kernels, so low-bit savings are real only in storage (the packed
artifact). For policies whose layers are all 8 bits or wider, :func:`to_int8` converts a
(pruned) float model into one that runs int8 convolutions and matmuls:

1. ``torch.export`` (strict, batch dimension dynamic) captures the baked float model;
2. ``prepare_pt2e`` with torchao's ``X86InductorQuantizer`` folds each BatchNorm into its
   conv and inserts observers: weights int8, symmetric per output channel; activations
   uint8 per tensor (7-bit without VNNI, see :func:`has_vnni`), calibrated on a few
   batches;
3. ``convert_pt2e`` gives the reference int8 graph (quantize/dequantize around float ops),
   which the ONNX exporter turns into a QDQ graph;
4. ``torch.compile`` (Inductor, with freezing) lowers that graph to oneDNN's fused int8
   kernels, which is where the speed comes from.

The int8 model is never stored: an artifact keeps its (8-bit) weights as tensors in
safetensors, and the int8 model is rebuilt from it and a calibration set. Measured numbers
are in ``docs/benchmarks.md`` (Quantization) and ``benchmarks/bench_int8.py``.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoshrink.compression.errors import PolicyError, UnsupportedModelError
from autoshrink.compression.onnx_io import quiet as _quiet
from autoshrink.compression.quantize import bake_, remove_activation_quant_

logger = logging.getLogger(__name__)

INT8_MIN_BITS = 8
#: Inductor options of the compiled int8 model: freezing lets it prepack the int8 weights
#: into oneDNN's fused quantized convolutions and linears. They are patched around every
#: call (a new batch size compiles again); ``torch.compile(options=...)`` fails on them.
COMPILE_OPTIONS: dict[str, Any] = {"freezing": True}


class Int8Model(nn.Module):
    """An int8 model: the converted PT2E graph and the callable that runs it.

    Args:
        program: The reference int8 graph (``convert_pt2e``'s output): quantize and
            dequantize nodes around float ops. The ONNX exporter reads it.
        compiled: Whether :meth:`forward` runs the graph compiled by ``torch.compile`` (oneDNN int8
            kernels) rather than the reference graph.
    """

    _run: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, program: torch.fx.GraphModule, compiled: bool = True) -> None:
        super().__init__()
        self.program = program
        self.compiled = compiled
        run: Callable[[torch.Tensor], torch.Tensor] = program
        if compiled:
            # static shapes: Inductor's int8 conv lowering fails on a symbolic batch
            # (wrong fake strides), so each new batch size compiles anew
            run = torch.compile(program, dynamic=False)
        self.__dict__["_run"] = run  # not a submodule: its weights are the program's

    def train(self, mode: bool = True) -> Int8Model:
        """An int8 model only infers: ``train(True)`` is refused, ``eval()`` is a no-op."""
        if mode:
            raise UnsupportedModelError("an int8 model cannot be trained; fine-tune the float one")
        self.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (without autograd: there is nothing to train)."""
        if not self.compiled:
            with torch.no_grad(), _quiet():
                return self._run(x)
        with torch.no_grad(), _quiet(), torch._inductor.config.patch(COMPILE_OPTIONS):
            return self._run(x)


def check_int8_bits(bits_by_layer: Mapping[str, int] | None) -> None:
    """Refuse a policy with a layer below 8 bits: the CPU has no kernels for it.

    Raises:
        PolicyError: Naming how many layers are below and one of them.
    """
    low = sorted(n for n, b in (bits_by_layer or {}).items() if b < INT8_MIN_BITS)
    if low:
        raise PolicyError(
            f"int8 inference needs every layer at 8 bits or more; {len(low)} layer(s) are "
            f"below (e.g. {low[0]}): no CPU kernels exist for them, use the packed artifact"
        )


@functools.cache
def has_vnni() -> bool:
    """Whether the CPU has VNNI (or AMX) int8 dot products; False when it cannot tell.

    Without them, uint8 x int8 products are summed in saturating 16-bit pairs, so the
    activations get a 7-bit range (0..127) to stay exact, as fbgemm did.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _inputs(batch: Any) -> torch.Tensor:
    x = batch[0] if isinstance(batch, tuple | list) else batch
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"calibration batches must be tensors or (tensor, ...), got {type(x)}")
    return x


def _capture(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``torch.export`` the model with a dynamic batch, as a graph PT2E can annotate.

    Strict export: the non-strict default groups every call of a shared module (one ReLU
    used twice in a block) into one partition, which the x86 quantizer refuses.
    """
    if example.shape[0] < 2:  # a batch of 1 would be specialised, not kept dynamic
        example = torch.cat([example, example])
    batch = torch.export.Dim("batch")
    try:
        with _quiet():
            exported = torch.export.export(
                model, (example,), dynamic_shapes=({0: batch},), strict=True
            )
    except Exception as exc:  # export errors come in many types
        raise UnsupportedModelError(f"cannot trace the model for int8: {exc}") from exc
    return exported.module()


def quantize_pt2e(
    model: nn.Module, batches: Iterable[torch.Tensor]
) -> tuple[torch.fx.GraphModule, int]:
    """The reference int8 graph of a float model, calibrated on ``batches``.

    Returns:
        The converted graph and how many batches calibrated it.
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    it = iter(batches)
    try:
        first = next(it)
    except StopIteration as exc:
        raise ValueError("the calibration loader yielded no batch") from exc
    graph = _capture(model, first)
    quantizer = x86.X86InductorQuantizer()
    config = x86.get_default_x86_inductor_quantization_config(reduce_range=not has_vnni())
    quantizer.set_global(config)  # per-channel int8 weights, per-tensor uint8 activations
    n = 0
    with _quiet(), torch.no_grad():
        try:
            prepared = prepare_pt2e(graph, quantizer)  # folds BatchNorm into the convs
        except Exception as exc:  # annotation errors come in many types
            raise UnsupportedModelError(f"cannot quantize the model for int8: {exc}") from exc
        for x in (first, *it):
            prepared(x)
            n += 1
        converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)
    converted.eval()  # torchao's eval: dropout and BatchNorm ops to their eval forms
    for module in converted.modules():  # which leaves the flags; the ONNX exporter reads them
        module.training = False
    return converted, n


def to_int8(
    model: nn.Module,
    calib_loader: Iterable[Any],
    n_batches: int = 8,
    bits_by_layer: Mapping[str, int] | None = None,
    compile: bool = True,
) -> Int8Model:
    """Convert a float (or 8-bit simulated) model into a real int8 CPU model.

    The input model is not modified: a copy is baked (fake-quant parametrizations removed,
    activation hooks dropped), exported, calibrated and converted.

    Args:
        model: The (pruned) model. It must be capturable by ``torch.export`` (strict).
        calib_loader: Yields input batches or ``(inputs, targets)`` pairs (CPU tensors).
        n_batches: How many batches to calibrate activation ranges on.
        bits_by_layer: The policy's weight bits per layer, if any; every layer must have
            8 bits or more, since the CPU has no lower-precision kernels.
        compile: Run the model through ``torch.compile`` (the fast int8 kernels); False
            runs the reference graph, whose int8 arithmetic is simulated in float.

    Returns:
        The int8 model in eval mode, on the CPU. The first call of a compiled one compiles
        it (seconds to a minute), as does the first call at a new batch size.

    Raises:
        PolicyError: If a layer has fewer than 8 bits.
        UnsupportedModelError: If the model cannot be captured or quantized.
        ValueError: If the loader yields no batch.
    """
    check_int8_bits(bits_by_layer)
    work = remove_activation_quant_(bake_(copy.deepcopy(model))).cpu().eval()
    inputs = (_inputs(b) for _, b in zip(range(max(n_batches, 1)), calib_loader, strict=False))
    program, n = quantize_pt2e(work, inputs)
    logger.info("converted to int8 (torchao PT2E, x86 Inductor) after %d calibration batches", n)
    return Int8Model(program, compiled=compile).eval()
