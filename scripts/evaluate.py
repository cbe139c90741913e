"""``autoshrink evaluate ARTIFACT --dataset D``: measure a compressed artifact.

Reports test accuracy, MACs (counted with ``FlopCounterMode``), parameters, payload bytes
(the tensor data stored in the file) and the CPU latency of one forward pass, timed
interleaved with the uncompressed architecture's on ``--runtime`` (median, ratio and its
spread, :mod:`autoshrink.compression.timing`). ``--int8`` evaluates the real int8 path
(:mod:`autoshrink.compression.int8`), calibrated on the dataset's train split.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.compression.metrics import MEASURED_LATENCY
from autoshrink.compression.names import DEFAULT_RUNTIME
from autoshrink.scripts.console import console, err_console
from autoshrink.scripts.options import (
    DATA_DIR_HELP,
    JSON_HELP,
    add_device_flags,
    add_runtime_flag,
    device_line,
    setup_device,
)

#: Largest batch sizes and repeat counts accepted: beyond these a value is a typo.
MAX_BATCH = 1 << 16
MAX_REPEATS = 100_000
#: Calibration batches of ``--int8`` (as ``export --int8``'s).
INT8_CALIB_BATCHES = 8


#: The one line ``autoshrink --help`` shows.
HELP = "measure a compressed artifact: accuracy, MACs, params, bytes, latency"


def add_parser(subparsers: Any) -> None:
    """Register ``evaluate`` and its flags."""
    p = subparsers.add_parser(
        "evaluate",
        help=HELP,
        description=(
            "Load an artifact written by `autoshrink search` (or `apply`) and report its "
            "test accuracy on a dataset, its MACs, parameters, payload bytes and CPU latency."
        ),
    )
    p.add_argument("artifact", help="the .safetensors artifact")
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset whose test split scores it (default: the one the artifact was made on)",
    )
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument(
        "--batch-size", type=int, default=256, help="evaluation batch size (default: %(default)s)"
    )
    p.add_argument(
        "--latency-batch",
        type=int,
        default=1,
        help="batch of the timed pass (default: %(default)s)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=30,
        help="interleaved rounds timing the artifact against its uncompressed architecture "
        "(default: %(default)s)",
    )
    add_runtime_flag(p, "latency")
    p.add_argument(
        "--int8",
        action="store_true",
        help="evaluate the real int8 path (torchao PT2E, compiled), calibrated on the "
        "dataset's train split; every layer must have 8 bits or more (default: off)",
    )
    p.add_argument(
        "--calib-batches",
        type=int,
        default=INT8_CALIB_BATCHES,
        help="train batches that calibrate --int8 (default: %(default)s)",
    )
    add_model_flags(p)
    add_device_flags(p)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--allow-changed-model``: the factory of a user-model artifact."""
    p.add_argument(
        "--model",
        default=None,
        metavar="FILE.py:FN",
        help="for an artifact of a user model: the factory that rebuilds it, whose code runs; "
        "an artifact never imports a file by itself (default: none)",
    )
    p.add_argument(
        "--allow-changed-model",
        action="store_true",
        help="load even if --model's file differs from the one the artifact was made with "
        "(default: off)",
    )


def check_count(value: int, flag: str, most: int) -> None:
    """Refuse a count flag outside ``1..most`` in one line."""
    if not 1 <= value <= most:
        raise AutoshrinkError(f"{flag} must be between 1 and {most:,}, got {value}")


def check_model_flag(model: str | None) -> None:
    """Refuse a ``--model`` that is not an existing ``FILE.py:FUNCTION``."""
    from autoshrink.compression.models import is_factory_ref

    if model is None:
        return
    if not is_factory_ref(model):
        raise AutoshrinkError(f"--model must be FILE.py:FUNCTION (a user factory), got {model!r}")
    path = Path(model.rpartition(":")[0]).expanduser()
    if not path.is_file():
        raise AutoshrinkError(f"--model file not found: {path}")


