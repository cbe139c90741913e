"""``autoshrink export ARTIFACT --format onnx|torchscript --out FILE``: a file to deploy.

The exported file is run once more (onnxruntime or ``torch.jit.load``) on a seeded batch and
compared with the artifact's outputs; a file outside the tolerance is not written. With
``--int8 --dataset D`` the real int8 path is exported as QDQ ONNX, calibrated on D's train
split (every layer must be at 8 bits or more).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.scripts.console import console, err_console
from autoshrink.scripts.evaluate import (
    add_model_flags,
    check_artifact_flag,
    check_count,
    check_dataset_flag,
    check_model_flag,
)
from autoshrink.scripts.options import DATA_DIR_HELP, JSON_HELP

MAX_CALIB_BATCHES = 10_000


#: The one line ``autoshrink --help`` shows.
HELP = "export a compressed artifact to ONNX or TorchScript, checked against it"


def add_parser(subparsers: Any) -> None:
    """Register ``export`` and its flags."""
    from autoshrink.compression.names import EXPORTERS, FORMATS

    p = subparsers.add_parser(
        "export",
        help=HELP,
        description=(
            "Export an artifact written by `autoshrink search` or `apply` to ONNX (run and "
            "checked in onnxruntime) or TorchScript (torch.jit). The outputs must match the "
            "artifact's within the documented tolerance, else nothing is written."
        ),
    )
    p.add_argument("artifact", help="the .safetensors artifact")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (checked in onnxruntime) or torchscript (default: %(default)s)",
    )
    p.add_argument(
        "--out", default=None, help="output file (default: next to the artifact, named after it)"
    )
    p.add_argument(
        "--exporter", choices=EXPORTERS, default="auto", help="ONNX exporter (default: %(default)s)"
    )
    p.add_argument(
        "--int8", action="store_true", help="export the real int8 path as QDQ ONNX (default: off)"
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset whose train split calibrates --int8 (default: none)",
    )
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument(
        "--calib-batches",
        type=int,
        default=8,
        help="calibration batches of --int8 (default: %(default)s)",
    )
    add_model_flags(p)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def check_flags(args: argparse.Namespace) -> Path:
    """Every flag of ``export``, checked before any file is read or model built.

    Returns:
        The output file (``--out``, or next to the artifact with the format's suffix).
    """
    from autoshrink.compression.export import SUFFIXES, check_output_path

    path = Path(args.artifact)
    check_artifact_flag(path)
    if args.int8 and args.dataset is None:
        raise AutoshrinkError("--int8 needs --dataset, whose train split calibrates it")
    if args.calib_batches < 1:
        raise AutoshrinkError(f"--calib-batches must be at least 1, got {args.calib_batches}")
    check_count(args.calib_batches, "--calib-batches", MAX_CALIB_BATCHES)
    check_dataset_flag(args.dataset)
    check_model_flag(args.model)
    out = Path(args.out) if args.out is not None else path.with_suffix(SUFFIXES[args.format])
    inputs = [path] + ([Path(args.model.rpartition(":")[0])] if args.model else [])
    return check_output_path(out, inputs)


def _dense_from_sparse(artifact: Path, out: Path, fmt: str) -> bool:
    """Say, in one line on stderr, that a sparse artifact exports dense; whether it did."""
    from autoshrink.compression.artifact import read_header

    if not read_header(artifact).sparse:
        return False
    err_console.print(
        f"note: {artifact.name} has sparse layers; {out.name} ({fmt}) holds them dense, "
        "zeros included, since ONNX Runtime has no sparse convolution kernel",
        highlight=False,
        soft_wrap=True,
    )
    return True


def run(args: argparse.Namespace) -> int:
    """Export, check, and report the file, exporter and output difference."""
    from autoshrink.compression.export import export

    out = check_flags(args)
    path = Path(args.artifact)
    calibration = None
    if args.int8:
        from autoshrink.compression.data import load_dataset

        data = load_dataset(args.dataset, args.data_dir)
        calibration = data.loader("train", batch_size=64, shuffle=True, seed=0)
    with err_console.status(f"exporting {path.name} to {args.format}"):
        info = export(
            path,
            args.format,
            out,
            int8=args.int8,
            calibration=calibration,
            calib_batches=args.calib_batches,
            exporter=args.exporter,
            factory=args.model,
            allow_changed_factory=args.allow_changed_model,
        )
    sparse = _dense_from_sparse(path, info.path, info.format)
    report = {
        "dense_from_sparse": sparse,
        "path": str(info.path),
        "format": info.format,
        "exporter": info.exporter,
        "int8": info.int8,
        "max_abs_diff": info.max_abs_diff,
        "atol": info.atol,
        "rtol": info.rtol,
        "file_bytes": info.file_bytes,
    }
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
        return 0
    table = Table(title=f"{path.name} -> {info.path}")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("format", f"{info.format}{' (int8 QDQ)' if info.int8 else ''}")
    table.add_row("exporter", info.exporter)
    table.add_row("file bytes", f"{info.file_bytes:,}")
    table.add_row("max |exported - PyTorch|", f"{info.max_abs_diff:.3g}")
    table.add_row("tolerance", f"{info.atol:.3g} + {info.rtol:.3g}*|y|")
    console.print(table)
    return 0
