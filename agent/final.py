"""The end of a search: fine-tune the best policy's model, save the artifact, write result.json.

The search scores policies on the val split after a short, cheap evaluation. The model a
user gets is the best policy applied once more and fine-tuned for longer (optionally
distilling from the original), under fake quantization so that the fine-tune sees the
weights it will ship with. Its accuracy is measured on the *test* split, on the artifact as
loaded back from disk, next to the original model's test accuracy.

With ``FinalConfig.finalists > 1``, the few best distinct policies of the search are each
fine-tuned that way and scored on the whole val split, and the best of them ships
(:mod:`autoshrink.agent.finalists`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from torch import nn

from autoshrink.agent.finalists import Candidate, top_candidates
from autoshrink.agent.run_folder import RunFolder, write_json
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import Policy, kept_channels, layer_bits

logger = logging.getLogger(__name__)

RESULT_TYPE = "autoshrink.SearchRunResult"
RESULT_VERSION = 1
#: budget metric -> result key.
METRIC_KEYS = {"flops": "macs", "params": "params", "size": "bytes", "latency": "latency_s"}


@dataclass(frozen=True)
class FinalConfig:
    """How the best policy's model is finished.

    Args:
        epochs: Fine-tune epochs over the train split (0 = BN recalibration only).
        lr: Peak learning rate of that fine-tune (cosine to 0).
        distill: Distil from the uncompressed model while fine-tuning.
        batch_size: Fine-tune batch size.
        bn_batches: Train batches for BatchNorm recalibration before the fine-tune.
        latency_repeats: Timed forward passes (median) for the CPU latency columns.
        finalists: How many of the search's best distinct policies (by search reward) are
            fine-tuned and scored on the whole val split; the best on val ships. 1 ships
            the search's best without scoring it on val.
        finalist_spacing: Least distance between two finalists
            (:func:`~autoshrink.agent.finalists.record_distance`: mean keep-ratio difference
            per unit, plus bits over 8), so that near-copies of one policy do not fill the
            list; the best of the rest fill it when too few are that far apart.
    """

    epochs: int = 3
    lr: float = 0.01
    distill: bool = False
    batch_size: int = 128
    bn_batches: int = 8
    latency_repeats: int = 30
    finalists: int = 1
    finalist_spacing: float = 0.05

    def __post_init__(self) -> None:
        lowest = {"epochs": 0, "bn_batches": 0, "batch_size": 1, "finalists": 1}
        problems = [f"{k} must be >= {lo}" for k, lo in lowest.items() if getattr(self, k) < lo]
        if not self.lr > 0:
            problems.append("lr must be > 0")
        if not 0 <= self.finalist_spacing <= 1:
            problems.append("finalist_spacing must be in [0, 1]")
        if problems:
            raise AutoshrinkError(f"bad final fine-tune settings: {'; '.join(problems)}")


def compress_and_finetune(
    env: gym.Env,
    policy: Policy,
    final: FinalConfig,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    data: Any = None,
) -> nn.Module:
    """The model of ``policy`` on ``env``'s model: pruned, fake-quantized, fine-tuned, baked.

    ``data`` are the splits to train on (the env's when None).
    """
    from autoshrink.compression.evaluate import finetune, recalibrate_bn
    from autoshrink.compression.prune import prune_channels
    from autoshrink.compression.quantize import bake_, fake_quantize_

    inner: Any = env.unwrapped
    graph, cfg = inner.graph, inner.config
    data = data if data is not None else inner.data
    scores = getattr(getattr(inner, "evaluator", None), "scores", None)
    kept = kept_channels(policy, graph)
    bits = {k: b for k, b in layer_bits(policy, graph).items() if b < FLOAT_BITS}
    model = prune_channels(inner.model, graph, kept, importance=cfg.importance, scores=scores)
    fake_quantize_(model, bits)
    train = data.loader("train", batch_size=final.batch_size, shuffle=True, seed=seed)
    if final.bn_batches:
        recalibrate_bn(model, train, final.bn_batches)
    steps = final.epochs * len(train)
    teacher = inner.model if final.distill else None
    finetune(model, train, steps, final.lr, teacher=teacher, seed=seed, on_step=on_step)
    return bake_(model).eval()


def finish_search(
    env: gym.Env,
    search: Any,
    final: FinalConfig | None = None,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    data: Any = None,
) -> dict[str, Any]:
    """Fine-tune the best policy (or finalists), save the artifact and write ``result.json``.

    Also rewrites ``policy.json`` with the shipped policy, so that the run folder's policy,
    artifact and result always agree.

    Args:
        env: The env the search ran on (its model, data, units, budgets).
        search: The :class:`~autoshrink.agent.search.SearchResult`.
        final: Fine-tune settings; defaults when None.
        seed: Seeds the fine-tune's batch order.
        on_step: Called after each fine-tune step with ``(step, loss)`` (progress bars).
        data: The :class:`~autoshrink.compression.data.DataSplits` the finish trains, scores
            finalists and tests on; None = the env's. A benchmark whose env scores on a val
            subset can pass the splits with the whole val split here.

    Returns:
        The content written to ``result.json``.

    Raises:
        AutoshrinkError: If the search found no policy (it ran no episode).
    """
    from autoshrink.compression.artifact import load_artifact, save_artifact
    from autoshrink.compression.evaluate import accuracy
    from autoshrink.compression.models import ModelSpec
    from autoshrink.env.latency import time_forward

    final = final or FinalConfig()
    if search.best_policy is None:
        raise AutoshrinkError("the search ran no episode, so there is no policy to finish")
    start = time.perf_counter()
    folder = RunFolder(Path(search.run_dir))
    inner: Any = env.unwrapped
    cfg, data = inner.config, data if data is not None else inner.data
    candidates = [Candidate(search.best_episode, search.best_reward, search.best_policy)]
    if final.finalists > 1:  # a replayed policy has no episode log: it stays the one
        ranked = top_candidates(
            folder.read_episodes(), search.best_policy, final.finalists, final.finalist_spacing
        )
        candidates = ranked or candidates
    model, chosen, scored = _pick(env, data, candidates, final, seed, on_step)
    policy = chosen.policy.with_meta(agent=search.algorithm, episode=chosen.episode)
    policy.save(folder.policy)
    spec = ModelSpec(cfg.model, data.num_classes, data.in_channels)
    example = data.example_input(1)
    meta = {"agent": search.algorithm, "seed": seed, "episode": chosen.episode}
    info = save_artifact(folder.artifact, model, spec, tuple(example.shape), policy, meta)
    shipped = load_artifact(info.path)
    test = data.loader("test", batch_size=256)
    values = realised_costs(env, policy)
    limits = dict(inner.limits)
    baseline = {
        "accuracy": accuracy(inner.model, test),
        **{METRIC_KEYS[m]: v for m, v in inner.baseline.items() if m in METRIC_KEYS},
        "latency_ms": 1e3 * time_forward(inner.model, example, final.latency_repeats),
    }
    compressed = {
        "accuracy": accuracy(shipped, test),
        "val_accuracy_search": _search_accuracy(folder, search, chosen.episode),
        "val_accuracy": next(
            (f["val_accuracy"] for f in scored if f["episode"] == chosen.episode), None
        ),
        **{METRIC_KEYS[m]: v for m, v in values.items()},
        "latency_ms": 1e3 * time_forward(shipped, example, final.latency_repeats),
        "artifact_bytes": info.payload_bytes,
        "file_bytes": info.file_bytes,
    }
    for key in ("macs", "params", "bytes"):
        if baseline.get(key):
            compressed[f"{key}_ratio"] = compressed[key] / baseline[key]
    budgets = {
        m: {"value": b.value, "relative": b.relative, "limit": limits.get(m)}
        for m, b in cfg.budgets.items()
    }
    result = {
        "type": RESULT_TYPE,
        "version": RESULT_VERSION,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "mode": cfg.mode,
        "budgets": budgets,
        "baseline": baseline,
        "compressed": compressed,
        "budgets_met": all(values[m] <= lim for m, lim in limits.items()),
        "seed": seed,
        "episodes": search.episodes,
        "agent": search.algorithm,
        "best_episode": search.best_episode,
        "best_reward": search.best_reward,
        "shipped_episode": chosen.episode,
        "finalists": scored,
        "search_time_s": search.wall_time_s,
        "final_time_s": time.perf_counter() - start,
        "wall_time_s": search.wall_time_s + time.perf_counter() - start,
        "final": asdict(final),
        "env": cfg.to_dict()["data"],
        "artifact": info.path.name,
        "policy": folder.policy.name,
    }
    write_json(folder.result, result)
    return result


def _pick(
    env: gym.Env,
    data: Any,
    candidates: list[Candidate],
    final: FinalConfig,
    seed: int,
    on_step: Callable[[int, float], None] | None,
) -> tuple[nn.Module, Candidate, list[dict[str, Any]]]:
    """Fine-tune every candidate; return the best on val, it, and each one's scores.

    One candidate is fine-tuned and shipped without a val score. Ties on val go to the
    higher search reward (the earlier candidate).
    """
    from autoshrink.compression.evaluate import accuracy

    if len(candidates) == 1:
        model = compress_and_finetune(env, candidates[0].policy, final, seed, on_step, data)
        return model, candidates[0], []
    val = data.loader("val", batch_size=256)
    best: tuple[float, nn.Module, Candidate] | None = None
    scored: list[dict[str, Any]] = []
    done = 0
    for cand in candidates:

        def step(i: int, loss: float, offset: int = done) -> None:
            if on_step is not None:
                on_step(offset + i, loss)

        model = compress_and_finetune(env, cand.policy, final, seed, step, data)
        score = accuracy(model, val)
        done += final.epochs * len(data.loader("train", batch_size=final.batch_size))
        scored.append({"episode": cand.episode, "reward": cand.reward, "val_accuracy": score})
        logger.info("finalist episode %d: reward %.4f, val %.4f", cand.episode, cand.reward, score)
        if best is None or score > best[0]:
            best = (score, model, cand)
    assert best is not None
    return best[1], best[2], scored


def _search_accuracy(folder: RunFolder, search: Any, episode: int) -> float | None:
    """The search's val-subset accuracy of ``episode`` (the best's without a log)."""
    if episode == search.best_episode:
        return search.best_metrics.get("accuracy")
    for record in folder.read_episodes():
        if record.get("episode") == episode:
            return record.get("accuracy")
    return None


def realised_costs(env: gym.Env, policy: Policy) -> dict[str, float]:
    """Every budget metric of ``policy`` on ``env``'s exact cost model (and latency table)."""
    inner: Any = env.unwrapped
    kept = kept_channels(policy, inner.graph)
    channels = [kept[u.name] for u in inner.units]
    bits = [
        policy.units[u.name].bits if u.name in policy.units else FLOAT_BITS for u in inner.units
    ]
    return dict(inner.clamp.measure(channels, bits))
