"""The table a search ends with: the interleaved latency, its spread and a budget's check."""

from __future__ import annotations

import io

from rich.console import Console

from autoshrink.scripts.comparison import comparison_table


def _render(report: dict) -> str:
    out = io.StringIO()
    Console(file=out, width=120).print(comparison_table(report))
    return out.getvalue()


def _report(ratio: float, spread: float, met: bool, warning: str | None) -> dict:
    base = {"accuracy": 0.9, "measured_latency_s": 0.002}
    comp = {"accuracy": 0.89, "measured_latency_s": 0.002 * ratio}
    report = {"model": "resnet20", "dataset": "digits", "agent": "ddpg", "episodes": 3}
    report |= {"budgets_met": met, "baseline": base, "compressed": comp}
    report["latency"] = {"runtime": "compiled", "ratio": ratio, "spread": spread}
    report["latency"]["warning"] = warning
    report["latency_check"] = {
        "estimate_over_budget": 0.98,
        "measured_over_budget": ratio / 0.6,
        "met_by_measurement": met,
    }
    return report


def test_latency_row_shows_runtime_ratio_spread_and_the_budget_check() -> None:
    text = _render(_report(0.9, 0.04, False, None))
    assert "CPU latency (compiled, batch 1)" in text
    assert "0.900x ± 4%" in text
    assert "table 0.980" in text and "measured 1.500" in text and "NOT met" in text
    assert "budgets met: False" in text and "warning" not in text


def test_a_noisy_measurement_is_flagged_under_the_table() -> None:
    text = _render(_report(0.5, 0.3, True, "latency ratio 0.500 has a spread of 30%"))
    assert "measured 0.833" in text and "NOT met" not in text
    assert "warning: latency ratio 0.500 has a spread of 30%" in text
