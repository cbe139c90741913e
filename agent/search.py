"""run_search: one search, any agent, written to a run folder and resumable.

>>> from autoshrink.agent import AgentConfig, run_search
>>> result = run_search(env, AgentConfig(episodes=20), "runs/r1")  # doctest: +SKIP
>>> result.best_policy.save("policy.json")  # doctest: +SKIP

A search killed at any moment continues with ``resume=True``: the agent, its replay buffer,
its noise and the search state come back from the last checkpoint (written after every
episode), the episode log is cut back to what that checkpoint knows, and the search runs
the remaining episodes. At most the episode in flight is lost.

Nothing a resume reads is a pickle: the agent comes back through the spec's ``load``
(:mod:`autoshrink.agent.algorithms`), the replay buffer from ``replay_buffer.npz``
(:func:`~autoshrink.agent.replay_file.load_replay_buffer`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.utils import set_random_seed

from autoshrink.agent.agent_file import save_agent
from autoshrink.agent.algorithms import ALGORITHMS, Agent, build_agent
from autoshrink.agent.callbacks import (
    AgentThreadsCallback,
    CheckpointCallback,
    EpisodeLogCallback,
    ProgressCallback,
    StopAfterEpisodes,
    TensorBoardCallback,
)
from autoshrink.agent.config import AgentConfig
from autoshrink.agent.replay_file import load_replay_buffer, save_replay_buffer
from autoshrink.agent.run_folder import (
    EpisodeBook,
    EpisodeRecord,
    RunFolder,
    SearchState,
    write_json,
)
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.policy import Policy

logger = logging.getLogger(__name__)

Progress = Callable[[EpisodeRecord, SearchState], None]


@dataclass
class SearchResult:
    """What a search found.

    Args:
        best_policy: The realised policy of the best episode (None if no episode ran).
        best_reward: Its reward.
        best_metrics: Its metrics from the env (accuracy on val, macs, params, bytes, ...).
        best_episode: Its episode index.
        episodes: Episodes run in total, over every resume.
        wall_time_s: Wall time of the search, over every resume.
        algorithm: The agent's alias.
        run_dir: The run folder.
    """

    best_policy: Policy | None
    best_reward: float | None
    best_metrics: dict[str, Any]
    best_episode: int | None
    episodes: int
    wall_time_s: float
    algorithm: str
    run_dir: Path


def episode_length(env: gym.Env) -> int:
    """Steps per episode of a compression env: its number of units."""
    inner = env.unwrapped
    for attr in ("n_units", "num_units"):
        value = getattr(inner, attr, None)
        if isinstance(value, int):
            return value
    graph = getattr(inner, "graph", None)
    if graph is not None:
        return len(graph.units)
    raise AutoshrinkError(f"cannot tell the episode length of {type(inner).__name__}")


def reference_metrics(env: gym.Env) -> dict[str, float]:
    """The uncompressed model's ``macs``, ``params`` and ``bytes`` as the env knows them."""
    base = getattr(env.unwrapped, "baseline", None)
    if not isinstance(base, Mapping):
        return {}
    keys = {"flops": "macs", "params": "params", "size": "bytes", "latency": "latency"}
    return {
        keys.get(str(k), str(k)): float(v) for k, v in base.items() if isinstance(v, int | float)
    }


