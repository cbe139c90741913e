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
        ("CPU latency (batch 1)", MEASURED_LATENCY, lambda v: f"{1e3 * v:.3f} ms"),
    ]
    for label, key, fmt in rows:
        b, c = base.get(key), comp.get(key)
        if key == "nonzero_macs_theoretical":
            b = base.get("macs")
        if b is None or c is None:
            continue
        ratio = f"{c / b:.3f}x" if "accuracy" not in key and b else f"{(c - b) * 100:+.2f} pts"
        table.add_row(label, fmt(b), fmt(c), ratio)
    return table


def _count(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"