def check_dataset_flag(name: str | None) -> None:
    """Refuse an unknown ``--dataset`` name before anything is loaded."""
    from autoshrink.compression.data import DATASETS

    if name is None or name.strip().lower().startswith("imagefolder:"):
        return
    if name.strip().lower() not in DATASETS:
        raise AutoshrinkError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")


def check_artifact_flag(path: Path) -> None:
    """Refuse a missing artifact (or a folder) in one line."""
    if not path.is_file():
        raise CheckpointError(f"no artifact at {path}")


def check_flags(args: argparse.Namespace) -> None:
    """Every flag of ``evaluate``, checked before any file is read or model built."""
    check_count(args.batch_size, "--batch-size", MAX_BATCH)
    check_count(args.latency_batch, "--latency-batch", MAX_BATCH)
    check_count(args.repeats, "--repeats", MAX_REPEATS)
    check_count(args.calib_batches, "--calib-batches", MAX_REPEATS)
    check_dataset_flag(args.dataset)
    check_model_flag(args.model)
    check_artifact_flag(Path(args.artifact))


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


@dataclass(frozen=True)
class EvalOptions:
    """How :func:`evaluate_artifact` measures (the flags of ``evaluate``, defaults included)."""

    dataset: str | None = None
    data_dir: str | None = None
    batch_size: int = 256
    latency_batch: int = 1
    repeats: int = 30
    factory: str | None = None
    allow_changed_factory: bool = False
    device: Any = "cpu"
    runtime: str = DEFAULT_RUNTIME
    int8: bool = False
    calib_batches: int = INT8_CALIB_BATCHES


def evaluate_artifact(path: Path, options: EvalOptions | None = None) -> dict[str, Any]:
    """Measure an artifact; the keys are those of ``result.json``'s ``compressed``.

    ``options.dataset`` None scores it on the dataset its policy was made on. ``factory``
    (and ``allow_changed_factory``) rebuild an artifact of a user model, see
    :func:`~autoshrink.compression.artifact.load_artifact`. The accuracy is scored on
    ``device`` (on the CPU for ``int8``); the latency is the CPU's on ``runtime``, timed
    interleaved with the uncompressed architecture (``latency``: medians, ratio, spread).
    """
    import torch

    from autoshrink.compression.artifact import load_artifact, read_header
    from autoshrink.compression.counting import count_macs, count_params
    from autoshrink.compression.device import on_device
    from autoshrink.compression.evaluate import accuracy
    from autoshrink.compression.models import check_input_shape

    o = options or EvalOptions()
    header = read_header(path)  # checked in full; nothing is built or imported yet
    dataset = o.dataset or _made_on(path, header)
    shape = tuple(header.input_shape[1:])
    check_input_shape((o.latency_batch, *shape), "--latency-batch times the artifact's input")
    check_input_shape((o.batch_size, *shape), "--batch-size times the artifact's input")
    model = load_artifact(path, o.factory, allow_changed_factory=o.allow_changed_factory)
    data = _data(dataset, o, shape, path)
    one = torch.zeros((1, *shape))
    macs, params = count_macs(model, one), count_params(model)
    if o.int8:
        model = _int8(model, data, header, o)
    timed = _timed(path, model, torch.zeros((o.latency_batch, *shape)), o)
    scored = model if o.int8 else on_device(model, torch.device(o.device))
    return {
        "artifact": str(path),
        "model": header.spec.name,
        "dataset": dataset,
        "int8": o.int8,
        "accuracy": accuracy(scored, data.loader("test", batch_size=o.batch_size)),
        "macs": macs,
        "params": params,
        "bytes": payload_bytes(path),
        "file_bytes": path.stat().st_size,
        MEASURED_LATENCY: timed.candidate.median,
        "latency_batch": o.latency_batch,
        "latency": {"runtime": o.runtime, "batch": o.latency_batch, **timed.to_dict()},
    }


