"""The allocation problem of the ``solver`` agent, and its exact solution by SciPy's HiGHS.

Each unit ``a`` takes one of its options ``o`` (a channel count, bits and sparsity); the
objective is the summed loss ``Σ loss[a][o]``. Costs are a sum of unary and pairwise
terms (:class:`CostModel`): a layer's cost depends on its own unit's option and on the
channels of the unit that feeds it, so the interaction of units ``a`` and ``b`` is
``F[o_a, k_b] + G[k_a, o_b]``, ``k`` a unit's channel-count (keep) index. Each product of
an option indicator and a keep indicator is a continuous variable ``y ∈ [0, 1]`` tied to
its two indicators by their marginals (its row sums are ``x[a, o]``, its column sums
``Σ_{keep(o') = k} x[b, o']``), which makes ``y`` exactly the product whenever the ``x``
are 0/1. So the mixed-integer program is the pairwise cost model itself, not a relaxation:
``scipy.optimize.milp`` (HiGHS, gap 0) returns an optimal allocation of that model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

logger = logging.getLogger(__name__)

#: Seconds HiGHS may spend on one solve (it stops with its best allocation so far).
TIME_LIMIT_S = 60.0


@dataclass(frozen=True)
class PairTerm:
    """The cost interaction of units ``a`` and ``b`` (``a < b``), per metric.

    Args:
        a: The first unit's index.
        b: The second unit's index.
        f: ``(metrics, options of a, keeps of b)``: what depends on a's option and b's keep.
        g: ``(metrics, keeps of a, options of b)``: what depends on a's keep and b's option.
    """

    a: int
    b: int
    f: np.ndarray
    g: np.ndarray


@dataclass(frozen=True)
class CostModel:
    """Every budget metric of an allocation, as ``base + unary + pairwise`` terms.

    Args:
        metrics: The metric names, in the order of the arrays' first axis.
        base: Each metric's value at the reference allocation (``(metrics,)``).
        unary: Per unit, ``(metrics, options)``: the change from the reference when only
            that unit takes the option.
        keep_index: Per unit, each option's keep index (into that unit's channel counts).
        pairs: The interactions of coupled units.
    """

    metrics: tuple[str, ...]
    base: np.ndarray
    unary: list[np.ndarray]
    keep_index: list[np.ndarray]
    pairs: list[PairTerm]

    def cost(self, choice: Sequence[int]) -> dict[str, float]:
        """Every metric of the allocation ``choice`` (one option index per unit)."""
        total = self.base.astype(np.float64).copy()
        for a, o in enumerate(choice):
            total += self.unary[a][:, o]
        for p in self.pairs:
            oa, ob = choice[p.a], choice[p.b]
            total += p.f[:, oa, self.keep_index[p.b][ob]]
            total += p.g[:, self.keep_index[p.a][oa], ob]
        return dict(zip(self.metrics, total.tolist(), strict=True))


class _Program:
    """Column offsets and the sparse rows of the MILP, built once per solve."""

    def __init__(self, model: CostModel) -> None:
        self.model = model
        sizes = [u.shape[1] for u in model.unary]
        self.x0 = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.n_x = int(self.x0[-1])
        self.f0, self.g0, n = [], [], self.n_x
        for p in model.pairs:
            self.f0.append(n)
            n += p.f.shape[1] * p.f.shape[2]
            self.g0.append(n)
            n += p.g.shape[1] * p.g.shape[2]
        self.n = n
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.n_rows = 0

    def add_row(self, cols: Sequence[int], vals: Sequence[float]) -> None:
        self.rows.extend([self.n_rows] * len(cols))
        self.cols.extend(int(c) for c in cols)
        self.vals.extend(float(v) for v in vals)
        self.n_rows += 1

    def keep_cols(self, unit: int, k: int) -> list[int]:
        """The option columns of ``unit`` whose keep index is ``k``."""
        (opts,) = np.nonzero(self.model.keep_index[unit] == k)
        return [int(self.x0[unit] + o) for o in opts]

    def product_rows(
        self, start: int, shape: tuple[int, int], rows: list[list[int]], cols: list[list[int]]
    ) -> None:
        """Tie a block ``y`` (``shape``) to its marginals: ``rows[i]`` and ``cols[j]``."""
        n_r, n_c = shape
        for i in range(n_r):
            ys = [start + i * n_c + j for j in range(n_c)]
            self.add_row([*ys, *rows[i]], [1.0] * n_c + [-1.0] * len(rows[i]))
        for j in range(n_c):
            ys = [start + i * n_c + j for i in range(n_r)]
            self.add_row([*ys, *cols[j]], [1.0] * n_r + [-1.0] * len(cols[j]))

    def equalities(self) -> None:
        """One option per unit; every product block tied to its indicators."""
        m = self.model
        for a in range(len(m.unary)):
            cols = list(range(self.x0[a], self.x0[a + 1]))
            self.add_row(cols, [1.0] * len(cols))
        for p, f0, g0 in zip(m.pairs, self.f0, self.g0, strict=True):
            _, n_oa, n_kb = p.f.shape
            _, n_ka, n_ob = p.g.shape
            xa = [[int(self.x0[p.a] + o)] for o in range(n_oa)]
            xb = [[int(self.x0[p.b] + o)] for o in range(n_ob)]
            kb = [self.keep_cols(p.b, k) for k in range(n_kb)]
            ka = [self.keep_cols(p.a, k) for k in range(n_ka)]
            self.product_rows(f0, (n_oa, n_kb), xa, kb)
            self.product_rows(g0, (n_ka, n_ob), ka, xb)

    def budget_row(self, i: int) -> np.ndarray:
        """Metric ``i``'s coefficients over every column."""
        m, row = self.model, np.zeros(self.n)
        for a, u in enumerate(m.unary):
            row[self.x0[a] : self.x0[a + 1]] = u[i]
        for p, f0, g0 in zip(m.pairs, self.f0, self.g0, strict=True):
            row[f0 : f0 + p.f[i].size] = p.f[i].reshape(-1)
            row[g0 : g0 + p.g[i].size] = p.g[i].reshape(-1)
        return row


