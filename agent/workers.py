"""Episodes evaluated in parallel: K copies of a search's env, as one SB3 VecEnv.

A search with ``AgentConfig.workers = K > 1`` gives its agent a VecEnv of K
:class:`~autoshrink.env.compression_env.CompressionEnv` copies, each in its own process:
Stable-Baselines3's own :class:`~stable_baselines3.common.vec_env.SubprocVecEnv` on the
``local`` backend, or :class:`~autoshrink.agent.ray_env.RayVecEnv` (one Ray actor per env)
on ``ray``. Every copy is built in its worker from the main env's
:class:`~autoshrink.env.config.EnvConfig` (:mod:`~autoshrink.agent.worker_env`), so it
loads the same cached baseline and the same data splits; its evaluations are seeded by
the config as the main env's are, so one realised policy scores the same in every
worker. SB3 seeds each copy's resets with ``seed + i`` (the env itself draws nothing).

The main process keeps its own env: its units, baseline and budgets serve the agent's
setup, the logs, the scripted searches' candidates and the final fine-tune.

>>> vec = make_workers(env, AgentConfig(workers=2))  # doctest: +SKIP
>>> vec.num_envs  # doctest: +SKIP
2
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import TYPE_CHECKING

import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from autoshrink.agent.worker_env import as_dummy_rewards, env_factories, worker_threads
from autoshrink.compression.errors import AutoshrinkError

if TYPE_CHECKING:
    from stable_baselines3.common.vec_env import VecEnv

    from autoshrink.agent.config import AgentConfig

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
PRELOAD = ["autoshrink.env.compression_env", "autoshrink.agent.worker_env"]


class WorkerVecEnv(SubprocVecEnv):
    """SB3's SubprocVecEnv, its rewards as float32 (:func:`as_dummy_rewards`).

    A worker that dies (killed, out of memory, or ended by a Ctrl-C, which reaches the
    whole process group) is one :class:`AutoshrinkError` line, not a broken pipe, and
    closing ends the other workers instead of waiting for the dead one.
    """

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for every worker's step, in env order."""
        try:
            obs, rewards, dones, infos = super().step_wait()
        except (EOFError, OSError) as exc:
            self.waiting = False
            raise AutoshrinkError(
                "a search worker died (killed or out of memory); --resume continues the "
                "search from its last round"
            ) from exc
        return obs, as_dummy_rewards(rewards), dones, infos

    def close(self) -> None:
        """End the workers (those still alive, if one died)."""
        if self.closed:
            return
        try:
            super().close()
        except (EOFError, OSError):
            for process in self.processes:
                if process.is_alive():
                    process.kill()
                process.join(timeout=5)
            for remote in self.remotes:
                remote.close()
            self.closed = True


def make_workers(env: gym.Env, agent: AgentConfig) -> VecEnv:
    """The VecEnv of ``agent.workers`` copies of ``env``, on ``agent.backend``.

    Args:
        env: The main process's compression env; its config is the workers' recipe.
        agent: The agent's settings: ``workers``, ``backend``, ``address`` and
            ``worker_threads`` (torch threads of each; None = the cores divided by the
            workers).

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

        each = worker_threads(agent.worker_threads, agent.workers)
        vec = RayVecEnv(config, agent.workers, each, agent.address)
    else:
        logger.info("starting %d local workers (%s)", agent.workers, START_METHOD)
        # before the server's first start (later calls change nothing: it is running)
        multiprocessing.get_context(START_METHOD).set_forkserver_preload(PRELOAD)
        try:
            vec = WorkerVecEnv(
                env_factories(config, agent.workers, agent.worker_threads), START_METHOD
            )
        except (EOFError, OSError) as exc:  # the worker died: its traceback is on stderr
            raise AutoshrinkError(f"a search worker could not build its env ({exc})") from exc
    vec.local_env = env  # type: ignore[attr-defined]  # what the scripted searches read
    return vec
