"""What the agent sees (the per-unit observation) and says (the decoded action).

The observation is documented, feature by feature, in one place: the table in
:class:`~autoshrink.env.compression_env.CompressionEnv`'s docstring. :data:`FEATURES` lists
the names in order; features 0-9 are static (min-max normalised across the model's units,
0 where all units agree), 10-16 change during the episode. Every value lies in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from autoshrink.compression.metrics import FLOAT_BITS

if TYPE_CHECKING:
    from autoshrink.compression.units import UnitGraph

FEATURES: tuple[str, ...] = (
    "index",
    "kind",
    "depthwise",
    "c_in",
    "c_out",
    "kernel",
    "stride",
    "fmap",
    "params",
    "macs",
    "macs_done",
    "macs_rest",
    "bytes_done",
    "bytes_rest",
    "budget_slack",
    "prev_keep",
    "prev_bits",
)
N_STATIC = 10


def _scalar(value: object) -> float:
    """A feature value as a float; for a tuple such as a (3, 3) kernel, its first entry."""
    if isinstance(value, tuple | list):
        return float(value[0]) if value else 0.0
    return float(value)  # type: ignore[arg-type]


def static_features(graph: UnitGraph) -> np.ndarray:
    """The ``(n_units, 10)`` matrix of static features, min-max normalised per column."""
    rows = []
    for i, u in enumerate(graph.units):
        rows.append(
            [
                float(i),
                0.0 if u.kind != "linear" else 1.0,
                1.0 if u.depthwise else 0.0,
                _scalar(u.c_in),
                _scalar(u.c_out),
                _scalar(u.kernel),
                _scalar(u.stride),
                _scalar(u.fmap),
                _scalar(u.params),
                _scalar(u.macs),
            ]
        )
    raw = np.asarray(rows, dtype=np.float64).reshape(-1, N_STATIC)
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((raw - lo) / span).astype(np.float32)


#: What each action entry decides, by mode.
MODE_DIMS: dict[str, tuple[str, ...]] = {
    "prune": ("keep",),
    "quant": ("bits",),
    "joint": ("keep", "bits"),
    "deep": ("keep", "sparsity", "bits"),
    "sparse": ("sparsity", "bits"),
}


def decode_action(
    action: Sequence[float] | np.ndarray,
    mode: str,
    min_keep: float,
    bit_choices: Sequence[int],
) -> tuple[float, int]:
    """Map a Box(0, 1) action to ``(keep, bits)``: the one place actions are interpreted.

    The keep-ratio is ``min_keep + a * (1 - min_keep)``. Bits use HAQ's equal-width bins:
    [0, 1] is cut into ``len(bit_choices)`` equal bins, bin ``i`` choosing the ``i``-th
    smallest bit-width. Entries follow :data:`MODE_DIMS`: in ``prune`` mode bits are float
    (32); where keep is not searched it is 1. The sparsity entry of ``deep`` and ``sparse``
    mode is read by :func:`decode_sparsity`.

    Args:
        action: The action vector (values are clipped to [0, 1]).
        mode: A key of :data:`MODE_DIMS`.
        min_keep: Smallest keep-ratio.
        bit_choices: Allowed bit-widths, ascending.

    Returns:
        The proposed keep-ratio and bits, before rounding and clamping.

    Raises:
        ValueError: On a non-finite action or a wrong length.

    >>> decode_action([0.0, 1.0], "joint", 0.2, (2, 4, 8))
    (0.2, 8)
    >>> decode_action([0.5], "quant", 0.2, (2, 3, 4, 5, 6, 7, 8))
    (1.0, 5)
    """
    dims = MODE_DIMS[mode]
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.size != len(dims) or not np.all(np.isfinite(a)):
        raise ValueError(f"{mode} mode needs {len(dims)} finite action value(s), got {action!r}")
    a = np.clip(a, 0.0, 1.0)
    keep, bits = 1.0, FLOAT_BITS
    if "keep" in dims:
        keep = float(min_keep + a[0] * (1.0 - min_keep))
    if "bits" in dims:
        bits = _binned(float(a[-1]), bit_choices)
    return keep, bits


def _binned(a: float, choices: Sequence[Any]) -> Any:
    n = len(choices)
    return choices[min(int(a * n), n - 1)]


def decode_sparsity(
    action: Sequence[float] | np.ndarray, mode: str, choices: Sequence[float]
) -> float:
    """The proposed sparsity of an action: equal-width bins over ``choices``, as bits.

    0 where the mode searches no sparsity.

    >>> decode_sparsity([0.5, 0.99, 0.0], "deep", (0.0, 0.5, 0.9))
    0.9
    """
    dims = MODE_DIMS[mode]
    if "sparsity" not in dims:
        return 0.0
    a = float(
        np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[dims.index("sparsity")], 0, 1)
    )
    return float(_binned(a, choices))


def bin_action(value: Any, choices: Sequence[Any]) -> float:
    """The action at the centre of the bin of the largest choice not above ``value``."""
    index = max([i for i, c in enumerate(choices) if c <= value + 1e-12], default=0)
    return (index + 0.5) / len(choices)


#: Knots of the budget-centred keep map, in action units: the floor ends, the centre, the
#: end of the symmetric core. The core [0.1, 0.9] is linear and symmetric about the fair
#: share, so noise around an action spends as much budget upwards as it saves downwards.
_FLOOR, _CENTRE, _CORE_END = 0.1, 0.5, 0.9


def budget_keep(a: float, fair: float, min_keep: float) -> float:
    """The keep-ratio of keep action ``a`` when actions are centred on the fair share.

    ``fair`` is the largest keep-ratio that every undecided unit could take at once within
    the budgets. The map is piecewise-linear and non-decreasing: ``a = 0.5`` keeps
    ``fair``; the core ``[0.1, 0.9]`` runs linearly from ``min_keep`` to ``2 * fair -
    min_keep`` (at most 1), symmetric about ``fair``; below 0.1 it stays at ``min_keep``
    and above 0.9 it rises linearly to 1. So every ratio in ``[min_keep, 1]`` is
    reachable, a centred action means "my share of what is left", and symmetric noise
    around an action neither overspends nor underspends the budget on average, whatever
    the budget and whatever earlier units took.

    >>> budget_keep(0.5, 0.3, 0.2), budget_keep(0.05, 0.3, 0.2), budget_keep(1.0, 0.3, 0.2)
    (0.3, 0.2, 1.0)
    >>> round(budget_keep(0.7, 0.3, 0.2), 6), round(budget_keep(0.3, 0.3, 0.2), 6)
    (0.35, 0.25)
    """
    a = min(max(float(a), 0.0), 1.0)
    knots, keeps = _knots(fair, min_keep)
    return float(np.interp(a, knots, keeps))


def budget_action(keep: float, fair: float, min_keep: float) -> float:
    """The inverse of :func:`budget_keep`: an action in [0, 1] that proposes ``keep``.

    Ratios at or below ``min_keep`` map to 0.1, the start of the core. Where pieces of the
    map are flat (``fair`` at ``min_keep`` or at 1), the action at the piece's centre end
    is returned.

    >>> budget_action(0.3, 0.3, 0.2), round(budget_action(0.35, 0.3, 0.2), 6)
    (0.5, 0.7)
    """
    knots, keeps = _knots(fair, min_keep)
    keep = min(max(float(keep), keeps[1]), 1.0)
    for i in range(1, len(knots) - 1):
        lo, hi = keeps[i], keeps[i + 1]
        if keep <= hi:
            if hi <= lo:
                return knots[i + 1] if knots[i + 1] <= _CENTRE else knots[i]
            return knots[i] + (keep - lo) / (hi - lo) * (knots[i + 1] - knots[i])
    return 1.0


def _knots(fair: float, min_keep: float) -> tuple[list[float], list[float]]:
    fair = min(max(fair, min_keep), 1.0)
    top = min(2.0 * fair - min_keep, 1.0)
    return [0.0, _FLOOR, _CENTRE, _CORE_END, 1.0], [min_keep, min_keep, fair, top, 1.0]


def bits_action(bits: int, bit_choices: Sequence[int]) -> float:
    """The bits action that :func:`decode_action` reads as ``bits``: the centre of its bin.

    Bits between the choices go to the largest choice not above them (float to the largest
    choice, anything below the smallest to the smallest).

    >>> bits_action(4, (2, 4, 8)), bits_action(32, (2, 4, 8))
    (0.5, 0.8333333333333334)
    """
    return bin_action(bits, sorted(bit_choices))


class Observer:
    """Builds observations for one graph: static rows once, dynamic features per step.

    Args:
        graph: The model's units.
        baseline: Original ``flops`` (MACs) and ``size`` (bytes).
        limits: Absolute bound per budget metric.
        bit_choices: Allowed bits, for normalising ``prev_bits``.
    """

    def __init__(
        self,
        graph: UnitGraph,
        baseline: Mapping[str, float],
        limits: Mapping[str, float],
        bit_choices: Sequence[int],
    ) -> None:
        self.static = static_features(graph)
        self.n = len(graph.units)
        macs = np.array([float(u.macs) for u in graph.units])
        fbytes = np.array([4.0 * float(u.params) for u in graph.units])
        # rest[t]: what units t.. own, as a fraction of the original model.
        self.macs_rest = np.append(np.cumsum(macs[::-1])[::-1], 0.0) / max(baseline["flops"], 1)
        self.bytes_rest = np.append(np.cumsum(fbytes[::-1])[::-1], 0.0) / max(baseline["size"], 1)
        self.baseline = dict(baseline)
        self.limits = dict(limits)
        self.b_min, self.b_max = min(bit_choices), max(bit_choices)

    @property
    def size(self) -> int:
        """Length of the observation vector."""
        return len(FEATURES)

    def observe(
        self,
        t: int,
        low: Mapping[str, float],
        high: Mapping[str, float],
        prev_keep: float,
        prev_bits: int,
    ) -> np.ndarray:
        """The observation before unit ``t`` (``t == n`` after the last: static row of the last).

        Args:
            t: Index of the next unit to decide.
            low: Metrics with the rest at its minimum (see ``BudgetClamp.span``).
            high: Metrics with the rest at its maximum (the ``*_done`` features).
            prev_keep: Realised keep-ratio of unit ``t - 1``.
            prev_bits: Realised bits of unit ``t - 1``.
        """
        slack = 1.0
        for metric, limit in self.limits.items():
            width = high[metric] - low[metric]
            s = 1.0 if width <= 0 else (limit - low[metric]) / width
            slack = min(slack, s)
        if prev_bits >= FLOAT_BITS or self.b_max == self.b_min:
            bits_feature = 1.0
        else:
            bits_feature = (prev_bits - self.b_min) / (self.b_max - self.b_min)
        dynamic = [
            high["flops"] / max(self.baseline["flops"], 1),
            self.macs_rest[t],
            high["size"] / max(self.baseline["size"], 1),
            self.bytes_rest[t],
            slack,
            prev_keep,
            bits_feature,
        ]
        row = self.static[min(t, self.n - 1)]
        obs = np.concatenate([row, np.asarray(dynamic, dtype=np.float32)])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)
