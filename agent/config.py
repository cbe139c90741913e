"""AgentConfig: which agent searches, for how long, and with what exploration.

The config is a small frozen dataclass that round-trips through versioned JSON
(``{"type": ..., "version": ..., "data": ...}``), the same envelope as ``policy.json``.
Loading checks the type and the version first, then every field, and lists all problems.

>>> cfg = AgentConfig(algorithm="ddpg", episodes=40, warmup_episodes=10)
>>> AgentConfig.from_json(cfg.to_json()) == cfg
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from autoshrink.compression.device import device_problem, threads_problem
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.names import (
    DEFAULT_BACKEND,
    DEFAULT_WORKERS,
    MAX_SEED,
    MAX_WORKERS,
    SEARCH_BACKENDS,
)
from autoshrink.compression.versioned import JsonFile, unwrap, wrap

CONFIG_TYPE = "autoshrink.AgentConfig"
CONFIG_VERSION = 1
#: Episodes of a search, warm-up included. Measured on the shared 2-core machine with the
#: digits baseline cached: 60 episodes of ResNet-20 take 10-33 s quiet, 122 s at load ~4.
DEFAULT_EPISODES = 60
#: The most random warm-up episodes by default (a third of the episodes, up to this).
DEFAULT_WARMUP = 20
#: The agents a search can run, by alias, with a line on each. SB3 builds the learning
#: ones in :mod:`autoshrink.agent.algorithms`; their names live here, where ``--help``
#: reads them without importing SB3 or torch.
AGENTS: dict[str, str] = {
    "ddpg": "DDPG with AMC's settings",
    "td3": "TD3, AMC's settings",
    "sac": "SAC, AMC's nets and rates",
    "ppo": "PPO on the Box actions",
    "random": "random search",
    "uniform": "one keep-ratio for every unit, bisected to the budget",
    "global": "global ranking of channels",
    "deep-compression": "global magnitude sparsity and one bit-width (deep/sparse mode)",
    "solver": "sensitivity table, exact MILP under the budgets, SPDY-style polish",
}


def default_warmup(episodes: int) -> int:
    """The default warm-up of a search of ``episodes``: a third, at most DEFAULT_WARMUP."""
    return min(DEFAULT_WARMUP, episodes // 3)


class AgentConfigError(AutoshrinkError):
    """An agent configuration is malformed or out of range."""


@dataclass(frozen=True)
class AgentConfig(JsonFile):
    """How a search is run.

    The defaults are AMC's DDPG settings, scaled down in episode count (AMC runs 100 warm-up
    and 800 episodes in total, which takes days on a CPU). They are the search's defaults
    too: ``autoshrink search``, a batch job and :class:`~autoshrink.agent.search.SearchConfig`
    take them from here.

    Args:
        algorithm: Alias from :data:`AGENTS`: ``ddpg`` (the
            default), ``td3``, ``sac``, ``ppo``, or a non-learning baseline: ``random``,
            ``uniform``, ``global``.
        episodes: Episodes in total, warm-up included. Every agent, scripted searches included, gets
            exactly this many evaluations.
        warmup_episodes: Episodes of uniformly random actions before learning starts
            (``learning_starts`` = warmup_episodes × units). Off-policy agents only. None
            (the default) takes a third of the episodes, at most :data:`DEFAULT_WARMUP`, so
            that a short search still learns.
        noise_sigma: Std of the truncated-normal exploration noise, in action units (the
            action space is [0, 1]); DDPG and TD3 only.
        noise_decay: Per-episode decay of ``noise_sigma`` after warm-up
            (σ = noise_sigma · noise_decay^(episode − warmup_episodes)).
        actor_lr: Learning rate of the actor (also PPO's single rate).
        critic_lr: Learning rate of the critic(s) (and SAC's entropy coefficient).
        batch_size: Minibatch size of gradient steps.
        buffer_size: Replay buffer size in transitions; None = 100 × units (AMC).
        tau: Polyak coefficient of the target networks.
        gamma: Discount. 1 because the reward arrives only at the end of an episode.
        episode_reward: Off-policy agents store every step of an episode with its final
            reward, centred and scaled by the rewards in the buffer (AMC's credit assignment
            and reward baseline, :mod:`autoshrink.agent.replay`); False stores the env's
            sparse rewards as they come.
        seed: Seeds SB3, numpy, torch, the env and the exploration noise.
        policy_kwargs: SB3 ``policy_kwargs``; None = two hidden layers of 300 (AMC).
        algorithm_kwargs: Extra keyword arguments for the SB3 constructor, passed last.
        device: Torch device of the agent's networks: ``cpu`` (the default: its MLPs are
            small, and a search's models go to ``EnvConfig.device``), ``auto``, ``cuda`` or
            ``cuda:N``.
        workers: Episodes evaluated at once, each by its own copy of the env in its own
            process (SB3's ``SubprocVecEnv``, or Ray actors); 1 evaluates in this process.
            Every round of ``workers`` episodes is played in lockstep (they have the same
            length), so a search of ``episodes`` not a multiple of ``workers`` evaluates
            the last round's extra episodes without logging them. The warm-up is rounded
            up to whole rounds.
        backend: Where the workers run: ``local`` processes or ``ray`` actors.
        address: The Ray cluster (``auto``, ``ray://host:port``); None starts a local Ray.
        threads: Torch threads of the search's own process (its episodes when
            ``workers = 1``, and the finish). None = this machine's usable cores, chosen when
            the search starts and recorded in ``config.json``: a computation's numbers depend
            on its threads, so a resume must compute with the threads of the start.
        worker_threads: Torch threads of each worker when ``workers > 1``. None = the
            usable cores divided by the workers (at least 1), recorded likewise.
    """

    json_what: ClassVar[str] = "agent config"
    json_error: ClassVar[type[AutoshrinkError]] = AgentConfigError

    algorithm: str = "ddpg"
    episodes: int = DEFAULT_EPISODES
    warmup_episodes: int | None = None
    noise_sigma: float = 0.5
    noise_decay: float = 0.95
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    batch_size: int = 64
    buffer_size: int | None = None
    tau: float = 0.01
    gamma: float = 1.0
    episode_reward: bool = True
    seed: int = 0
    policy_kwargs: dict[str, Any] | None = None
    algorithm_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    workers: int = DEFAULT_WORKERS
    backend: str = DEFAULT_BACKEND
    address: str | None = None
    threads: int | None = None
    worker_threads: int | None = None

    def __post_init__(self) -> None:
        if self.warmup_episodes is None and _is_int(self.episodes):
            object.__setattr__(self, "warmup_episodes", default_warmup(self.episodes))
        problems = self.problems()
        if problems:
            raise AgentConfigError("bad agent config: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Every reason this config is invalid (empty when it is valid)."""
        out: list[str] = []
        if self.algorithm not in AGENTS:
            out.append(f"unknown algorithm {self.algorithm!r} (choose from {sorted(AGENTS)})")
        for name in ("episodes", "batch_size", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                out.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("threads", "worker_threads"):
            if (problem := threads_problem(getattr(self, name), name)) is not None:
                out.append(problem)
        if _is_int(self.workers) and self.workers > MAX_WORKERS:
            out.append(f"workers must be at most {MAX_WORKERS}, got {self.workers}")
        warmup = self.warmup_episodes
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            out.append(f"warmup_episodes must be >= 0, got {self.warmup_episodes!r}")
        if self.buffer_size is not None and (not _is_int(self.buffer_size) or self.buffer_size < 1):
            out.append(f"buffer_size must be a positive integer or null, got {self.buffer_size!r}")
        if not isinstance(self.episode_reward, bool):
            out.append(f"episode_reward must be true or false, got {self.episode_reward!r}")
        if not (_is_int(self.seed) and 0 <= self.seed <= MAX_SEED):
            out.append(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        checks = {
            "noise_sigma": (0.0, math.inf, True),
            "noise_decay": (0.0, 1.0, False),
            "actor_lr": (0.0, math.inf, False),
            "critic_lr": (0.0, math.inf, False),
            "tau": (0.0, 1.0, False),
            "gamma": (0.0, 1.0, False),
        }
        for name, (lo, hi, lo_ok) in checks.items():
            value = getattr(self, name)
            ok = _is_num(value) and (value >= lo if lo_ok else value > lo) and value <= hi
            if not ok:
                out.append(f"{name} must lie in {'[' if lo_ok else '('}{lo}, {hi}], got {value!r}")
        if self.policy_kwargs is not None and not isinstance(self.policy_kwargs, dict):
            out.append("policy_kwargs must be an object or null")
        for key, value in (self.policy_kwargs or {}).items():
            if str(key).endswith(("_fn", "_class")) and not callable(value):
                out.append(
                    f"policy_kwargs.{key} must be a class, given in Python; a file cannot name "
                    f"one (got {value!r})"
                )
        if not isinstance(self.algorithm_kwargs, dict):
            out.append("algorithm_kwargs must be an object")
        if (problem := device_problem(self.device)) is not None:
            out.append(problem)
        if self.backend not in SEARCH_BACKENDS:
            out.append(f"backend must be one of {SEARCH_BACKENDS}, got {self.backend!r}")
        if self.address is not None and not (isinstance(self.address, str) and self.address):
            out.append(f"address must be a non-empty string or null, got {self.address!r}")
        elif self.address is not None and self.backend != "ray":
            out.append("an address is for the ray backend")
        return out

    @property
    def warmup(self) -> int:
        """The warm-up episodes, resolved from the default when none were given."""
        return int(self.warmup_episodes or 0)

    # --- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the versioned JSON-ready form ``{"type", "version", "data"}``."""
        return wrap(CONFIG_TYPE, CONFIG_VERSION, asdict(self))

    @classmethod
    def from_dict(cls, obj: object) -> AgentConfig:
        """Build a config from :meth:`to_dict` output, checking type, version and fields.

        Raises:
            AgentConfigError: On a foreign type, a future version, unknown keys or bad values.
        """
        data = unwrap(obj, CONFIG_TYPE, CONFIG_VERSION, "agent config", AgentConfigError)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AgentConfigError(f"agent config has unknown keys {unknown}")
        return cls(**data)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
