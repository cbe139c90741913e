"""What the agent sees (the per-unit observation) and says (the decoded action).

The observation is documented, feature by feature, in one place: the table in
:class:`~autoshrink.env.compression_env.CompressionEnv`'s docstring. :data:`FEATURES` lists
the names in order; features 0-9 are static (min-max normalised across the model's units,
0 where all units agree), 10-16 change during the episode. Every value lies in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

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
FLOAT_BITS = 32


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


def decode_action(
    action: Sequence[float] | np.ndarray,
    mode: str,
    min_keep: float,
    bit_choices: Sequence[int],
) -> tuple[float, int]:
    """Map a Box(0, 1) action to ``(keep, bits)``: the one place actions are interpreted.

    The keep-ratio is ``min_keep + a * (1 - min_keep)``. Bits use HAQ's equal-width bins:
    [0, 1] is cut into ``len(bit_choices)`` equal bins, bin ``i`` choosing the ``i``-th
    smallest bit-width. In ``prune`` mode bits are float (32); in ``quant`` mode keep is 1.
    In ``joint`` mode the action is ``(keep, bits)``.

    Args:
        action: The action vector (values are clipped to [0, 1]).
        mode: ``prune``, ``quant`` or ``joint``.
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
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    want = 2 if mode == "joint" else 1
    if a.size != want or not np.all(np.isfinite(a)):
        raise ValueError(f"{mode} mode needs {want} finite action value(s), got {action!r}")
    a = np.clip(a, 0.0, 1.0)
    keep, bits = 1.0, FLOAT_BITS
    if mode in ("prune", "joint"):
        keep = float(min_keep + a[0] * (1.0 - min_keep))
    if mode in ("quant", "joint"):
        n = len(bit_choices)
        bits = int(bit_choices[min(int(a[-1] * n), n - 1)])
    return keep, bits


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
