"""Budgets as a user gives them: a ratio of the uncompressed model or an absolute amount.

:func:`parse_budget` reads the forms a command line or a batch spec gives; a bare number
is a ratio, so one above 1 is refused with the likely meaning:

>>> parse_budget("flops", "0.25")
Budget(metric='flops', value=0.25, relative=True)
>>> parse_budget("size", "300KB").value
300000.0
>>> parse_budget("latency", "4ms").value
0.004
>>> try:
...     parse_budget("flops", "50")
... except AutoshrinkError as exc:
...     print(str(exc).split("?")[0])
flops budget 50 is a bare number above 1: did you mean 50%
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.metrics import BUDGET_NAMES

# Metric -> (suffix -> multiplier). Sizes are SI (KB = 1000 bytes) and binary (KiB = 1024).
_COUNT = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_UNITS: dict[str, dict[str, float]] = {
    "flops": _COUNT,
    "params": _COUNT,
    "size": {
        "b": 1.0,
        "kb": 1e3,
        "mb": 1e6,
        "gb": 1e9,
        "kib": 1024.0,
        "mib": 1024.0**2,
        "gib": 1024.0**3,
    },
    "latency": {"s": 1.0, "ms": 1e-3, "us": 1e-6},
}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z%]*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """One budget: an upper bound on MACs ("flops"), params, bytes ("size") or latency.

    Args:
        metric: ``flops`` (counted as MACs, as in AMC), ``params``, ``size`` (bytes of the
            compressed payload) or ``latency`` (seconds, from the measured lookup table).
        value: The bound: a ratio in (0, 1] of the uncompressed model when ``relative``,
            else an absolute amount (MACs, parameters, bytes or seconds).
        relative: Whether ``value`` is a ratio of the baseline.
    """

    metric: str
    value: float
    relative: bool = True

    def __post_init__(self) -> None:
        if self.metric not in BUDGET_NAMES:
            raise AutoshrinkError(f"unknown budget {self.metric!r}: use one of {BUDGET_NAMES}")
        value = float(self.value)
        if not math.isfinite(value) or value <= 0:
            raise AutoshrinkError(f"{self.metric} budget must be positive, got {self.value!r}")
        if self.relative and value > 1:
            raise AutoshrinkError(
                f"{self.metric} budget ratio must lie in (0, 1], got {value:g}; "
                "give an absolute value with a unit suffix instead"
            )
        object.__setattr__(self, "value", value)

    def limit(self, baseline: float) -> float:
        """The absolute bound, given the uncompressed model's value of the metric."""
        return self.value * baseline if self.relative else self.value

    def __str__(self) -> str:
        if self.relative:
            return f"{self.metric} <= {self.value:.4g} of baseline"
        return f"{self.metric} <= {format_amount(self.metric, self.value)}"


def format_amount(metric: str, value: float) -> str:
    """Human form of an absolute amount: ``1.23M MACs``, ``300KB``, ``4.1ms``."""
    if metric == "latency":
        return f"{value * 1e3:.4g}ms"
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            amount = f"{value / scale:.4g}{suffix}"
            break
    else:
        amount = f"{value:.4g}"
    return {"flops": f"{amount} MACs", "params": f"{amount} params", "size": f"{amount}B"}[metric]


def parse_budget(metric: str, text: str | float | Budget) -> Budget:
    """Parse a budget as given on a command line.

    A bare number up to 1 (or a percentage) is a ratio of the uncompressed model; an
    absolute amount has a unit suffix: ``K M G T`` for flops (MACs) and params; ``B KB MB
    GB KiB MiB GiB`` for size; ``s ms us`` for latency. A bare number above 1 is refused
    (``50`` is 50 MACs or a mistyped 50%): the error asks which was meant.

    Args:
        metric: One of ``flops``, ``params``, ``size``, ``latency``.
        text: ``"0.2"``, ``"20%"``, ``"1.5M"``, ``"300KB"``, ``"4ms"``, a number or a Budget.

    Returns:
        The budget.

    Raises:
        AutoshrinkError: On an unknown metric, an unparsable value, a wrong suffix or a
            bare number above 1.
    """
    if isinstance(text, Budget):
        if text.metric != metric:
            raise AutoshrinkError(f"a {text.metric} budget was given for {metric}")
        return text
    if metric not in BUDGET_NAMES:
        raise AutoshrinkError(f"unknown budget {metric!r}: use one of {BUDGET_NAMES}")
    if isinstance(text, bool):
        raise AutoshrinkError(f"{metric} budget must be a number, got {text!r}")
    if isinstance(text, int | float):
        return _bare(metric, float(text), text)
    match = _NUMBER.match(str(text))
    if match is None:
        raise AutoshrinkError(f"cannot read {metric} budget {text!r}: {_hint(metric)}")
    value, suffix = float(match.group(1)), match.group(2).lower()
    if suffix == "%":
        return Budget(metric, value / 100.0, relative=True)
    if suffix == "":
        return _bare(metric, value, text)
    units = _UNITS[metric]
    if suffix not in units:
        raise AutoshrinkError(
            f"unknown unit {suffix!r} in {metric} budget {text!r}: {_hint(metric)}"
        )
    return Budget(metric, value * units[suffix], relative=False)


def _bare(metric: str, value: float, text: object) -> Budget:
    """A number without a unit is a ratio; above 1 it is refused with the likely meaning."""
    if value <= 1:
        return Budget(metric, value, relative=True)
    scaled = next((f"{value / x:.4g}{s}" for s, x in _SCALES if value >= x), f"{value:g}")
    guess = {"size": f"{scaled}B", "latency": f"{value:g}ms"}.get(metric, scaled)
    raise AutoshrinkError(
        f"{metric} budget {text} is a bare number above 1: did you mean "
        f"{f'{value:g}%' if value <= 100 else guess}? ({_hint(metric)})"
    )


_SCALES = (("G", 1e9), ("M", 1e6), ("K", 1e3))


def _hint(metric: str) -> str:
    example = {"flops": "1.5M", "params": "200K", "size": "300KB", "latency": "4ms"}[metric]
    return f"use a ratio like 0.2, a percentage like 20%, or an absolute value like {example}"
