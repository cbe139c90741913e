"""A per-unit latency lookup table, measured on this machine and cached.

For each unit the table holds the measured latency of the model with *only that unit*
pruned to a few channel counts (all other units whole). The estimate for a policy is
additive, as in HAQ's lookup tables::

    latency(policy) = base + sum over units of (latency_u(channels_u) - base)

where ``latency_u`` is piecewise-linear in the channel count between the measured levels
and made monotone (non-decreasing in channels: a level never counts as slower than a larger
one, so the whole model stays at ``base``), which keeps the budget clamp's binary search
valid. Below the lowest measured level the lowest level's value is used,
which over-estimates, i.e. errs on the safe side. Weight bit-widths do not enter: below 8
bits this CPU has no kernels, so simulated and packed low-bit weights run in float.

The latency budget is guaranteed on this table's estimate, not on a fresh measurement
(which is noisy, and for tiny models dominated by per-operator overhead).
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from autoshrink.compression.documents import read_document
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.json_write import write_json
from autoshrink.compression.versioned import unwrap, wrap

if TYPE_CHECKING:
    from autoshrink.compression.units import UnitGraph

logger = logging.getLogger(__name__)

TABLE_TYPE = "autoshrink.LatencyTable"
#: 2: the versioned envelope (a version-1 table in the cache is measured again).
TABLE_VERSION = 2
#: Keep-ratios at which each unit is measured (the full model is measured once).
LEVELS: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75)
PruneFn = Callable[[nn.Module, "UnitGraph", Mapping[str, int]], nn.Module]


@dataclass(frozen=True)
class LatencyTable:
    """Measured per-unit latencies (seconds) and the additive, monotone estimate.

    Args:
        base: Latency of the uncompressed model.
        channels: Per unit, the measured channel counts, ascending, ending with ``c_out``.
        seconds: Per unit, the (monotone) latency at each of those counts.
        key: What the table was measured for (model, input shape, threads, torch).
    """

    base: float
    channels: dict[str, list[int]]
    seconds: dict[str, list[float]]
    key: str = ""

    def unit_latency(self, name: str, channels: int) -> float:
        """Latency of the model with only unit ``name`` at ``channels`` channels."""
        xs, ys = self.channels[name], self.seconds[name]
        return float(np.interp(channels, xs, ys))  # flat outside the measured range

    def __call__(self, kept: Mapping[str, int]) -> float:
        """Estimated latency of the model pruned to ``kept`` channels per unit."""
        total = self.base
        for name, c in kept.items():
            if name in self.channels:
                total += self.unit_latency(name, c) - self.base
        return max(total, 0.0)

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
        )


def time_forward(model: nn.Module, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward pass of ``model`` on ``x`` (eval mode, no autograd)."""
    model.eval()
    samples = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def table_key(model: nn.Module, example_input: torch.Tensor, levels: Sequence[float]) -> str:
    """Hash of what a measurement depends on: architecture, input shape, threads, torch."""
    parts = [
        repr(model),
        str(tuple(example_input.shape)),
        f"threads={torch.get_num_threads()}",
        f"torch={torch.__version__}",
        f"levels={tuple(levels)}",
        f"v{TABLE_VERSION}",
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def measure_table(
    model: nn.Module,
    graph: UnitGraph,
    example_input: torch.Tensor,
    prune: PruneFn,
    levels: Sequence[float] = LEVELS,
    repeats: int = 20,
    timer: Callable[[nn.Module, torch.Tensor], float] | None = None,
) -> LatencyTable:
    """Measure a table: the full model once, then each unit alone at each level.

    Args:
        model: The uncompressed model (left untouched).
        graph: Its units.
        example_input: A batch at the size latency should be measured for.
        prune: ``prune(model, graph, kept_by_unit) -> new model``.
        levels: Keep-ratios measured per unit.
        repeats: Timed forward passes per measurement (the median is kept).
        timer: Replaces :func:`time_forward` (tests use a deterministic one).
    """
    timer = timer or (lambda m, x: time_forward(m, x, repeats))
    full = {u.name: u.c_out for u in graph.units}
    base = timer(model, example_input)
    channels: dict[str, list[int]] = {}
    seconds: dict[str, list[float]] = {}
    for unit in graph.units:
        counts = sorted({unit.kept(k) for k in levels} - {unit.c_out})
        values = [timer(prune(model, graph, {**full, unit.name: c}), example_input) for c in counts]
        xs, ys = [*counts, unit.c_out], [*values, base]
        channels[unit.name] = xs
        # Monotone: no count may look slower than a larger one (the full model stays base).
        seconds[unit.name] = np.minimum.accumulate(np.asarray(ys)[::-1])[::-1].tolist()
    return LatencyTable(base=base, channels=channels, seconds=seconds)


def latency_table(
    model: nn.Module,
    graph: UnitGraph,
    example_input: torch.Tensor,
    prune: PruneFn,
    cache: Path | None = None,
    levels: Sequence[float] = LEVELS,
) -> LatencyTable:
    """The table for ``model`` at ``example_input``'s shape: from the cache, else measured.

    Args:
        model: The uncompressed model.
        graph: Its units.
        example_input: A batch at the size latency matters for.
        prune: ``prune(model, graph, kept_by_unit) -> new model``.
        cache: Folder of cached tables; default ``<autoshrink cache>/latency``.
        levels: Keep-ratios measured per unit.
    """
    if cache is None:
        from autoshrink.compression.cache import cache_dir

        cache = cache_dir() / "latency"
    key = table_key(model, example_input, levels)
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
    table = measure_table(model, graph, example_input, prune, levels)
    table = LatencyTable(table.base, table.channels, table.seconds, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table.to_dict())
    return table
