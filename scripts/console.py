"""The CLI's console: rich output on stdout, errors on stderr, and a shared progress bar.

On a terminal the progress is rich's live bar. Piped, in a log or in CI, a live bar has
no screen to redraw and rich prints its last frame cut to 80 columns (``search ━ … best
… …``), so there it becomes :class:`LineProgress`: one plain line per step.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console()
err_console = Console(stderr=True)

_FIELD = re.compile(r"task\.fields\[(\w+)\]")
#: Characters that would break a line or move the cursor: C0, DEL, C1, and Unicode's breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    r"""``text`` with every control character escaped, so that it prints as one line.

    A file name or JSON key that holds a newline is quoted as Python would (``\n``), not
    echoed raw.

    >>> one_line("bad\nname\x1b[2J")
    'bad\\nname\\x1b[2J'
    """
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class LineProgress:
    """A progress display for a pipe: one readable line per step, never a bare field.

    A task with a total prints a line each time its count moves, with the time so far and
    the rest at that pace (``search 3/60 best 0.68 val acc 68.06% flops 48.3%/50.0% (12s,
    about 228s left)``); a task without one (the final fine-tune's steps) prints a line
    when it starts and one when it is done. A column whose fields are
    all empty is left out. It has the part of :class:`rich.progress.Progress`'s interface
    the CLI uses.
    """

    def __init__(self, columns: tuple[TextColumn, ...], out: Console) -> None:
        self.columns = columns
        self.console = out
        self.tasks: dict[int, SimpleNamespace] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Nothing to start: lines are printed as the tasks move."""

    def stop(self) -> None:
        """Nothing to clear: every line is already printed."""

    def add_task(self, description: str, total: float | None = 100.0, **fields: Any) -> TaskID:
        """Add a task; nothing is printed until it moves."""
        task_id = TaskID(len(self.tasks))
        self.tasks[task_id] = SimpleNamespace(
            description=description,
            total=total,
            completed=0,
            fields=dict(fields),
            started=time.perf_counter(),
        )
        return task_id

    def update(
        self,
        task_id: TaskID,
        *,
        completed: float | None = None,
        total: float | None = None,
        **fields: Any,
    ) -> None:
        """Update a task, and print its line if its count moved."""
        task = self.tasks[task_id]
        before = (task.completed, task.total)
        task.fields.update(fields)
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = completed
        line = self._line(task, *before)
        if line is not None:
            self.console.print(line, highlight=False, soft_wrap=True, markup=False)

    def _line(self, task: SimpleNamespace, was: float, had: float | None) -> str | None:
        """The line for a task whose count was ``was`` of ``had``; None if it did not move."""
        seconds = time.perf_counter() - task.started
        elapsed = f"({seconds:.0f}s)"
        if had is None and task.total is not None:  # an open count closed: it is done
            return f"{task.description}: done {elapsed}"
        if task.total is None:  # counting steps of unknown number: say that it started
            return f"{task.description}: started" if was == 0 and task.completed else None
        if task.completed == was:
            return None
        parts = [f"{task.description} {task.completed:.0f}/{task.total:.0f}"]
        for column in self.columns:
            if not _blank(column, task.fields):
                parts.append(Text.from_markup(column.text_format.format(task=task)).plain)
        if task.completed < task.total:  # the rest at the pace so far
            left = seconds / task.completed * (task.total - task.completed)
            elapsed = f"({seconds:.0f}s, about {left:.0f}s left)"
        return " ".join([*parts, elapsed])


def _blank(column: TextColumn, fields: dict[str, Any]) -> bool:
    """Whether every field ``column`` shows is empty (as the final fine-tune's ``best``)."""
    names = _FIELD.findall(column.text_format)
    return bool(names) and all(fields.get(n) in ("", None) for n in names)


class FieldColumn(TextColumn):
    """A text column that shows nothing, not its bare label, while its fields are empty."""

    def render(self, task: Task) -> Text:
        """The column's text, or nothing when every field it shows is empty."""
        return Text("") if _blank(self, task.fields) else super().render(task)


def make_progress(*extra: TextColumn) -> Progress | LineProgress:
    """Progress with count, elapsed and remaining time, plus any extra text columns.

    A live bar on a terminal; :class:`LineProgress` when stderr is piped or a file.
    """
    if not err_console.is_terminal:
        return LineProgress(extra, err_console)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(FieldColumn(column.text_format) for column in extra),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
