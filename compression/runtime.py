"""Run a model the way it is deployed: eager PyTorch, ``torch.compile`` or onnxruntime.

:func:`runner` turns a model into a callable on input batches for one of
:data:`~autoshrink.compression.names.RUNTIMES`; latency budgets, the latency table and
``evaluate`` time these callables (:mod:`.timing`), so that a latency is the deployed
runtime's, not eager PyTorch's. :func:`runtime_versions` names what a measurement on a
runtime depends on, for cache keys.

>>> import torch
>>> run = runner(torch.nn.Linear(4, 2), torch.zeros(1, 4), "eager")
>>> tuple(run(torch.zeros(3, 4)).shape)
(3, 2)
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.names import RUNTIMES

logger = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], Any]


def check_runtime(runtime: str) -> str:
    """``runtime`` if it is one of :data:`RUNTIMES`.

    Raises:
        AutoshrinkError: Naming the runtimes there are.
    """
    if runtime not in RUNTIMES:
        raise AutoshrinkError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    return runtime


def runtime_versions(runtime: str) -> str:
    """The versions a measurement on ``runtime`` depends on (torch, and onnxruntime's)."""
    parts = [f"runtime={check_runtime(runtime)}", f"torch={torch.__version__}"]
    if runtime == "onnxruntime":
        try:
            import onnxruntime

            parts.append(f"onnxruntime={onnxruntime.__version__}")
        except ImportError:
            parts.append("onnxruntime=missing")
    return ",".join(parts)


#: Compilations of one model class's ``forward`` that dynamo keeps before it runs the rest
#: eagerly (its default is 8): a latency table compiles one pruned variant per unit and level,
#: and past the default the later ones would silently be timed in eager mode.
RECOMPILE_LIMIT = 4096


def _allow_recompiles() -> None:
    """Raise dynamo's recompile limits (process-wide) to :data:`RECOMPILE_LIMIT`."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, RECOMPILE_LIMIT)


def _compiled(model: nn.Module) -> Runner:
    from autoshrink.compression.int8 import Int8Model

    _allow_recompiles()
    if isinstance(model, Int8Model):
        if model.compiled:
            return model
        return Int8Model(model.program, compiled=True)
    # static shapes: every variant is its own graph, as a deployed model would be compiled
    compiled = torch.compile(copy.deepcopy(model).eval(), dynamic=False)
    return compiled


def _onnxruntime(model: nn.Module, example: torch.Tensor) -> Runner:
    from autoshrink.compression.int8 import Int8Model
    from autoshrink.compression.onnx_io import export_onnx, onnx_session

    exporter = "auto"
    if isinstance(model, Int8Model):
        model, exporter = model.program, "dynamo"  # the QDQ graph onnxruntime runs in int8
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, example, path, exporter)
        session = onnx_session(path, threads=torch.get_num_threads())
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> Any:
        return session.run(None, {name: x.numpy()})[0]

    return run


#: Layouts of a float model's activations on the eager runtime (``layout`` of :func:`runner`).
LAYOUTS: tuple[str, ...] = ("auto", "contiguous", "channels_last")
#: ``auto`` takes channels_last where its median time is at most this share of the default's.
LAYOUT_GAIN = 0.97
#: Interleaved rounds of the ``auto`` layout measurement.
LAYOUT_ROUNDS = 7


def _channels_last(model: nn.Module) -> Runner:
    net = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()

    def run(x: torch.Tensor) -> Any:
        return net(x.contiguous(memory_format=torch.channels_last))

    return run


def _has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def deployed_layout(model: nn.Module, example: torch.Tensor) -> str:
    """``channels_last`` if eager ``model`` runs measurably faster so on ``example``.

    Measured interleaved against the default layout (:func:`~.timing.compare`); only
    models with 2-D convolutions on 4-D inputs are tried, int8 models never.
    """
    from autoshrink.compression.int8 import Int8Model
    from autoshrink.compression.timing import compare

    if example.dim() != 4 or isinstance(model, Int8Model) or not _has_conv2d(model):
        return "contiguous"
    model.eval()
    with torch.inference_mode():
        c = compare(model, _channels_last(model), example, LAYOUT_ROUNDS)
    layout = "channels_last" if c.ratio <= LAYOUT_GAIN else "contiguous"
    logger.info("layout %s (channels_last at %.3f of the default's time)", layout, c.ratio)
    return layout


def runner(model: nn.Module, example: torch.Tensor, runtime: str, layout: str = "auto") -> Runner:
    """A callable that runs ``model`` on input batches on ``runtime``.

    Args:
        model: A CPU model (float, fake-quantized or an int8
            :class:`~autoshrink.compression.int8.Int8Model`), left untouched.
        example: An input batch (exports trace it; the batch dimension stays dynamic).
        runtime: ``eager`` (the model itself, in eval mode), ``compiled``
            (``torch.compile``; an int8 model's own compiled graph) or ``onnxruntime``
            (exported to ONNX, QDQ for an int8 model, run on as many threads as torch).
        layout: On ``eager``, the activations' memory layout: ``auto`` measures whether
            ``channels_last`` is faster (:func:`deployed_layout`), or name one. The other
            runtimes choose their own.

    Returns:
        The callable. A compiled one compiles on its first call: time it after a warm-up.

    Raises:
        AutoshrinkError: On an unknown runtime, a missing extra or a failed export.
    """
    check_runtime(runtime)
    if layout not in LAYOUTS:
        raise AutoshrinkError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    model.eval()
    if runtime == "compiled":
        return _compiled(model)
    if runtime == "onnxruntime":
        return _onnxruntime(model, example)
    if layout == "auto":
        layout = deployed_layout(model, example)
    return _channels_last(model) if layout == "channels_last" else model
