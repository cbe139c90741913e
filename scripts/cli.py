"""The ``autoshrink`` entry point: parses the subcommand and turns user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from rich.markup import escape

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.scripts.console import err_console, one_line

# One module per subcommand; each defines ``add_parser(subparsers)`` and ``run(args) -> int``.
SUBCOMMANDS: tuple[str, ...] = (
    "train",
    "inspect",
    "show",
    "search",
    "apply",
    "evaluate",
    "export",
    "batch",
)


def _version() -> str:
    try:
        return version("autoshrink")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (the usage stays in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one ``error:`` line and exit with status 2."""
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the top-level parser with one sub-parser per subcommand module.

    Args:
        argv: The arguments to be parsed. Given, only the subcommand they name gets its
            flags; the others get their one-line help alone, so that ``autoshrink --help``
            imports neither torch nor SB3. None builds every subcommand in full.
    """
    parser = OneLineParser(
        prog="autoshrink",
        description=(
            "AutoML compression search for PyTorch: an RL agent picks a channel keep-ratio "
            "and a weight bit-width for every prunable unit of a trained model, under "
            "guaranteed FLOPs, parameter, size and latency budgets."
        ),
    )
    parser.add_argument("--version", action="version", version=f"autoshrink {_version()}")
    add_verbosity_flags(parser, "")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = None if argv is None else _named_command(argv)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"autoshrink.scripts.{name}")
        if argv is None or name == chosen:
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=module.HELP)
        add_verbosity_flags(sub.choices[name], "_after")
    return parser


def _named_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not a top-level option."""
    return next((a for a in argv if not a.startswith("-")), None)


def add_verbosity_flags(parser: argparse.ArgumentParser, suffix: str) -> None:
    """``-v`` and ``-q``, counted apart before and after the subcommand, then added up.

    A subcommand's parser writes every one of its destinations over the top level's, so
    its copies have their own (``verbose_after``, ``quiet_after``).
    """
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        dest=f"verbose{suffix}",
        action="count",
        default=0,
        help="more log output: -v info, -vv autoshrink's debug, -vvv every library's "
        "(default: warnings)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        dest=f"quiet{suffix}",
        action="count",
        default=0,
        help="less log output: errors only (default: off)",
    )


def set_log_level(verbosity: int) -> None:
    """Log autoshrink's records at ``verbosity`` (-1 quiet .. 2 debug); others at warning.

    Third-party libraries (matplotlib, PIL, filelock, ...) log their debug output only
    from ``-vvv`` on: at ``-vv`` it would bury autoshrink's under hundreds of lines.
    """
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
    level = levels.get(max(verbosity, -1), logging.DEBUG)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.DEBUG if verbosity >= 3 else max(level, logging.WARNING))
    logging.getLogger("autoshrink").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 on success, 2 on a user error (reported in one line), 130 on Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    verbose = args.verbose + getattr(args, "verbose_after", 0)
    set_log_level(verbose - args.quiet - getattr(args, "quiet_after", 0))
    if args.command is None:
        parser.print_help()
        return 0
    caught: list[warnings.WarningMessage] = []
    refused: AutoshrinkError | None = None
    try:
        with warnings.catch_warnings(record=True) as caught:  # the filters stay as they are
            code, refused = _run_command(args, verbose)
    finally:  # a refusal stays one line; -v shows all
        for item in caught if refused is None or verbose > 0 else ():
            text = f"{item.category.__name__}: {item.message}"
            err_console.print(
                f"[yellow]warning:[/] {escape(one_line(text))}", highlight=False, soft_wrap=True
            )
    if refused is not None:
        err_console.print(
            f"[bold red]error:[/] {escape(one_line(str(refused)))}",
            highlight=False,
            soft_wrap=True,
        )
    return code


def _run_command(args: argparse.Namespace, verbose: int) -> tuple[int, AutoshrinkError | None]:
    """Run the subcommand: its exit status, and the user error that refused it, if one did.

    Its warnings are caught by the caller, so that a refusal stays one line; with ``-v``
    the refusal's traceback is printed here.
    """
    try:
        return int(args.func(args)), None
    except AutoshrinkError as exc:
        if verbose > 0:
            err_console.print(escape("".join(traceback.format_exception(exc))), highlight=False)
        return 2, exc
    except KeyboardInterrupt:
        hint = getattr(args, "on_interrupt", None)
        line = hint() if callable(hint) else None
        tail = escape(f"; {line}" if line else "")
        err_console.print(f"[yellow]interrupted[/]{tail}", highlight=False, soft_wrap=True)
        return 130, None


if __name__ == "__main__":
    sys.exit(main())
