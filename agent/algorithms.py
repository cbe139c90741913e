"""Agents by alias: SB3 algorithms with AMC-like defaults, and non-learning baselines.

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
==========  =====================================================================

SB3 gives one learning rate to all optimizers of a policy. The actor's own rate (AMC uses
1e-4 against the critic's 1e-3) goes through a policy subclass whose actor optimizer scales
the scheduled rate by ``actor_lr / critic_lr``; ``learn()`` is untouched.

An ``agent.zip`` is user input (``apply --agent``, a resumed run folder), and SB3 cloudpickles
part of it. Each spec's ``load`` reads the zip's ``data`` JSON itself and passes SB3 a
``custom_objects`` replacement, built here from the env and the AgentConfig, for every
pickled entry, so SB3 never unpickles; the weights go through ``torch.load(...,
weights_only=True)``. :func:`save_agent` adds the noise's state as plain JSON.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import re
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import gymnasium as gym
import torch as th
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import FloatSchedule
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy

from autoshrink.agent.noise import TruncatedNormalActionNoise, bind_noise
from autoshrink.agent.replay import EpisodeRewardReplayBuffer
from autoshrink.agent.run_folder import to_jsonable
from autoshrink.compression.errors import CheckpointError

if TYPE_CHECKING:
    from autoshrink.agent.baselines import ScriptedSearch
    from autoshrink.agent.config import AgentConfig

DEFAULT_NET_ARCH: list[int] = [300, 300]
PPO_EPISODES_PER_ROLLOUT = 4


#: An SB3 algorithm, or a baseline with the same learn/save interface.
Agent: TypeAlias = "BaseAlgorithm | ScriptedSearch"


# --- separate actor learning rate through a policy subclass -------------------------------
@functools.cache
def _lr_scaled(cls: type[th.optim.Optimizer]) -> type[th.optim.Optimizer]:
    """A subclass of ``cls`` whose step multiplies each group's lr by its ``lr_scale``."""

    def step(self: th.optim.Optimizer, closure: Callable[[], float] | None = None) -> Any:
        scales = [group.get("lr_scale", 1.0) for group in self.param_groups]
        for group, scale in zip(self.param_groups, scales, strict=True):
            group["lr"] = group["lr"] * scale
        try:
            return cls.step(self, closure)
        finally:
            for group, scale in zip(self.param_groups, scales, strict=True):
                group["lr"] = group["lr"] / scale

    return type(f"LRScaled{cls.__name__}", (cls,), {"step": step})


def _scale_actor_optimizer(policy: Any, lr_schedule: Schedule, scale: float) -> None:
    if scale == 1.0:
        return
    optimizer_class: Any = _lr_scaled(policy.optimizer_class)
    policy.actor.optimizer = optimizer_class(
        policy.actor.parameters(), lr=lr_schedule(1), **policy.optimizer_kwargs
    )
    for group in policy.actor.optimizer.param_groups:
        group["lr_scale"] = scale


class SplitLRTD3Policy(TD3Policy):
    """TD3Policy (DDPG and TD3) whose actor learns at ``actor_lr_scale`` × the critic's rate."""

    def __init__(self, *args: Any, actor_lr_scale: float = 1.0, **kwargs: Any) -> None:
        self.actor_lr_scale = float(actor_lr_scale)
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        _scale_actor_optimizer(self, lr_schedule, self.actor_lr_scale)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "actor_lr_scale": self.actor_lr_scale}


class SplitLRSACPolicy(SACPolicy):
    """SACPolicy whose actor learns at ``actor_lr_scale`` × the critic's rate."""

    def __init__(self, *args: Any, actor_lr_scale: float = 1.0, **kwargs: Any) -> None:
        self.actor_lr_scale = float(actor_lr_scale)
        super().__init__(*args, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        _scale_actor_optimizer(self, lr_schedule, self.actor_lr_scale)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "actor_lr_scale": self.actor_lr_scale}


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
        "learning_starts": config.warmup_episodes * n_units,
        "batch_size": config.batch_size,
        "tau": config.tau,
        "gamma": config.gamma,
        # AMC: after each episode, one gradient step per transition collected.
        "train_freq": (1, "episode"),
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
        warmup_episodes=config.warmup_episodes,
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
    n_steps = n_units * PPO_EPISODES_PER_ROLLOUT
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


