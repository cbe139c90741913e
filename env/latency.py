"""A per-unit latency lookup table, measured on this machine and cached.

For each unit the table holds the measured latency of the model with *only that unit*
pruned to a few channel counts (all other units whole). Their savings add up, as in HAQ's
lookup tables::

    added(policy) = sum over units of (base - latency_u(channels_u))

where ``latency_u`` is piecewise-linear in the channel count between the measured levels
and made monotone (non-decreasing in channels: a level never counts as slower than a larger
one). Below the lowest measured level the lowest level's value is used. Weight bit-widths
do not enter: below 8 bits this CPU has no kernels, so simulated and packed low-bit weights
run in float.

Savings do not add up on a real machine: a small model at a small input is per-operator
overhead, and pruning one unit also shrinks the next layer's input, so the sum of the
one-unit savings over-promises (ResNet-20 on 8×8 digits at batch 32: the summed table put
every unit at an eighth of its channels under 0.6 of the full latency; it measured 0.65).
So the table is *calibrated*: every unit at each measured level together (the uniform
policies) is measured too, and the estimate maps the added saving through the measured ones::

    latency(policy) = base - calibrated(added(policy))

``calibrated`` is piecewise-linear through ``(0, 0)`` and the uniform policies' (added,
measured) savings, made non-decreasing from the conservative side (a point never promises
more than any point beyond it), and flat past the last one, so the estimate is exact at the
full model and at every measured uniform policy, never promises more than the smallest one
measured, and stays monotone in every unit's channels, which keeps the budget clamp's binary
search valid.

Every entry is measured on the chosen runtime (:mod:`autoshrink.compression.runtime`:
eager, in the layout measured fastest for the full model, ``torch.compile`` or
onnxruntime) *against the full model, interleaved*
(:func:`autoshrink.compression.timing.compare`): a unit's latency at a level is ``base``
times the median per-round ratio, so a machine that slows down between two entries does not
bend the table. ``spread`` is the largest spread of those ratios.

The latency budget is guaranteed on this table's estimate during the search; the final model
is then checked by a fresh interleaved measurement (``result.json``'s ``latency_check``).
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from autoshrink.compression.documents import read_document
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.json_write import write_json
from autoshrink.compression.names import DEFAULT_RUNTIME
from autoshrink.compression.runtime import deployed_layout, runner, runtime_versions
from autoshrink.compression.timing import compare
from autoshrink.compression.versioned import unwrap, wrap

if TYPE_CHECKING:
    from autoshrink.compression.units import UnitGraph

logger = logging.getLogger(__name__)

TABLE_TYPE = "autoshrink.LatencyTable"
#: 2: the versioned envelope. 3: interleaved ratios, ``runtime`` and ``spread``. 4: the
#: calibration on uniform policies (a table of an older version in the cache is measured
#: again).
TABLE_VERSION = 4
#: Keep-ratios at which each unit is measured (the full model is measured once).
LEVELS: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75)
PruneFn = Callable[[nn.Module, "UnitGraph", Mapping[str, int]], nn.Module]


@dataclass(frozen=True)
class LatencyTable:
    """Measured per-unit latencies (seconds) and the calibrated, monotone estimate.

    Args:
        base: Latency of the uncompressed model.
        channels: Per unit, the measured channel counts, ascending, ending with ``c_out``.
        seconds: Per unit, the (monotone) latency at each of those counts.
        key: What the table was measured for (model, input shape, threads, runtime, versions).
        runtime: The runtime it was measured on.
        spread: The largest spread of the interleaved ratios it was measured from.
        calib_added: Added one-unit savings (seconds) of the measured uniform policies,
            ascending; empty means no calibration (savings add up as measured).
        calib_saved: Their calibrated savings (seconds): measured, made non-decreasing.
    """

    base: float
    channels: dict[str, list[int]]
    seconds: dict[str, list[float]]
    key: str = ""
    runtime: str = DEFAULT_RUNTIME
    spread: float = 0.0
    calib_added: list[float] = field(default_factory=list)
    calib_saved: list[float] = field(default_factory=list)

    def unit_latency(self, name: str, channels: int) -> float:
        """Latency of the model with only unit ``name`` at ``channels`` channels."""
        xs, ys = self.channels[name], self.seconds[name]
        return float(np.interp(channels, xs, ys))  # flat outside the measured range

    def added_saving(self, kept: Mapping[str, int]) -> float:
        """The sum of the one-unit savings (seconds) of ``kept``, before calibration."""
        return sum(
            self.base - self.unit_latency(name, c)
            for name, c in kept.items()
            if name in self.channels
        )

    def __call__(self, kept: Mapping[str, int]) -> float:
        """Estimated latency of the model pruned to ``kept`` channels per unit."""
        added = self.added_saving(kept)
        if self.calib_added:
            xs, ys = [0.0, *self.calib_added], [0.0, *self.calib_saved]
            added = float(np.interp(added, xs, ys))  # flat past the last point
        return max(self.base - added, 0.0)

    def to_dict(self) -> dict[str, object]:
        """The versioned JSON-ready form."""
        return wrap(TABLE_TYPE, TABLE_VERSION, asdict(self))

    @classmethod
    def from_dict(cls, obj: object) -> LatencyTable:
        """Rebuild a table from :meth:`to_dict` output."""
        if not isinstance(obj, dict) or obj.get("version") != TABLE_VERSION:
            raise ValueError("not a latency table of this version")
        data: Mapping[str, object] = unwrap(obj, TABLE_TYPE, TABLE_VERSION, "latency table")
        return cls(
            base=float(data["base"]),  # type: ignore[arg-type]
            channels={k: [int(c) for c in v] for k, v in data["channels"].items()},  # type: ignore[attr-defined]
            seconds={k: [float(s) for s in v] for k, v in data["seconds"].items()},  # type: ignore[attr-defined]
            key=str(data.get("key", "")),
            runtime=str(data.get("runtime", DEFAULT_RUNTIME)),
            spread=float(data.get("spread", 0.0)),  # type: ignore[arg-type]
            calib_added=[float(v) for v in data.get("calib_added", [])],  # type: ignore[attr-defined]
            calib_saved=[float(v) for v in data.get("calib_saved", [])],  # type: ignore[attr-defined]
        )


def time_forward(model: nn.Module, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward pass of ``model`` on ``x`` alone (eval mode, no autograd).

    Prefer :func:`autoshrink.compression.timing.compare`, which times two models
    interleaved: this one compares moments of the machine as much as models.
    """
    model.eval()
    samples = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def table_key(
    model: nn.Module,
    example_input: torch.Tensor,
    levels: Sequence[float],
    runtime: str = DEFAULT_RUNTIME,
) -> str:
    """Hash of what a measurement depends on: architecture, shape, threads, runtime, versions."""
    parts = [
        repr(model),
        str(tuple(example_input.shape)),
        f"threads={torch.get_num_threads()}",
        runtime_versions(runtime),
        f"levels={tuple(levels)}",
        f"v{TABLE_VERSION}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _interleaved(
    model: nn.Module, example_input: torch.Tensor, runtime: str, rounds: int
) -> tuple[float, Callable[[nn.Module], tuple[float, float]]]:
    """The full model's seconds, and ``ratio_of(variant)``: its median ratio and spread.

    The variants run in the full model's layout (measured once, on eager).
    """
    layout = deployed_layout(model, example_input) if runtime == "eager" else "contiguous"
    base = runner(model, example_input, runtime, layout)
    seconds = compare(base, base, example_input, rounds).reference.median

    def ratio_of(variant: nn.Module) -> tuple[float, float]:
        run = runner(variant, example_input, runtime, layout)
        c = compare(base, run, example_input, rounds)
        return c.ratio, c.spread

    return seconds, ratio_of


