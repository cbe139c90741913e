"""What the ``solver`` agent solves each episode from: options, losses and the cost model.

A unit's options are every combination of its grid's channel counts, bit-widths and
sparsities (:mod:`~autoshrink.agent.sensitivity_score`); an option's loss is the sum of
the table's three losses, plus :data:`TIE_BREAK` per grid step from the whole setting, so
that among settings the table cannot tell apart the solve keeps the larger one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoshrink.agent.scripted_view import EnvView
from autoshrink.agent.sensitivity import SensitivityTable, UnitGrid
from autoshrink.agent.sensitivity_score import unit_losses
from autoshrink.agent.solver_costs import Option, build_cost_model, model_error
from autoshrink.agent.solver_milp import solve_allocation
from autoshrink.compression.errors import CheckpointError

logger = logging.getLogger(__name__)

#: Loss added per grid step away from the whole setting (far below one val sample).
TIE_BREAK = 1e-6
#: Re-solves with tightened limits where the cost model is not exact.
TIGHTEN = 4


class SolverPlan:
    """The options, their losses and the pairwise cost model of one env.

    Args:
        view: The env.
        grids: Every unit's grid.
        table: The sensitivity table over those grids.
    """

    def __init__(self, view: EnvView, grids: list[UnitGrid], table: SensitivityTable) -> None:
        self.view, self.clamp = view, view.clamp
        self.options: list[list[Option]] = []
        self.loss: list[np.ndarray] = []
        self.tie: list[np.ndarray] = []
        for i, g in enumerate(grids):
            lo = unit_losses(table, g, i)
            opts, loss, tie = [], [], []
            for ci, c in enumerate(g.channels):
                for bi, b in enumerate(g.bits):
                    for si, s in enumerate(g.sparsity):
                        opts.append((c, b, s))
                        total = lo["channels"][ci] + lo["bits"][bi] + lo["sparsity"][si]
                        loss.append(total)
                        tie.append(TIE_BREAK * (ci + bi + si))
            self.options.append(opts)
            self.loss.append(np.array(loss))
            self.tie.append(np.array(tie))
        ref = [(g.channels[0], g.bits[0], 0.0) for g in grids]
        keeps = [g.channels for g in grids]
        self.model = build_cost_model(
            self.clamp.measure, keeps, self.options, ref, tuple(self.clamp.limits)
        )
        rng = np.random.default_rng(0)
        samples = [[int(rng.integers(len(o))) for o in self.options] for _ in range(8)]
        error = model_error(self.model, self.measure, samples)
        logger.info(
            "solver: %d options a unit at most, %d coupled pairs, cost model error %.2g",
            max(map(len, self.options)),
            len(self.model.pairs),
            error,
        )

    def settings(self, choice: Sequence[int]) -> list[Option]:
        """The (channels, bits, sparsity) of every unit under ``choice``."""
        return [self.options[a][o] for a, o in enumerate(choice)]

    def measure(self, choice: Sequence[int]) -> dict[str, float]:
        """The exact metrics of ``choice``."""
        s = self.settings(choice)
        return self.clamp.measure([o[0] for o in s], [o[1] for o in s], [o[2] for o in s])

    def solve(self, coeffs: Sequence[float]) -> list[int]:
        """The allocation of least ``Σ coeffs[a] * loss[a]`` meeting every budget.

        Limits a solution overruns (the cost model being approximate) are tightened by
        the overrun and the problem solved again; if none is found, every unit at its
        smallest setting, which the clamp's invariant guarantees feasible.
        """
        limits = dict(self.clamp.limits)
        loss = [c * x + t for c, x, t in zip(coeffs, self.loss, self.tie, strict=True)]
        for _ in range(TIGHTEN):
            choice = solve_allocation(loss, self.model, limits)
            if choice is None:
                break
            exact = self.measure(choice)
            over = {m: lim for m, lim in self.clamp.limits.items() if exact[m] > lim}
            if not over:
                return choice
            for m, lim in over.items():
                limits[m] *= lim / exact[m]
            logger.info("solver: the solution overruns %s; solving again", ", ".join(over))
        return [len(o) - 1 for o in self.options]

    def actions(self, choice: Sequence[int]) -> np.ndarray:
        """The action rows that make the env propose ``choice``."""
        s = self.settings(choice)
        rows = self.view.env.encode([o[0] for o in s], [o[1] for o in s], [o[2] for o in s])
        return np.asarray(rows, np.float64)


def check_state(state: dict[str, Any], n_units: int) -> tuple[Any, Any, list[list[int]]]:
    """The saved ``best`` multipliers, ``best_reward`` and ``played`` allocations, checked.

    Raises:
        CheckpointError: If one is malformed.
    """
    best, reward, played = state.get("best"), state.get("best_reward"), state.get("played", [])

    def numbers(v: object, kind: type | tuple[type, ...]) -> bool:
        return isinstance(v, list) and all(
            isinstance(x, kind) and not isinstance(x, bool) for x in v
        )

    ok = (
        (best is None or (numbers(best, (int, float)) and len(best) == n_units))
        and (reward is None or isinstance(reward, int | float))
        and isinstance(played, list)
        and all(numbers(p, int) and len(p) == n_units for p in played)
    )
    if not ok:
        raise CheckpointError("the saved solver search state is malformed")
    best = None if best is None else [float(x) for x in best]
    return best, None if reward is None else float(reward), [list(p) for p in played]
