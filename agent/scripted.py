"""Scripted searches: the agents that do not learn, with the same number of evaluations.

Each scripted search (``random``, ``uniform``, ``global``) is a :class:`ScriptedSearch`: it
duck-types the part of SB3's ``BaseAlgorithm`` that the search loop and the callbacks use
(``learn``, ``save``, ``num_timesteps``, ``get_env``, ``logger``), and plays whole episodes
of actions through the env, so its policies are realised by the same clamp, scored by the
same evaluator and logged by the same callbacks as an agent's. With K envs (``--workers``)
it plays the script's next K episodes at once, so a search evaluates the same candidates,
in the same order, whatever K. Every scripted search runs
exactly ``config.episodes`` episodes; a deterministic one with fewer distinct candidates
cycles through them (the env scores a repeated policy from its cache).

- ``random``: uniformly random actions: random search.
- ``uniform``: one keep-ratio and one bit-width for every unit (and, in ``deep`` and
  ``sparse`` mode, one sparsity: 0, 0.5, 0.75, 0.9 or the largest). For each bit-width
  (and sparsity), the largest uniform keep action meeting the budgets is found by
  bisection on the exact cost model; the candidates are those combinations.
- ``global``: channels of all units ranked together by their importance, normalised by each
  unit's mean (Torch-Pruning's global pruning); a global threshold, bisected to the budget,
  sets every unit's kept channels. One candidate per bit-width, like ``uniform``.
- ``deep-compression`` (``deep`` and ``sparse`` modes): Deep Compression's recipe. Every
  channel kept; the weights of all searched layers ranked together by magnitude, and one
  global threshold, bisected to the budget (the least sparsity that fits), sets each
  unit's sparsity (the share of its weights under the threshold, on the sparsity grid);
  one bit-width for every unit; the same entropy-coded artifact. One candidate per
  bit-width, like ``uniform``. Where no bit-width fits with every channel, it keeps the
  largest uniform keep-ratio that fits at the largest sparsity and fewest bits (logged).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from autoshrink.agent.agent_file import zip_document
from autoshrink.agent.scripted_view import EnvView
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.versioned import unwrap, wrap
from autoshrink.env.budget import first_ok, largest_feasible, last_ok

if TYPE_CHECKING:
    from autoshrink.agent.config import AgentConfig

logger = logging.getLogger(__name__)

SAVE_TYPE = "autoshrink.ScriptedSearch"
SAVE_VERSION = 1
#: The state file inside a scripted search's ``agent.zip`` (its name since v0.1).
STATE_FILE = "baseline.json"
_BISECT_STEPS = 40


class ScriptedSearch:
    """A non-learning agent that plays a scripted action sequence per episode.

    Args:
        env: The env (a VecEnv of one env, or a plain env that is wrapped).
        config: The agent config (``seed`` and ``algorithm`` are used).
        n_units: Steps per episode.
    """

    name = "scripted"

    def __init__(self, env: gym.Env | VecEnv, config: AgentConfig, n_units: int) -> None:
        self.env: VecEnv = env if isinstance(env, VecEnv) else DummyVecEnv([lambda: env])
        self.config = config
        self.n_units = n_units
        self.seed = config.seed
        self.num_timesteps = 0
        self._episode_num = 0
        self._last_obs: Any = None
        self.logger = Logger(folder=None, output_formats=[])
        self.rng = np.random.default_rng(config.seed)
        #: The run folder, where the search loop gives one (a search may keep files there).
        self.run_dir: Path | None = None

    # --- what subclasses define ----------------------------------------------------------
    def episode_actions(self, episode: int) -> np.ndarray:
        """The actions of episode ``episode``, one row per step."""
        raise NotImplementedError

    def episode_done(self, first: int, rewards: np.ndarray) -> None:
        """Episodes ``first, first + 1, ...`` ended with ``rewards`` (adaptive searches)."""

    def extra_state(self) -> dict[str, Any]:
        """What a subclass saves besides the counters and the generator (JSON values)."""
        return {}

    def restore_extra(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    def local_env(self) -> gym.Env:
        """The env in this process (the main one where the envs run in workers)."""
        inner = getattr(self.env, "local_env", None)
        if inner is None:
            inner = self.env.envs[0] if isinstance(self.env, DummyVecEnv) else self.env
        return inner  # type: ignore[return-value]

    # --- SB3's BaseAlgorithm subset ------------------------------------------------------
    def get_env(self) -> VecEnv:
        """The (vectorised) env."""
        return self.env

    def set_logger(self, logger: Logger) -> None:
        """Use ``logger`` (SB3's interface; scripted searches log nothing of their own)."""
        self.logger = logger

    def learn(
        self,
        total_timesteps: int,
        callback: BaseCallback | Sequence[BaseCallback] | None = None,
        reset_num_timesteps: bool = True,
        **_: Any,
    ) -> ScriptedSearch:
        """Play episodes until ``total_timesteps`` more steps are done, as SB3's learn does."""
        if reset_num_timesteps:
            self.num_timesteps, self._episode_num = 0, 0
        end = self.num_timesteps + total_timesteps
        cb = CallbackList(list(callback)) if isinstance(callback, Sequence) else callback
        cb = cb or CallbackList([])
        cb.init_callback(self)  # type: ignore[arg-type]
        if reset_num_timesteps:  # a resume restores the generators' state instead
            set_random_seed(self.seed)
        if self._last_obs is None:
            self.env.seed(self.seed)
            self._last_obs = self.env.reset()
        cb.on_training_start(locals(), globals())
        go_on = True
        n_envs = self.env.num_envs
        while go_on and self.num_timesteps < end:
            cb.on_rollout_start()
            # a round: the next n_envs episodes of the script, one per env, in lockstep
            rows = [self.episode_actions(self._episode_num + i) for i in range(n_envs)]
            actions = np.stack([np.asarray(r, dtype=np.float32) for r in rows])
            t, done = 0, False
            while not done and self.num_timesteps < end:
                action = actions[:, min(t, actions.shape[1] - 1)]
                self._last_obs, rewards, dones, infos = self.env.step(action)
                self.num_timesteps += n_envs
                t, done = t + 1, bool(dones[0])
                if done:
                    self._episode_num += n_envs
                    self.episode_done(self._episode_num - n_envs, np.asarray(rewards))
                cb.update_locals(locals())
                if not cb.on_step():
                    go_on = False
                    break
            cb.on_rollout_end()
        cb.on_training_end()
        return self

    def save(self, path: str | Path) -> None:
        """Write the baseline's state (counters and generator) as a small zip."""
        path = Path(path)
        state = {
            "algorithm": self.config.algorithm,
            "num_timesteps": self.num_timesteps,
            "episode_num": self._episode_num,
            "rng": self.rng.bit_generator.state,
        }
        extra = self.extra_state()
        if extra:
            state["extra"] = extra
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(STATE_FILE, json.dumps(wrap(SAVE_TYPE, SAVE_VERSION, state)))

    def load_state(self, path: str | Path) -> None:
        """Restore what :meth:`save` wrote."""
        try:
            with zipfile.ZipFile(path) as zf:
                state = scripted_state(zip_document(zf, STATE_FILE, Path(path)))
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read baseline state {path}: {exc}") from exc
        if state.get("algorithm") != self.config.algorithm:
            raise CheckpointError(f"{path} is not a saved {self.config.algorithm} baseline")
        self.num_timesteps = int(state["num_timesteps"])
        self._episode_num = int(state["episode_num"])
        self.rng.bit_generator.state = state["rng"]
        extra = state.get("extra", {})
        if not isinstance(extra, dict):
            raise CheckpointError(f"{path}: the saved search's extra state is not an object")
        self.restore_extra(extra)


def scripted_state(obj: object) -> dict[str, Any]:
    """The data of a scripted search's saved state (v0.1 wrote it without the envelope)."""
    if isinstance(obj, dict) and obj.get("type") == SAVE_TYPE and "data" not in obj:
        return {k: v for k, v in obj.items() if k != "type"}
    return unwrap(obj, SAVE_TYPE, SAVE_VERSION, "scripted search state", CheckpointError)


class RandomSearch(ScriptedSearch):
    """Uniformly random actions in every episode."""

    name = "random"

    def episode_actions(self, episode: int) -> np.ndarray:  # noqa: D102
        space = self.env.action_space
        assert isinstance(space, gym.spaces.Box)
        return self.rng.uniform(space.low, space.high, size=(self.n_units, *space.shape))


class _CandidateSearch(ScriptedSearch):
    """Cycles through a list of candidate action sequences, computed on first use."""

    def __init__(self, env: gym.Env | VecEnv, config: AgentConfig, n_units: int) -> None:
        super().__init__(env, config, n_units)
        self._candidates: list[np.ndarray] | None = None

    def candidates(self, view: EnvView) -> list[np.ndarray]:
        """Distinct action sequences to evaluate, best guess first."""
        raise NotImplementedError

    def episode_actions(self, episode: int) -> np.ndarray:
        if self._candidates is None:
            # the main process's env where the envs run in workers (see agent.workers)
            view = EnvView(self.local_env())
            self._candidates = self.candidates(view)
            logger.info("%s: %d candidate policies", self.name, len(self._candidates))
        return self._candidates[episode % len(self._candidates)]


class UniformSearch(_CandidateSearch):
    """The same keep-ratio and bits for every unit, bisected to the budgets."""

    name = "uniform"

    def candidates(self, view: EnvView) -> list[np.ndarray]:  # noqa: D102
        out = []
        for bits in view.bit_options():
            for sparsity in view.sparsity_options():
                spars = [sparsity] * len(view.units)

                def channels(a: float) -> list[int]:
                    if "keep" not in view.dims:
                        return view.max_channels()
                    keep = view.decode_keep(a)
                    return [u.kept(keep) for u in view.units]

                a = largest_feasible(
                    lambda a: view.feasible(channels(a), bits, spars),  # noqa: B023
                    0.0,
                    1.0,
                    _BISECT_STEPS,
                )
                if a is not None:
                    out.append(view.actions(channels(a), bits, spars))
        return out or [view.actions(view.min_channels(), view.bit_options()[-1])]


class GlobalSearch(_CandidateSearch):
    """Global channel ranking by normalised importance, thresholded to the budgets."""

    name = "global"

    def candidates(self, view: EnvView) -> list[np.ndarray]:  # noqa: D102
        scores = view.channel_scores()
        order = np.sort(np.concatenate(scores))[::-1]
        lows = view.min_channels()

        def channels(n_top: int) -> list[int]:
            tau = order[n_top - 1] if n_top > 0 else np.inf
            counts = [max(int((s >= tau).sum()), lo) for s, lo in zip(scores, lows, strict=True)]
            return [view.round_up(i, c) for i, c in enumerate(counts)]

        out = []
        for bits in view.bit_options():
            n = last_ok(lambda n: view.feasible(channels(n), bits), 0, len(order))  # noqa: B023
            if n is not None:
                out.append(view.actions(channels(n), bits))
        return out or [view.actions(view.min_channels(), view.bit_options()[-1])]


class DeepCompressionSearch(_CandidateSearch):
    """Global magnitude pruning to one threshold, uniform bits, bisected to the budgets."""

    name = "deep-compression"

    def candidates(self, view: EnvView) -> list[np.ndarray]:  # noqa: D102
        magnitudes = view.unit_magnitudes()
        order = np.sort(np.concatenate(magnitudes))
        grid = np.asarray(view.clamp.sparsity_choices)
        full = view.max_channels()

        def sparsity(n_zeroed: int) -> list[float]:
            tau = order[n_zeroed - 1] if n_zeroed > 0 else -np.inf
            shares = [float((m <= tau).mean()) if m.size else 0.0 for m in magnitudes]
            return [float(grid[np.searchsorted(grid, s + 1e-12, "right") - 1]) for s in shares]

        out = []
        for bits in view.bit_options():
            zeroed = first_ok(
                lambda n: view.feasible(full, bits, sparsity(n)),  # noqa: B023
                0,
                len(order),
            )
            if zeroed is not None:
                out.append(view.actions(full, bits, sparsity(zeroed)))
        return out or [self._fallback(view)]

    def _fallback(self, view: EnvView) -> np.ndarray:
        """Where no bit-width fits with every channel: fewest bits, largest sparsity.

        With channels searched, the largest uniform keep-ratio that fits (Deep Compression
        prunes no channel, so this is logged); else the env's clamp has the last word.
        """
        logger.warning("deep-compression: no bit-width fits with every channel kept")
        bits, spars = view.bit_options()[-1], [view.clamp.sparsity_choices[-1]] * len(view.units)

        def channels(a: float) -> list[int]:
            if "keep" not in view.dims:
                return view.max_channels()
            return [u.kept(view.decode_keep(a)) for u in view.units]

        a = largest_feasible(lambda a: view.feasible(channels(a), bits, spars), 0.0, 1.0, 40)
        return view.actions(channels(a or 0.0), bits, spars)


SCRIPTED: dict[str, type[ScriptedSearch]] = {
    "random": RandomSearch,
    "uniform": UniformSearch,
    "global": GlobalSearch,
    "deep-compression": DeepCompressionSearch,
}


def load_scripted(path: Path, env: gym.Env, config: AgentConfig, n_units: int) -> ScriptedSearch:
    """Rebuild a scripted search for ``env`` and restore its saved counters."""
    agent = SCRIPTED[config.algorithm](env, config, n_units)
    agent.load_state(path)
    return agent
