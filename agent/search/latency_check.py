"""The shipped model's latency, measured fresh, and whether a latency budget held by it.

A search keeps a latency budget on the per-unit lookup table's *estimate*
(:mod:`autoshrink.env.latency`). The model a user gets is then timed again: the baseline and
the compressed model interleaved, in rounds, after a warm-up, on the search's runtime
(:mod:`autoshrink.compression.timing`, :mod:`autoshrink.compression.runtime`).
``result.json`` keeps that measurement under ``latency`` and, with a latency budget, the
verdict under ``latency_check``: a budget the measurement breaks is *not met*
(``budgets_met`` is false), whatever the table said.

A relative budget (``--latency 0.6``) is checked on the measured ratio, which interleaving
keeps free of the machine's drift; an absolute one (``--latency 4ms``) on the measured
seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from autoshrink.compression.runtime import runner
from autoshrink.compression.timing import Clock, Comparison, compare

logger = logging.getLogger(__name__)

#: The clock fresh measurements read (tests replace it with a fake one).
CLOCK: Clock = time.perf_counter


def measure_latency(
    baseline: nn.Module, compressed: nn.Module, example: torch.Tensor, runtime: str, rounds: int
) -> Comparison:
    """Time ``compressed`` against ``baseline`` on ``runtime``, interleaved.

    Args:
        baseline: The uncompressed model.
        compressed: The shipped model (as loaded back from its artifact).
        example: The input batch both are timed on.
        runtime: ``eager``, ``compiled`` or ``onnxruntime``.
        rounds: Interleaved rounds.
    """
    ref = runner(baseline, example, runtime)
    cand = runner(compressed, example, runtime)
    comparison = compare(ref, cand, example, rounds, clock=CLOCK)
    if comparison.warning():
        logger.warning("%s", comparison.warning())
    return comparison


def latency_check(
    comparison: Comparison,
    budget: Any,
    limit_s: float,
    estimate_s: float,
    baseline_estimate_s: float,
) -> dict[str, Any]:
    """Whether a latency budget held by the fresh measurement, beside the table's estimate.

    Args:
        comparison: The fresh interleaved measurement (baseline against compressed).
        budget: The latency :class:`~autoshrink.env.budget_text.Budget` (``value``,
            ``relative``).
        limit_s: The budget in seconds on the table's scale.
        estimate_s: The table's estimate for the shipped model.
        baseline_estimate_s: The table's latency of the uncompressed model.

    Returns:
        ``estimate_over_budget`` and ``measured_over_budget`` (1.0 = exactly at the budget),
        ``met_by_estimate``, ``met_by_measurement``, the measured seconds, ratio and spread.
    """
    measured_s = comparison.candidate.median
    if budget.relative:
        measured_over = comparison.ratio / float(budget.value)
    else:
        measured_over = measured_s / limit_s
    estimate_over = estimate_s / limit_s
    return {
        "relative": bool(budget.relative),
        "limit_s": limit_s,
        "estimate_s": estimate_s,
        "estimate_ratio": estimate_s / baseline_estimate_s if baseline_estimate_s else None,
        "estimate_over_budget": estimate_over,
        "met_by_estimate": estimate_over <= 1.0 + 1e-9,
        "measured_s": measured_s,
        "measured_ratio": comparison.ratio,
        "spread": comparison.spread,
        "measured_over_budget": measured_over,
        "met_by_measurement": measured_over <= 1.0,
        "warning": comparison.warning(),
    }
