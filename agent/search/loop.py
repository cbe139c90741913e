"""run_search: one search, any agent, written to a run folder and resumable.

>>> from autoshrink.agent import AgentConfig, run_search
>>> result = run_search(env, AgentConfig(episodes=20), "runs/r1")  # doctest: +SKIP
>>> result.best_policy.save("policy.json")  # doctest: +SKIP

A search killed at any moment continues with ``resume=True``: the agent, its replay buffer,
its noise, every random generator and the search state come back from the last checkpoint
(written after every episode), the episode log is restored from the checkpoint's copy, and
the search runs the remaining episodes as the killed one would have. At most the episode
in flight is lost (the K episodes of a round with ``workers = K``: a round's checkpoint is
written when all of them have ended).

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

from autoshrink.agent import rng_state
from autoshrink.agent.agent_file import save_agent
from autoshrink.agent.algorithms import ALGORITHMS, Agent, build_agent
from autoshrink.agent.config import AgentConfig
from autoshrink.agent.env_view import episode_length
from autoshrink.agent.replay_file import load_replay_buffer, save_replay_buffer
from autoshrink.agent.scripted import ScriptedSearch
from autoshrink.agent.search.callbacks import (
    AgentThreadsCallback,
    CheckpointCallback,
    EpisodeLogCallback,
    ProgressCallback,
    StopAfterEpisodes,
    TensorBoardCallback,
)
from autoshrink.agent.search.config import (
    SEARCH_TYPE,
    SEARCH_VERSION,
    FinalConfig,
    SearchConfig,
    saved_agent,
)
from autoshrink.agent.search.episodes import EpisodeBook, EpisodeRecord, SearchState
from autoshrink.agent.search.policy_plot import record_drawer
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.agent.workers import make_workers
from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.compression.json_write import write_document, write_json
from autoshrink.compression.locking import hold
from autoshrink.compression.metrics import by_result_key
from autoshrink.compression.policy import Policy
from autoshrink.env.config import EnvConfig

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


def reference_metrics(env: gym.Env) -> dict[str, float]:
    """The uncompressed model's ``macs``, ``params`` and ``bytes`` as the env knows them."""
    base = getattr(env.unwrapped, "baseline", None)
    if not isinstance(base, Mapping):
        return {}
    return by_result_key({str(k): float(v) for k, v in base.items() if isinstance(v, int | float)})


def run_search(
    env: gym.Env,
    config: AgentConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
    callbacks: Sequence[BaseCallback] = (),
    final: FinalConfig | None = None,
    on_start: Callable[[], None] | None = None,
) -> SearchResult:
    """Search ``env`` with the agent of ``config`` and write the run folder.

    Args:
        env: A compression env (one step per unit; the last step's reward and ``info``).
        config: The agent and its budget of episodes.
        out_dir: The run folder; created if missing.
        resume: Continue the search found in ``out_dir`` (or start one if there is none).
        progress: Called after every episode with the episode's record and the state.
        callbacks: Extra SB3 callbacks, e.g. to stop early.
        final: The finish to record in ``config.json`` beside the env's and the agent's
            settings (the defaults when None).
        on_start: Called once the agent is built or resumed, before the first episode.

    Returns:
        The best policy and its metrics, the episodes run and the wall time.

    Raises:
        AutoshrinkError: If ``out_dir`` holds a search and ``resume`` is False, or one of
            another algorithm.
    """
    folder = RunFolder(Path(out_dir))
    with hold(folder.root, "search"):
        return _run(env, config, folder, resume, progress, callbacks, final, on_start)


def _run(
    env: gym.Env,
    config: AgentConfig,
    folder: RunFolder,
    resume: bool,
    progress: Progress | None,
    callbacks: Sequence[BaseCallback],
    final: FinalConfig | None,
    on_start: Callable[[], None] | None,
) -> SearchResult:
    """:func:`run_search` in its locked folder."""
    n_units = episode_length(env)
    start = time.perf_counter()
    checkpoint = folder.latest_checkpoint() if resume else None
    if checkpoint is None and folder.has_search() and not resume:
        raise AutoshrinkError(
            f"{folder.root} already holds a search; resume it or choose another folder"
        )
    folder.create()
    # K > 1: the agent steps K copies of the env in workers; this one informs and finishes
    agent_env = env if config.workers == 1 else make_workers(env, config)
    try:
        if checkpoint is not None:
            state, agent = _resume(agent_env, config, folder, checkpoint, n_units)
        else:
            state = SearchState()
            folder.truncate_episodes(0)
            _write_config(folder, env, config, final)
            agent = build_agent(agent_env, config, n_units)
        if isinstance(agent, ScriptedSearch):
            agent.run_dir = folder.root  # where a search keeps its own files (the solver's table)
        if on_start is not None:
            on_start()
        book = EpisodeBook(state, reference_metrics(env), start, limit=config.episodes)
        _learn(agent, book, env, folder, config, progress, callbacks, checkpoint is None)
    finally:
        if agent_env is not env:
            agent_env.close()
    save_agent(agent, folder.agent)
    return _result(state, book, config, folder)


