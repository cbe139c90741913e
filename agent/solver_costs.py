"""The ``solver`` agent's cost model: the exact costs, split into unary and pairwise terms.

Every budget metric is read from the env's exact cost model (``BudgetClamp.measure``) and
written as ``base + Σ_a U_a(o_a) + Σ_{a<b} D_ab(o_a, o_b)`` around a reference allocation
(every unit whole, at its largest bits, unsparsified). A layer's MACs, parameters and bytes
depend on its own unit's channels, bits and sparsity and on the channels of the unit that
feeds it (its input channels: MACs are bilinear in neighbours' keep-ratios), so for a
coupled pair ``D_ab(o_a, o_b) = F(o_a, k_b) + G(k_a, o_b)``, ``k`` a keep index. The
terms are read off finite differences of the exact costs:

- ``H(k_a, k_b) = D((k_a, ref), (k_b, ref))`` (the other settings at the reference),
- ``F(o_a, k_b) = D(o_a, (k_b, ref))``,
- ``G(k_a, o_b) = D((k_a, ref), o_b) - H(k_a, k_b)``,

and ``F + G = D`` exactly whenever each layer involves at most two units and only its own
unit's bits and sparsity. Where that fails (a layer fed by a concatenation of several
units, a latency table whose entries are not pairwise) the model is an approximation:
:func:`model_error` measures it, and the env's clamp still guarantees the realised budgets.
Units are coupled where the interaction at both units' fewest channels is not zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from autoshrink.agent.solver_milp import CostModel, PairTerm

#: One unit's setting: channels, bits, sparsity.
Option = tuple[int, int, float]
Measure = Callable[[list[int], list[int], list[float]], dict[str, float]]


class _Costs:
    """The exact metrics of the reference with a few units changed, memoised."""

    def __init__(self, measure: Measure, ref: Sequence[Option], metrics: tuple[str, ...]):
        self.measure, self.ref, self.metrics = measure, list(ref), metrics
        self.memo: dict[tuple[tuple[int, Option], ...], np.ndarray] = {}
        self.base = self.at({})

    def at(self, changed: dict[int, Option]) -> np.ndarray:
        key = tuple(sorted(changed.items()))
        if key not in self.memo:
            opts = [changed.get(i, o) for i, o in enumerate(self.ref)]
            values = self.measure([o[0] for o in opts], [o[1] for o in opts], [o[2] for o in opts])
            self.memo[key] = np.array([values[m] for m in self.metrics], np.float64)
        return self.memo[key]

    def mixed(self, a: int, x: Option, b: int, y: Option) -> np.ndarray:
        """The interaction of ``a`` at ``x`` and ``b`` at ``y``."""
        return self.at({a: x, b: y}) - self.at({a: x}) - self.at({b: y}) + self.base


def build_cost_model(
    measure: Measure,
    keeps: Sequence[Sequence[int]],
    options: Sequence[Sequence[Option]],
    ref: Sequence[Option],
    metrics: Sequence[str],
) -> CostModel:
    """The pairwise cost model of ``options`` around ``ref``.

    Args:
        measure: Every metric of a whole allocation (channels, bits, sparsity per unit).
        keeps: Per unit, its channel counts; every option's count is one of them.
        options: Per unit, its options.
        ref: The reference option of every unit.
        metrics: The metrics to model.
    """
    costs = _Costs(measure, ref, tuple(metrics))
    unary = [
        np.stack([costs.at({a: o}) - costs.base for o in opts], axis=1)
        for a, opts in enumerate(options)
    ]
    keep_index = [
        np.array([list(ks).index(o[0]) for o in opts], np.int64)
        for ks, opts in zip(keeps, options, strict=True)
    ]

    def at_keep(a: int, k: int) -> Option:
        return (keeps[a][k], ref[a][1], ref[a][2])

    scale = np.maximum(np.abs(costs.base), 1.0)
    pairs = []
    n = len(options)
    for a in range(n):
        for b in range(a + 1, n):
            if len(keeps[a]) < 2 or len(keeps[b]) < 2:
                continue
            low = costs.mixed(
                a, at_keep(a, int(np.argmin(keeps[a]))), b, at_keep(b, int(np.argmin(keeps[b])))
            )
            if np.all(np.abs(low) <= 1e-9 * scale):
                continue
            pairs.append(_pair(costs, a, b, keeps, options, keep_index, at_keep))
    return CostModel(tuple(metrics), costs.base, unary, keep_index, pairs)


def _pair(
    costs: _Costs,
    a: int,
    b: int,
    keeps: Sequence[Sequence[int]],
    options: Sequence[Sequence[Option]],
    keep_index: list[np.ndarray],
    at_keep: Callable[[int, int], Option],
) -> PairTerm:
    """The ``F`` and ``G`` terms of the coupled units ``a`` and ``b``."""
    n_ka, n_kb = len(keeps[a]), len(keeps[b])
    h = np.stack(
        [
            np.stack([costs.mixed(a, at_keep(a, i), b, at_keep(b, j)) for j in range(n_kb)], 1)
            for i in range(n_ka)
        ],
        axis=1,
    )  # (metrics, n_ka, n_kb)
    f = np.stack(
        [
            np.stack([costs.mixed(a, o, b, at_keep(b, j)) for j in range(n_kb)], 1)
            for o in options[a]
        ],
        axis=1,
    )  # (metrics, options of a, n_kb)
    g = np.stack(
        [
            np.stack(
                [
                    costs.mixed(a, at_keep(a, i), b, o) - h[:, i, keep_index[b][q]]
                    for q, o in enumerate(options[b])
                ],
                1,
            )
            for i in range(n_ka)
        ],
        axis=1,
    )  # (metrics, n_ka, options of b)
    return PairTerm(a, b, f, g)


def model_error(
    model: CostModel,
    measure: Callable[[Sequence[int]], dict[str, float]],
    choices: Sequence[Sequence[int]],
) -> float:
    """The largest relative error of ``model`` against the exact ``measure`` on ``choices``."""
    worst = 0.0
    for choice in choices:
        exact, modelled = measure(choice), model.cost(choice)
        for m in model.metrics:
            worst = max(worst, abs(modelled[m] - exact[m]) / max(abs(exact[m]), 1.0))
    return worst
