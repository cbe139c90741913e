"""The recipe of a search's worker envs: one picklable factory per worker, its device.

:func:`env_factories` gives one factory per worker: :func:`functools.partial` over
:func:`worker_env` and the main env's :class:`~autoshrink.env.config.EnvConfig`, so that a
subprocess or a Ray actor receives the recipe, not the model, and builds its own env.
Both backends (:mod:`autoshrink.agent.workers`, :mod:`autoshrink.agent.ray_env`) take
their envs from here.

>>> worker_devices("cpu", 3)
['cpu', 'cpu', 'cpu']
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np

from autoshrink.compression.device import default_threads, threads_problem
from autoshrink.compression.errors import AutoshrinkError

if TYPE_CHECKING:
    from autoshrink.env.config import EnvConfig


def as_dummy_rewards(rewards: np.ndarray) -> np.ndarray:
    """Rewards as float32, as SB3's DummyVecEnv (the one env of ``workers = 1``) holds them.

    So that a search logs, ranks and stores the same rewards whatever its workers.
    """
    return np.asarray(rewards, dtype=np.float32)


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
    if (problem := threads_problem(threads)) is not None:
        raise AutoshrinkError(problem)
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
