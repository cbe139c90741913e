"""The end of a search: fine-tune the best policy's model, save the artifact, write result.json.

The search scores policies on the val split after a short, cheap evaluation. The model a
user gets is the best policy applied once more and fine-tuned for longer (optionally
distilling from the original), under fake quantization so that the fine-tune sees the
weights it will ship with. Its accuracy is measured on the *test* split, on the artifact as
loaded back from disk, next to the original model's test accuracy.

With ``FinalConfig.finalists > 1``, the few best distinct policies of the search are each
fine-tuned that way and scored on the whole val split, and the best of them ships
(:mod:`autoshrink.agent.search.finalists`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from torch import nn

from autoshrink.agent.env_view import env_device, search_env
from autoshrink.agent.search.config import FinalConfig
from autoshrink.agent.search.finalists import Candidate, top_candidates
from autoshrink.agent.search.report import Shipped, build_result, write_result
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.compression.device import on_device
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.locking import hold
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.policy import Policy, kept_channels, layer_bits

logger = logging.getLogger(__name__)


def compress_and_finetune(
    env: gym.Env,
    policy: Policy,
    final: FinalConfig,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    data: Any = None,
) -> nn.Module:
    """The model of ``policy`` on ``env``'s model: pruned, fake-quantized, fine-tuned, baked.

    Sparse layers are masked by magnitude once, and the mask stays fixed through the
    fine-tune (zeroed weights stay zero).

    ``data`` are the splits to train on (the env's when None). The model is fine-tuned and
    returned on the env's device (:func:`~autoshrink.agent.env_view.env_device`).
    """
    from autoshrink.compression.evaluate import finetune, recalibrate_bn
    from autoshrink.compression.prune import prune_channels
    from autoshrink.compression.quantize import bake_
    from autoshrink.compression.sparsity import fake_quantize_sparse_, layer_sparsity

    inner = search_env(env)
    graph, cfg = inner.graph, inner.config
    data = data if data is not None else inner.data
    scores = getattr(getattr(inner, "evaluator", None), "scores", None)
    kept = kept_channels(policy, graph)
    bits = {k: b for k, b in layer_bits(policy, graph).items() if b < FLOAT_BITS}
    device = env_device(env)
    model = prune_channels(inner.model, graph, kept, importance=cfg.importance, scores=scores)
    model = model.to(device)
    fake_quantize_sparse_(model, bits, layer_sparsity(policy, graph))
    data = data.for_device(device)
    train = data.loader("train", batch_size=final.batch_size, shuffle=True, seed=seed)
    if final.bn_batches:
        recalibrate_bn(model, train, final.bn_batches)
    steps = final.epochs * len(train)
    teacher = on_device(inner.model, device) if final.distill else None
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
        search: The :class:`~autoshrink.agent.search.loop.SearchResult`.
        final: Fine-tune settings; defaults when None.
        seed: Seeds the fine-tune's batch order.
        on_step: Called after each fine-tune step with ``(step, loss)`` (progress bars).
        data: The :class:`~autoshrink.compression.data.DataSplits` the finish trains, scores
            finalists and tests on; None = the env's. A benchmark whose env scores on a val
            subset can pass the splits with the whole val split here.

    Returns:
        The result: the data of the ``result.json`` document
        (:func:`~autoshrink.agent.search.report.read_result` reads it back).

    Raises:
        AutoshrinkError: If the search found no policy (it ran no episode).
    """
    final = final or FinalConfig()
    if search.best_policy is None:
        raise AutoshrinkError("the search ran no episode, so there is no policy to finish")
    with hold(Path(search.run_dir), "search"):
        return _finish(env, search, final, seed, on_step, data)


def _finish(
    env: gym.Env,
    search: Any,
    final: FinalConfig,
    seed: int,
    on_step: Callable[[int, float], None] | None,
    data: Any,
) -> dict[str, Any]:
    """:func:`finish_search` in its locked run folder."""
    from autoshrink.agent.search.policy_plot import save_policy_png, shipped_view
    from autoshrink.compression.artifact import save_artifact
    from autoshrink.compression.models import ModelSpec

    start = time.perf_counter()
    folder = RunFolder(Path(search.run_dir))
    inner = search_env(env)
    data = data if data is not None else inner.data
    candidates = [Candidate(search.best_episode, search.best_reward, search.best_policy)]
    if final.finalists > 1:  # a replayed policy has no episode log: it stays the one
        ranked = top_candidates(
            folder.read_episodes(), search.best_policy, final.finalists, final.finalist_spacing
        )
        candidates = ranked or candidates
    model, chosen, scored = _pick(env, data, candidates, final, seed, on_step)
    policy = chosen.policy.with_meta(agent=search.algorithm, episode=chosen.episode)
    policy.save(folder.policy)
    title = f"{inner.config.model} on {inner.config.dataset}: the shipped policy"
    title += f" (episode {chosen.episode}, {search.algorithm})"
    save_policy_png(shipped_view(env, policy, title), folder.policy_png)
    spec = ModelSpec.for_data(inner.config.model, data)
    example = data.example_input(1)
    meta = {"agent": search.algorithm, "seed": seed, "episode": chosen.episode}
    # the env's own units: a slow model's are not traced a second time
    shape = tuple(example.shape)
    info = save_artifact(folder.artifact, model, spec, shape, policy, meta, graph=inner.graph)
    shipped = Shipped(policy, info, chosen.episode, scored, start)
    result = build_result(env, search, shipped, final, seed, data)
    write_result(folder.result, result)
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
    val = data.for_device(env_device(env)).loader("val", batch_size=256)
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
