"""The solver agent: an optimal MILP, an exact cost model, a table reused, budgets met."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.loop import run_search
from autoshrink.agent.sensitivity import TABLE_FILE, cached_table_path, read_table
from autoshrink.agent.solver_costs import build_cost_model, model_error
from autoshrink.agent.solver_milp import CostModel, PairTerm, solve_allocation
from tests.agent.search.test_search_toy import Interrupt


def cfg(episodes: int = 4, seed: int = 0) -> AgentConfig:
    return AgentConfig(algorithm="solver", episodes=episodes, seed=seed)


def brute_force(loss, model: CostModel, limits) -> tuple[float, list[int]] | None:
    best = None
    for choice in itertools.product(*(range(len(x)) for x in loss)):
        cost = model.cost(choice)
        if all(cost[m] <= lim + 1e-9 for m, lim in limits.items()):
            value = sum(loss[a][o] for a, o in enumerate(choice))
            if best is None or value < best[0] - 1e-12:
                best = (value, list(choice))
    return best


def random_problem(seed: int) -> tuple[list[np.ndarray], CostModel, dict[str, float]]:
    """4 units x 3 options, two metrics, pairwise terms between neighbours."""
    rng = np.random.default_rng(seed)
    keep_index = [
        np.array([0, 1, 1]),
        np.array([0, 0, 1]),
        np.array([0, 1, 2]),
        np.array([0, 1, 1]),
    ]
    n_keep = [int(k.max()) + 1 for k in keep_index]
    unary = [rng.uniform(-5, 0, (2, 3)) for _ in range(4)]
    pairs = [
        PairTerm(
            a,
            a + 1,
            rng.uniform(-2, 2, (2, 3, n_keep[a + 1])),
            rng.uniform(-2, 2, (2, n_keep[a], 3)),
        )
        for a in range(3)
    ]
    model = CostModel(("flops", "size"), np.array([20.0, 20.0]), unary, keep_index, pairs)
    loss = [rng.uniform(0, 1, 3) for _ in range(4)]
    all_costs = [model.cost(c) for c in itertools.product(range(3), repeat=4)]
    limits = {m: float(np.quantile([c[m] for c in all_costs], 0.4)) for m in model.metrics}
    return loss, model, limits


@pytest.mark.parametrize("seed", range(8))
def test_the_milp_is_optimal_against_brute_force(seed):
    loss, model, limits = random_problem(seed)
    expected = brute_force(loss, model, limits)
    choice = solve_allocation(loss, model, limits)
    if expected is None:
        assert choice is None
        return
    assert choice is not None
    cost = model.cost(choice)
    assert all(cost[m] <= lim + 1e-6 for m, lim in limits.items())
    assert sum(loss[a][o] for a, o in enumerate(choice)) == pytest.approx(expected[0], abs=1e-9)


def test_an_impossible_budget_has_no_allocation():
    loss, model, _ = random_problem(0)
    assert solve_allocation(loss, model, {"flops": -1e9}) is None


def real_problem(env):
    """Every unit at 3 channel counts and 2 bit-widths, on the env's exact costs."""
    clamp = env.clamp
    keeps = [
        sorted(
            {u.c_out, clamp.choices[i][len(clamp.choices[i]) // 2], clamp.min_channels[i]},
            reverse=True,
        )
        for i, u in enumerate(env.units)
    ]
    options = [[(c, b, 0.0) for c in ks for b in (8, 4)] for ks in keeps]
    ref = [(u.c_out, 8, 0.0) for u in env.units]
    model = build_cost_model(clamp.measure, keeps, options, ref, tuple(env.limits))
    return keeps, options, model


def test_the_cost_model_is_exact_and_the_solve_optimal_on_a_real_model(make_env):
    env = make_env(mode="joint", flops=0.5, size=0.15)
    _, options, model = real_problem(env)
    assert model.pairs  # neighbouring units are coupled through their channels

    def measure(choice):
        s = [options[a][o] for a, o in enumerate(choice)]
        return env.clamp.measure([o[0] for o in s], [o[1] for o in s], [o[2] for o in s])

    every = list(itertools.product(*(range(len(o)) for o in options)))
    assert model_error(model, measure, every) < 1e-12
    rng = np.random.default_rng(1)
    loss = [rng.uniform(0, 1, len(o)) for o in options]
    expected = brute_force(loss, model, env.limits)
    choice = solve_allocation(loss, model, env.limits)
    assert expected is not None and choice is not None
    assert sum(loss[a][o] for a, o in enumerate(choice)) == pytest.approx(expected[0], abs=1e-9)
    chosen = [options[a][c] for a, c in enumerate(choice)]
    assert env.clamp.feasible([o[0] for o in chosen], [o[1] for o in chosen])


def lines(folder) -> list[dict]:
    return [json.loads(x) for x in (folder / "episodes.jsonl").read_text().splitlines()]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A cache of this test's own for tables (the trained baseline stays the session's)."""
    monkeypatch.setattr("autoshrink.agent.sensitivity.cache_dir", lambda: tmp_path / "cache")
    return tmp_path / "cache"


def test_a_solver_search_meets_its_budgets_and_keeps_its_table(tmp_path, make_env, own_cache):
    env = make_env(mode="joint", flops=0.5, size=0.2)
    result = run_search(env, cfg(episodes=4), tmp_path / "run")
    rows = lines(tmp_path / "run")
    assert [r["episode"] for r in rows] == [0, 1, 2, 3]
    assert all(r["budgets_met"] for r in rows)
    assert result.best_metrics["macs"] <= env.limits["flops"]
    assert result.best_metrics["bytes"] <= env.limits["size"]
    table = read_table(tmp_path / "run" / TABLE_FILE)
    assert len(table.rows) == len(env.units)
    assert env.evaluator.calls == table.evaluations + 4  # the table's scores, then 4 episodes
    assert read_table(cached_table_path(table.key)).rows == table.rows
    # the solved allocation uses its budget: more than half of the MACs' limit
    assert rows[0]["macs"] > 0.5 * env.limits["flops"]


def test_another_budget_on_the_same_model_reuses_the_table(tmp_path, make_env, own_cache):
    run_search(make_env(flops=0.5), cfg(episodes=2), tmp_path / "a")
    env = make_env(flops=0.3)
    result = run_search(env, cfg(episodes=2), tmp_path / "b")
    assert env.evaluator.calls == 2  # the episodes only: no unit scored again
    assert result.best_metrics["macs"] <= env.limits["flops"]
    assert (tmp_path / "b" / TABLE_FILE).is_file()
    # other evaluator settings are another table
    other = make_env(flops=0.3, bn_batches=2)
    run_search(other, cfg(episodes=2), tmp_path / "c")
    assert other.evaluator.calls > 2
    assert (
        read_table(tmp_path / "c" / TABLE_FILE).key != read_table(tmp_path / "b" / TABLE_FILE).key
    )


def test_a_resume_reuses_the_table_and_continues_the_same_search(tmp_path, make_env, own_cache):
    whole = run_search(make_env(), cfg(episodes=6, seed=3), tmp_path / "whole")
    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_search(make_env(), cfg(episodes=6, seed=3), out, callbacks=[Interrupt(3)])
    # the cache would serve the table too: only the run folder's copy may serve the resume
    for path in own_cache.rglob("*.json"):
        path.unlink()
    env = make_env()
    resumed = run_search(env, cfg(episodes=6, seed=3), out, resume=True)
    assert [r["episode"] for r in lines(out)] == list(range(6))
    assert env.evaluator.calls == 3  # the three episodes left, no table entry
    assert [r["reward"] for r in lines(out)] == [r["reward"] for r in lines(tmp_path / "whole")]
    assert resumed.best_policy == whole.best_policy


def test_the_same_seed_gives_the_same_policy(tmp_path, make_env, own_cache):
    for name in ("a", "b"):
        run_search(make_env(mode="joint", flops=0.5, size=0.2), cfg(seed=7), tmp_path / name)
        for path in own_cache.rglob("*.json"):
            path.unlink()  # the second search scores its own table again
    a, b = ((tmp_path / n / "policy.json").read_text() for n in ("a", "b"))
    assert json.loads(a) == json.loads(b)
    assert [r["reward"] for r in lines(tmp_path / "a")] == [
        r["reward"] for r in lines(tmp_path / "b")
    ]
