"""ONNX: export a model (dynamo exporter, or the TorchScript-based one) and run it.

Shared by :mod:`.export` (the checked export) and :mod:`.runtime` (timing on onnxruntime).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.quantize import (
    ActFakeQuant,
    activation_quant_state,
    remove_activation_quant_,
)

logger = logging.getLogger(__name__)

EXTRA = "pip install 'autoshrink[onnx]'"
LEGACY_OPSET = 17
#: Activation quantizers at these bits or more export as QuantizeLinear/DequantizeLinear;
#: torch.export cannot trace ``fake_quantize_per_tensor_affine`` at all.
LEGACY_NATIVE_BITS = 8
DYNAMO_NATIVE_BITS = 33


class _PlainActQuant(ActFakeQuant):
    """ActFakeQuant's arithmetic in plain operators, which ONNX can express at any bits."""

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Fake-quantize the first input as ``fake_quantize_per_tensor_affine`` does."""
        inv = float(np.float32(1.0) / np.float32(self.scale))
        levels = (1 << self.bits) - 1
        q = torch.clamp(torch.round(args[0] * inv) + self.zero_point, 0, levels)
        return ((q - self.zero_point) * self.scale, *args[1:])


def onnx_ready(model: nn.Module, native_bits: int) -> nn.Module:
    """A copy whose activation quantizers below ``native_bits`` use plain operators."""
    state = activation_quant_state(model)
    if all(bits >= native_bits for bits, _, _ in state.values()):
        return model
    model = copy.deepcopy(model)
    remove_activation_quant_(model)
    for name, (bits, lo, hi) in state.items():
        plain = bits < native_bits
        hook = _PlainActQuant(bits, lo, hi) if plain else ActFakeQuant(bits, lo, hi)
        model.get_submodule(name).register_forward_pre_hook(hook)
    return model


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' and the quantization stack's deprecation and tracer warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(ao)?\..*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def export_onnx(model: nn.Module, example: torch.Tensor, tmp: Path, exporter: str) -> str:
    """Write ``model`` as ONNX to ``tmp`` with a dynamic batch; return the exporter used.

    ``exporter`` is ``auto`` (dynamo, else legacy), ``dynamo`` or ``legacy``.
    """
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise AutoshrinkError(f"ONNX export needs the onnx extra: {EXTRA}") from exc
    names: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"]}
    if exporter in ("auto", "dynamo"):
        try:
            batch = torch.export.Dim("batch")
            with quiet():
                torch.onnx.export(
                    onnx_ready(model, native_bits=DYNAMO_NATIVE_BITS),
                    (example,),
                    str(tmp),
                    dynamo=True,
                    dynamic_shapes=({0: batch},),
                    external_data=False,
                    verbose=False,
                    **names,
                )
            strip_node_metadata(tmp)
            return "dynamo"
        except Exception as exc:  # the dynamo exporter fails in many ways
            if exporter == "dynamo":
                raise AutoshrinkError(f"the dynamo ONNX exporter failed: {exc}") from exc
            logger.warning("dynamo ONNX export failed (%s); using the legacy exporter", exc)
    with quiet():
        torch.onnx.export(
            onnx_ready(model, native_bits=LEGACY_NATIVE_BITS),
            (example,),
            str(tmp),
            dynamo=False,
            opset_version=LEGACY_OPSET,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            **names,
        )
    return "legacy"


def strip_node_metadata(path: Path) -> None:
    """Drop the dynamo exporter's per-node metadata from an ONNX file.

    It holds stack traces that name this machine's files and FX dumps: 60 % of a small
    int8 file.
    """
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


def onnx_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session of ``path`` on ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise AutoshrinkError(f"running an ONNX model needs onnxruntime: {EXTRA}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle intra-op threads spin by default. Two sessions timed interleaved (a baseline
    # and a candidate) then each find the other's threads still spinning on the cores:
    # issue 35's check measured a shipped model at 2.6x its baseline, spread 90 %.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    """The outputs of the ONNX model at ``path`` on ``x`` (one thread)."""
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: x.numpy()})[0])
