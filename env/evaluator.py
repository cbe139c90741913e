"""The end-of-episode evaluation: compress, recalibrate, optionally fine-tune, score on val.

An :class:`Evaluator` is a pure function of the *realised* policy (channel count per unit,
bits and sparsity per layer): its data batches are fixed at construction and its fine-tune
is seeded, so the same realised policy always gets the same accuracy, whatever was
evaluated before. That makes its cache exact: identical realised policies are scored once.
Sparse layers keep their magnitude mask fixed through the fine-tune.

Each evaluation reports the seconds spent in forward and backward passes (BN
recalibration, fine-tuning, scoring) separately from the rest (pruning, quantizing,
copies), so a benchmark can split episode time into evaluation and framework overhead.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.device import on_device, resolve_device
from autoshrink.compression.evaluate import accuracy, finetune, recalibrate_bn
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import Policy, kept_channels, layer_bits
from autoshrink.compression.prune import prune_channels
from autoshrink.compression.quantize import bake_
from autoshrink.compression.sparsity import fake_quantize_sparse_, layer_sparsity

if TYPE_CHECKING:
    from autoshrink.compression.data import DataSplits
    from autoshrink.compression.units import UnitGraph
    from autoshrink.env.config import EnvConfig

logger = logging.getLogger(__name__)

PolicyKey = tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]]


@dataclass(frozen=True)
class Evaluation:
    """The score of one policy and where the time went.

    Args:
        accuracy: Top-1 accuracy on the val split (or its first ``eval_batches``).
        compute_seconds: Forward and backward passes: recalibration, fine-tune, scoring.
        other_seconds: Everything else: pruning, quantizing, copying.
        cached: Whether the score came from the cache (both times are then 0).
    """

    accuracy: float
    compute_seconds: float
    other_seconds: float
    cached: bool = False


class PolicyEvaluator(Protocol):
    """What the env needs of an evaluator: score a realised policy."""

    def __call__(self, policy: Policy) -> Evaluation:
        """Score ``policy``."""
        ...


class Evaluator:
    """Scores policies on one model, with a cache keyed by the realised policy.

    Args:
        model: The uncompressed, trained model (never modified).
        graph: Its units.
        data: The dataset splits: train batches recalibrate and fine-tune, val scores.
        importance: Channel importance criterion for pruning.
        recalibrate_bn: Re-estimate BatchNorm statistics after compression.
        bn_batches: Train batches for that.
        finetune_steps: SGD steps of fine-tuning (0 = none), under fake quantization.
        finetune_lr: Its peak learning rate.
        distill: Use the uncompressed model as a teacher while fine-tuning.
        eval_batches: Val batches scored; None = all.
        batch_size: Batch size of every loader.
        seed: Seeds the batch order and the fine-tune.
        cache_size: Most policies remembered (least recently used go first).
        device: Where each compressed model is recalibrated, fine-tuned and scored (and the
            teacher runs); ``model`` itself stays where it is, and is pruned there.
    """

    def __init__(
        self,
        model: nn.Module,
        graph: UnitGraph,
        data: DataSplits,
        *,
        importance: str = "l1",
        recalibrate_bn: bool = True,
        bn_batches: int = 4,
        finetune_steps: int = 100,
        finetune_lr: float = 0.01,
        distill: bool = False,
        eval_batches: int | None = None,
        batch_size: int = 64,
        seed: int = 0,
        cache_size: int = 10_000,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model = model.eval()
        self.device = torch.device(device)
        self.graph = graph
        self.data = data
        self.importance = importance
        self.recalibrate = recalibrate_bn and bn_batches > 0
        self.finetune_steps = finetune_steps
        self.finetune_lr = finetune_lr
        self.distill = distill
        self.batch_size = batch_size
        self.seed = seed
        self.cache_size = cache_size
        self.scores = self._channel_scores()
        self.teacher = on_device(self.model, self.device) if distill else None
        # Fixed batches: the same every evaluation, so the score is a function of the policy.
        train = data.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
        self.bn_batches = list(itertools.islice(train, bn_batches)) if self.recalibrate else []
        val = data.loader("val", batch_size=batch_size)
        self.val_batches = list(itertools.islice(val, eval_batches))
        self._cache: OrderedDict[PolicyKey, float] = OrderedDict()
        self.calls = 0
        self.hits = 0

    @classmethod
    def from_config(
        cls, model: nn.Module, graph: UnitGraph, data: DataSplits, config: EnvConfig
    ) -> Evaluator:
        """An evaluator with an :class:`~autoshrink.env.config.EnvConfig`'s settings."""
        return cls(
            model,
            graph,
            data,
            importance=config.importance,
            recalibrate_bn=config.recalibrate_bn,
            bn_batches=config.bn_batches,
            finetune_steps=config.finetune_steps,
            finetune_lr=config.finetune_lr,
            distill=config.distill,
            eval_batches=config.eval_batches,
            batch_size=config.batch_size,
            seed=config.seed,
            device=resolve_device(config.device),
        )

    def _channel_scores(self) -> Any:
        """Channel importance, computed once per model (the policy only picks how many)."""
        from autoshrink.compression.importance import NEEDS_BATCH, channel_scores

        batch = None
        if self.importance in NEEDS_BATCH:  # gradient-based: one seeded train batch
            loader = self.data.loader("train", self.batch_size, shuffle=True, seed=self.seed)
            batch = next(iter(loader))
        return channel_scores(self.graph, self.model, self.importance, batch, seed=self.seed)

    def key(self, policy: Policy) -> PolicyKey:
        """The cache's key: realised channels per unit, bits and sparsity per layer."""
        kept = kept_channels(policy, self.graph)
        bits = layer_bits(policy, self.graph)
        sparsity = layer_sparsity(policy, self.graph)
        return (
            tuple(kept[u.name] for u in self.graph.units),
            tuple(bits[layer.name] for layer in self.graph.layers),
            tuple(sparsity.get(layer.name, 0.0) for layer in self.graph.layers),
        )

    def compress(self, policy: Policy) -> tuple[nn.Module, float, float]:
        """The compressed model, ready to score, and (compute, other) seconds spent."""
        start = time.perf_counter()
        compute = 0.0
        if self.finetune_steps == 0:
            model = apply_policy(self.model, self.graph, policy, self.importance, self.scores)
            model = model.to(self.device)
            other = time.perf_counter() - start
            if self.recalibrate:
                t0 = time.perf_counter()
                recalibrate_bn(model, self.bn_batches, len(self.bn_batches))
                compute += time.perf_counter() - t0
            return model, compute, other
        kept = kept_channels(policy, self.graph)
        bits = {k: b for k, b in layer_bits(policy, self.graph).items() if b < FLOAT_BITS}
        model = prune_channels(
            self.model, self.graph, kept, importance=self.importance, scores=self.scores
        ).to(self.device)
        fake_quantize_sparse_(model, bits, layer_sparsity(policy, self.graph))
        other = time.perf_counter() - start
        t0 = time.perf_counter()
        if self.recalibrate:
            recalibrate_bn(model, self.bn_batches, len(self.bn_batches))
        train = self.data.loader("train", batch_size=self.batch_size, shuffle=True, seed=self.seed)
        steps, lr = self.finetune_steps, self.finetune_lr
        finetune(model, train, steps, lr, teacher=self.teacher, seed=self.seed)
        compute += time.perf_counter() - t0
        t0 = time.perf_counter()
        bake_(model)
        other += time.perf_counter() - t0
        return model, compute, other

    def __call__(self, policy: Policy) -> Evaluation:
        """Score ``policy`` (from the cache if its realised form was seen before)."""
        self.calls += 1
        key = self.key(policy)
        if key in self._cache:
            self.hits += 1
            self._cache.move_to_end(key)
            return Evaluation(self._cache[key], 0.0, 0.0, cached=True)
        model, compute, other = self.compress(policy)
        t0 = time.perf_counter()
        acc = accuracy(model, self.val_batches)
        compute += time.perf_counter() - t0
        self._cache[key] = acc
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        logger.debug("evaluated policy: accuracy %.4f in %.3fs", acc, compute + other)
        return Evaluation(acc, compute, other)
