"""Hardware-aware channel counts: per unit, the counts that run faster than every larger one.

CPU convolution kernels work on blocks of channels (8 or 16 floats to a SIMD register on
x86), so latency climbs in steps: 57 channels can cost as much as 64. For each unit this
module times, at candidate channel counts, every layer whose width the unit sets (its own
layers at ``count`` outputs, the layers it feeds at the matching inputs), each built alone
at its real shape. The candidates are interleaved round by round and the median kept.

A count is *efficient* when every larger candidate is slower by more than
:data:`SLOPE_SHARE` of what the straight-line fit of the unit's times predicts for the
extra channels: a count on a step's flat top is dropped, since the step's last count costs
the same and keeps more (a unit whose time does not change keeps its full width only).
:attr:`~autoshrink.compression.unit_graph.Unit.steps` then holds the efficient counts,
and ``Unit.kept`` rounds to the nearest of them: one rule, shared by the budget clamp,
the cost model and the pruner, so costs stay exact.

The steps are measured on eager PyTorch (the oneDNN kernels ``torch.compile`` also calls
for convolutions) at the calling process's threads, and cached per architecture, input
shape and torch version; a search's workers read the main process's file.

>>> efficient_counts([8, 12, 16, 20, 24, 28, 32], [1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0])
[8, 24, 32]
"""

from __future__ import annotations

import hashlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoshrink.compression.documents import read_document
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.json_write import write_json
from autoshrink.compression.unit_graph import Unit, UnitGraph, check_steps
from autoshrink.compression.versioned import unwrap, wrap

logger = logging.getLogger(__name__)

STEPS_TYPE = "autoshrink.ChannelSteps"
STEPS_VERSION = 1
#: Most candidate counts timed per unit: above it the candidates are every ``r * 2**k``-th.
MOST_CANDIDATES = 64
#: A larger count must be slower by this share of the fitted per-channel time to keep a count.
SLOPE_SHARE = 0.5
#: Interleaved rounds over a unit's candidates (the median per count is kept).
ROUNDS = 7
#: ``timer(count) -> seconds`` of one unit's layers at ``count`` channels.
CountTimer = Callable[[int], float]


def candidate_counts(unit: Unit, most: int = MOST_CANDIDATES) -> list[int]:
    """The counts timed for ``unit``: multiples of its grain, and its full width.

    The grain is the unit's ``round_to`` times the smallest power of two that leaves at
    most ``most`` multiples below ``c_out``.

    >>> from autoshrink.compression.unit_graph import Unit
    >>> candidate_counts(Unit("c", 0, "conv", False, 3, 20, 3, 1, 1, 64, 0, 0, ("c",)), 8)
    [4, 8, 12, 16, 20]
    """
    grain = unit.round_to
    while unit.c_out // grain > most:
        grain *= 2
    return sorted({*range(grain, unit.c_out, grain), unit.c_out})


def efficient_counts(counts: Sequence[int], seconds: Sequence[float]) -> list[int]:
    """The counts that every larger count is slower than, by a share of the fitted slope.

    ``counts`` ascending, ending with the full width, which is always kept.
    """
    c, t = np.asarray(counts, dtype=np.float64), np.asarray(seconds, dtype=np.float64)
    slope = float(np.polyfit(c, t, 1)[0]) if len(c) > 1 else 0.0
    need = SLOPE_SHARE * max(slope, 0.0)
    keep = [
        int(c[i])
        for i in range(len(c) - 1)
        if np.all(t[i + 1 :] - t[i] > need * (c[i + 1 :] - c[i]))
    ]
    return [*keep, int(c[-1])]


def _shape(fmap: int, stride: int) -> tuple[int, int]:
    """An input side pair whose conv output has ``fmap`` positions (square when it can)."""
    h = math.isqrt(fmap)
    h, w = (h, h) if h * h == fmap else (1, fmap)
    return h * stride, w * stride


