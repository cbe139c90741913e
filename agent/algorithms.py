"""Agents by alias: SB3 algorithms with AMC-like defaults, and scripted searches.

Every alias builds an object with SB3's ``learn``/``save`` interface, so one search loop and
one set of callbacks serve them all. Learning agents are plain SB3 algorithms configured
only through their extension points: constructor kwargs, ``policy_kwargs``, an
:class:`~stable_baselines3.common.noise.ActionNoise` and callbacks.

==========  =====================================================================
alias       agent
==========  =====================================================================
``ddpg``    DDPG as in AMC: γ = 1, 2×300 nets, τ = 0.01, actor lr 1e-4 and critic lr
            1e-3, batch 64, random warm-up, decaying truncated-normal noise,
            every step stored with the episode's reward less a baseline
            (:mod:`~autoshrink.agent.replay`), one gradient step per transition after
            each episode
``td3``     TD3 with the same settings (twin critics, delayed actor)
``sac``     SAC with the same nets, rates and warm-up (its own entropy exploration)
``ppo``     PPO on the Box actions, rollouts of 4 episodes
``random``  random search: uniformly random actions every episode
``uniform`` one keep-ratio and one bit-width for all units, bisected to the budget
``global``  Torch-Pruning-style global channel ranking down to the budget
``deep-     Deep Compression: global magnitude sparsity and one bit-width, bisected
compression`` to the budget (``deep`` and ``sparse`` modes)
``solver``  a sensitivity table of each unit alone, an exact MILP (HiGHS) under every
            budget, then SPDY-style perturbations scored by the evaluator
==========  =====================================================================

SB3 gives one learning rate to all optimizers of a policy. The actor's own rate (AMC uses
1e-4 against the critic's 1e-3) goes through a policy subclass whose actor optimizer scales
the scheduled rate by ``actor_lr / critic_lr``; ``learn()`` is untouched.

Saving and loading an ``agent.zip`` without unpickling is in :mod:`autoshrink.agent.agent_file`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import gymnasium as gym
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy

from autoshrink.agent.agent_file import sb3_loader
from autoshrink.agent.config import AGENTS
from autoshrink.agent.noise import TruncatedNormalActionNoise, bind_noise
from autoshrink.agent.policies import SplitLRSACPolicy, SplitLRTD3Policy
from autoshrink.agent.replay import EpisodeRewardReplayBuffer

if TYPE_CHECKING:
    from autoshrink.agent.config import AgentConfig
    from autoshrink.agent.scripted import ScriptedSearch

DEFAULT_NET_ARCH: list[int] = [300, 300]
PPO_EPISODES_PER_ROLLOUT = 4


#: An SB3 algorithm, or a baseline with the same learn/save interface.
Agent: TypeAlias = "BaseAlgorithm | ScriptedSearch"


# --- builders ------------------------------------------------------------------------------
def _policy_kwargs(config: AgentConfig, split_lr: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"net_arch": list(DEFAULT_NET_ARCH)}
    kwargs.update(config.policy_kwargs or {})
    if split_lr:
        kwargs.setdefault("actor_lr_scale", config.actor_lr / config.critic_lr)
    return kwargs


def _off_policy_kwargs(config: AgentConfig, n_units: int) -> dict[str, Any]:
    return {
        "learning_rate": config.critic_lr,
        "buffer_size": config.buffer_size or 100 * n_units,
        # whole rounds of K episodes: no episode starts random and ends learned
        "learning_starts": -(-config.warmup // config.workers) * config.workers * n_units,
        "batch_size": config.batch_size,
        "tau": config.tau,
        "gamma": config.gamma,
        # AMC: after each episode, one gradient step per transition collected. SB3 counts
        # episodes of one env only; K envs in lockstep end a round every n_units steps.
        "train_freq": (1, "episode") if config.workers == 1 else (n_units, "step"),
        "gradient_steps": -1,
        "replay_buffer_class": EpisodeRewardReplayBuffer if config.episode_reward else None,
        "seed": config.seed,
        "device": config.device,
        "verbose": 0,
    }


def make_noise(config: AgentConfig, env: gym.Env) -> TruncatedNormalActionNoise:
    """AMC's decaying truncated-normal noise for ``env``'s Box action space."""
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)
    width = float((space.high - space.low).max())
    return TruncatedNormalActionNoise(
        n_actions=int(space.shape[0]),
        sigma=config.noise_sigma,
        decay=config.noise_decay,
        warmup_episodes=config.warmup,
        action_width=width,
        seed=config.seed + 7919,
    )


def _off_policy_agent_kwargs(config: AgentConfig, n_units: int) -> dict[str, Any]:
    """The SB3 constructor kwargs of DDPG, TD3 and SAC (the policy class aside)."""
    kwargs = {**_off_policy_kwargs(config, n_units), **config.algorithm_kwargs}
    kwargs.setdefault("policy_kwargs", _policy_kwargs(config, split_lr=True))
    return kwargs


def _ppo_kwargs(config: AgentConfig, n_units: int) -> dict[str, Any]:
    """The SB3 constructor kwargs of PPO (the policy class aside)."""
    # a rollout of about PPO_EPISODES_PER_ROLLOUT episodes, whatever the workers
    n_steps = n_units * max(1, PPO_EPISODES_PER_ROLLOUT // config.workers)
    kwargs: dict[str, Any] = {
        "learning_rate": config.actor_lr,
        "n_steps": n_steps,
        "batch_size": min(config.batch_size, n_steps),
        "gamma": config.gamma,
        "gae_lambda": 0.95,
        "ent_coef": 0.0,
        "policy_kwargs": _policy_kwargs(config, split_lr=False),
        "seed": config.seed,
        "device": config.device,
        "verbose": 0,
    }
    kwargs.update(config.algorithm_kwargs)
    return kwargs


def _build_td3_like(cls: type[OffPolicyAlgorithm]) -> Callable[..., Agent]:
    def build(env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
        model = cls(SplitLRTD3Policy, env, **_off_policy_agent_kwargs(config, n_units))
        bind_noise(model, make_noise(config, env))
        return model

    return build


def _build_sac(env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
    return SAC(SplitLRSACPolicy, env, **_off_policy_agent_kwargs(config, n_units))


def _build_ppo(env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
    return PPO("MlpPolicy", env, **_ppo_kwargs(config, n_units))


def _scripted_class(name: str) -> type[ScriptedSearch]:
    if name == "solver":  # SciPy's MILP: imported only when the solver searches
        from autoshrink.agent.solver_search import SolverSearch

        return SolverSearch
    from autoshrink.agent import scripted

    return scripted.SCRIPTED[name]


def _scripted(name: str) -> Callable[..., Agent]:
    def build(env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
        return _scripted_class(name)(env, config, n_units)

    return build


def _load_scripted(path: Path, env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
    agent = _scripted_class(config.algorithm)(env, config, n_units)
    agent.load_state(path)
    return agent


@dataclass(frozen=True)
class AlgorithmSpec:
    """One alias: how to build the agent, how to load it back, and whether it learns."""

    name: str
    build: Callable[[gym.Env, AgentConfig, int], Agent]
    load: Callable[[Path, gym.Env, AgentConfig, int], Agent]
    learning: bool
    off_policy: bool
    description: str


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            "ddpg",
            _build_td3_like(DDPG),
            sb3_loader(DDPG, SplitLRTD3Policy, _off_policy_agent_kwargs, make_noise),
            True,
            True,
            AGENTS["ddpg"],
        ),
        AlgorithmSpec(
            "td3",
            _build_td3_like(TD3),
            sb3_loader(TD3, SplitLRTD3Policy, _off_policy_agent_kwargs, make_noise),
            True,
            True,
            AGENTS["td3"],
        ),
        AlgorithmSpec(
            "sac",
            _build_sac,
            sb3_loader(SAC, SplitLRSACPolicy, _off_policy_agent_kwargs, make_noise),
            True,
            True,
            AGENTS["sac"],
        ),
        AlgorithmSpec(
            "ppo",
            _build_ppo,
            sb3_loader(PPO, ActorCriticPolicy, _ppo_kwargs, make_noise),
            True,
            False,
            AGENTS["ppo"],
        ),
        AlgorithmSpec(
            "random", _scripted("random"), _load_scripted, False, False, AGENTS["random"]
        ),
        AlgorithmSpec(
            "uniform", _scripted("uniform"), _load_scripted, False, False, AGENTS["uniform"]
        ),
        AlgorithmSpec(
            "global", _scripted("global"), _load_scripted, False, False, AGENTS["global"]
        ),
        AlgorithmSpec(
            "deep-compression",
            _scripted("deep-compression"),
            _load_scripted,
            False,
            False,
            AGENTS["deep-compression"],
        ),
        AlgorithmSpec(
            "solver", _scripted("solver"), _load_scripted, False, False, AGENTS["solver"]
        ),
    )
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec of alias ``name`` (AgentConfig has already checked that it exists)."""
    return ALGORITHMS[name]


def build_agent(env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
    """Build the agent of ``config.algorithm`` for ``env``, whose episodes last ``n_units``."""
    return ALGORITHMS[config.algorithm].build(env, config, n_units)
