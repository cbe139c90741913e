"""A search's K envs as Ray actors, behind SB3's VecEnv interface.

Ray 2.60 offers no VecEnv for Stable-Baselines3: RLlib's remote envs speak RLlib's own
``BaseEnv`` (and RLlib is not part of ``ray[default]``). :class:`RayVecEnv` is the thin
adapter: one actor per env, each holding one
env, stepped as SB3's ``SubprocVecEnv`` steps its workers (auto-reset, terminal
observation, ``seed + i``), all together with one ``ray.get`` of the actors' futures, in
env order. Ray places the actors; nothing here schedules.

Where the cluster has GPUs and the search's device is ``cuda`` or ``auto``, each actor asks
for its share of them (``num_gpus``: one GPU each, or a fraction when there are more
actors than GPUs) and scores on the GPU Ray gives it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from autoshrink.agent.ray_connect import import_ray, init_ray
from autoshrink.agent.worker_env import as_dummy_rewards, env_factories
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.env.config import EnvConfig


class EnvHolder:
    """What each Ray actor holds: one env, built in the actor, stepped as SB3's workers do.

    Each step and reset answers what :class:`~stable_baselines3.common.vec_env.SubprocVecEnv`'s
    worker process sends back (the reward as the env gave it, the terminal observation in
    ``info`` and an automatic reset at the end of an episode), so that the two backends
    give the agent the same numbers.
    """

    def __init__(self, factory: Callable[[], gym.Env]) -> None:
        self.env = factory()
        self.reset_info: dict[str, Any] = {}

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """The env's observation and action spaces."""
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Reset with ``seed``; the observation and the reset info."""
        given = {"options": options} if options else {}
        obs, self.reset_info = self.env.reset(seed=seed, **given)
        return obs, self.reset_info

    def step(self, action: np.ndarray) -> tuple[Any, Any, bool, dict[str, Any], dict[str, Any]]:
        """One step, and a reset at the end of the episode (SB3's VecEnv convention)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = bool(terminated or truncated)
        info["TimeLimit.truncated"] = truncated and not terminated
        if done:
            info["terminal_observation"] = obs
            obs, self.reset_info = self.env.reset()
        return obs, reward, done, info, self.reset_info

    def attr(self, name: str) -> Any:
        """The env's attribute ``name``."""
        return self.env.get_wrapper_attr(name)

    def set_attr(self, name: str, value: Any) -> None:
        """Set the env's attribute ``name``."""
        setattr(self.env, name, value)

    def method(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the env's method ``name``."""
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type[gym.Wrapper]) -> bool:
        """Whether the env is wrapped in ``wrapper_class``."""
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)


class RayVecEnv(VecEnv):
    """K envs, one per Ray actor, stepped in lockstep.

    Args:
        config: The env's recipe (each actor builds its own env from it).
        workers: Envs (actors).
        threads: Torch threads (and Ray ``num_cpus``) of each actor.
        address: The Ray cluster; None starts a local Ray (or uses the one connected).
    """

    def __init__(self, config: EnvConfig, workers: int, threads: int, address: str | None) -> None:
        self.own = init_ray(address)
        ray = import_ray()
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if workers * threads > cpus:  # Ray would wait for them forever
            self.close()
            raise AutoshrinkError(
                f"the Ray cluster has {cpus:g} CPUs; {workers} workers of {threads} torch "
                f"threads need {workers * threads}: use fewer --workers or --threads"
            )
        gpus = float(ray.cluster_resources().get("GPU", 0))
        use_gpu = gpus > 0 and config.device in ("cuda", "auto")
        share = min(1.0, gpus / workers) if use_gpu else 0.0
        devices = ["cuda" if use_gpu else config.device] * workers  # Ray picks the GPU
        actor = ray.remote(EnvHolder).options(num_cpus=threads, num_gpus=share)
        factories = env_factories(config, workers, threads, devices)
        self.actors = [actor.remote(factory) for factory in factories]
        self._waiting: list[Any] = []
        try:
            obs_space, action_space = ray.get(self.actors[0].spaces.remote())
        except Exception as exc:
            self.close()
            raise AutoshrinkError(f"a Ray worker could not build its env: {exc}") from exc
        super().__init__(workers, obs_space, action_space)

    def _get(self, refs: list[Any]) -> list[Any]:
        return list(import_ray().get(refs))

    def reset(self) -> Any:
        """Reset every env with its seed (SB3's ``seed + i``) and options."""
        refs = [a.reset.remote(self._seeds[i], self._options[i]) for i, a in enumerate(self.actors)]
        results = self._get(refs)
        self.reset_infos = [info for _, info in results]
        self._reset_seeds()
        self._reset_options()
        return np.stack([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        """Send each actor its env's action."""
        self._waiting = [a.step.remote(actions[i]) for i, a in enumerate(self.actors)]

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for every actor's step, in env order (stacked as SubprocVecEnv stacks)."""
        results, self._waiting = self._get(self._waiting), []
        self.reset_infos = [r[4] for r in results]
        obs, rewards, dones = (np.stack([r[k] for r in results]) for k in range(3))
        return obs, as_dummy_rewards(rewards), dones, [r[3] for r in results]

    def close(self) -> None:
        """End the actors (and the Ray this env started)."""
        ray = import_ray()
        for actor in getattr(self, "actors", []):
            ray.kill(actor)
        self.actors = []
        if self.own and ray.is_initialized():
            ray.shutdown()

    def _each(self, indices: VecEnvIndices, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        chosen = [self.actors[i] for i in self._get_indices(indices)]
        return self._get([getattr(a, name).remote(*args, **kwargs) for a in chosen])

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of each chosen env."""
        return self._each(indices, "attr", attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each chosen env."""
        self._each(indices, "set_attr", attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a method of each chosen env."""
        return self._each(indices, "method", method_name, *method_args, **kwargs)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether each chosen env is wrapped in ``wrapper_class``."""
        return self._each(indices, "is_wrapped", wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Compression envs render nothing."""
        return [None] * self.num_envs
