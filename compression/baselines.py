"""Trained base models, cached on disk so that each is trained once.

A baseline is keyed by everything that decides its weights: the model spec, the model's
source (a factory file's resolved path and SHA-256; the torchvision version for its
models), the dataset, epochs, seed, learning rate and batch size. So an edited factory,
or two ``mynet.py`` in two folders, never reuse each other's weights, and the log says why
a baseline is trained again. The state dict is written atomically next to a small JSON
file with the accuracies reached, so a second call (or a concurrent one) loads instead of
training. A baseline near chance (see :meth:`TrainResult.near_chance`) is logged as a
warning.

>>> spec = ModelSpec("resnet20", num_classes=10, in_channels=1)
>>> baseline_path(spec, "digits", epochs=20).name.startswith("resnet20-digits-e20-s0-")
True
>>> model, path = baseline(spec, "digits")  # doctest: +SKIP (trains once, then loads)
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.cache import cache_dir
from autoshrink.compression.data import DataSplits, load_dataset
from autoshrink.compression.documents import read_document
from autoshrink.compression.errors import AutoshrinkError, CheckpointError, DataError
from autoshrink.compression.evaluate import TrainResult, train_model
from autoshrink.compression.json_write import write_document
from autoshrink.compression.model_check import check_classifier
from autoshrink.compression.models import (
    TIMM_PREFIX,
    ZOO_MODELS,
    ModelSpec,
    build_model,
    factory_source,
    is_factory_ref,
    load_weights,
)
from autoshrink.compression.names import (  # noqa: F401  (re-exported: their old home)
    DEFAULT_BATCH_SIZE,
    DEFAULT_DATASET,
    DEFAULT_LR,
    DEFAULT_MODEL,
    default_epochs,
)
from autoshrink.compression.versioned import unwrap

logger = logging.getLogger(__name__)

RECORD_TYPE = "autoshrink.BaselineRecord"
RECORD_VERSION = 1


def model_source(name: str) -> dict[str, str]:
    """What decides a model's code besides its spec, for the cache key.

    A factory ``file.py:fn``: the file's resolved path and the SHA-256 of its bytes (the
    file is read, not imported). A timm or torchvision model: that library's version. A zoo
    model: nothing (its code is autoshrink's).

    Raises:
        UnsupportedModelError: If a factory's file cannot be read.
    """
    if is_factory_ref(name):
        source = factory_source(name)
        return {"path": source.path, "sha256": source.sha256}
    if name in ZOO_MODELS:
        return {}
    if name.startswith(TIMM_PREFIX):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {"timm": version("timm")}
        except PackageNotFoundError:
            return {"timm": "missing"}  # building the model then says which extra to install
    import torchvision

    return {"torchvision": str(torchvision.__version__)}


def _key(
    spec: ModelSpec,
    dataset: str,
    epochs: int,
    seed: int,
    lr: float,
    batch_size: int,
    variant: str,
) -> dict[str, Any]:
    key: dict[str, Any] = {
        "spec": spec.to_dict(),
        "dataset": dataset,
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
    }
    if variant:
        key["variant"] = variant
    if source := model_source(spec.name):  # zoo keys stay as they were: caches stay valid
        key["source"] = source
    return key


def baseline_path(
    spec: ModelSpec,
    dataset: str,
    epochs: int,
    seed: int = 0,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    variant: str = "",
) -> Path:
    """Where the baseline with these settings is (or will be) cached.

    The file name reads ``MODEL-DATASET-eEPOCHS-sSEED-HASH.pt``; the hash covers every
    setting, so names that had to be shortened or sanitised cannot collide. ``variant``
    (``DataSplits.variant``) keeps a model trained on a training subset or another val
    fraction apart from one trained on the default splits. The hash also covers
    :func:`model_source`, so editing a factory file gives a new entry.
    """
    key = _key(spec, dataset, epochs, seed, lr, batch_size, variant)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    slug = "-".join(
        re.sub(r"[^A-Za-z0-9_.]+", "_", part)[-40:]
        for part in (spec.name, dataset, f"e{epochs}", f"s{seed}", digest)
    )
    return cache_dir() / "baselines" / f"{slug}.pt"


def read_result(path: Path) -> TrainResult | None:
    """The :class:`TrainResult` stored next to a cached baseline, if there is a readable one.

    Its ``chance_accuracy`` is ``1 / num_classes`` of the stored spec (also for records
    written before it was stored).
    """
    try:
        data = _record(path.with_suffix(".json"))
        result = dict(data["result"])
        fields = ("val_accuracy", "test_accuracy", "epochs", "seconds", "chance_accuracy")
        out = TrainResult(**{k: result[k] for k in fields if k in result})
        if out.chance_accuracy is None:
            out = replace(out, chance_accuracy=1.0 / int(data["spec"]["num_classes"]))
        return out
    except (AutoshrinkError, AssertionError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return None


def _record(path: Path) -> dict[str, Any]:
    """The record beside a cached baseline (autoshrink 0.1 wrote it without the envelope).

    Raises:
        AutoshrinkError: If it is unreadable or not a baseline record.
    """
    data = read_document(path, "baseline record", max_bytes=1 << 20)
    if isinstance(data, dict) and "type" not in data:
        return data
    return unwrap(data, RECORD_TYPE, RECORD_VERSION, f"baseline record {path}")


def _why_training(path: Path, key: dict[str, Any]) -> tuple[str, bool]:
    """Why ``path`` is not cached: a changed model source (True), or no entry (False)."""
    prefix = path.stem.rsplit("-", 1)[0]
    for other in sorted(path.parent.glob(f"{glob.escape(prefix)}-*.json")):
        try:
            meta = _record(other)
        except AutoshrinkError:
            continue
        old = meta.get("key")
        if not isinstance(old, dict) or other.with_suffix(".pt") == path:
            continue
        rest = {k: v for k, v in key.items() if k != "source"}
        if {k: v for k, v in old.items() if k != "source"} == rest:
            was, now = old.get("source") or {}, key.get("source") or {}
            change = ", ".join(
                f"{k} {str(was.get(k))[:12]} -> {str(now.get(k))[:12]}"
                for k in sorted(set(was) | set(now))
                if was.get(k) != now.get(k) and k != "path"
            )
            return f"the model's source changed since {other.name} ({change})", True
    return "no cached baseline with these settings", False


def _warn_if_near_chance(
    result: TrainResult | None, spec: ModelSpec, dataset: str, min_accuracy: float | None
) -> None:
    if result is not None and result.near_chance(min_accuracy):
        chance = result.chance_accuracy or 0.0
        logger.warning(
            "the %s baseline on %s is near chance: test accuracy %.2f%% (chance %.2f%%%s); "
            "train it longer (--epochs) before compressing it",
            spec.name,
            dataset,
            100 * result.test_accuracy,
            100 * chance,
            f", threshold {100 * min_accuracy:.2f}%" if min_accuracy is not None else "",
        )


def baseline(
    spec: ModelSpec,
    dataset: str,
    epochs: int | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    *,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    splits: DataSplits | None = None,
    retrain: bool = False,
    min_accuracy: float | None = None,
    on_step: Callable[[int, int], None] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, Path]:
    """Return a trained ``spec`` model for ``dataset``, training it only if not cached.

    Args:
        spec: The model to build; its ``num_classes`` and ``in_channels`` must fit the data.
        dataset: A dataset name (see :data:`autoshrink.compression.data.DATASETS`).
        epochs: Training epochs; :func:`default_epochs` when None.
        seed: Seeds the initial weights, the val split and the batch order.
        data_dir: Where the dataset files are (see :func:`load_dataset`).
        on_epoch: Called after each trained epoch with ``(epoch, val_accuracy)``.
        lr: Peak learning rate.
        batch_size: Samples per step.
        splits: The already-loaded dataset, to avoid loading it twice.
        retrain: Train even if a cached baseline exists, and replace it.
        min_accuracy: Warn (log) when the test accuracy is under this, or within 2 points
            of chance (:meth:`TrainResult.near_chance`; :func:`read_result` reports it).
        on_step: Called after each training step with ``(step, steps)``, for progress.
        device: Where it trains (the cache does not depend on it: it is saved from the CPU).

    Returns:
        The trained model in eval mode on the CPU, and the path of its cached state dict.

    Raises:
        DataError: If the dataset cannot be loaded or does not fit ``spec``.
        UnsupportedModelError: If ``spec`` names no buildable model.
    """
    epochs = default_epochs(dataset) if epochs is None else epochs
    variant = splits.variant if splits is not None else ""
    key = _key(spec, dataset, epochs, seed, lr, batch_size, variant)
    path = baseline_path(spec, dataset, epochs, seed, lr, batch_size, variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):  # others wait for the first to train it
        if path.is_file() and not retrain:
            cached = _load_cached(spec, path)
            if cached is not None:
                _warn_if_near_chance(read_result(path), spec, dataset, min_accuracy)
                return cached, path
        elif not retrain:
            why, changed = _why_training(path, key)
            (logger.warning if changed else logger.info)("training the baseline again: %s", why)
        if splits is None:
            splits = load_dataset(dataset, data_dir=data_dir, seed=seed)
        model, result = _train(spec, dataset, splits, key, (on_epoch, on_step), path, device)
        _warn_if_near_chance(result, spec, dataset, min_accuracy)
        return model, path


def _load_cached(spec: ModelSpec, path: Path) -> nn.Module | None:
    try:
        model = load_weights(build_model(spec), path).eval()
    except CheckpointError as exc:
        logger.warning("cached baseline unusable, training again: %s", exc)
        return None
    logger.info("loaded cached baseline %s", path)
    return model


def _train(
    spec: ModelSpec,
    dataset: str,
    splits: DataSplits,
    key: dict[str, Any],
    progress: tuple[Callable[[int, float], None] | None, Callable[[int, int], None] | None],
    path: Path,
    device: torch.device | str,
) -> tuple[nn.Module, TrainResult]:
    """Train, record and cache one baseline (under the caller's lock)."""
    if (splits.num_classes, splits.in_channels) != (spec.num_classes, spec.in_channels):
        raise DataError(
            f"{dataset} has {splits.num_classes} classes and {splits.in_channels} channels, "
            f"but the model spec has {spec.num_classes} and {spec.in_channels}"
        )
    seed, lr, batch_size, epochs = key["seed"], key["lr"], key["batch_size"], key["epochs"]
    splits = splits.for_device(torch.device(device))  # pinned batches feed CUDA faster
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)  # initialised on the CPU: the same on any device
    check_classifier(model, splits.example_input(2), spec.num_classes, spec.name)
    model = model.to(device)
    logger.info("training %s on %s for %d epochs on %s", spec.name, dataset, epochs, device)
    on_epoch, on_step = progress
    result = train_model(
        model,
        splits,
        epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        on_epoch=on_epoch,
        on_step=on_step,
    )
    result = replace(result, chance_accuracy=1.0 / spec.num_classes)
    meta = {"spec": spec.to_dict(), "dataset": dataset, "seed": seed, "lr": lr}
    meta |= {"batch_size": batch_size, "result": asdict(result), "key": key}
    write_document(path.with_suffix(".json"), RECORD_TYPE, RECORD_VERSION, meta)
    model = model.cpu()  # the cached file loads on any machine
    write_atomic(path, lambda p: torch.save(model.state_dict(), p))
    logger.info("saved baseline %s (val %.4f)", path, result.val_accuracy)
    return model.eval(), result
