"""The table a search or an apply ends with: baseline against compressed, metric by metric."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from autoshrink.compression.metrics import MEASURED_LATENCY


def comparison_table(report: dict[str, Any]) -> Table:
    """A rich table of baseline against compressed: accuracy, MACs, params, bytes, latency."""
    base, comp = report["baseline"], report["compressed"]
    title = (
        f"{report['model']} on {report['dataset']}: {report['agent']}, "
        f"{report['episodes']} episodes, budgets met: {report['budgets_met']}"
    )
    table = Table(title=title, min_width=len(title))  # as wide as its title: not wrapped
    table.add_column("metric")
    table.add_column("baseline", justify="right")
    table.add_column("compressed", justify="right")
    table.add_column("ratio", justify="right")
    rows = [
        ("val accuracy", "val_accuracy", lambda v: f"{v:.2%}"),
        ("test accuracy", "accuracy", lambda v: f"{v:.2%}"),
        ("MACs", "macs", _count),
        ("params", "params", _count),
        ("bytes (budgeted)", "bytes", _count),
        ("file bytes", "file_bytes", _count),
        ("MACs skipping zeros (theory)", "nonzero_macs_theoretical", _count),
    ]
    for label, key, fmt in rows:
        b, c = base.get(key), comp.get(key)
        if key == "nonzero_macs_theoretical":
            b = base.get("macs")
        if b is None or c is None:
            continue
        ratio = f"{c / b:.3f}x" if "accuracy" not in key and b else f"{(c - b) * 100:+.2f} pts"
        table.add_row(label, fmt(b), fmt(c), ratio)
    _latency_rows(table, report)
    return table


def _latency_rows(table: Table, report: dict[str, Any]) -> None:
    """The measured latency (interleaved: median ratio ± spread) and a budget's check."""
    base, comp = report["baseline"], report["compressed"]
    b, c = base.get(MEASURED_LATENCY), comp.get(MEASURED_LATENCY)
    timed = report.get("latency") or {}
    if b is None or c is None:
        return
    runtime = timed.get("runtime", "eager")
    if "ratio" in timed:  # interleaved: the median of per-round ratios, and its spread
        ratio = f"{timed['ratio']:.3f}x ± {timed['spread']:.0%}"
    else:  # a result.json of before the interleaved measurement
        ratio = f"{c / b:.3f}x"
    ms = lambda v: f"{1e3 * v:.3f} ms"  # noqa: E731
    table.add_row(f"CPU latency ({runtime}, batch 1)", ms(b), ms(c), ratio)
    check = report.get("latency_check")
    if check:
        verdict = "met" if check["met_by_measurement"] else "NOT met"
        table.add_row(
            "latency / budget",
            f"table {check['estimate_over_budget']:.3f}",
            f"measured {check['measured_over_budget']:.3f}",
            verdict,
        )
    if timed.get("warning"):
        table.caption = f"warning: {timed['warning']}"


def _count(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"