def solve_allocation(
    loss: Sequence[np.ndarray], model: CostModel, limits: Mapping[str, float]
) -> list[int] | None:
    """The option per unit that minimises the summed loss under every limit of the model.

    Args:
        loss: Per unit, the loss of each option.
        model: The cost of an allocation.
        limits: The bound of each budget metric (metrics the model lacks are ignored).

    Returns:
        One option index per unit, or None if no allocation meets the limits.
    """
    prog = _Program(model)
    prog.equalities()
    n_eq = prog.n_rows
    eq = coo_array((prog.vals, (prog.rows, prog.cols)), shape=(n_eq, prog.n)).tocsr()
    rhs_eq = np.zeros(n_eq)
    rhs_eq[: len(model.unary)] = 1.0
    constraints = [LinearConstraint(eq, rhs_eq, rhs_eq)]
    budgets = [(i, m) for i, m in enumerate(model.metrics) if m in limits]
    if budgets:
        a_ub = np.stack([prog.budget_row(i) for i, _ in budgets])
        ub = np.array([limits[m] - model.base[i] for i, m in budgets])
        constraints.append(LinearConstraint(a_ub, -np.inf, ub))
    c = np.zeros(prog.n)
    c[: prog.n_x] = np.concatenate([np.asarray(v, np.float64) for v in loss])
    integrality = np.zeros(prog.n)
    integrality[: prog.n_x] = 1
    options = {"disp": False, "mip_rel_gap": 0.0, "time_limit": TIME_LIMIT_S}
    res = milp(
        c, constraints=constraints, integrality=integrality, bounds=Bounds(0, 1), options=options
    )
    if res.x is None:
        logger.info("solver: no allocation meets the budgets (%s)", res.message)
        return None
    x = res.x[: prog.n_x]
    return [int(np.argmax(x[prog.x0[a] : prog.x0[a + 1]])) for a in range(len(model.unary))]