def _baseline(name: str) -> Callable[..., Agent]:
    def build(env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
        from autoshrink.agent import baselines

        return baselines.BASELINES[name](env, config, n_units)

    return build


# --- saving and loading without pickles ---------------------------------------------------
#: Attribute that carries our JSON state (noise, episode-info buffers) into the zip's data.
AGENT_STATE_KEY = "autoshrink_state"
AGENT_STATE_VERSION = 1
#: Names of the weight files SB3 writes: policy.pth, actor.optimizer.pth, ...
_PTH_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*(\.[a-z][a-z0-9]*(_[a-z0-9]+)*)*\.pth")


def save_agent(agent: Agent, path: Path) -> None:
    """``agent.save(path)``, with the noise and episode-info state as plain JSON in the zip.

    SB3 still cloudpickles into the zip what JSON cannot hold (spaces, classes, schedules,
    the noise object), for other SB3 tools; the ``load`` of every spec here never unpickles
    it, and restores the noise and episode infos from the JSON state instead.
    """
    if not isinstance(agent, BaseAlgorithm):
        agent.save(path)
        return
    agent.__dict__[AGENT_STATE_KEY] = _agent_state(agent)
    try:
        agent.save(path)
    finally:
        agent.__dict__.pop(AGENT_STATE_KEY, None)


def _agent_state(agent: BaseAlgorithm) -> dict[str, Any]:
    noise = getattr(agent, "action_noise", None)
    state = {
        "version": AGENT_STATE_VERSION,
        "noise": noise.state_dict() if isinstance(noise, TruncatedNormalActionNoise) else None,
        "ep_info_buffer": list(agent.ep_info_buffer or ()),
        "ep_success_buffer": list(agent.ep_success_buffer or ()),
    }
    out: dict[str, Any] = {}
    for key, value in state.items():
        try:
            out[key] = to_jsonable(value)
        except TypeError:  # episode infos with odd values only feed SB3's rollout logs
            out[key] = None
    return out


def _is_serialized(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def _read_agent_zip(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The zip's bytes and its ``data`` JSON, parsed with ``json`` only.

    SB3 hands every ``.pth`` member to ``set_parameters``, which looks its name up as an
    attribute path on the model; only plain dotted names are let through.
    """
    try:
        raw = Path(path).read_bytes()
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = zf.namelist()
            data = json.loads(zf.read("data"))
    except (OSError, KeyError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a saved agent: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a saved agent: its data is not an object")
    odd = [n for n in names if n.endswith(".pth") and not _PTH_NAME.fullmatch(n)]
    if odd:
        raise CheckpointError(f"{path} holds unexpected weight files {odd}")
    return raw, data


def _check_space(path: Path, data: dict[str, Any], key: str, space: gym.Space[Any]) -> None:
    entry = data.get(key)
    shape = entry.get("_shape") if isinstance(entry, dict) else None
    if isinstance(shape, list) and tuple(shape) != tuple(space.shape or ()):
        raise CheckpointError(
            f"the agent in {path} has the {key} shape {tuple(shape)}, the env "
            f"{tuple(space.shape or ())}"
        )


def _rebuilt_policy_kwargs(path: Path, entry: dict[str, Any], ours: dict[str, Any]) -> Any:
    """policy_kwargs from the plain first-level items SB3 wrote next to the pickle.

    Items that were not JSON (classes such as ``activation_fn``) are stored as ``str(value)``;
    they are taken from ``ours`` (the AgentConfig's policy_kwargs) when ``str`` agrees.
    """
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key.startswith(":"):
            continue
        mine = ours.get(key)
        if key in ours and str(mine) == value and not _is_json(mine):
            out[key] = mine
        elif isinstance(value, str) and value.startswith("<") and value.endswith(">"):
            raise CheckpointError(
                f"the agent in {path} has policy_kwargs[{key!r}] = {value}, which autoshrink "
                "does not unpickle; pass the same object in the AgentConfig's policy_kwargs"
            )
        else:
            out[key] = value
    return out


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _episode_infos(values: Any, maxlen: Any) -> deque[dict[str, Any]] | None:
    if not isinstance(values, list):
        return None
    size = (
        maxlen if isinstance(maxlen, int) and not isinstance(maxlen, bool) and maxlen > 0 else 100
    )
    infos = (v for v in values if isinstance(v, dict) and all(isinstance(k, str) for k in v))
    return deque(infos, maxlen=size)


def _custom_objects(
    path: Path,
    data: dict[str, Any],
    cls: type[BaseAlgorithm],
    policy_class: type[BasePolicy],
    kwargs: dict[str, Any],
    env: gym.Env,
) -> dict[str, Any]:
    """A replacement, built here, for every entry of ``data`` that SB3 would unpickle.

    The spaces, policy class, schedules, buffers' classes, noise and episode buffers are
    always rebuilt (pickled or not); any other pickled entry is rebuilt from the constructor
    kwargs of our builder, or the constructor's default. A pickled entry that is neither is
    refused (CheckpointError) rather than handed to SB3, which would unpickle it.
    """
    _check_space(path, data, "observation_space", env.observation_space)
    _check_space(path, data, "action_space", env.action_space)
    state = data.get(AGENT_STATE_KEY)
    state = state if isinstance(state, dict) and not _is_serialized(state) else {}
    window = data.get("_stats_window_size")
    own: dict[str, Any] = {
        "policy_class": policy_class,
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "action_noise": None,  # DDPG/TD3: ours is rebuilt and bound after loading
        "lr_schedule": FloatSchedule(kwargs["learning_rate"]),
        "replay_buffer_class": kwargs.get("replay_buffer_class"),
        "rollout_buffer_class": kwargs.get("rollout_buffer_class"),
        "_last_obs": None,  # the env is reset before training, as SB3 does with force_reset
        "_last_original_obs": None,
        "_last_episode_starts": None,
        "ep_info_buffer": _episode_infos(state.get("ep_info_buffer"), window),
        "ep_success_buffer": _episode_infos(state.get("ep_success_buffer"), window),
        AGENT_STATE_KEY: None,
    }
    custom = {key: value for key, value in own.items() if key in data}
    defaults = inspect.signature(cls.__init__).parameters
    for key, value in data.items():
        if key in custom or not _is_serialized(value):
            continue
        if key == "policy_kwargs":
            custom[key] = _rebuilt_policy_kwargs(path, value, kwargs.get(key) or {})
        elif key in kwargs:
            custom[key] = kwargs[key]
        elif key in defaults and defaults[key].default is not inspect.Parameter.empty:
            custom[key] = defaults[key].default
        else:
            raise CheckpointError(
                f"{path} holds a pickled entry {key!r} that autoshrink does not rebuild; "
                "it refuses to unpickle it"
            )
    return custom


def _load_sb3(
    cls: type[BaseAlgorithm],
    policy_class: type[BasePolicy],
    agent_kwargs: Callable[[AgentConfig, int], dict[str, Any]],
) -> Callable[..., Agent]:
    def load(path: Path, env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
        raw, data = _read_agent_zip(path)
        custom = _custom_objects(path, data, cls, policy_class, agent_kwargs(config, n_units), env)
        # SB3 replaces every entry named in custom_objects instead of unpickling it, and reads
        # the weights with torch.load(weights_only=True). The bytes read above are loaded, so
        # the file cannot change between the check and the load.
        model = cls.load(io.BytesIO(raw), env=env, device=config.device, custom_objects=custom)
        model.__dict__.pop(AGENT_STATE_KEY, None)
        if isinstance(model, TD3):  # DDPG is a TD3: rebuild the noise and restore its state
            noise = make_noise(config, env)
            state = data.get(AGENT_STATE_KEY)
            saved = state.get("noise") if isinstance(state, dict) else None
            if isinstance(saved, dict):
                _restore_noise(path, noise, saved)
            bind_noise(model, noise)
        return model

    return load


def _restore_noise(path: Path, noise: TruncatedNormalActionNoise, state: dict[str, Any]) -> None:
    try:
        noise.load_state_dict(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the noise state in {path} is malformed: {exc}") from exc


def _load_baseline(path: Path, env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
    from autoshrink.agent import baselines

    return baselines.load_baseline(path, env, config, n_units)


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
            _load_sb3(DDPG, SplitLRTD3Policy, _off_policy_agent_kwargs),
            True,
            True,
            "DDPG with AMC's settings (default)",
        ),
        AlgorithmSpec(
            "td3",
            _build_td3_like(TD3),
            _load_sb3(TD3, SplitLRTD3Policy, _off_policy_agent_kwargs),
            True,
            True,
            "TD3, AMC's settings",
        ),
        AlgorithmSpec(
            "sac",
            _build_sac,
            _load_sb3(SAC, SplitLRSACPolicy, _off_policy_agent_kwargs),
            True,
            True,
            "SAC, AMC's nets and rates",
        ),
        AlgorithmSpec(
            "ppo",
            _build_ppo,
            _load_sb3(PPO, ActorCriticPolicy, _ppo_kwargs),
            True,
            False,
            "PPO on the Box actions",
        ),
        AlgorithmSpec("random", _baseline("random"), _load_baseline, False, False, "random search"),
        AlgorithmSpec(
            "uniform", _baseline("uniform"), _load_baseline, False, False, "uniform, bisected"
        ),
        AlgorithmSpec(
            "global", _baseline("global"), _load_baseline, False, False, "global ranking"
        ),
    )
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec of alias ``name`` (AgentConfig has already checked that it exists)."""
    return ALGORITHMS[name]


def build_agent(env: gym.Env, config: AgentConfig, n_units: int) -> Agent:
    """Build the agent of ``config.algorithm`` for ``env``, whose episodes last ``n_units``."""
    return ALGORITHMS[config.algorithm].build(env, config, n_units)
