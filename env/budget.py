"""The budget guarantee: a feasibility clamp on realised (rounded) channels and bits.

This is AMC's action wall, generalised to several budgets, to bits and to rounding. Units
are decided in order. Before unit ``t`` is decided, assume every later unit goes to its
minimum (``min_keep`` rounded by the unit's own rule, the smallest bit-width). The agent's
proposal for unit ``t`` is taken if the whole policy (decided prefix, this unit, minimal
suffix) meets every budget. Otherwise the clamp keeps the proposed bits and takes the
largest channel count that fits (binary search over the unit's realisable counts: cost is
monotone in channels); if even the fewest channels do not fit, it lowers the bits, trying
the largest feasible channel count at each lower bit-width in turn.

Invariant: *decided prefix + minimal suffix is feasible*. It holds before the first unit
because construction refuses a budget tighter than the all-minimum policy
(:class:`~autoshrink.compression.errors.BudgetInfeasibleError`, stating the smallest
reachable value), and each clamped decision keeps it, since the unit's own minimum is
always among the candidates. So *any* action sequence ends with a feasible policy. Costs
are computed with the exact cost model on realised channel counts, so the guarantee holds
on the model actually pruned, not on a ratio before rounding. Latency is the one estimate:
it is guaranteed on the measured lookup table's prediction (see
:mod:`autoshrink.env.latency`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from autoshrink.compression.cost import cost_from_channels
from autoshrink.compression.errors import BudgetInfeasibleError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.env.config import format_amount

if TYPE_CHECKING:
    from autoshrink.compression.units import UnitGraph

#: Bisection steps of :meth:`BudgetClamp.fill` and :meth:`BudgetClamp.fair_keep`.
_FILL_STEPS = 24

LatencyEstimate = Callable[[Mapping[str, int]], float]


def realisable_channels(unit: object, min_keep: float) -> list[int]:
    """Sorted distinct channel counts ``unit.kept(k)`` can produce for ``k`` in [min_keep, 1]."""
    c_out: int = unit.c_out  # type: ignore[attr-defined]
    kept: Callable[[float], int] = unit.kept  # type: ignore[attr-defined]
    low = kept(min_keep)
    counts = {kept(c / c_out) for c in range(1, c_out + 1)} | {low, kept(1.0)}
    return sorted(c for c in counts if c >= low)


def keep_for(unit: object, channels: int) -> float:
    """A keep-ratio that realises exactly ``channels`` through ``unit.kept``.

    Raises:
        ValueError: If no ratio realises that count (it is not one the unit can produce).
    """
    c_out: int = unit.c_out  # type: ignore[attr-defined]
    kept: Callable[[float], int] = unit.kept  # type: ignore[attr-defined]
    base = channels / c_out
    # Float division can land a hair below the rounding edge: nudge within one ulp-ish.
    for keep in (base, base + 1e-9, base - 1e-9, base + 0.5 / c_out, base - 0.5 / c_out):
        keep = min(max(keep, 1e-9), 1.0)
        if kept(keep) == channels:
            return keep
    raise ValueError(f"no keep-ratio realises {channels} of {c_out} channels")


def largest_feasible(ok: Callable[[float], bool], lo: float, hi: float, steps: int) -> float | None:
    """Largest x in [lo, hi] with ``ok(x)``, for ``ok`` monotone (true, then false).

    Bisection with ``steps`` halvings; None if not even ``ok(lo)`` holds.
    """
    if ok(hi):
        return hi
    if not ok(lo):
        return None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


class BudgetClamp:
    """Exact costs and the feasibility clamp over one unit graph.

    Args:
        graph: The model's units (and layers) in decision order.
        limits: Absolute bound per budget metric (``flops`` in MACs, ``params``, ``size`` in
            bytes, ``latency`` in seconds).
        baseline: The uncompressed model's value of each metric, for messages and ratios.
        min_keep: Smallest keep-ratio an action may choose (1.0 when channels are fixed).
        bit_choices: Bits a unit may take; ``(32,)`` when bits are not searched.
        pinned: Per-layer bit overrides that no action changes (the pinned layers; they
            stay dense).
        latency: Latency estimate from realised channels, required for a latency budget.
        sparsity_choices: Fine-grained sparsities a unit may take, ascending; ``(0.0,)``
            when sparsity is not searched. Bytes never grow with sparsity (the storage rule
            keeps the smaller of dense and sparse), so the minimal suffix takes the largest.

    Raises:
        BudgetInfeasibleError: If some budget is tighter than the all-minimum policy.
    """

    def __init__(
        self,
        graph: UnitGraph,
        limits: Mapping[str, float],
        baseline: Mapping[str, float],
        min_keep: float = 0.2,
        bit_choices: Sequence[int] = (FLOAT_BITS,),
        pinned: Mapping[str, int] | None = None,
        latency: LatencyEstimate | None = None,
        sparsity_choices: Sequence[float] = (0.0,),
    ) -> None:
        if "latency" in limits and latency is None:
            raise ValueError("a latency budget needs a latency estimate")
        self.graph = graph
        self.units = list(graph.units)
        self.names = [u.name for u in self.units]
        self.limits = dict(limits)
        self.baseline = dict(baseline)
        self.bit_choices = tuple(sorted(bit_choices))
        self.pinned = dict(pinned or {})
        self.latency = latency
        self.min_keep = float(min_keep)
        self.choices = [realisable_channels(u, min_keep) for u in self.units]
        self.min_channels = [c[0] for c in self.choices]
        self.max_channels = [u.c_out for u in self.units]
        self.min_bits = [self.bit_choices[0]] * len(self.units)
        self.max_bits = [self.bit_choices[-1]] * len(self.units)
        self.sparsity_choices = tuple(sorted(sparsity_choices))
        self.min_sparsity = [self.sparsity_choices[0]] * len(self.units)
        self.max_sparsity = [self.sparsity_choices[-1]] * len(self.units)
        self._unit_layers = [
            [name for name in u.layers if name not in self.pinned] for u in self.units
        ]
        self._base_bits = {layer.name: FLOAT_BITS for layer in graph.layers}
        self._base_bits.update({k: v for k, v in self.pinned.items() if k in self._base_bits})
        self.minimum = self.measure(self.min_channels, self.min_bits, self.max_sparsity)
        self._check_reachable()

    # --- costs -------------------------------------------------------------------------
    def bits_by_layer(self, bits: Sequence[int]) -> dict[str, int]:
        """Weight bits per layer when unit ``i`` takes ``bits[i]`` (pins win)."""
        out = dict(self._base_bits)
        for layers, b in zip(self._unit_layers, bits, strict=True):
            for name in layers:
                out[name] = b
        return out

    def sparsity_by_layer(self, sparsity: Sequence[float] | None) -> dict[str, float]:
        """Sparsity per layer when unit ``i`` takes ``sparsity[i]`` (pinned layers: none)."""
        out: dict[str, float] = {}
        for layers, s in zip(self._unit_layers, sparsity or (), strict=False):
            if s > 0:
                out.update(dict.fromkeys(layers, float(s)))
        return out

    def measure(
        self, channels: Sequence[int], bits: Sequence[int], sparsity: Sequence[float] | None = None
    ) -> dict[str, float]:
        """Every metric (``flops``, ``params``, ``size`` and, with a table, ``latency``).

        ``size`` is the stored bytes before entropy coding: with ``sparsity`` (per unit),
        the exact bound an entropy-coded artifact never exceeds.
        """
        kept = dict(zip(self.names, channels, strict=True))
        layer_s = self.sparsity_by_layer(sparsity)
        cost = cost_from_channels(self.graph, kept, self.bits_by_layer(bits), layer_s)
        out = {"flops": float(cost.macs), "params": float(cost.params), "size": float(cost.bytes)}
        if self.latency is not None:
            out["latency"] = float(self.latency(kept))
        return out

    def feasible(
        self, channels: Sequence[int], bits: Sequence[int], sparsity: Sequence[float] | None = None
    ) -> bool:
        """Whether the full policy meets every budget."""
        if not self.limits:
            return True
        values = self.measure(channels, bits, sparsity)
        return all(values[m] <= limit for m, limit in self.limits.items())

    def overruns(self, values: Mapping[str, float]) -> dict[str, float]:
        """Relative overrun ``max(0, value / limit - 1)`` per budget."""
        return {m: max(0.0, values[m] / lim - 1.0) for m, lim in self.limits.items()}

    def span(
        self,
        t: int,
        channels: Sequence[int],
        bits: Sequence[int],
        sparsity: Sequence[float] | None = None,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Metrics with units ``t..`` all minimal, and all maximal; units before ``t`` as given."""
        s = list(sparsity or self.min_sparsity)[:t]
        low = self.measure(
            [*channels[:t], *self.min_channels[t:]],
            [*bits[:t], *self.min_bits[t:]],
            [*s, *self.max_sparsity[t:]],
        )
        high = self.measure(
            [*channels[:t], *self.max_channels[t:]],
            [*bits[:t], *self.max_bits[t:]],
            [*s, *self.min_sparsity[t:]],
        )
        return low, high

    # --- the clamp ---------------------------------------------------------------------
    def clamp(
        self, t: int, channels: Sequence[int], bits: Sequence[int], proposal: tuple[int, int]
    ) -> tuple[int, int]:
        """The realised ``(channels, bits)`` of unit ``t`` given the decided prefix.

        Args:
            t: Index of the unit being decided.
            channels: Realised channel counts; only entries before ``t`` are read.
            bits: Realised bits; only entries before ``t`` are read.
            proposal: The decoded action: a channel count the unit can realise, and bits.

        Returns:
            The proposal if the policy can still meet every budget, else the largest
            feasible channel count at the proposed bits, else at the highest lower bits.
        """
        want_c, want_b = proposal
        prefix_c, prefix_b = list(channels[:t]), list(bits[:t])
        suffix_c, suffix_b = self.min_channels[t + 1 :], self.min_bits[t + 1 :]

        def ok(c: int, b: int) -> bool:
            return self.feasible([*prefix_c, c, *suffix_c], [*prefix_b, b, *suffix_b])

        if ok(want_c, want_b):
            return want_c, want_b
        cands = self.choices[t]
        top = bisect.bisect_right(cands, want_c)  # candidates <= the proposal
        for b in [want_b, *(x for x in reversed(self.bit_choices) if x < want_b)]:
            i = last_ok(lambda i: ok(cands[i], b), 0, top - 1)  # noqa: B023
            if i is not None:
                return cands[i], b
        raise RuntimeError(f"budget clamp invariant broken at unit {self.names[t]}")

    def clamp_sparse(
        self,
        t: int,
        state: tuple[Sequence[int], Sequence[int], Sequence[float]],
        proposal: tuple[int, int, float],
    ) -> tuple[int, int, float]:
        """The realised ``(channels, bits, sparsity)`` of unit ``t`` given the decided prefix.

        As :meth:`clamp`, with sparsity as a third decision, conceded first: at the
        proposed channels and bits the smallest sparsity (at least the proposed one) that
        fits; else at the largest sparsity the largest channel count that fits; else the
        same at each lower bit-width in turn. ``state`` holds the realised channels, bits
        and sparsity per unit (entries before ``t`` are read). Bytes never grow with
        sparsity, so each step is a bisection, and the unit's minimum is a candidate.
        """
        channels, bits, sparsity = state
        pre = (list(channels[:t]), list(bits[:t]), list(sparsity[:t]))
        post = (self.min_channels[t + 1 :], self.min_bits[t + 1 :], self.max_sparsity[t + 1 :])

        def ok(c: int, b: int, s: float) -> bool:
            return self.feasible(
                [*pre[0], c, *post[0]], [*pre[1], b, *post[1]], [*pre[2], s, *post[2]]
            )

        want_c, want_b, want_s = proposal
        if ok(want_c, want_b, want_s):
            return proposal
        grid, cands = self.sparsity_choices, self.choices[t]
        first = bisect.bisect_left(grid, want_s - 1e-12)
        top = bisect.bisect_right(cands, want_c)
        for b in [want_b, *(x for x in reversed(self.bit_choices) if x < want_b)]:
            j = first_ok(lambda j: ok(want_c, b, grid[j]), first, len(grid) - 1)  # noqa: B023
            if j is not None:
                return want_c, b, grid[j]
            i = last_ok(lambda i: ok(cands[i], b, grid[-1]), 0, top - 1)  # noqa: B023
            if i is not None:
                return cands[i], b, grid[-1]
        raise RuntimeError(f"budget clamp invariant broken at unit {self.names[t]}")

    def fair_keep(
        self,
        t: int,
        channels: Sequence[int],
        bits: Sequence[int],
        unit_bits: int,
        sparsity: Sequence[float] | None = None,
        unit_sparsity: float = 0.0,
    ) -> float:
        """The largest keep-ratio that units ``t..`` could all take at once.

        Units before ``t`` stay as decided; unit ``t`` and every later unit take
        ``kept(k)`` channels, ``unit_bits`` bits and ``unit_sparsity``. The largest ``k``
        in ``[min_keep, 1]`` whose policy meets every budget is this unit's fair share of
        what is left: the centre of the keep action in ``keep_action="budget"`` mode.
        Found by bisection on the exact cost model (cost grows with ``k``).

        Returns:
            That ratio; 1 without budgets, ``min_keep`` if not even that fits.
        """
        if not self.limits:
            return 1.0
        prefix_c, prefix_b = list(channels[:t]), list(bits[:t])
        suffix_b = [unit_bits] * (len(self.units) - t)
        spars = [*list(sparsity or self.min_sparsity)[:t], *[unit_sparsity] * len(suffix_b)]
        rest = self.units[t:]

        def ok(k: float) -> bool:
            chans = [*prefix_c, *(u.kept(k) for u in rest)]
            return self.feasible(chans, [*prefix_b, *suffix_b], spars)

        found = largest_feasible(ok, self.min_keep, 1.0, _FILL_STEPS)
        return self.min_keep if found is None else found

    def fill(
        self, channels: Sequence[int], bits: Sequence[int], sparsity: Sequence[float] | None = None
    ) -> list[int]:
        """Grow every unit's channels by one common factor, as far as the budgets allow.

        The clamp only caps: a policy whose units chose fewer channels than they could ends
        under its budgets, spending accuracy it was allowed to keep. ``fill`` multiplies
        every unit's channel count by the largest factor ``s >= 1`` for which the policy
        (each count rounded up to one the unit can realise, at most its width) still meets
        every budget. Costs grow with channels, so ``s`` is found by bisection on the
        exact cost model; the result stays feasible, and the proportions between units,
        which are what the agent chose, are kept.

        Args:
            channels: A feasible policy's realised channel counts.
            bits: Its bits per unit (unchanged).
            sparsity: Its sparsity per unit (unchanged; None = none).

        Returns:
            The grown channel counts (``channels`` itself when nothing can grow, or when
            there are no budgets to fill).
        """
        base = list(channels)
        if not self.limits:
            return base

        def grown(s: float) -> list[int]:
            return [
                self._at_least(i, min(self.max_channels[i], math.ceil(s * c - 1e-9)))
                for i, c in enumerate(base)
            ]

        top = max(m / max(c, 1) for m, c in zip(self.max_channels, base, strict=True))
        if self.feasible(grown(top), bits, sparsity):
            return grown(top)
        lo, hi = 1.0, top
        for _ in range(_FILL_STEPS):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if self.feasible(grown(mid), bits, sparsity) else (lo, mid)
        out = grown(lo)
        return out if self.feasible(out, bits, sparsity) else base

    def _at_least(self, i: int, count: int) -> int:
        """The fewest channels unit ``i`` can realise that are at least ``count``."""
        cands = self.choices[i]
        j = bisect.bisect_left(cands, count)
        return cands[min(j, len(cands) - 1)]

    def _check_reachable(self) -> None:
        low_bits, top_s = self.bit_choices[0], self.sparsity_choices[-1]
        bits = f" and {low_bits} bits" if low_bits < FLOAT_BITS else ""
        bits += f", {top_s:.0%} of the weights zeroed" if top_s > 0 else ""
        for metric, limit in self.limits.items():
            smallest = self.minimum[metric]
            if smallest > limit:
                base = self.baseline.get(metric)
                ratio = f" ({smallest / base:.2%} of the original)" if base else ""
                asked = f" ({limit / base:.2%})" if base else ""
                raise BudgetInfeasibleError(
                    f"{metric} budget {format_amount(metric, limit)}{asked} cannot be met: "
                    f"the smallest reachable is {format_amount(metric, smallest)}{ratio}, "
                    f"with every unit at its fewest channels{bits}"
                )


def first_ok(ok: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """Smallest i in [lo, hi] with ``ok(i)``, for ``ok`` monotone (false, then true)."""
    if lo > hi or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def last_ok(ok: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """Largest i in [lo, hi] with ``ok(i)``, for ``ok`` monotone (true, then false)."""
    if lo > hi or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo
