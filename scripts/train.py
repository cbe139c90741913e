"""``autoshrink train``: train (or fetch from the cache) a baseline model to compress."""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import Progress, TextColumn
from rich.table import Table

from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.scripts.console import LineProgress, console, err_console, make_progress
from autoshrink.scripts.options import (
    add_device_flags,
    device_line,
    positive_float,
    setup_device,
)

if TYPE_CHECKING:
    from torch import nn

#: The one line ``autoshrink --help`` shows (torch is imported only when ``train`` runs).
HELP = "train a baseline model (cached: a second run is instant)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train`` subcommand."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help=HELP,
        description=(
            "Train a model on a dataset and save its state dict. The result is cached in "
            "$AUTOSHRINK_CACHE (else $XDG_CACHE_HOME/autoshrink, else ~/.cache/autoshrink), "
            "keyed by model, dataset, epochs, seed, learning rate and batch size, so the same "
            "command run again loads it instead of training."
        ),
    )
    # The order of the calls is the order of the flags in --help.
    _add_model_arguments(parser)
    _add_training_arguments(parser)
    _add_output_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model and data flags: ``--model``, ``--dataset``, ``--data-dir``."""
    from autoshrink.compression.names import DATASETS, DEFAULT_DATASET, DEFAULT_MODEL, ZOO_MODELS

    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a zoo model ({', '.join(ZOO_MODELS)}), a torchvision model name, or "
        "path/to/file.py:factory (default: %(default)s)",
    )
    parser.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"one of {', '.join(DATASETS)} (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder that holds the dataset files, or receives their download "
        "(default: the cache's datasets folder)",
    )


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the training run: ``--epochs``, ``--lr``, ``--batch-size``, ``--seed``."""
    from autoshrink.compression.names import DEFAULT_BATCH_SIZE, DEFAULT_LR, default_epochs

    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="training epochs (default: per dataset: "
        f"{default_epochs('digits')} for digits, {default_epochs('fashion-mnist')} for "
        "fashion-mnist)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float(),
        default=DEFAULT_LR,
        help="peak SGD learning rate (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="samples per step (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the weights, the val split and the batch order (default: %(default)s)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the result goes, and whether to retrain: ``--out``, ``--retrain``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="CKPT",
        help="also write the state dict here, as .pt or .safetensors "
        "(default: only the cache file is written)",
    )
    parser.add_argument(
        "--train-subset",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on N seeded, class-balanced training images only, for a quick baseline "
        "(cached apart from the full one) (default: all)",
    )
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="train even if a cached result exists (default: off)",
    )
    add_device_flags(parser)


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a folder, lies below a file, or cannot be written."""
    if out.is_dir():
        raise AutoshrinkError(f"--out {out} is a folder; name a file such as {out / 'model.pt'}")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise AutoshrinkError(f"--out {out} lies below {parent}, which is a file")
    if parent is not None:  # a file made and removed: os.access says yes to root on /proc
        try:
            with tempfile.TemporaryFile(dir=parent):
                pass
        except OSError as exc:
            raise AutoshrinkError(
                f"--out {out} cannot be written: no file can be made in {parent} "
                f"({exc.strerror or exc})"
            ) from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    """Train or load the baseline, copy it to ``--out`` and print a summary."""
    from autoshrink.compression.baselines import baseline, baseline_path, default_epochs
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.model_check import check_classifier
    from autoshrink.compression.models import ModelSpec, build_model

    device = setup_device(args)  # a device this machine lacks is refused before any work
    if args.out is not None:  # checked before minutes of training, not after them
        _check_out(Path(args.out))
    splits = load_dataset(
        args.dataset, data_dir=args.data_dir, seed=args.seed, train_subset=args.train_subset
    )
    spec = ModelSpec.for_data(args.model, splits)
    # an unknown model, or one that cannot classify this data, fails here, in one line
    check_classifier(build_model(spec), splits.example_input(2), spec.num_classes, args.model)
    epochs = args.epochs if args.epochs is not None else default_epochs(args.dataset)
    options: dict[str, Any] = {
        "lr": args.lr,
        "batch_size": args.batch_size,
        "splits": splits,
        "retrain": args.retrain,
        "device": device,
    }
    cached = baseline_path(
        spec, args.dataset, epochs, args.seed, args.lr, args.batch_size, splits.variant
    )
    if cached.is_file() and not args.retrain:
        model, path = baseline(spec, args.dataset, epochs, args.seed, **options)
        console.print("[green]cached:[/] trained before, loaded (--retrain to train again)")
    else:
        steps = math.ceil(len(splits.train) / args.batch_size)
        with make_progress(TextColumn("val acc {task.fields[val]}")) as progress:
            what = f"training {args.model}, {device_line(args.device, device)}"
            shown = trainer_progress(progress, what, epochs, steps)
            model, path = baseline(spec, args.dataset, epochs, args.seed, **shown, **options)
    if args.out is not None:
        _save_copy(model, path, args.out)
    _summary(args, epochs, path)
    return 0


def _summary(args: argparse.Namespace, epochs: int, path: Path) -> None:
    from autoshrink.compression.baselines import read_result

    table = Table(title="baseline", show_header=False)
    table.add_row("model", args.model)
    table.add_row("dataset", args.dataset)
    table.add_row("epochs", str(epochs))
    result = read_result(path)
    if result is not None:
        table.add_row("val accuracy", f"{result.val_accuracy:.2%}")
        table.add_row("test accuracy", f"{result.test_accuracy:.2%}")
        table.add_row("train time", f"{result.seconds:.1f} s")
    console.print(table)
    # Paths go outside the table, which would cut them: they are there to be copied.
    if args.out is not None:
        console.print(f"saved to {args.out}", soft_wrap=True, highlight=False)
    console.print(f"cached at {path}", soft_wrap=True, highlight=False)


def _save_copy(model: nn.Module, cached: Path, out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
        else:
            shutil.copyfile(cached, out)
    except OSError as exc:
        raise CheckpointError(f"cannot write {out}: {exc.strerror or exc}") from exc


def ensure_baseline(cfg: Any, data: Any = None) -> Any:
    """Train the cached baseline an env of ``cfg`` loads, if it is missing, saying so first.

    A search or apply without ``--checkpoint`` compresses the cached baseline, and trains
    it when there is none: that is announced in one line (model, data, epochs), then shown
    epoch by epoch, instead of hiding behind "preparing".

    Args:
        cfg: The env's :class:`~autoshrink.env.config.EnvConfig`.
        data: The dataset, if loaded already.

    Returns:
        The dataset, loaded as the env loads it (pass it on), or ``data`` when ``cfg``
        names a checkpoint.
    """
    if cfg.checkpoint is not None:
        return data
    from autoshrink.compression.baselines import (
        DEFAULT_BATCH_SIZE,
        baseline,
        baseline_path,
        default_epochs,
    )
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.device import resolve_device
    from autoshrink.compression.model_check import check_classifier
    from autoshrink.compression.models import ModelSpec, build_model

    data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir, cfg.seed)
    spec = ModelSpec.for_data(cfg.model, data)
    epochs = cfg.baseline_epochs if cfg.baseline_epochs is not None else default_epochs(cfg.dataset)
    if baseline_path(spec, cfg.dataset, epochs, cfg.seed, variant=data.variant).is_file():
        return data
    # an unknown model, or one that cannot classify this data, is refused before the notice
    check_classifier(build_model(spec), data.example_input(2), spec.num_classes, cfg.model)
    err_console.print(
        f"no cached {cfg.model} baseline on {cfg.dataset}: training it first, {epochs} epochs "
        f"over {len(data.train):,} images (once; later runs load it; --baseline-epochs N "
        "for fewer)",
        highlight=False,
        soft_wrap=True,
    )
    steps = math.ceil(len(data.train) / DEFAULT_BATCH_SIZE)
    with make_progress(TextColumn("val acc {task.fields[val]}")) as progress:
        shown = trainer_progress(progress, f"training the {cfg.model} baseline", epochs, steps)
        baseline(
            spec,
            cfg.dataset,
            epochs,
            cfg.seed,
            cfg.data_dir,
            splits=data,
            min_accuracy=cfg.min_baseline_accuracy,
            device=resolve_device(cfg.device),
            **shown,
        )
    return data


def trainer_progress(
    progress: Progress | LineProgress, description: str, epochs: int, steps_per_epoch: int
) -> dict[str, Any]:
    """``on_epoch`` and ``on_step`` for :func:`baseline` that move a progress task.

    On a terminal the bar counts batches, so that its time left is right from the first
    minutes of a long epoch; piped, a line per batch would flood the log, so it counts
    epochs (one line each). The val accuracy follows each epoch.
    """
    per_batch = not isinstance(progress, LineProgress)
    total = epochs * steps_per_epoch if per_batch else epochs
    task = progress.add_task(description, total=total, val="-")

    def on_epoch(epoch: int, val_accuracy: float) -> None:
        done = epoch * steps_per_epoch if per_batch else epoch
        progress.update(task, completed=done, val=f"{val_accuracy:.2%}")

    def on_step(step: int, steps: int) -> None:
        if per_batch:
            progress.update(task, completed=step, total=steps)

    return {"on_epoch": on_epoch, "on_step": on_step}
