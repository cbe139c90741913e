"""Accuracy, BatchNorm recalibration, and (distilled) fine-tuning and training.

All of it runs on the device of the model's parameters and logs instead of printing.

>>> import torch
>>> from autoshrink.compression.data import load_dataset
>>> from autoshrink.compression.models import ModelSpec, build_model
>>> splits = load_dataset("digits")
>>> model = build_model(ModelSpec("smallcnn", num_classes=10, in_channels=1))
>>> model = finetune(model, splits.loader("train", shuffle=True), steps=20)
>>> 0.0 <= accuracy(model, splits.loader("val")) <= 1.0
True
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoshrink.compression.data import DataSplits

logger = logging.getLogger(__name__)

Batches = Iterable[Any]  # yields (inputs, labels) pairs, e.g. a DataLoader

MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


#: A model within this many accuracy points of chance has learned (next to) nothing.
NEAR_CHANCE_MARGIN = 0.02


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_model` reached.

    Args:
        val_accuracy: Top-1 accuracy on the val split after the last epoch.
        test_accuracy: Top-1 accuracy on the test split.
        epochs: Epochs trained.
        seconds: Wall-clock training time, evaluation included.
        chance_accuracy: Accuracy of guessing (``1 / classes``), when known; set by
            :func:`autoshrink.compression.baselines.baseline`.
    """

    val_accuracy: float
    test_accuracy: float
    epochs: int
    seconds: float
    chance_accuracy: float | None = None

    def near_chance(
        self, min_accuracy: float | None = None, margin: float = NEAR_CHANCE_MARGIN
    ) -> bool:
        """Whether the test accuracy is within ``margin`` of chance, or under ``min_accuracy``.

        A search on such a baseline compresses a model that learned nothing, and its
        "points kept" mean nothing: callers report it (a warning, ``result.json``).

        >>> TrainResult(0.11, 0.105, 1, 1.0, chance_accuracy=0.1).near_chance()
        True
        >>> TrainResult(0.97, 0.96, 20, 9.0, chance_accuracy=0.1).near_chance(min_accuracy=0.98)
        True
        """
        if min_accuracy is not None and self.test_accuracy < min_accuracy:
            return True
        chance = self.chance_accuracy
        return chance is not None and self.test_accuracy <= chance + margin


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def accuracy(model: nn.Module, loader: Batches, max_batches: int | None = None) -> float:
    """Top-1 accuracy of ``model`` over ``loader``, in eval mode and without autograd.

    The model's train/eval mode is restored afterwards.

    Args:
        model: A classifier returning logits.
        loader: Yields ``(inputs, labels)`` batches.
        max_batches: Stop after this many batches (a cheap estimate); all when None.

    Returns:
        The fraction of correct predictions, in [0, 1].

    Raises:
        ValueError: If the loader yields no samples.
    """
    device = _device(model)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        with torch.inference_mode():
            for x, y in itertools.islice(loader, max_batches):
                y = y.to(device, non_blocking=True)
                correct += int((model(x.to(device, non_blocking=True)).argmax(dim=1) == y).sum())
                total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("accuracy: the loader yielded no samples")
    return correct / total


def recalibrate_bn(model: nn.Module, loader: Batches, n_batches: int = 10) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on a few batches (EagleEye).

    After pruning, the stored statistics no longer match the activations; recomputing
    them as a cumulative average over ``n_batches`` makes accuracy before fine-tuning
    meaningful. Only the BatchNorm layers run in train mode, so dropout stays off.

    Args:
        model: Changed in place.
        loader: Yields ``(inputs, labels)`` batches, typically from the train split.
        n_batches: Batches to average over (fewer if the loader runs out).

    Returns:
        The same model, in eval mode, with each BatchNorm's momentum restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    if not norms:
        return model
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
        bn.train()
    device = _device(model)
    try:
        # no_grad, not inference_mode: the updated buffers must stay usable for autograd.
        with torch.no_grad():
            for x, _ in itertools.islice(loader, n_batches):
                model(x.to(device, non_blocking=True))
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        model.eval()
    return model