def _layer_modules(graph: UnitGraph, unit: Unit, count: int, batch: int) -> list[tuple]:
    """Each layer whose width ``unit`` sets, built alone at ``count``, with an input."""
    c = graph.coupling
    i = graph.unit_names.index(unit.name)
    removed = unit.c_out - count
    out: list[tuple[nn.Module, torch.Tensor]] = []
    for j, layer in enumerate(graph.layers):
        a_out, a_in = int(c.layer_out_a[j, i]), int(c.layer_in_a[j, i])
        if a_out == 0 and a_in == 0:
            continue
        c_out = int(c.layer_out0[j]) - a_out * removed
        c_in = int(c.layer_in0[j]) - a_in * removed
        if layer.kind == "linear":
            module: nn.Module = nn.Linear(c_in, c_out)
            x = torch.randn(batch * layer.fmap, c_in)
        else:
            groups = c_out if bool(c.layer_dw[j]) else layer.groups
            k = layer.kernel
            module = nn.Conv2d(c_in, c_out, k, layer.stride, k // 2, groups=groups)
            x = torch.randn(batch, c_in, *_shape(layer.fmap, layer.stride))
        out.append((module.eval(), x))
    return out


def unit_timer(graph: UnitGraph, unit: Unit, batch: int) -> CountTimer:
    """``timer(count)``: one pass over the unit's layers built at ``count`` channels."""
    built: dict[int, list[tuple]] = {}

    def timer(count: int) -> float:
        if count not in built:  # which counts get built depends on timings: own generator
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(count)
                built[count] = _layer_modules(graph, unit, count, batch)
        with torch.inference_mode():
            start = time.perf_counter()
            for module, x in built[count]:
                module(x)
            return time.perf_counter() - start

    return timer


def measure_unit(counts: Sequence[int], timer: CountTimer, rounds: int = ROUNDS) -> list[float]:
    """Median seconds per count, the counts interleaved round by round after one warm-up."""
    samples: dict[int, list[float]] = {n: [] for n in counts}
    for r in range(rounds + 1):
        for n in counts:
            seconds = timer(n)
            if r:
                samples[n].append(seconds)
    return [statistics.median(samples[n]) for n in counts]


def measure_steps(
    graph: UnitGraph, batch: int = 1, timer: Callable[[Unit], CountTimer] | None = None
) -> dict[str, list[int]]:
    """The efficient counts of every convolution or linear unit of ``graph``.

    Attention-head units and units of inputs other than images or vectors keep their
    plain rounding. ``timer(unit)`` replaces the layer timing (tests use a fake one).
    """
    images = len(graph.input_shape) in (2, 4)
    steps: dict[str, list[int]] = {}
    for k, unit in enumerate(graph.units):
        if unit.is_heads or not images:
            continue
        counts = candidate_counts(unit)
        seconds = measure_unit(counts, (timer or (lambda u: unit_timer(graph, u, batch)))(unit))
        steps[unit.name] = efficient_counts(counts, seconds)
        logger.info(
            "channel steps: unit %d/%d (%s) keeps %d of %d counts",
            k + 1,
            len(graph.units),
            unit.name,
            len(steps[unit.name]),
            len(counts),
        )
    return steps


def steps_key(model: nn.Module, graph: UnitGraph, batch: int) -> str:
    """Hash of what the steps depend on: architecture, rounding, shape, batch, torch."""
    grains = [u.round_to for u in graph.units]
    parts = [repr(model), str(graph.input_shape), f"batch={batch}", str(grains), torch.__version__]
    parts.append(f"v{STEPS_VERSION}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def channel_steps(
    model: nn.Module, graph: UnitGraph, batch: int = 1, cache: Path | None = None
) -> dict[str, list[int]]:
    """The efficient counts per unit for ``model``: cached, or measured and cached.

    Args:
        model: The uncompressed model (its ``repr`` keys the cache).
        graph: Its units.
        batch: The batch size latency matters for.
        cache: Folder of cached steps; default ``<autoshrink cache>/steps``.
    """
    if cache is None:
        from autoshrink.compression.cache import cache_dir

        cache = cache_dir() / "steps"
    path = cache / f"{steps_key(model, graph, batch)}.json"
    if path.is_file():
        try:
            return _read(path, graph)
        except (AutoshrinkError, ValueError, KeyError, TypeError) as exc:
            logger.warning("measuring again: unreadable channel steps %s: %s", path, exc)
    logger.info("measuring hardware-aware channel steps for %d units", len(graph.units))
    steps = measure_steps(graph, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"steps": steps, "threads": torch.get_num_threads()}
    write_json(path, wrap(STEPS_TYPE, STEPS_VERSION, data))
    return steps


def stepped(model: nn.Module, graph: UnitGraph, batch: int = 1) -> UnitGraph:
    """``graph`` with every unit rounding to its :func:`channel_steps` (cached)."""
    return graph.with_steps(channel_steps(model, graph, batch))


def _read(path: Path, graph: UnitGraph) -> dict[str, list[int]]:
    data = unwrap(read_document(path, "channel steps"), STEPS_TYPE, STEPS_VERSION, "steps")
    raw: Mapping[str, object] = data["steps"]
    steps = {name: list(check_steps(graph.unit(name), v)) for name, v in raw.items()}
    logger.info("loaded channel steps %s", path)
    return steps
