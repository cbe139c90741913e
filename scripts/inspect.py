"""``autoshrink inspect``: the prunable units of a model, their features and the totals.

The input shape comes from ``--input-shape`` or from a dataset (``--dataset``, digits by
default); MACs are counted for exactly that shape.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.scripts.console import console
from autoshrink.scripts.options import DATA_DIR_HELP, JSON_HELP

if TYPE_CHECKING:
    from autoshrink.compression.units import UnitGraph

DEFAULT_MODEL = "resnet20"
DEFAULT_DATASET = "digits"


class InputShapeError(AutoshrinkError):
    """``--input-shape`` is not a list of positive integers."""


#: The one line ``autoshrink --help`` shows.
HELP = "list a model's prunable units (channel groups) with MACs and params"


def add_parser(subparsers: Any) -> None:
    """Register ``inspect`` and its flags."""
    p = subparsers.add_parser(
        "inspect",
        help=HELP,
        description=(
            "Trace a model with Torch-Pruning's DepGraph and list its prunable units: the "
            "groups of layers that must keep the same channels. Totals are MACs, parameters "
            "and bytes at float precision."
        ),
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="state dict to load into the model (default: none; units and costs are the same)",
    )
    shape = p.add_mutually_exclusive_group()
    shape.add_argument(
        "--input-shape",
        default=None,
        help="input batch shape, e.g. 1,3,224,224 (default: the dataset's)",
    )
    shape.add_argument(
        "--dataset",
        default=None,
        help=f"take the input shape from a dataset (default: {DEFAULT_DATASET})",
    )
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier width (default: the dataset's)"
    )
    p.add_argument("--round-to", type=int, default=1, help="channel granularity (default: 1)")
    p.add_argument(
        "--keep",
        type=float,
        default=None,
        metavar="R",
        help="what-if: keep this fraction (0, 1] of every unit's channels; adds the kept "
        "channels and the pruned totals, from the exact cost model (default: none)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,32,32"`` -> ``(1, 3, 32, 32)``.

    Raises:
        InputShapeError: Unless it is at least two comma-separated positive integers.
    """
    from autoshrink.compression.models import MAX_INPUT_ELEMENTS, check_input_shape

    parts = [s.strip() for s in text.replace("x", ",").split(",")] if text else []
    try:
        shape = tuple(int(s) for s in parts if len(s) <= 12)  # longer: absurd, or a DoS
    except ValueError:
        shape = ()
    if len(shape) != len(parts) or not 2 <= len(shape) <= 8 or min(shape) < 1:
        raise InputShapeError(
            f"malformed --input-shape {text[:40]!r}: expected 2 to 8 positive integers such "
            "as 1,3,224,224"
        )
    try:
        return check_input_shape(shape, "--input-shape")
    except AutoshrinkError:
        raise InputShapeError(
            f"--input-shape {text[:40]} has more than {MAX_INPUT_ELEMENTS:,} elements"
        ) from None


def check_flags(args: argparse.Namespace) -> None:
    """Every flag of ``inspect``, checked before any dataset is read or model built."""
    from pathlib import Path

    from autoshrink.compression.policy import check_keep

    if args.keep is not None:
        check_keep(args.keep, "--keep")
    if args.input_shape is not None:
        parse_shape(args.input_shape)
    if args.num_classes is not None and not 1 <= args.num_classes <= 1_000_000:
        raise AutoshrinkError(
            f"--num-classes must be between 1 and 1,000,000, got {args.num_classes}"
        )
    if not 1 <= args.round_to <= 4096:
        raise AutoshrinkError(f"--round-to must be between 1 and 4096, got {args.round_to}")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise AutoshrinkError(f"checkpoint not found: {args.checkpoint}")


def _shape_and_classes(args: argparse.Namespace) -> tuple[tuple[int, ...], int]:
    if args.input_shape is not None:
        return parse_shape(args.input_shape), args.num_classes or 10
    from autoshrink.compression.data import load_dataset

    data = load_dataset(args.dataset or DEFAULT_DATASET, data_dir=args.data_dir)
    return tuple(data.example_input(1).shape), args.num_classes or data.num_classes


