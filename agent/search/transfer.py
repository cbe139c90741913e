"""Roll a trained agent (or a fixed policy) out on a new model's env: one episode, no learning.

AMC's transfer: an agent searched on one network is played once, deterministically, on
another. The observation describes a unit by normalised features (position, width, kernel,
share of MACs, budget slack, ...), not by its name, so an agent trained on ResNet-20 acts on
ResNet-56's thirty units as well as on its own twelve. The target env's feasibility clamp
still sits between every action and the policy, so the budgets hold on the new model
whatever the agent proposes.

>>> from autoshrink.agent.search.transfer import transfer
>>> from autoshrink.agent.search.finish import finish_search
>>> env = CompressionEnv(EnvConfig(model="resnet56", flops=0.5))  # doctest: +SKIP
>>> result = transfer("runs/r20/agent.zip", env, run_dir="runs/r56")  # doctest: +SKIP
>>> report = finish_search(env, result)  # fine-tune, artifact, result.json  # doctest: +SKIP

:func:`replay` plays a given policy through the same clamp instead, as if an agent had
proposed it: ``autoshrink apply --map depth`` uses it so that a stretched policy meets the
target's budgets.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from autoshrink.agent.agent_file import zip_document
from autoshrink.agent.algorithms import ALGORITHMS
from autoshrink.agent.config import AgentConfig
from autoshrink.agent.env_view import episode_length, search_env
from autoshrink.agent.scripted import STATE_FILE, scripted_state
from autoshrink.agent.search.config import saved_agent
from autoshrink.agent.search.loop import SearchResult
from autoshrink.compression.errors import AutoshrinkError, CheckpointError, PolicyError
from autoshrink.compression.metrics import METRICS
from autoshrink.compression.policy import Policy

logger = logging.getLogger(__name__)

#: Keys of the final ``info`` copied into the result's metrics.
INFO_KEYS: tuple[str, ...] = (
    "accuracy",
    *(m.key for m in METRICS),
    *(m.ratio_key for m in METRICS),
    "budgets_met",
)


def agent_algorithm(path: str | Path) -> str:
    """The alias of the agent saved at ``path`` (an ``agent.zip``).

    The run folder's ``config.json`` beside the file says it; without one, the keys SB3
    stores in the zip tell the algorithm family.

    Raises:
        CheckpointError: If the file is missing or not a saved agent, or holds a
            non-learning baseline (those have no policy to transfer).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"agent not found: {path}")
    config = path.parent / "config.json"
    name: str | None = None
    if config.is_file():
        try:
            name = saved_agent(config).algorithm
        except AutoshrinkError:
            logger.warning("ignoring unreadable %s", config)
    try:
        with zipfile.ZipFile(path) as zf:
            files = set(zf.namelist())
            data = zip_document(zf, "data", path) if "data" in files else {}
            if STATE_FILE in files:
                state = scripted_state(zip_document(zf, STATE_FILE, path))
                name = state.get("algorithm", "baseline")
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f"{path} is not a saved agent: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(name, str | None):
        raise CheckpointError(f"{path} is not a saved autoshrink agent")
    if name is None and data:
        if "policy_delay" in data:
            name = "td3" if data.get("policy_delay", 1) > 1 else "ddpg"
        elif "target_entropy" in data:
            name = "sac"
        elif "clip_range" in data:
            name = "ppo"
    if name is None or name not in ALGORITHMS:
        raise CheckpointError(f"{path} is not a saved autoshrink agent")
    if not ALGORITHMS[name].learning:
        raise CheckpointError(
            f"{path} holds the non-learning baseline {name!r}: it has no policy to transfer; "
            "transfer an agent that learns (ddpg, td3, sac, ppo)"
        )
    return name