def measure_table(
    model: nn.Module,
    graph: UnitGraph,
    example_input: torch.Tensor,
    prune: PruneFn,
    levels: Sequence[float] = LEVELS,
    repeats: int = 20,
    timer: Callable[[nn.Module, torch.Tensor], float] | None = None,
    runtime: str = DEFAULT_RUNTIME,
) -> LatencyTable:
    """Measure a table: the full model, then each unit alone at each level against it.

    Args:
        model: The uncompressed model (left untouched).
        graph: Its units.
        example_input: A batch at the size latency should be measured for.
        prune: ``prune(model, graph, kept_by_unit) -> new model``.
        levels: Keep-ratios measured per unit.
        repeats: Interleaved rounds per measurement (the median ratio is kept).
        timer: Replaces the interleaved measurement by ``timer(model, x) -> seconds`` of
            each model alone (tests use a deterministic one).
        runtime: Where the models run (:data:`~autoshrink.compression.names.RUNTIMES`).
    """
    full = {u.name: u.c_out for u in graph.units}
    if timer is not None:
        base = timer(model, example_input)
        ratio_of = lambda m: (timer(m, example_input) / base, 0.0)  # noqa: E731
    else:
        base, ratio_of = _interleaved(model, example_input, runtime, repeats)
    channels: dict[str, list[int]] = {}
    seconds: dict[str, list[float]] = {}
    spread = 0.0
    for i, unit in enumerate(graph.units):
        counts = sorted({unit.kept(k) for k in levels} - {unit.c_out})
        measured = [ratio_of(prune(model, graph, {**full, unit.name: c})) for c in counts]
        spread = max([spread, *(s for _, s in measured)])
        xs, ys = [*counts, unit.c_out], [*(base * r for r, _ in measured), base]
        channels[unit.name] = xs
        # Monotone: no count may look slower than a larger one (the full model stays base).
        seconds[unit.name] = capped_by_later(ys)
        logger.info("latency table: unit %d/%d (%s) measured", i + 1, len(graph.units), unit.name)
    table = LatencyTable(base, channels, seconds, runtime=runtime, spread=spread)
    points = []
    for level in levels:  # every unit at one level together: what the sum over-promises
        kept = {u.name: u.kept(level) for u in graph.units}
        ratio, s = ratio_of(prune(model, graph, kept))
        spread = max(spread, s)
        points.append((table.added_saving(kept), base * (1.0 - ratio)))
    added, saved = calibration(points)
    logger.info("latency table: calibrated on %d uniform policies", len(points))
    return replace(table, spread=spread, calib_added=added, calib_saved=saved)