def _data(dataset: str, o: EvalOptions, shape: tuple[int, ...], path: Path) -> Any:
    """The dataset's splits on the scoring device, refused if its images do not fit."""
    import torch

    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.errors import DataError

    device = torch.device("cpu") if o.int8 else torch.device(o.device)
    data = load_dataset(dataset, data_dir=o.data_dir).for_device(device)
    if (data.in_channels, data.image_size, data.image_size) != shape:
        raise DataError(
            f"{dataset} images are {data.in_channels}x{data.image_size}x{data.image_size}, "
            f"but {path.name} expects {'x'.join(map(str, shape))}"
        )
    return data


def _int8(model: Any, data: Any, header: Any, o: EvalOptions) -> Any:
    """The int8 model of ``model``, calibrated on the train split."""
    from autoshrink.compression.int8 import to_int8

    train = data.loader("train", batch_size=64, shuffle=True, seed=0)
    return to_int8(model, train, o.calib_batches, bits_by_layer=dict(header.weight_bits))


def _timed(path: Path, model: Any, x: Any, o: EvalOptions) -> Any:
    """``model`` timed interleaved against the artifact's uncompressed architecture."""
    from autoshrink.compression.artifact import load_base
    from autoshrink.compression.runtime import runner
    from autoshrink.compression.timing import compare

    base = load_base(path, o.factory, allow_changed_factory=o.allow_changed_factory)
    return compare(runner(base, x, o.runtime), runner(model, x, o.runtime), x, o.repeats)


def _made_on(path: Path, header: Any) -> str:
    """The dataset an artifact's policy was searched (or applied) on."""
    meta = getattr(header.policy, "meta", {})
    name = meta.get("dataset") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise AutoshrinkError(f"{path} does not say which dataset it was made on; pass --dataset")
    check_dataset_flag(name)
    return name


def run(args: argparse.Namespace) -> int:
    """Evaluate the artifact and print a table (or JSON)."""
    device = setup_device(args)  # a device this machine lacks is refused before any work
    check_flags(args)
    path = Path(args.artifact)
    options = EvalOptions(
        args.dataset,
        args.data_dir,
        args.batch_size,
        args.latency_batch,
        args.repeats,
        args.model,
        args.allow_changed_model,
        device,
        args.runtime or DEFAULT_RUNTIME,
        args.int8,
        args.calib_batches,
    )
    if args.json:
        report = evaluate_artifact(path, options)
        sys.stdout.write(json.dumps(report) + "\n")  # plain JSON for pipes, no rich markup
        return 0
    where = device_line(args.device, device)
    with err_console.status(f"evaluating {path.name} on {args.dataset or 'its dataset'}, {where}"):
        report = evaluate_artifact(path, options)
    console.print(_table(report, where.removeprefix("device ")))
    if report["latency"]["warning"]:
        err_console.print(f"warning: {report['latency']['warning']}", highlight=False)
    return 0


def _table(report: dict[str, Any], where: str) -> Table:
    """The report as a rich table."""
    int8 = " (int8)" if report["int8"] else ""
    table = Table(
        title=f"{Path(report['artifact']).name} ({report['model']}){int8} on {report['dataset']}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("test accuracy", f"{report['accuracy']:.2%}")
    table.add_row("scored on", "cpu" if report["int8"] else where)
    table.add_row("MACs", f"{report['macs']:,}")
    table.add_row("params", f"{report['params']:,}")
    table.add_row("bytes (payload)", f"{report['bytes']:,}")
    table.add_row("file bytes", f"{report['file_bytes']:,}")
    lat = report["latency"]
    label = f"CPU latency ({lat['runtime']}, batch {lat['batch']})"
    table.add_row(label, f"{1e3 * report[MEASURED_LATENCY]:.3f} ms")
    table.add_row("uncompressed latency", f"{1e3 * lat['baseline']['median_s']:.3f} ms")
    table.add_row("latency ratio (interleaved)", f"{lat['ratio']:.3f}x ± {lat['spread']:.0%}")
    return table
