"""The results of a batch: ``results.jsonl`` and ``summary.csv`` (the plot: ``pareto``).

``results.jsonl`` holds one JSON record per finished job, in the order jobs finished. Each
record is appended with a single ``os.write`` of the complete line to a file opened with
``O_APPEND``, then ``fsync``-ed, so a crash leaves whole lines only (at worst a torn last
line after a failed write, which :func:`repair_tail` drops before the next append). The
batch driver is the only writer.

A record::

    {"job": "<id>", "status": "ok" | "failed" | "timeout", "kind": "search",
     "label": "...", "settings": {...}, "run_dir": "runs/<id>", "error": null,
     "result": {<result.json of the job>}, "wall_time_s": 12.3, "host": "...", ...}

The latest record of a job decides its state: a job with a record is finished and is not
run again, unless it failed and failures are retried.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.documents import parse_document
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.json_write import to_jsonable
from autoshrink.compression.metrics import BUDGET_NAMES, METRICS

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SUMMARY = "summary.csv"
PLOT = "pareto.png"
OK, FAILED, TIMEOUT = "ok", "failed", "timeout"

SUMMARY_COLUMNS = (
    "job",
    "status",
    "kind",
    "model",
    "dataset",
    "agent",
    "seed",
    "budgets",
    "episodes",
    "budgets_met",
    "base_accuracy",
    "accuracy",
    "accuracy_delta",
    "macs",
    "macs_ratio",
    "params",
    "params_ratio",
    "bytes",
    "bytes_ratio",
    "wall_time_s",
    "run_dir",
    "error",
)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one line of ``path``, atomically and durably.

    Raises:
        OSError: If the line could not be written whole (the torn tail is then removed).
    """
    line = (json.dumps(to_jsonable(record), sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)  # one write of the whole line: never interleaved
        if written != len(line):
            os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_tail(path: Path) -> int:
    """Drop a torn last line (one without its newline); returns the bytes dropped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    logger.warning("dropped a torn last line of %d bytes from %s", len(data) - keep, path)
    return len(data) - keep


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole, valid record of ``path`` in file order (none if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        try:
            obj = parse_document(line, f"line {number} of {path}", allow_nonfinite=True)
        except AutoshrinkError:
            obj = None
        if (
            not line.endswith("\n")
            or not isinstance(obj, dict)
            or not isinstance(obj.get("job"), str)
        ):
            logger.warning("skipping unreadable line %d of %s", number, path)
            continue
        records.append(obj)
    return records


def latest_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of every job, by job id, in the order jobs first appeared."""
    out: dict[str, dict[str, Any]] = {}
    for record in records:
        out[record["job"]] = record
    return out


def finished_ids(records: Iterable[dict[str, Any]], retry_failed: bool = False) -> set[str]:
    """Jobs that must not run again: every recorded job, or only those that succeeded."""
    return {
        job
        for job, record in latest_records(records).items()
        if record.get("status") == OK or not retry_failed
    }


def summary_row(record: dict[str, Any]) -> dict[str, Any]:
    """The flat CSV row of one record (empty cells for what a failed job lacks)."""
    s, result = record.get("settings", {}), record.get("result") or {}
    base, comp = result.get("baseline", {}), result.get("compressed", {})
    budgets = " ".join(f"{m}<={s[m]}" for m in BUDGET_NAMES if m in s)
    row: dict[str, Any] = {
        "job": record["job"],
        "status": record.get("status"),
        "kind": record.get("kind"),
        "model": s.get("model"),
        "dataset": s.get("dataset"),
        "agent": s.get("agent") or result.get("agent"),
        "seed": s.get("seed"),
        "budgets": budgets or "default",
        "episodes": result.get("episodes"),
        "budgets_met": result.get("budgets_met"),
        "base_accuracy": base.get("accuracy"),
        "accuracy": comp.get("accuracy"),
        "wall_time_s": record.get("wall_time_s"),
        "run_dir": record.get("run_dir"),
        "error": record.get("error"),
    }
    if comp.get("accuracy") is not None and base.get("accuracy") is not None:
        row["accuracy_delta"] = comp["accuracy"] - base["accuracy"]
    for m in METRICS[:3]:  # latency is the machine's: results.jsonl has it
        row[m.key] = comp.get(m.key)
        if comp.get(m.key) is not None and base.get(m.key):
            row[m.ratio_key] = comp[m.key] / base[m.key]
    return row


def write_summary(records: Iterable[dict[str, Any]], path: Path) -> Path:
    """Write ``summary.csv``: one row per job (its latest record), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for record in latest_records(records).values():
        writer.writerow(summary_row(record))
    write_atomic(path, lambda p: p.write_text(buf.getvalue()))
    return path


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost and higher accuracy.

    Args:
        points: ``(cost, accuracy)`` pairs.

    Returns:
        The front's indices, by increasing cost.

    >>> pareto_front([(1, 0.5), (2, 0.9), (3, 0.8), (0.5, 0.4)])
    [3, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
