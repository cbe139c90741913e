"""Flags that several subcommands share, defined once so they read the same everywhere."""

from __future__ import annotations

import argparse

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
