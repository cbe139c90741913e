"""The per-unit table of ``show``, and of the end of ``search`` and ``apply``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from autoshrink.scripts.console import console

if TYPE_CHECKING:
    from autoshrink.compression.breakdown import Breakdown, Row
    from autoshrink.compression.cost import Cost

#: Layers named in a row before the rest are counted ("+3 more").
MOST_LAYERS = 3
#: Width of a piped (not a terminal) full table, so that it is not folded to 80 columns.
PIPED_WIDTH = 160
#: Narrower consoles get the compact table at the end of ``search`` and ``apply``.
FULL_WIDTH = 120


def count(value: float) -> str:
    """``1234567`` -> ``1.23M``: three significant digits and a K, M or G suffix."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def _bits(row: Row) -> str:
    if row.bits is None:
        return ""
    pins = sorted(set(row.pinned.values()))
    base = [] if set(row.pinned) == set(row.layers) else [str(row.bits)]
    return ", ".join([*base, *(f"{b}*" for b in pins)])


def _layers(row: Row) -> str:
    names = [f"{n}*" if n in row.pinned else n for n in row.layers]
    if len(names) <= MOST_LAYERS + 1:  # "+1 more" would take the place of the one name
        return ", ".join(names)
    return ", ".join(names[:MOST_LAYERS]) + f", +{len(names) - MOST_LAYERS} more"


def _change(before: int, after: int) -> str:
    return count(after) if before == after else f"{count(before)} → {count(after)}"


def _ratio(before: int, after: int) -> str:
    return f"{count(after)} {after / before:4.0%}" if before else count(after)


def unit_table(table: Breakdown, title: str, compact: bool = False) -> Table:
    """A rich table: one row per unit, fixed layer and remainder, then the totals.

    Args:
        table: The breakdown.
        title: The table's title.
        compact: Leave out the layers and the costs before (each cost is shown after, with
            its share of before), so that the table fits 80 columns.
    """
    t = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_footer=False)
    t.add_column("unit", overflow="fold", max_width=22 if compact else None)
    if not compact:
        t.add_column("layers", overflow="fold", max_width=48)
    t.add_column("kept", justify="right", no_wrap=True)
    if not compact:
        t.add_column("keep", justify="right", no_wrap=True)
    t.add_column("bits", justify="right", no_wrap=True)
    sparse = any(row.sparsity > 0 for row in table.rows)
    if sparse:
        t.add_column("zeroed", justify="right", no_wrap=True)
    for metric in ("MACs", "params", "bytes"):
        t.add_column(metric, justify="right", no_wrap=True)
    cell = _ratio if compact else _change
    for row in table.rows:
        kept = f"{row.kept}/{row.channels}" if row.channels else ""
        keep = f"{row.keep:.2f}" if row.channels else ""
        head = [row.name] if compact else [row.name, _layers(row)]
        mid = [kept, _bits(row)] if compact else [kept, keep, _bits(row)]
        mid += [f"{row.sparsity:.0%}" if row.sparsity else ""] if sparse else []
        t.add_row(*head, *mid, *_costs(row.before, row.after, cell))
    t.add_section()
    blank = ["total", "", ""] if compact else ["total", "", "", "", ""]
    blank += [""] if sparse else []
    t.add_row(*blank, *_costs(table.before, table.after, cell))
    return t


def _costs(before: Cost, after: Cost, cell: Callable[[int, int], str]) -> list[str]:
    return [cell(getattr(before, k), getattr(after, k)) for k in ("macs", "params", "bytes")]


def notes(table: Breakdown) -> list[str]:
    """The lines under the table: pinned layers and frozen units."""
    pinned = {name: b for row in table.rows for name, b in row.pinned.items()}
    lines = []
    if pinned:
        listed = ", ".join(f"{name} at {b} bits" for name, b in pinned.items())
        lines.append(f"* pinned by the policy: {listed}")
    lines += [f"frozen unit {name}: {why}" for name, why in table.frozen.items()]
    return lines


def print_unit_table(table: Breakdown, title: str, compact: bool = False) -> None:
    """Print :func:`unit_table` and its notes; piped, a full table is not folded to 80."""
    out = console
    if not compact and not console.is_terminal:
        out = Console(width=PIPED_WIDTH, highlight=False, no_color=console.no_color)
    out.print(unit_table(table, title, compact))
    for line in notes(table):
        out.print(line, highlight=False, soft_wrap=True)
