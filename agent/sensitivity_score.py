"""Building the ``solver`` agent's sensitivity table: the grid, and each unit scored alone.

The table is scored through the env's evaluator directly, not as episodes: with a budget,
the env's clamp would not let one unit be compressed while every other stays whole, so an
episode cannot realise a table entry. Its evaluations are counted in the table
(``evaluations``, ``seconds``) and logged, unit by unit.

The grid of a unit: :data:`KEEP_STEPS` keep-ratios from 1 down to ``min_keep`` (rounded up
to counts the unit can realise), every bit-width the env searches, and in ``deep`` and
``sparse`` mode the sparsities :data:`SPARSITIES` (and the largest) on the env's grid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from autoshrink.agent.scripted_view import EnvView
from autoshrink.agent.sensitivity import SensitivityTable, UnitGrid
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import Policy, UnitPolicy
from autoshrink.env.budget import keep_for

logger = logging.getLogger(__name__)

#: Keep-ratios per unit in the table (evenly from 1 to ``min_keep``).
KEEP_STEPS = 6
#: Sparsities per unit in the table, besides 0 and the largest.
SPARSITIES = (0.5, 0.75, 0.9)
#: The evaluator settings a score depends on (read from the env's config).
EVALUATOR_FIELDS = (
    "dataset", "data_dir", "seed", "importance", "recalibrate_bn", "bn_batches",
    "finetune_steps", "finetune_lr", "distill", "eval_batches", "batch_size",
    "first_last_bits", "round_to", "hw_rounding", "model", "checkpoint",
)  # fmt: skip


def unit_grids(view: EnvView) -> list[UnitGrid]:
    """Every unit's grid (only what the env searches varies)."""
    clamp = view.clamp
    spars = [0.0]
    if "sparsity" in view.dims:
        top = clamp.sparsity_choices[-1]
        wanted = [s for s in SPARSITIES if s < top] + [top]
        spars += sorted({min(clamp.sparsity_choices, key=lambda g: abs(g - s)) for s in wanted})
    bits = tuple(sorted(clamp.bit_choices, reverse=True))
    out = []
    for i, unit in enumerate(view.units):
        counts = [unit.c_out]
        if "keep" in view.dims:
            ratios = np.linspace(1.0, clamp.min_keep, KEEP_STEPS)
            counts += [view.round_up(i, unit.kept(float(k))) for k in ratios]
            counts.append(clamp.min_channels[i])
        channels = tuple(sorted(set(counts), reverse=True))
        out.append(UnitGrid(unit.name, channels, bits, tuple(dict.fromkeys(spars))))
    return out


def evaluator_settings(view: EnvView) -> dict[str, Any]:
    """The dataset and evaluator settings a table's scores depend on, as plain values."""
    cfg = view.config
    settings = {k: _plain(getattr(cfg, k, None)) for k in EVALUATOR_FIELDS}
    settings["evaluator"] = type(view.env.evaluator).__name__
    settings["pinned"] = dict(sorted(getattr(view.env, "pinned", {}).items()))
    return settings


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def alone_policy(view: EnvView, unit: int, setting: tuple[int, int, float]) -> Policy:
    """The policy with unit ``unit`` at ``setting`` and every other unit whole and float."""
    env = view.env
    units = {}
    for i, u in enumerate(view.units):
        channels, bits, sparsity = setting if i == unit else (u.c_out, FLOAT_BITS, 0.0)
        keep = keep_for(u, channels)
        units[u.name] = UnitPolicy(keep=keep, bits=bits, channels=u.c_out, sparsity=sparsity)
    pinned = dict(getattr(env, "pinned", {}))
    graph = env.graph
    return Policy(units, pinned, view.config.round_to, {"table": True}, steps=graph.steps)


def score_table(
    view: EnvView,
    grids: list[UnitGrid],
    table: SensitivityTable,
    save: Callable[[SensitivityTable], None],
) -> SensitivityTable:
    """Score the units ``table`` lacks, in order, saving it after each.

    Args:
        view: The env whose evaluator scores.
        grids: Every unit's grid.
        table: The table so far (its first rows are kept).
        save: Called with the table after every unit.
    """
    evaluate = view.env.evaluator
    for i in range(len(table.rows), len(grids)):
        g = grids[i]
        start = time.perf_counter()
        whole = g.channels[0]

        def score(setting: tuple[int, int, float], i: int = i) -> float:
            return float(evaluate(alone_policy(view, i, setting)).accuracy)

        row = {
            "channels": [table.base_accuracy]
            + [score((c, FLOAT_BITS, 0.0)) for c in g.channels[1:]],
            "bits": [
                score((whole, b, 0.0)) if b < FLOAT_BITS else table.base_accuracy for b in g.bits
            ],
            "sparsity": [table.base_accuracy]
            + [score((whole, FLOAT_BITS, s)) for s in g.sparsity[1:]],
        }
        table.rows.append(row)
        table.evaluations += len(g.channels) - 1 + len(g.sparsity) - 1
        table.evaluations += sum(b < FLOAT_BITS for b in g.bits)
        table.seconds += time.perf_counter() - start
        logger.info("solver table: unit %s: %s", g.name, _describe(g, row))
        save(table)
    return table


def _describe(g: UnitGrid, row: dict[str, list[float]]) -> str:
    parts = [f"{c}ch {a:.4f}" for c, a in zip(g.channels, row["channels"], strict=True)]
    parts += [f"{b}b {a:.4f}" for b, a in zip(g.bits, row["bits"], strict=True) if b < 32]
    parts += [f"s{s:g} {a:.4f}" for s, a in zip(g.sparsity, row["sparsity"], strict=True) if s]
    return ", ".join(parts)


def unit_losses(table: SensitivityTable, grid: UnitGrid, unit: int) -> dict[str, np.ndarray]:
    """Unit ``unit``'s accuracy loss (at least 0) at each entry of each grid list."""
    row = table.rows[unit]
    return {
        k: np.maximum(0.0, table.base_accuracy - np.asarray(row[k], np.float64))
        for k in ("channels", "bits", "sparsity")
    }