def run_search(
    env: gym.Env,
    config: AgentConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
    callbacks: Sequence[BaseCallback] = (),
) -> SearchResult:
    """Search ``env`` with the agent of ``config`` and write the run folder.

    Args:
        env: A compression env (one step per unit, reward at the episode end, ``info`` at
            the end holding ``policy`` and the metrics).
        config: The agent and its budget of episodes.
        out_dir: The run folder; created if missing.
        resume: Continue the search found in ``out_dir`` (or start one if there is none).
        progress: Called after every episode with the episode's record and the state.
        callbacks: Extra SB3 callbacks, e.g. to stop early.

    Returns:
        The best policy and its metrics, the episodes run and the wall time.

    Raises:
        AutoshrinkError: If ``out_dir`` holds a search and ``resume`` is False, or holds
            a search of another algorithm.
    """
    folder = RunFolder(Path(out_dir))
    spec = ALGORITHMS[config.algorithm]
    n_units = episode_length(env)
    start = time.perf_counter()
    checkpoint = folder.latest_checkpoint() if resume else None
    if checkpoint is None and folder.has_search() and not resume:
        raise AutoshrinkError(
            f"{folder.root} already holds a search; resume it or choose another folder"
        )
    folder.create()
    if checkpoint is not None:
        _check_same_algorithm(folder, config)
        ckpt_dir, state = checkpoint
        set_random_seed(config.seed + state.episodes)
        agent = spec.load(ckpt_dir / "agent.zip", env, config, n_units)
        if isinstance(agent, OffPolicyAlgorithm):
            assert agent.replay_buffer is not None
            load_replay_buffer(agent.replay_buffer, ckpt_dir)
        dropped = folder.truncate_episodes(state.episodes)
        logger.info(
            "resuming %s at episode %d (%d unlogged lines dropped)",
            config.algorithm,
            state.episodes,
            dropped,
        )
    else:
        state = SearchState()
        folder.truncate_episodes(0)
        write_json(folder.config, {"agent": config.to_dict(), "env": _env_config(env)})
        agent = build_agent(env, config, n_units)

    book = EpisodeBook(state, reference_metrics(env), clock_start=start)
    cbs = _callbacks(agent, book, folder, spec.off_policy, config, progress)
    remaining = config.episodes - state.episodes
    if remaining > 0:
        if spec.learning:
            from stable_baselines3.common.logger import configure

            agent.set_logger(configure(str(folder.tensorboard), ["tensorboard"]))
        agent.learn(
            total_timesteps=remaining * n_units,
            callback=[*cbs, *callbacks],
            reset_num_timesteps=checkpoint is None,
        )
    save_agent(agent, folder.agent)
    best = Policy.from_dict(state.best_policy) if state.best_policy else None
    if best is not None:
        best = best.with_meta(agent=config.algorithm, episode=state.best_episode)
        best.save(folder.policy)
    return SearchResult(
        best_policy=best,
        best_reward=state.best_reward,
        best_metrics=dict(state.best_metrics),
        best_episode=state.best_episode,
        episodes=state.episodes,
        wall_time_s=book.elapsed(),
        algorithm=config.algorithm,
        run_dir=folder.root,
    )


def _callbacks(
    agent: Agent,
    book: EpisodeBook,
    folder: RunFolder,
    off_policy: bool,
    config: AgentConfig,
    progress: Progress | None,
) -> list[BaseCallback]:
    def save_files(where: Path) -> None:
        save_agent(agent, where / "agent.zip")
        if isinstance(agent, OffPolicyAlgorithm):
            assert agent.replay_buffer is not None
            save_replay_buffer(agent.replay_buffer, where)

    def extra() -> dict[str, Any]:
        sigma = getattr(getattr(agent, "action_noise", None), "current_sigma", None)
        return {} if sigma is None else {"noise_sigma": sigma}

    cbs: list[BaseCallback] = [
        EpisodeLogCallback(book, folder.episodes, extra),
        TensorBoardCallback(book, folder.tensorboard, purge_step=book.state.episodes),
        CheckpointCallback(book, folder, save_files, deferred=off_policy),
    ]
    if progress is not None:
        cbs.append(ProgressCallback(book, progress))
    if isinstance(agent, BaseAlgorithm):
        cbs.append(AgentThreadsCallback(threads=1))
    if not off_policy:  # on-policy rollouts (and baselines) may overshoot the episode count
        cbs.append(StopAfterEpisodes(book, config.episodes))
    return cbs


def _check_same_algorithm(folder: RunFolder, config: AgentConfig) -> None:
    import json

    if not folder.config.exists():
        return
    saved = json.loads(folder.config.read_text()).get("agent", {}).get("data", {})
    if saved.get("algorithm") not in (None, config.algorithm):
        raise AutoshrinkError(
            f"{folder.root} holds a {saved['algorithm']} search; cannot resume it as "
            f"{config.algorithm}"
        )


def _env_config(env: gym.Env) -> Any:
    cfg: Any = getattr(env.unwrapped, "config", None)
    return cfg.to_dict() if hasattr(cfg, "to_dict") else None
