"""The ``solver`` agent: a sensitivity table, an exact solve under every budget, a polish.

How the field chooses per-layer settings today (HAWQ-V3, Model Optimizer's
``auto_quantize``, SPDY): score each layer alone, then solve for the mix of settings that
loses least under the budget. This agent does that on the env's own terms.

1. **The table** (:mod:`~autoshrink.agent.sensitivity_score`): each unit alone at each
   keep-ratio, bit-width and (``deep``/``sparse``) sparsity of its grid, every other unit
   whole and float, scored by the env's evaluator, not as episodes (the clamp would not
   let one unit be compressed alone under a budget). Its evaluations come on top of the
   episodes and are counted in the table file, ``sensitivity.json`` of the run folder,
   which keeps it (unit by unit: a killed search resumes it) beside a copy in the cache,
   keyed by what the scores depend on, for other budgets on the same model.
2. **The solve** (:mod:`~autoshrink.agent.solver_milp`): the loss of a unit's setting is the
   sum of its keep, bits and sparsity losses (each ``max(0, base - accuracy)``: additive, an
   approximation); one setting per unit minimising the summed loss under every budget at
   once, with SciPy's ``milp`` (HiGHS). Costs are the env's exact cost model split into
   unary and pairwise terms (:mod:`~autoshrink.agent.solver_costs`), which honours the
   bilinear coupling of neighbouring units' channels; where it is not exact (latency
   tables, concatenations) the measured costs of the solution tighten the limits for a
   re-solve, and the env's clamp guarantees the realised budgets in any case.
3. **The polish** (SPDY's search over per-layer multipliers): episode 0 plays the solved
   allocation; every later one multiplies a few units' losses of the best multipliers so
   far by ``exp(N(0, σ))`` (seeded), re-solves, and plays that allocation (an allocation
   already played is redrawn, a few times). An episode's reward better than the best makes
   its multipliers the best. The multipliers, the best reward and the allocations played
   are saved with the search, so a resume continues the same sequence. With several
   workers a round's episodes all start from the best at the round's start.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from autoshrink.agent.scripted import ScriptedSearch
from autoshrink.agent.scripted_view import EnvView
from autoshrink.agent.sensitivity import (
    TABLE_FILE,
    SensitivityTable,
    cached_table_path,
    find_table,
    table_key,
)
from autoshrink.agent.sensitivity_score import (
    alone_policy,
    evaluator_settings,
    score_table,
    unit_grids,
)
from autoshrink.agent.solver_plan import SolverPlan, check_state
from autoshrink.compression.metrics import FLOAT_BITS

if TYPE_CHECKING:
    from autoshrink.agent.config import AgentConfig

logger = logging.getLogger(__name__)

#: Std of the log-multiplier perturbation (SPDY's local search).
SIGMA = 0.5
#: Draws per episode before an allocation already played is accepted again.
REDRAWS = 8


class SolverSearch(ScriptedSearch):
    """Sensitivity table, exact MILP under the budgets, SPDY-style polish by the evaluator."""

    name = "solver"

    def __init__(self, env: gym.Env | VecEnv, config: AgentConfig, n_units: int) -> None:
        super().__init__(env, config, n_units)
        self._plan: SolverPlan | None = None
        self._best: list[float] | None = None
        self._best_reward: float | None = None
        self._played: list[list[int]] = []
        self._pending: dict[int, list[float]] = {}

    def plan(self) -> SolverPlan:
        """The table (read, resumed or scored) and the cost model, built on first use."""
        if self._plan is None:
            view = EnvView(self.local_env())
            grids = unit_grids(view)
            key = table_key(view.env.model.state_dict(), evaluator_settings(view), grids)
            table = find_table(key, self.run_dir, len(grids))
            if table is None:
                whole = (view.units[0].c_out, FLOAT_BITS, 0.0)
                base = float(view.env.evaluator(alone_policy(view, 0, whole)).accuracy)
                table = SensitivityTable(key, base, evaluations=1)
            if len(table.rows) < len(grids):
                score_table(view, grids, table, self._save_table)
                table.save(cached_table_path(key))
            elif self.run_dir is not None and not (self.run_dir / TABLE_FILE).is_file():
                self._save_table(table)
            logger.info(
                "solver: table of %d units, %d evaluations, %.1f s",
                len(grids),
                table.evaluations,
                table.seconds,
            )
            self._plan = SolverPlan(view, grids, table)
        return self._plan

    def _save_table(self, table: SensitivityTable) -> None:
        if self.run_dir is not None:
            table.save(self.run_dir / TABLE_FILE)

    def episode_actions(self, episode: int) -> np.ndarray:  # noqa: D102
        plan = self.plan()
        if not self._played:
            coeffs = [1.0] * self.n_units
            choice = plan.solve(coeffs)
        else:
            coeffs, choice = self._perturbed(plan)
        self._played.append(choice)
        self._pending[episode] = coeffs
        return plan.actions(choice)

    def _perturbed(self, plan: SolverPlan) -> tuple[list[float], list[int]]:
        """SPDY's step: a few units' multipliers of the best so far, redrawn until new."""
        start = self._best or [1.0] * self.n_units
        most = max(1, math.ceil(0.2 * self.n_units))
        for attempt in range(REDRAWS):
            coeffs = list(start)
            n = int(self.rng.integers(1, most + 1))
            for u in self.rng.choice(self.n_units, size=n, replace=False):
                coeffs[int(u)] *= float(np.exp(self.rng.normal(0.0, SIGMA * (1 + attempt))))
            choice = plan.solve(coeffs)
            if choice not in self._played:
                break
        return coeffs, choice

    def episode_done(self, first: int, rewards: np.ndarray) -> None:  # noqa: D102
        for i, reward in enumerate(np.asarray(rewards, np.float64).reshape(-1)):
            coeffs = self._pending.pop(first + i, None)
            if coeffs is None or not math.isfinite(reward):
                continue
            if self._best_reward is None or reward > self._best_reward:
                self._best, self._best_reward = coeffs, float(reward)

    def extra_state(self) -> dict[str, Any]:  # noqa: D102
        return {"best": self._best, "best_reward": self._best_reward, "played": self._played}

    def restore_extra(self, state: dict[str, Any]) -> None:  # noqa: D102
        self._best, self._best_reward, self._played = check_state(state, self.n_units)