def _cycle(loader: Batches) -> Iterator[Any]:
    """Iterate over ``loader`` again and again (a new pass, so a new shuffle, each time)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("finetune: the loader yielded no batches")


def _distill_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    # Hinton et al.: soft targets at temperature T, scaled by T^2 to keep gradient sizes.
    soft = F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(logits, labels)
    return (1.0 - alpha) * hard + alpha * temperature**2 * soft


def _cosine_sgd(
    model: nn.Module, lr: float, steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with Nesterov momentum and weight decay, its rate a cosine from ``lr`` to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(
        params, lr=lr, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / steps))
    )
    return optimizer, schedule


def _loss(
    model: nn.Module,
    teacher: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    distill_alpha: float,
    temperature: float,
) -> torch.Tensor:
    """The fine-tune's loss on one batch: cross-entropy, or distillation with a teacher."""
    logits = model(x)
    if teacher is None:
        return F.cross_entropy(logits, y)
    with torch.no_grad():
        teacher_logits = teacher(x)
    return _distill_loss(logits, y, teacher_logits, distill_alpha, temperature)


def finetune(
    model: nn.Module,
    loader: Batches,
    steps: int,
    lr: float = 0.01,
    teacher: nn.Module | None = None,
    distill_alpha: float = 0.5,
    temperature: float = 4.0,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` for ``steps`` SGD steps, optionally distilling from ``teacher``.

    SGD with Nesterov momentum 0.9 and weight decay 5e-4; the learning rate follows a
    cosine from ``lr`` to 0 over the steps. The loader is cycled as often as needed.
    Inside, the global torch RNG is seeded with ``seed`` (and restored afterwards), so a
    loader whose order comes from its own seeded generator, or from the global RNG,
    gives the same result for the same seed.

    Args:
        model: Changed in place.
        loader: Yields ``(inputs, labels)`` batches.
        steps: Optimiser steps; 0 leaves the weights alone.
        lr: Peak learning rate.
        teacher: If given, its logits are soft targets (the teacher is put in eval mode).
        distill_alpha: Weight of the distillation term; ``1 - distill_alpha`` goes to
            cross-entropy on the labels.
        temperature: Softmax temperature of the distillation term.
        seed: Seeds the global RNG for the duration (shuffling, dropout).
        on_step: Called after every step with ``(step, loss)``, ``step`` counting from 1.
            The model may be evaluated there: it is put back in train mode every step.

    Returns:
        The same model, in eval mode.
    """
    if steps < 0:
        raise ValueError(f"finetune: steps must be >= 0, got {steps}")
    if steps == 0:
        return model.eval()
    device = _device(model)
    optimizer, schedule = _cosine_sgd(model, lr, steps)
    if teacher is not None:
        teacher.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        batches = _cycle(loader)
        for step in range(1, steps + 1):
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            model.train()
            loss = _loss(model, teacher, x, y, distill_alpha, temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if on_step is not None:
                on_step(step, float(loss.detach()))
    return model.eval()


def train_model(
    model: nn.Module,
    splits: DataSplits,
    epochs: int,
    lr: float = 0.1,
    batch_size: int = 128,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a model from its current weights: :func:`finetune` over whole epochs.

    Args:
        model: Changed in place.
        splits: Trains on ``train``, reports ``val`` each epoch and ``test`` at the end.
        epochs: Passes over the training split (the cosine spans all of them).
        lr: Peak learning rate.
        batch_size: Samples per step.
        seed: Seeds the shuffling and the global RNG during training.
        on_epoch: Called after every epoch with ``(epoch, val_accuracy)``, from 1.
        on_step: Called after every step with ``(step, steps)``, from 1, for progress.

    Returns:
        Val and test accuracy after the last epoch, epochs and seconds taken.
    """
    start = time.perf_counter()
    train = splits.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
    val = splits.loader("val", batch_size=256)
    per_epoch = len(train)
    val_accuracy = math.nan

    def end_of_epoch(step: int, loss: float) -> None:
        nonlocal val_accuracy
        if on_step is not None:
            on_step(step, epochs * per_epoch)
        if step % per_epoch:
            return
        epoch = step // per_epoch
        val_accuracy = accuracy(model, val)
        logger.info("epoch %d/%d: loss %.4f, val accuracy %.4f", epoch, epochs, loss, val_accuracy)
        if on_epoch is not None:
            on_epoch(epoch, val_accuracy)

    finetune(model, train, steps=epochs * per_epoch, lr=lr, seed=seed, on_step=end_of_epoch)
    if epochs == 0:
        val_accuracy = accuracy(model, val)
    test_accuracy = accuracy(model, splits.loader("test", batch_size=256))
    return TrainResult(val_accuracy, test_accuracy, epochs, time.perf_counter() - start)