def agent_spaces(path: str | Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The observation and action shapes a saved SB3 agent was trained on (cheap: no load).

    Raises:
        CheckpointError: If the file is not a saved SB3 agent.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            data: Any = zip_document(zf, "data", Path(path))
        obs = tuple(int(d) for d in data["observation_space"]["_shape"])
        act = tuple(int(d) for d in data["action_space"]["_shape"])
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a saved agent: {exc!r}") from exc
    return obs, act


def load_agent(path: str | Path, env: gym.Env, algorithm: str | None = None) -> Any:
    """Load a learned agent for ``env``, checking that their spaces agree.

    Args:
        path: The ``agent.zip`` a search wrote.
        env: The target env; its observation and action spaces must be the agent's.
        algorithm: The agent's alias; found by :func:`agent_algorithm` when None.

    Returns:
        The SB3 algorithm.

    Raises:
        CheckpointError: If the file is not a learned agent.
        PolicyError: If the agent acts in another mode than ``env`` (another action size).
    """
    name = algorithm or agent_algorithm(path)
    have_obs, have_act = agent_spaces(path)
    want_obs = tuple(env.observation_space.shape or ())
    want_act = tuple(env.action_space.shape or ())
    if have_act != want_act or have_obs != want_obs:
        mode = search_env(env, ("config",)).config.mode
        raise PolicyError(
            f"the agent in {path} acts on {have_act} actions from {have_obs} observations, "
            f"but the env ({mode} mode) has {want_act} and {want_obs}: transfer needs the "
            "mode the agent was trained in"
        )
    config = AgentConfig(algorithm=name)
    return ALGORITHMS[name].load(Path(path), env, config, episode_length(env))


def policy_actions(env: gym.Env, policy: Policy) -> np.ndarray:
    """The actions that make ``env`` propose ``policy``, one row per unit (inverse decode).

    Keep-ratios below the env's ``min_keep`` go to ``min_keep``; bits not among its choices
    go to the largest choice not above them (float goes to the largest choice).

    Raises:
        PolicyError: If the policy misses a unit of the env.
    """
    inner = search_env(env, ("config", "units", "encode"))
    cfg = inner.config
    missing = [u.name for u in inner.units if u.name not in policy.units]
    if missing:
        raise PolicyError(f"the policy has no decision for units {missing[:5]}")
    decisions = [policy.units[u.name] for u in inner.units]
    channels = [
        u.kept(min(max(d.keep, cfg.min_keep), 1.0))
        for u, d in zip(inner.units, decisions, strict=True)
    ]
    rows = inner.encode(channels, [d.bits for d in decisions], [d.sparsity for d in decisions])
    return np.asarray(rows, dtype=np.float32)


def _rollout(
    env: gym.Env, act: Callable[[np.ndarray, int], np.ndarray], seed: int
) -> tuple[float, dict[str, Any]]:
    obs, _ = env.reset(seed=seed)
    for t in range(episode_length(env)):
        obs, reward, terminated, truncated, info = env.step(act(obs, t))
        if terminated or truncated:
            return float(reward), info
    raise AutoshrinkError("the env did not end its episode after one step per unit")


def _result(
    env: gym.Env, reward: float, info: dict[str, Any], name: str, start: float, run_dir: Any
) -> SearchResult:
    policy = info.get("policy")
    if not isinstance(policy, Policy):
        raise AutoshrinkError("the env's last step reported no policy")
    return SearchResult(
        best_policy=policy,
        best_reward=reward,
        best_metrics={k: info[k] for k in INFO_KEYS if k in info},
        best_episode=0,
        episodes=1,
        wall_time_s=time.perf_counter() - start,
        algorithm=name,
        run_dir=Path(run_dir) if run_dir is not None else Path.cwd(),
    )


def transfer(
    agent: str | Path | Any,
    env: gym.Env,
    run_dir: str | Path | None = None,
    *,
    algorithm: str | None = None,
    seed: int = 0,
) -> SearchResult:
    """Play a trained agent once, deterministically, on ``env`` (a new model's env).

    Args:
        agent: The ``agent.zip`` of a search, or a loaded SB3 algorithm.
        env: The target model's compression env; its clamp guarantees the budgets.
        run_dir: Where :func:`~autoshrink.agent.search.finish.finish_search` should write the run
            folder (the current folder when None). Nothing is written here.
        algorithm: The agent's alias, when ``agent`` is a path and its run folder's
            ``config.json`` is gone.
        seed: Seed of the env reset (the env itself is deterministic).

    Returns:
        A one-episode :class:`~autoshrink.agent.search.SearchResult`: the realised policy,
        its reward and val metrics, ready for ``finish_search``.

    Raises:
        CheckpointError: If ``agent`` is not a learned agent.
        PolicyError: If the agent was trained in another mode than ``env``'s.
    """
    start = time.perf_counter()
    source = None
    if isinstance(agent, str | Path):
        source = str(agent)
        name = algorithm or agent_algorithm(agent)
        agent = load_agent(agent, env, name)
    else:
        name = algorithm or type(agent).__name__.lower()

    def act(obs: np.ndarray, t: int) -> np.ndarray:
        action, _ = agent.predict(obs, deterministic=True)
        return np.asarray(action, dtype=np.float32)

    reward, info = _rollout(env, act, seed)
    result = _result(env, reward, info, name, start, run_dir)
    if result.best_policy is not None:
        result.best_policy = result.best_policy.with_meta(agent=name, transferred_from=source)
    logger.info("transferred %s: reward %.4f, %s", name, reward, result.best_metrics)
    return result


def replay(
    env: gym.Env, policy: Policy, run_dir: str | Path | None = None, seed: int = 0
) -> SearchResult:
    """Propose ``policy`` to ``env`` as one episode of actions, so its clamp enforces budgets.

    Where the policy fits the budgets (and the env's action grid) the realised policy is
    the same; where it does not, the clamp cuts the later units as it would an agent's.

    Args:
        env: A compression env whose units the policy names.
        policy: The policy to propose, e.g. one stretched by ``map_depth``.
        run_dir: As in :func:`transfer`.
        seed: Seed of the env reset.

    Returns:
        A one-episode SearchResult holding the realised policy.
    """
    start = time.perf_counter()
    actions = policy_actions(env, policy)
    reward, info = _rollout(env, lambda obs, t: actions[t], seed)
    result = _result(env, reward, info, "replay", start, run_dir)
    if result.best_policy is not None:
        extra = {k: v for k, v in policy.meta.items() if k not in result.best_policy.meta}
        result.best_policy = result.best_policy.with_meta(**extra)
    return result
