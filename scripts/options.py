"""Flags that several subcommands share, defined once so they read the same everywhere."""

from __future__ import annotations

import argparse
from typing import Any

#: Budget flag -> help text. Values are parsed by ``autoshrink.env.config.parse_budget``.
BUDGET_FLAGS: dict[str, str] = {
    "flops": "MACs budget, e.g. 0.5 or 1.2M",
    "params": "parameter budget, e.g. 0.3 or 100K",
    "size": "size budget in bytes, e.g. 0.1 or 300KB",
    "latency": "latency budget, e.g. 0.6 or 4ms",
}


def add_budget_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--flops --params --size --latency`` (each None unless given)."""
    for name, help_text in BUDGET_FLAGS.items():
        parser.add_argument(f"--{name}", default=None, help=help_text)


def add_device_flags(parser: argparse.ArgumentParser, workers: str | None = None) -> None:
    """Add ``--device`` and ``--threads`` (each None unless given: the library's defaults).

    Args:
        parser: The subcommand's parser.
        workers: The flag that sets parallel workers (``--workers``), whose count divides the
            cores into each worker's default threads; None when the command runs one.
    """
    from autoshrink.compression.device import DEFAULT_DEVICE, DEVICE_FORMS, available_cores

    jobs = " for every job whose spec gives none" if workers else ""
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help=f"where models train and policies are scored{jobs}: {DEVICE_FORMS} (default: "
        f"{DEFAULT_DEVICE}, CUDA when available, else the CPU)",
    )
    cores = available_cores()
    share = f"the {cores} usable cores" + (f" divided by {workers}, at least 1" if workers else "")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help=f"torch's intra-op CPU threads{jobs.replace('none', 'no cpus')} (default: {share})",
    )


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
