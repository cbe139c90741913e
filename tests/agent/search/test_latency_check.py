"""A latency budget is checked on the shipped model by a fresh interleaved measurement."""

from __future__ import annotations

from typing import Any

import pytest

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search import latency_check as check_module
from autoshrink.agent.search.config import FinalConfig
from autoshrink.agent.search.finish import finish_search
from autoshrink.agent.search.latency_check import latency_check
from autoshrink.agent.search.loop import run_search
from autoshrink.agent.search.report import read_result
from autoshrink.compression.timing import FakeClock, compare
from autoshrink.env.budget_text import parse_budget
from autoshrink.env.compression_env import CompressionEnv
from autoshrink.env.latency import LatencyTable


def _comparison(ratio: float) -> Any:
    clock = FakeClock()
    return compare(clock.model(0.010), clock.model(0.010 * ratio), None, rounds=5, clock=clock)


@pytest.mark.parametrize(("ratio", "met"), [(0.9, False), (0.5, True)])
def test_relative_budget_is_checked_on_the_measured_ratio(ratio: float, met: bool) -> None:
    budget = parse_budget("latency", "0.6")
    got = latency_check(_comparison(ratio), budget, 0.006, 0.0055, 0.010)
    assert got["met_by_estimate"] is True and got["estimate_over_budget"] == pytest.approx(
        0.55 / 0.6
    )
    assert got["met_by_measurement"] is met
    assert got["measured_over_budget"] == pytest.approx(ratio / 0.6)
    assert got["spread"] == pytest.approx(0.0) and got["warning"] is None


def test_absolute_budget_is_checked_on_the_measured_seconds() -> None:
    budget = parse_budget("latency", "6ms")
    got = latency_check(_comparison(0.7), budget, 0.006, 0.005, 0.010)
    assert got["measured_s"] == pytest.approx(0.007) and got["met_by_measurement"] is False


def _latency_env(make_env: Any) -> CompressionEnv:
    """smallcnn with a latency budget on a made-up table (no timing in this test)."""
    plain = make_env(mode="prune")
    table = LatencyTable(
        base=0.010,
        channels={u.name: [1, u.c_out] for u in plain.units},
        seconds={u.name: [0.005, 0.010] for u in plain.units},
    )
    config = plain.config.replace(latency=0.9, latency_batch=3)
    return CompressionEnv(config, model=plain.model, latency=table)


@pytest.mark.parametrize(("slowdown", "met"), [(1.5, False), (0.5, True)])
def test_a_budget_the_fresh_measurement_breaks_is_reported_not_met(
    tmp_path: Any, make_env: Any, monkeypatch: pytest.MonkeyPatch, slowdown: float, met: bool
) -> None:
    env = _latency_env(make_env)
    clock = FakeClock()
    # the compressed model runs `slowdown` times the baseline's time, on a fake clock
    batches = []

    def fake(model: Any, x: Any, runtime: str) -> Any:
        batches.append(x.shape[0])
        return clock.model(0.010 if model is env.model else 0.010 * slowdown)

    monkeypatch.setattr(check_module, "runner", fake)
    monkeypatch.setattr(check_module, "CLOCK", clock)
    search = run_search(env, AgentConfig(algorithm="uniform", episodes=1), tmp_path / "run")
    report = finish_search(env, search, FinalConfig(epochs=0, latency_repeats=3, finalists=1))
    on_disk = read_result(tmp_path / "run" / "result.json")
    check = on_disk["latency_check"]
    assert check["met_by_estimate"] is True and on_disk["budgets_met_estimate"] is True
    assert check["met_by_measurement"] is met and on_disk["budgets_met"] is met
    assert check["measured_over_budget"] == pytest.approx(slowdown / 0.9)
    assert on_disk["latency"]["runtime"] == "eager" and "spread" in on_disk["latency"]
    assert on_disk["latency"]["batch"] == 3 == batches[-1]  # says the batch it was timed at
    assert on_disk["compressed"]["measured_latency_s"] == pytest.approx(0.010 * slowdown)
    assert report["budgets_met"] is met
    assert batches == [3, 3]  # checked at the batch the table was measured for
