"""Episodes evaluated in parallel: K copies of a search's env, as one SB3 VecEnv.

A search with ``AgentConfig.workers = K > 1`` gives its agent a VecEnv of K
:class:`~autoshrink.env.compression_env.CompressionEnv` copies, each in its own process:
Stable-Baselines3's own :class:`~stable_baselines3.common.vec_env.SubprocVecEnv` on the
``local`` backend, or :class:`~autoshrink.agent.ray_env.RayVecEnv` (one Ray actor per env)
on ``ray``. Every copy is built in its worker from the main env's
:class:`~autoshrink.env.config.EnvConfig` by :func:`worker_env`, so it loads the same
cached baseline and the same data splits; its evaluations are seeded by the config as the
main env's are, so one realised policy scores the same in every worker. SB3 seeds each
copy's resets with ``seed + i`` (the env itself draws nothing).

The main process keeps its own env: its units, baseline and budgets serve the agent's
setup, the logs, the scripted searches' candidates and the final fine-tune.

>>> vec = make_workers(env, AgentConfig(workers=2), threads=None)  # doctest: +SKIP
>>> vec.num_envs  # doctest: +SKIP
2
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from autoshrink.compression.device import default_threads
from autoshrink.compression.errors import AutoshrinkError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from autoshrink.agent.config import AgentConfig
    from autoshrink.env.config import EnvConfig

logger = logging.getLogger(__name__)

#: How the local workers start. ``fork`` is unsafe here: by the time the workers start, the
#: main process has run torch (the baseline, the units' trace, the cost model), so its
#: OpenMP pool may hold locks that a forked child inherits held (GNU OpenMP is not
#: fork-safe), and a CUDA context can never be used in a forked child. ``forkserver``
#: forks every worker from a clean server process that has imported torch and autoshrink
#: (:data:`PRELOAD`) but run nothing. Measured on the 2-core machine at load ~5.7, two
#: ResNet-20 digits workers were stepping after 9.4 s with the preload, 15.0 s without it
#: and 15.5 s with ``spawn`` (0.5 s with the unsafe ``fork``), twice each.
START_METHOD = "forkserver"
#: What the forkserver imports once, so that no worker imports torch again. It also
#: replaces the default preload of ``__main__``: a user's script without a
#: ``if __name__ == "__main__"`` guard is not run again in the server.
PRELOAD = ["autoshrink.env.compression_env", "autoshrink.agent.workers"]


def as_dummy_rewards(rewards: np.ndarray) -> np.ndarray:
    """Rewards as float32, as SB3's DummyVecEnv (the one env of ``workers = 1``) holds them.

    So that a search logs, ranks and stores the same rewards whatever its workers.
    """
    return np.asarray(rewards, dtype=np.float32)


class WorkerVecEnv(SubprocVecEnv):
    """SB3's SubprocVecEnv, its rewards as float32 (:func:`as_dummy_rewards`)."""

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for every worker's step, in env order."""
        obs, rewards, dones, infos = super().step_wait()
        return obs, as_dummy_rewards(rewards), dones, infos


def worker_env(
    config: EnvConfig, threads: int, log_level: int = logging.WARNING, cache: str | None = None
) -> gym.Env:
    """Build one worker's env, in the worker: ``threads`` torch threads, the given config.

    A module-level function, so that the factory (:func:`functools.partial` over the
    config) pickles for a subprocess or a Ray actor: the recipe travels, not the model.
    ``cache`` is the main process's cache folder: a forkserver (or a Ray worker) has the
    environment of when it started, not the main process's of now.
    """
    import torch

    from autoshrink.env.compression_env import CompressionEnv

    if cache is not None:
        os.environ["AUTOSHRINK_CACHE"] = cache
    torch.set_num_threads(threads)
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
    return CompressionEnv(config)


def worker_devices(device: str, workers: int) -> list[str]:
    """The device of each of ``workers`` envs: CUDA's GPUs round-robin, else ``device``.

    ``cuda`` and ``auto`` (where CUDA is available) spread the workers over every GPU of
    this machine; ``cuda:N`` puts them all on GPU N; ``cpu`` (and ``auto`` without CUDA)
    keeps them on the CPU.

    >>> worker_devices("cpu", 3)
    ['cpu', 'cpu', 'cpu']
    """
    if device not in ("cuda", "auto"):
        return [device] * workers
    import torch

    if not torch.cuda.is_available():
        return [device] * workers
    count = torch.cuda.device_count()
    return [f"cuda:{i % count}" for i in range(workers)]


def worker_threads(threads: int | None, workers: int) -> int:
    """Torch threads of each worker: ``threads``, else the cores divided by the workers."""
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise AutoshrinkError(f"threads must be at least 1, got {threads!r}")
    return default_threads(workers) if threads is None else int(threads)


def env_factories(
    config: EnvConfig, workers: int, threads: int | None, devices: list[str] | None = None
) -> list[Callable[[], gym.Env]]:
    """One picklable env factory per worker, each with its device (see :func:`worker_devices`)."""
    from autoshrink.compression.cache import cache_dir

    level = logging.getLogger("autoshrink").getEffectiveLevel()
    each, cache = worker_threads(threads, workers), str(cache_dir())
    devices = devices or worker_devices(config.device, workers)
    return [
        functools.partial(worker_env, config.replace(device=device), each, level, cache)
        for device in devices
    ]


def make_workers(env: gym.Env, agent: AgentConfig, threads: int | None = None) -> VecEnv:
    """The VecEnv of ``agent.workers`` copies of ``env``, on ``agent.backend``.

    Args:
        env: The main process's compression env; its config is the workers' recipe.
        agent: The agent's settings: ``workers``, ``backend``, ``address``.
        threads: Torch threads of each worker; None = the cores divided by the workers.

    Raises:
        AutoshrinkError: If ``env`` has no EnvConfig to rebuild it from, Ray is missing or
            its cluster cannot be reached.
    """
    from autoshrink.env.config import EnvConfig

    config = getattr(env.unwrapped, "config", None)
    if not isinstance(config, EnvConfig):
        raise AutoshrinkError(
            f"workers > 1 rebuild the env from its EnvConfig; {type(env.unwrapped).__name__} "
            "has none"
        )
    vec: VecEnv
    if agent.backend == "ray":
        from autoshrink.agent.ray_env import RayVecEnv

        each = worker_threads(threads, agent.workers)
        vec = RayVecEnv(config, agent.workers, each, agent.address)
    else:
        logger.info("starting %d local workers (%s)", agent.workers, START_METHOD)
        # before the server's first start (later calls change nothing: it is running)
        multiprocessing.get_context(START_METHOD).set_forkserver_preload(PRELOAD)
        try:
            vec = WorkerVecEnv(env_factories(config, agent.workers, threads), START_METHOD)
        except (EOFError, OSError) as exc:  # the worker died: its traceback is on stderr
            raise AutoshrinkError(f"a search worker could not build its env ({exc})") from exc
    vec.local_env = env  # type: ignore[attr-defined]  # what the scripted searches read
    return vec