def _kind(unit: dict[str, Any]) -> str:
    """The kind column: ``heads`` for an attention block's heads (c_out counts heads)."""
    if unit.get("width", 1) > 1:
        return "heads"
    return f"{unit['kind']}+dw" if unit["depthwise"] else str(unit["kind"])


def inspect_model(args: argparse.Namespace) -> tuple[dict[str, Any], UnitGraph]:
    """Build the model and its units; return the JSON report and the unit graph."""
    import torch

    from autoshrink.compression.cost import cost
    from autoshrink.compression.models import ModelSpec, build_model, load_weights
    from autoshrink.compression.timm_models import timm_image_size
    from autoshrink.compression.units import build_units

    check_flags(args)
    shape, num_classes = _shape_and_classes(args)
    if num_classes < 1:
        raise AutoshrinkError(f"--num-classes must be positive, got {num_classes}")
    size = timm_image_size(args.model, shape[-1])
    model = build_model(ModelSpec(args.model, num_classes, shape[1], image_size=size))
    if args.checkpoint is not None:
        load_weights(model, args.checkpoint)
    graph = build_units(model, torch.zeros(shape), round_to=args.round_to)
    total = cost(graph)
    units = [{**asdict(u), "layers": list(u.layers)} for u in graph.units]
    report: dict[str, Any] = {
        "units": units,
        "frozen": dict(graph.frozen),
        "total": {"macs": total.macs, "params": total.params, "bytes": total.bytes},
    }
    if args.keep is not None:
        for u, row in zip(graph.units, units, strict=True):
            row["kept"] = u.kept(args.keep)
        pruned = cost(graph, keep=dict.fromkeys(graph.unit_names, args.keep))
        report["pruned"] = {"keep": args.keep, **asdict(pruned)}
    return report, graph


def _human(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def run(args: argparse.Namespace) -> int:
    """Print the units as a table (or JSON)."""
    report, graph = inspect_model(args)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")  # plain JSON for pipes, no rich markup
        return 0
    shape = "x".join(map(str, graph.input_shape))
    table = Table(
        title=f"{args.model} on {shape}: {len(report['units'])} prunable units",
        caption="MACs and params: every layer whose output channels the unit prunes "
        "(its group, which `autoshrink show` lists), not the named layer alone",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("name", overflow="fold")
    cols = ["kind", "c_in", "c_out", "k", "s", "groups", "fmap", "MACs", "params"]
    if args.keep is not None:
        cols.append("kept")
    for col in cols:
        table.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
    for u in report["units"]:
        table.add_row(
            u["name"],
            _kind(u),
            *(str(u[k]) for k in ("c_in", "c_out", "kernel", "stride", "groups", "fmap")),
            _human(u["macs"]),
            _human(u["params"]),
            *([str(u["kept"])] if args.keep is not None else []),
        )
    # A terminal folds long names to fit; a pipe or a file gets full-width lines instead.
    widest = max((len(u["name"]) for u in report["units"]), default=4)
    out = console
    if not console.is_terminal and widest + 66 > console.width:
        out = Console(width=widest + 66, highlight=False, no_color=console.no_color)
    out.print(table)
    t = report["total"]
    console.print(
        f"total: {t['macs']:,} MACs, {t['params']:,} params, {t['bytes']:,} bytes at float",
        highlight=False,
    )
    if "pruned" in report:
        p, t = report["pruned"], report["total"]
        console.print(
            f"at keep {p['keep']}: {p['macs']:,} MACs ({p['macs'] / t['macs']:.1%}), "
            f"{p['params']:,} params ({p['params'] / t['params']:.1%}), "
            f"{p['bytes']:,} bytes",
            highlight=False,
        )
    fixed = [layer.name for layer in graph.layers if layer.unit is None]
    console.print(f"fixed layers: {', '.join(fixed) or 'none'}", highlight=False)
    print_frozen(graph.frozen)
    return 0


def print_frozen(frozen: dict[str, str]) -> None:
    """One line per frozen unit (kept whole): its leading layer and why."""
    for name, why in frozen.items():
        console.print(f"frozen unit {name}: {why}", highlight=False, soft_wrap=True)