def _learn(
    agent: Agent,
    book: EpisodeBook,
    env: gym.Env,
    folder: RunFolder,
    config: AgentConfig,
    progress: Progress | None,
    callbacks: Sequence[BaseCallback],
    fresh: bool,
) -> None:
    """Run the search's remaining episodes with the search's callbacks."""
    spec, n_units = ALGORITHMS[config.algorithm], episode_length(env)
    draw = record_drawer(env)  # TensorBoard's policy figure, with the env's pins and budgets
    cbs = _callbacks(agent, book, folder, spec.off_policy, config, progress, draw)
    remaining = config.episodes - book.state.episodes
    if remaining > 0:
        if spec.learning:
            from stable_baselines3.common.logger import configure

            agent.set_logger(configure(str(folder.tensorboard_agent), ["tensorboard"]))
        agent.learn(
            total_timesteps=remaining * n_units,
            callback=[*cbs, *callbacks],
            reset_num_timesteps=fresh,
        )


def _resume(
    env: gym.Env,
    config: AgentConfig,
    folder: RunFolder,
    checkpoint: tuple[Path, SearchState],
    n_units: int,
) -> tuple[SearchState, Agent]:
    """The state and agent of the folder's checkpoint, the log cut back to what it knows."""
    _check_same_algorithm(folder, config)
    ckpt_dir, state = checkpoint
    if state.episodes > config.episodes:  # it would ship a search longer than asked
        raise CheckpointError(
            f"{folder.root} holds {state.episodes} episodes already, more than the "
            f"{config.episodes} asked: resume with --episodes {state.episodes} or more"
        )
    agent = ALGORITHMS[config.algorithm].load(ckpt_dir / "agent.zip", env, config, n_units)
    if isinstance(agent, OffPolicyAlgorithm):
        assert agent.replay_buffer is not None
        load_replay_buffer(agent.replay_buffer, ckpt_dir)
    if not rng_state.load(agent, ckpt_dir):  # a checkpoint of autoshrink 0.1
        set_random_seed(config.seed + state.episodes)
    # after the checked readers (a malformed file is named by its own reader; none runs
    # code), before anything is written or learnt from the files
    folder.check_sealed(ckpt_dir)
    dropped = folder.restore_log(ckpt_dir, state.episodes)
    logger.info(
        "resuming %s at episode %d (%d unlogged lines dropped)",
        config.algorithm,
        state.episodes,
        dropped,
    )
    return state, agent


def _result(
    state: SearchState, book: EpisodeBook, config: AgentConfig, folder: RunFolder
) -> SearchResult:
    """The search's result; the best policy is saved to the folder's ``policy.json``."""
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
    draw: Callable[[EpisodeRecord], Any],
) -> list[BaseCallback]:
    def save_files(where: Path) -> None:
        save_agent(agent, where / "agent.zip")
        if isinstance(agent, OffPolicyAlgorithm):
            assert agent.replay_buffer is not None
            save_replay_buffer(agent.replay_buffer, where)
        rng_state.save(agent, where)

    def extra() -> dict[str, Any]:
        sigma = getattr(getattr(agent, "action_noise", None), "current_sigma", None)
        return {} if sigma is None else {"noise_sigma": sigma}

    cbs: list[BaseCallback] = [
        EpisodeLogCallback(book, folder.episodes, extra),
        TensorBoardCallback(
            book, folder.tensorboard_search, purge_step=book.state.episodes, draw=draw
        ),
        # Off-policy agents are checkpointed after their training step, so a resume is the
        # same search. PPO trains once per rollout of four episodes, so its checkpoint is
        # every episode's: a resume loses at most one, but starts a new rollout there.
        CheckpointCallback(book, folder, save_files, deferred=off_policy),
    ]
    if progress is not None:
        cbs.append(ProgressCallback(book, progress))
    if isinstance(agent, BaseAlgorithm):
        cbs.append(AgentThreadsCallback(threads=1))
    if not off_policy:  # on-policy rollouts (and scripted searches) may overshoot the episodes
        cbs.append(StopAfterEpisodes(book, config.episodes))
    return cbs


def _check_same_algorithm(folder: RunFolder, config: AgentConfig) -> None:
    if not folder.config.exists():
        return
    saved = saved_agent(folder.config).algorithm
    if saved != config.algorithm:
        raise AutoshrinkError(
            f"{folder.root} holds a {saved} search; cannot resume it as {config.algorithm}"
        )


def _write_config(
    folder: RunFolder, env: gym.Env, agent: AgentConfig, final: FinalConfig | None
) -> None:
    """Record the search's settings in ``config.json`` (a :class:`SearchConfig` document).

    An env that is no compression env (a test's toy) has no EnvConfig: ``env`` is null then.
    """
    env_config = getattr(env.unwrapped, "config", None)
    final = final or FinalConfig()
    if isinstance(env_config, EnvConfig):
        write_json(folder.config, SearchConfig(env_config, agent, final).to_dict())
    else:
        data = {"env": None, "agent": agent.to_dict(), "final": final.to_dict()}
        write_document(folder.config, SEARCH_TYPE, SEARCH_VERSION, data)
