"""Export a compressed model for deployment: ONNX (checked in onnxruntime) or TorchScript.

:func:`export` takes an artifact (or a model), writes one file and checks it: the exported
file is run on a seeded batch of two inputs (so a fixed batch size would show) and its
outputs are compared with the PyTorch model's. A file that does not match is not left
behind.

Formats and what they hold:

- ``onnx``: float32 graph with the artifact's dequantized weights (the values the artifact
  computes with). The dynamo exporter (``torch.export``, needs ``onnxscript``) is tried
  first and the TorchScript-based one is the fallback (``exporter="auto"``). The batch
  dimension is dynamic. Activation quantizers (if the artifact has any) export as the same
  arithmetic in plain operators (``Mul``, ``Round``, ``Clip``): ``torch.export`` cannot
  trace ``fake_quantize_per_tensor_affine``, and ONNX's ``QuantizeLinear`` covers 8 bits
  only (the legacy exporter uses it for 8-bit ones).
- ``onnx`` with ``int8=True``: the real int8 path of :mod:`autoshrink.compression.int8`
  (every layer at 8 bits or more; calibrated on ``calibration`` batches) exported as a QDQ
  ONNX graph: int8 weights and uint8 activations behind ``QuantizeLinear`` /
  ``DequantizeLinear``, which onnxruntime fuses into integer kernels. The dynamo exporter
  translates torchao's reference int8 graph (``Int8Model.program``) node for node, so it
  is used here. Below 8 bits there is no int8 path (no kernels): :func:`to_int8` refuses
  such policies.
- ``torchscript``: ``torch.jit.trace`` of the model, saved with ``torch.jit.save``.

Tolerances (every ``|exported - torch|`` must stay within ``atol + rtol * |torch|``):

- float ONNX and TorchScript: ``atol = rtol = 1e-4``. onnxruntime sums convolutions in
  another order; measured differences are 2e-7 to 5e-6, growing with the outputs'
  magnitude. TorchScript's are 0.
- int8 QDQ ONNX, against the reference int8 graph: ``atol = 1e-4 + 8 * s``, ``rtol = 0``,
  where ``s = (max - min) / 127`` of the outputs is the step of their int8 grid.
  onnxruntime's integer kernels round requantization differently from the reference
  graph's float arithmetic, and one-step differences grow through residual adds.

Measured values are in ``docs/benchmarks.md`` (Transfer).

>>> info = export("runs/r1/model.safetensors", "onnx", "model.onnx")  # doctest: +SKIP
>>> info.max_abs_diff <= info.atol  # doctest: +SKIP
True
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from autoshrink.compression.atomic import temporary_path
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.names import EXPORTERS, FORMATS
from autoshrink.compression.onnx_io import export_onnx
from autoshrink.compression.onnx_io import quiet as _quiet
from autoshrink.compression.onnx_io import run_onnx as _run_onnx
from autoshrink.compression.quantize import (
    bake_,
)

logger = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
FLOAT_TOL = 1e-4
#: int8: allowed steps of the int8 output grid (onnxruntime's integer kernels round
#: requantization differently; one-step differences grow through residual adds).
INT8_STEPS = 8.0
CHECK_BATCH = 2


@dataclass(frozen=True)
class ExportInfo:
    """What :func:`export` wrote and how well it matched.

    Attributes:
        path: The file written.
        format: ``onnx`` or ``torchscript``.
        exporter: ``dynamo``, ``legacy`` (TorchScript-based ONNX) or ``jit.trace``.
        int8: Whether the file holds the real int8 (QDQ) graph.
        max_abs_diff: Largest absolute difference from the PyTorch model on the check batch.
        atol: Absolute tolerance the check allowed.
        rtol: Relative tolerance the check allowed.
        file_bytes: Size of the file.
    """

    path: Path
    format: str
    exporter: str
    int8: bool
    max_abs_diff: float
    atol: float
    rtol: float
    file_bytes: int


def check_output_path(out: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    """Return ``out`` if a file can be written there, and it is none of ``inputs``.

    Its folder must exist, it must be no folder, and a command never writes over what it
    reads.

    Raises:
        AutoshrinkError: Otherwise, before anything is loaded or written.
    """
    out = Path(out)
    for source in inputs:
        if same_file(out, Path(source)):
            raise AutoshrinkError(
                f"output {out} is the input {source}: writing it would destroy what it is "
                "made from; name another --out"
            )
    if out.is_dir():
        raise AutoshrinkError(f"output {out} is a folder; name a file such as {out / 'model'}")
    if not out.parent.is_dir():
        raise AutoshrinkError(f"output folder {out.parent} does not exist")
    return out


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links and relative spellings resolved)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.expanduser().resolve() == b.expanduser().resolve()
    except (OSError, RuntimeError):  # a link loop, an unreadable folder: not provably one
        return False


def _source(
    source: str | Path | nn.Module,
    example_input: torch.Tensor | None,
    factory: str | None = None,
    allow_changed_factory: bool = False,
) -> tuple[nn.Module, torch.Tensor, dict[str, int] | None]:
    if isinstance(source, nn.Module):
        if example_input is None:
            raise AutoshrinkError("exporting a model needs an example_input")
        model = copy.deepcopy(source).cpu().eval()
        if any(parametrize.is_parametrized(m) for m in model.modules()):
            bake_(model)
        return model, example_input.cpu(), None
    from autoshrink.compression.artifact import load_artifact, read_header

    header = read_header(source)
    example = example_input if example_input is not None else torch.zeros(header.input_shape)
    model = load_artifact(source, factory, allow_changed_factory=allow_changed_factory)
    return model, example, dict(header.weight_bits)


def _check_batch(example: torch.Tensor, calibration: list[torch.Tensor]) -> torch.Tensor:
    if calibration:
        return calibration[0]
    gen = torch.Generator().manual_seed(0)
    return torch.randn((CHECK_BATCH, *example.shape[1:]), generator=gen, dtype=example.dtype)


def _inputs(batches: Iterable[Any], n: int) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for batch in batches:
        if len(out) >= n:
            break
        out.append(batch[0] if isinstance(batch, tuple | list) else batch)
    if not out:
        raise AutoshrinkError("the int8 export needs calibration batches; none were given")
    return out


def _output_path(
    source: str | Path | nn.Module, format: str, out: str | Path | None, int8: bool, exporter: str
) -> Path:
    """Check the format, exporter and int8 options, and return the checked file to write.

    Raises:
        AutoshrinkError: On a bad option, a model without ``out``, or an unwritable ``out``.
    """
    if format not in FORMATS:
        raise AutoshrinkError(f"unknown export format {format!r}: use one of {FORMATS}")
    if exporter not in EXPORTERS:
        raise AutoshrinkError(f"unknown exporter {exporter!r}: use one of {EXPORTERS}")
    if int8 and format != "onnx":
        raise AutoshrinkError("the int8 path exports as QDQ ONNX only: use format='onnx'")
    if int8 and exporter == "legacy":
        raise AutoshrinkError("the int8 path exports with the dynamo exporter only")
    if out is None:
        if isinstance(source, nn.Module):
            raise AutoshrinkError("exporting a model needs an output path")
        out = Path(source).with_suffix(SUFFIXES[format])
    return check_output_path(out)


def _export_model(
    source: str | Path | nn.Module,
    example_input: torch.Tensor | None,
    int8: bool,
    calibration: Iterable[Any] | None,
    calib_batches: int,
    factory: str | None,
    allow_changed_factory: bool,
) -> tuple[nn.Module, torch.Tensor, list[torch.Tensor]]:
    """The model (on the int8 path if ``int8``), example input and int8 calibration inputs."""
    model, example, bits = _source(source, example_input, factory, allow_changed_factory)
    batches = _inputs(calibration or [], calib_batches) if int8 else []
    if int8:
        from autoshrink.compression.int8 import to_int8

        with _quiet():
            # the reference graph: what the exporter translates and the check compares with
            model = to_int8(model, batches, len(batches), bits_by_layer=bits, compile=False)
    return model, example, batches


def _check_outputs(
    got: np.ndarray, reference: np.ndarray, format: str, int8: bool
) -> tuple[float, float, float]:
    """The largest ``|got - reference|`` and the tolerances (atol, rtol) it is within.

    Raises:
        AutoshrinkError: If the shapes differ or an output is beyond the tolerance.
    """
    step = float(reference.max() - reference.min()) / 127.0  # the int8 output grid
    atol = FLOAT_TOL + (INT8_STEPS * step if int8 else 0.0)
    rtol = 0.0 if int8 else FLOAT_TOL
    if got.shape != reference.shape:
        raise AutoshrinkError(
            f"the {format} export returns shape {got.shape}, the model {reference.shape}"
        )
    diff = float(np.abs(got - reference).max())
    if not np.all(np.abs(got - reference) <= atol + rtol * np.abs(reference)):
        raise AutoshrinkError(
            f"the {format} export's outputs differ from the model's by up to {diff:.3g} "
            f"(tolerance {atol:.3g} + {rtol:.3g}*|y|); nothing was written"
        )
    return diff, atol, rtol


def _write_checked(
    model: nn.Module,
    example: torch.Tensor,
    x: torch.Tensor,
    out: Path,
    format: str,
    exporter: str,
    int8: bool,
) -> tuple[str, float, float, float]:
    """Write ``out`` if it matches the model on ``x``: the exporter used, max |diff|, atol, rtol.

    The file is written to a temporary path first; one that does not match is removed.
    """
    with torch.no_grad():
        reference = model(x).detach().numpy()
    tmp = temporary_path(out)
    try:
        if format == "onnx":
            used = export_onnx(model, example, tmp, exporter)
            got = _run_onnx(tmp, x)
        else:
            with _quiet(), torch.no_grad():
                torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(tmp))
                got = torch.jit.load(str(tmp))(x).detach().numpy()
            used = "jit.trace"
        diff, atol, rtol = _check_outputs(got, reference, format, int8)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return used, diff, atol, rtol


def export(
    source: str | Path | nn.Module,
    format: str = "onnx",
    out: str | Path | None = None,
    example_input: torch.Tensor | None = None,
    *,
    int8: bool = False,
    calibration: Iterable[Any] | None = None,
    calib_batches: int = 8,
    exporter: str = "auto",
    factory: str | None = None,
    allow_changed_factory: bool = False,
) -> ExportInfo:
    """Export an artifact (or a model) to ONNX or TorchScript, and check its outputs.

    Args:
        source: An artifact path (from ``save_artifact``) or a model.
        format: ``onnx`` or ``torchscript``.
        out: The file to write; next to the artifact with the format's suffix when None.
        example_input: An input batch to trace with; the artifact's input shape (zeros)
            when None. Required for a model.
        int8: Export the real int8 path as QDQ ONNX (every layer at 8 bits or more).
        calibration: Batches (or ``(inputs, targets)`` pairs) that calibrate the int8
            activation ranges; the check runs on the first of them.
        calib_batches: How many calibration batches to use.
        exporter: ``auto`` (dynamo, else legacy), ``dynamo`` or ``legacy`` (ONNX only).
        factory: For an artifact of a user model, the factory that rebuilds it (see
            :func:`~autoshrink.compression.artifact.load_artifact`).
        allow_changed_factory: Accept a factory file that differs from the recorded one.

    Returns:
        The path, exporter, the largest output difference and the tolerance it met.

    Raises:
        AutoshrinkError: On an unknown format, a missing extra, or outputs that differ
            beyond the tolerance (then no file is left).
        PolicyError: If ``int8`` is asked of a layer below 8 bits.
        CheckpointError: If the artifact cannot be read.
    """
    out = _output_path(source, format, out, int8, exporter)
    model, example, batches = _export_model(
        source, example_input, int8, calibration, calib_batches, factory, allow_changed_factory
    )
    if int8:
        exporter = "dynamo"  # the TorchScript-based one cannot read torchao's int8 graph
        model = model.program  # type: ignore[assignment]
    x = _check_batch(example, batches)
    used, diff, atol, rtol = _write_checked(model, example, x, out, format, exporter, int8)
    logger.info("exported %s (%s) to %s, max |diff| %.3g", format, used, out, diff)
    return ExportInfo(out, format, used, int8, diff, atol, rtol, out.stat().st_size)


__all__ = ["EXPORTERS", "FORMATS", "ExportInfo", "check_output_path", "export"]
