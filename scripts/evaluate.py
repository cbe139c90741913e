"""``autoshrink evaluate ARTIFACT --dataset D``: measure a compressed artifact.

Reports test accuracy, MACs (counted with ``FlopCounterMode``), parameters, payload bytes
(the tensor data stored in the file) and the median CPU latency of one forward pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from autoshrink.compression.errors import CheckpointError
from autoshrink.scripts.console import console, err_console


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate`` and its flags."""
    p = subparsers.add_parser(
        "evaluate",
        help="measure a compressed artifact: accuracy, MACs, params, bytes, latency",
        description=(
            "Load an artifact written by `autoshrink search` (or `apply`) and report its "
            "test accuracy on a dataset, its MACs, parameters, payload bytes and CPU latency."
        ),
    )
    p.add_argument("artifact", help="the .safetensors artifact")
    p.add_argument("--dataset", required=True, help="dataset to score on (its test split)")
    p.add_argument("--data-dir", default=None, help="where the dataset files are")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (256)")
    p.add_argument("--latency-batch", type=int, default=1, help="batch of the timed pass (1)")
    p.add_argument("--repeats", type=int, default=30, help="timed passes, median taken (30)")
    p.add_argument("--json", action="store_true", help="print only JSON")
    p.set_defaults(func=run)


def payload_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file (its payload, without the header)."""
    from safetensors import safe_open

    total = 0
    try:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                t = fh.get_tensor(key)
                total += t.numel() * t.element_size()
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read artifact {path}: {exc}") from exc
    return total


def evaluate_artifact(
    path: Path,
    dataset: str,
    data_dir: str | None = None,
    batch_size: int = 256,
    latency_batch: int = 1,
    repeats: int = 30,
) -> dict[str, Any]:
    """Measure an artifact; the keys are those of ``result.json``'s ``compressed``."""
    import torch

    from autoshrink.compression.artifact import load_artifact, read_header
    from autoshrink.compression.counting import count_macs, count_params
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.errors import DataError
    from autoshrink.compression.evaluate import accuracy
    from autoshrink.env.latency import time_forward

    model = load_artifact(path)
    header = read_header(path)
    data = load_dataset(dataset, data_dir=data_dir)
    shape = tuple(header.input_shape[1:])
    if (data.in_channels, data.image_size, data.image_size) != shape:
        raise DataError(
            f"{dataset} images are {data.in_channels}x{data.image_size}x{data.image_size}, "
            f"but {path.name} expects {'x'.join(map(str, shape))}"
        )
    one = torch.zeros((1, *shape))
    return {
        "artifact": str(path),
        "model": header.spec.name,
        "dataset": dataset,
        "accuracy": accuracy(model, data.loader("test", batch_size=batch_size)),
        "macs": count_macs(model, one),
        "params": count_params(model),
        "bytes": payload_bytes(path),
        "file_bytes": path.stat().st_size,
        "latency_ms": 1e3 * time_forward(model, torch.zeros((latency_batch, *shape)), repeats),
        "latency_batch": latency_batch,
    }


def run(args: argparse.Namespace) -> int:
    """Evaluate the artifact and print a table (or JSON)."""
    path = Path(args.artifact)
    if not path.is_file():
        raise CheckpointError(f"no artifact at {path}")
    if args.json:
        report = evaluate_artifact(
            path, args.dataset, args.data_dir, args.batch_size, args.latency_batch, args.repeats
        )
        sys.stdout.write(json.dumps(report) + "\n")  # plain JSON for pipes, no rich markup
        return 0
    with err_console.status(f"evaluating {path.name} on {args.dataset}"):
        report = evaluate_artifact(
            path, args.dataset, args.data_dir, args.batch_size, args.latency_batch, args.repeats
        )
    table = Table(title=f"{path.name} ({report['model']}) on {args.dataset}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("test accuracy", f"{report['accuracy']:.2%}")
    table.add_row("MACs", f"{report['macs']:,}")
    table.add_row("params", f"{report['params']:,}")
    table.add_row("bytes (payload)", f"{report['bytes']:,}")
    table.add_row("file bytes", f"{report['file_bytes']:,}")
    table.add_row(f"CPU latency (batch {args.latency_batch})", f"{report['latency_ms']:.3f} ms")
    console.print(table)
    return 0
