"""Flags that several subcommands share, defined once so they read the same everywhere.

Every flag's help ends with its default, as ``(default: ...)`` (``(default: off)`` for a
switch), or with ``(required)``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.locking import LOCK_FILE

#: ``--data-dir`` of every command that reads a dataset.
DATA_DIR_HELP = "where the dataset files are, or are downloaded to (default: the cache's)"
#: ``--json`` of every command that prints a table.
JSON_HELP = "print only JSON, for machines (default: off)"

#: Budget flag -> help text. Values are parsed by ``autoshrink.env.config.parse_budget``.
BUDGET_FLAGS: dict[str, str] = {
    "flops": "MACs budget, e.g. 0.5 or 1.2M",
    "params": "parameter budget, e.g. 0.3 or 100K",
    "size": "size budget in bytes, e.g. 0.1 or 300KB",
    "latency": "latency budget, e.g. 0.6 or 4ms",
}


def add_budget_flags(parser: argparse.ArgumentParser, defaults: Mapping[str, str]) -> None:
    """Add ``--flops --params --size --latency`` (each None unless given).

    Args:
        parser: The subcommand's parser.
        defaults: What each budget is when its flag is left out, as help text.
    """
    for name, help_text in BUDGET_FLAGS.items():
        default = defaults.get(name, "none")
        parser.add_argument(f"--{name}", default=None, help=f"{help_text} (default: {default})")


def add_runtime_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--runtime eager|compiled|onnxruntime``: where ``what`` is timed."""
    from autoshrink.compression.names import DEFAULT_RUNTIME, RUNTIMES

    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help=f"where {what} is measured: eager PyTorch, torch.compile, or onnxruntime "
        f"(the [onnx] extra) (default: {DEFAULT_RUNTIME})",
    )


def mode_defaults() -> dict[str, str]:
    """Each budget's default in words, from the env's ``DEFAULT_BUDGETS`` by mode."""
    from autoshrink.env.config import DEFAULT_BUDGETS

    by_metric: dict[str, dict[float, list[str]]] = {}
    for mode, budgets in DEFAULT_BUDGETS.items():
        for metric, value in budgets.items():
            by_metric.setdefault(metric, {}).setdefault(value, []).append(mode)
    return {
        metric: ", ".join(f"{v:g} in {' and '.join(modes)} mode" for v, modes in values.items())
        + ", if no budget is given"
        for metric, values in by_metric.items()
    }


def check_out_folder(out: Path, reuse: Callable[[Path], bool] | None = None) -> None:
    """``--out``'s one rule: a new or empty folder, or, for a command that resumes, its own.

    Checked before any work, so that no command writes into a folder of other files.

    Args:
        out: The folder given.
        reuse: Whether a non-empty ``out`` is this command's own folder, which it may
            continue (a search's run folder, a batch folder); None: never.

    Raises:
        AutoshrinkError: If ``out`` is a file, or holds other files.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise AutoshrinkError(f"--out {out} exists and is not a folder")
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if not others or (reuse is not None and reuse(out)):
        return
    listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    raise AutoshrinkError(f"--out {out} is not empty ({listed}): choose a new or empty folder")


def add_device_flags(
    parser: argparse.ArgumentParser, workers: str | None = None, episodes: bool = False
) -> None:
    """Add ``--device`` and ``--threads`` (each None unless given: the library's defaults).

    Args:
        parser: The subcommand's parser.
        workers: The flag that sets parallel workers (``--workers``), whose count divides the
            cores into each worker's default threads; None when the command runs one.
        episodes: The workers are a search's episode workers (not a batch's jobs): the
            search's own process keeps every core by default.
    """
    from autoshrink.compression.device import DEFAULT_DEVICE, DEVICE_FORMS, available_cores

    jobs = " for every job whose spec gives none" if workers and not episodes else ""
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help=f"where models train and policies are scored{jobs}: {DEVICE_FORMS} (default: "
        f"{DEFAULT_DEVICE}, CUDA when available, else the CPU)",
    )
    cores = available_cores()
    share = f"the {cores} usable cores" + (f" divided by {workers}, at least 1" if workers else "")
    if workers and episodes:
        share = f"the {cores} usable cores; each worker's, with {workers} K > 1: the cores "
        share += "divided by K, at least 1; recorded in the run folder, and a resume keeps them"
        jobs = f" of the search, and of each of its {workers}"
    parser.add_argument(
        "--threads",
        type=bounded_int("MAX_THREADS"),
        default=None,
        metavar="N",
        help=f"torch's intra-op CPU threads{jobs.replace('none', 'no cpus')} (default: {share})",
    )


def positive_float(what: str = "number") -> Callable[[str], float]:
    """An argparse ``type``: a positive, finite float (``nan`` and ``inf`` are refused).

    Args:
        what: What the number is, for the refusal ("number of seconds").
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {what}, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive {what}, got {text}")
        return value

    return parse


def bounded_int(limit: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer from 1 to the constant ``limit`` of ``names``.

    Checked as the flags are parsed, so that a count no machine has (``--threads
    100000000`` crashes torch, ``--workers 100000`` runs out of file handles) is refused in
    one line before any work.
    """
    from autoshrink.compression import names

    most: int = getattr(names, limit)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not 1 <= value <= most:
            raise argparse.ArgumentTypeError(f"must be between 1 and {most:,}, got {text}")
        return value

    return parse


def setup_device(args: argparse.Namespace, workers: int = 1) -> Any:
    """Check ``--device`` against this machine and set ``--threads``, before any work.

    Returns:
        The ``torch.device`` that ``--device`` means here.

    Raises:
        AutoshrinkError: On a device this machine lacks or a misspelt one, or threads < 1.
    """
    from autoshrink.compression.device import DEFAULT_DEVICE, resolve_device, set_threads

    device = resolve_device(args.device or DEFAULT_DEVICE)
    set_threads(args.threads, workers)
    return device


def device_line(asked: str | None, device: Any) -> str:
    """``device cpu (auto)`` or ``device cuda:1 (NVIDIA H100 ...)``: what a header says."""
    from autoshrink.compression.device import DEFAULT_DEVICE, describe_device

    auto = (asked or DEFAULT_DEVICE) == "auto"
    return f"device {describe_device(device)}" + (" (auto)" if auto else "")