def calibration(points: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Calibration points from (added, measured) savings: x strictly ascending, y safe.

    A measured saving is capped by every saving measured at a larger added one (and kept
    at least 0), so the map is non-decreasing and never promises more than a measurement.
    Points whose added saving is not above the previous one's (or 0) are dropped.
    """
    xs: list[float] = []
    ys: list[float] = []
    for x, y in sorted(points):
        if x > (xs[-1] if xs else 0.0):
            xs.append(x)
            ys.append(y)
        elif xs:
            ys[-1] = min(ys[-1], y)  # the same added saving: the smaller measurement
    return xs, capped_by_later([max(y, 0.0) for y in ys])


def capped_by_later(values: Sequence[float]) -> list[float]:
    """Each value capped by every value after it: the largest non-decreasing lower bound."""
    return np.minimum.accumulate(np.asarray(values, dtype=float)[::-1])[::-1].tolist()


def latency_table(
    model: nn.Module,
    graph: UnitGraph,
    example_input: torch.Tensor,
    prune: PruneFn,
    cache: Path | None = None,
    levels: Sequence[float] = LEVELS,
    runtime: str = DEFAULT_RUNTIME,
    timer: Callable[[nn.Module, torch.Tensor], float] | None = None,
) -> LatencyTable:
    """The table for ``model`` at ``example_input``'s shape and ``runtime``: cached, or measured.

    Args:
        model: The uncompressed model.
        graph: Its units.
        example_input: A batch at the size latency matters for.
        prune: ``prune(model, graph, kept_by_unit) -> new model``.
        cache: Folder of cached tables; default ``<autoshrink cache>/latency``.
        levels: Keep-ratios measured per unit.
        runtime: Where the models run; the cache keeps one table per runtime (and shape,
            threads and versions).
        timer: Replaces the interleaved measurement (see :func:`measure_table`).
    """
    if cache is None:
        from autoshrink.compression.cache import cache_dir

        cache = cache_dir() / "latency"
    key = table_key(model, example_input, levels, runtime)
    path = cache / f"{key}.json"
    if path.is_file():
        try:
            table = LatencyTable.from_dict(read_document(path, "latency table"))
            if set(table.channels) == {u.name for u in graph.units}:
                logger.info("loaded latency table %s", path)
                return table
        except (AutoshrinkError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("measuring again: unreadable latency table %s: %s", path, exc)
    logger.info("measuring a latency table for %d units", len(graph.units))
    table = measure_table(model, graph, example_input, prune, levels, timer=timer, runtime=runtime)
    table = replace(table, key=key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table.to_dict())
    return table
