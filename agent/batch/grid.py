"""The tables of a batch spec as per-job settings, remembering where each key was written.

:func:`expand_grid` turns a ``[grid]`` into one :class:`RawJob` per combination of its axes
(models × datasets × budgets × agents × seeds). :func:`key_lines` finds the line of every
table and key, so that a problem found later (an unknown key, a bad budget) can name it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autoshrink.compression.metrics import BUDGET_NAMES

#: Grid axis -> the setting each of its values sets.
AXES = {"models": "model", "datasets": "dataset", "agents": "agent", "seeds": "seed"}
BUDGET_KEYS = BUDGET_NAMES
#: The most jobs a spec may hold: past that a typo in an axis, not a plan (each is a search).
MAX_GRID_JOBS = 10_000
#: The axes in expansion order; the last varies fastest.
AXIS_ORDER = ("models", "datasets", "budgets", "agents", "seeds")
#: Words in config errors -> the spec key to blame.
_ALIASES = {"algorithm": "agent", "warmup_episodes": "warmup"}

Problem = Callable[[str, str], None]


@dataclass(frozen=True)
class RawJob:
    """Settings of one job before validation, and the table each key was written in."""

    source: str
    settings: dict[str, Any]
    origin: dict[str, str]

    def merge(self, source: str, table: dict[str, Any], where: str) -> RawJob:
        """A copy with ``table``'s keys laid over, each remembered as written in ``where``."""
        return RawJob(
            source, {**self.settings, **table}, {**self.origin, **dict.fromkeys(table, where)}
        )

    def table(self) -> str:
        """The spec table the job came from: ``jobs[2]``, ``grid``."""
        return self.source.split(" ")[0]


def expand_grid(grid: Any, base: RawJob, where: str, problem: Problem) -> list[RawJob]:
    """One job per combination of ``grid``'s axes, laid over ``base`` (the defaults).

    Keys of the grid that are not axes apply to all its jobs. An axis together with its
    singular key (``models`` and ``model``) is a problem, reported through ``problem``.
    """
    if not isinstance(grid, dict):
        problem(where, "must be a table")
        return []
    axes: dict[str, list[Any]] = {}
    for axis in AXIS_ORDER:
        if axis not in grid:
            continue
        values = grid[axis]
        if not isinstance(values, list) or not values:
            problem(f"{where}.{axis}", "must be a non-empty array")
            return []
        if axis == "budgets" and not all(isinstance(b, dict) and b for b in values):
            problem(f"{where}.budgets", "must be an array of tables like { flops = 0.5 }")
            return []
        if axis in AXES and AXES[axis] in grid:
            problem(f"{where}.{AXES[axis]}", f"given together with the axis {axis!r}")
            return []
        axes[axis] = values
    if not axes:
        problem(where, f"a grid needs at least one axis of {list(AXIS_ORDER)}")
        return []
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_GRID_JOBS:
        problem(where, f"expands to {size} jobs; a spec holds at most {MAX_GRID_JOBS}")
        return []
    own = base.merge(where, {k: v for k, v in grid.items() if k not in axes}, where)
    out = []
    for n, combo in enumerate(itertools.product(*axes.values())):
        raw = own
        for axis, value in zip(axes, combo, strict=True):
            if axis == "budgets":  # a budgets entry is the job's whole set of budgets
                kept = {k: v for k, v in raw.settings.items() if k not in BUDGET_KEYS}
                raw = RawJob(raw.source, kept, raw.origin).merge(raw.source, value, where)
                raw.origin.update(dict.fromkeys(value, f"{where}.budgets"))
            else:
                raw = raw.merge(raw.source, {AXES[axis]: value}, f"{where}.{axis}")
        out.append(RawJob(f"{where} #{n}", raw.settings, raw.origin))
    return out


def blame(raw: RawJob, key: str | None = None, message: str = "") -> str:
    """The spec path of ``key`` (or of the first setting named in ``message``)."""
    if key is None:
        words = set(re.findall(r"[A-Za-z_]+", message))
        named = [_ALIASES.get(w, w) for w in words]
        key = next((k for k in raw.settings if k in named), None)
    if key is None:
        return raw.table()
    where = raw.origin.get(key, raw.table())
    return where if where.endswith(".budgets") or "." in where else f"{where}.{key}"


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\"'-]+)\s*=")


def key_lines(text: str) -> dict[str, int]:
    r"""Line numbers (1-based) of tables and keys: ``jobs[1]``, ``jobs[1].model``, ``grid``.

    Enough of TOML for error messages: table headers, arrays of tables and ``key =`` lines.

    >>> key_lines("[defaults]\nmodel = 1\n[[jobs]]\n[[jobs]]\nseed = 1\n")["jobs[1].seed"]
    5
    """
    out: dict[str, int] = {}
    counts: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            name = m.group(2).replace('"', "").replace("'", "").strip()
            if m.group(1) == "[[":
                counts[name] = counts.get(name, -1) + 1
                name = f"{name}[{counts[name]}]"
            table = name
            out.setdefault(table, number)
        elif m := _ASSIGN.match(line):
            key = m.group(1).strip("\"'")
            out.setdefault(f"{table}.{key}" if table else key, number)
    return out
