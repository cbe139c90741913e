"""AMC's exploration noise as an SB3 ActionNoise: truncated normal, decaying per episode.

AMC samples each action from a normal centred on the actor's action, truncated to the action
bounds, with σ = 0.5 · 0.95^(episode − warm-up). A truncated sample never sits on a bound,
unlike a clipped Gaussian, which piles a large share of the mass onto 0 and 1 when σ is
large.

SB3 adds the noise to the actor's action in the normalised space [-1, 1] and clips. The noise
can only be truncated to the bounds if it knows the action, so :func:`bind_noise` gives it a
callable that returns the current (deterministic) normalised action; it then returns
``sample − action``, and SB3's clip becomes a no-op. Unbound, it is a normal truncated to
±2σ, the textbook truncated noise.

With several envs (``--workers``) one noise serves them all: the bound action is the
actor's batch, one row per env, and every row is drawn from the one generator, so the
envs explore differently and the whole draw is one reproducible stream. SB3 would wrap a
plain ActionNoise in a :class:`VectorizedActionNoise` of deep copies, whose generators
would draw the same numbers for every env; this class is a VectorizedActionNoise itself,
so SB3 leaves it as it is. σ decays once per finished episode, whichever env ran it.

>>> noise = TruncatedNormalActionNoise(n_actions=2, sigma=0.5, seed=0)
>>> bool(abs(noise()).max() <= 2 * 0.5 * 2)
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.noise import ActionNoise, VectorizedActionNoise

if TYPE_CHECKING:
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

# Redraw out-of-bound samples this many times before clipping the rest (σ is at most a few
# times the bound width, so a draw lands inside with probability >= ~30 %).
_MAX_REDRAWS = 64


class TruncatedNormalActionNoise(VectorizedActionNoise):
    """Truncated-normal action noise whose σ decays once per episode after a warm-up.

    Args:
        n_actions: Action dimension.
        sigma: Std in the env's action units (its Box spans ``action_width``).
        decay: Factor applied to σ per episode after the warm-up.
        warmup_episodes: Episodes during which the noise is zero (SB3 acts uniformly at random
            during the warm-up anyway; noise would only bend that distribution).
        action_width: Width of the env's action Box (1 for [0, 1]); SB3 adds noise in [-1, 1].
        seed: Seed of the noise's own generator, so a search is reproducible and resumable.
    """

    def __init__(
        self,
        n_actions: int,
        sigma: float,
        decay: float = 1.0,
        warmup_episodes: int = 0,
        action_width: float = 1.0,
        seed: int | None = None,
    ) -> None:
        ActionNoise.__init__(self)  # not VectorizedActionNoise's: it copies a base noise
        self.n_actions = n_actions
        self.sigma = float(sigma)
        self.decay = float(decay)
        self.warmup_episodes = int(warmup_episodes)
        self.scale = 2.0 / float(action_width)
        self.episodes = 0
        self._open = 0  # episodes in flight that drew from the noise (one per env)
        self.rng = np.random.default_rng(seed)
        self.mean_fn: Callable[[], np.ndarray] | None = None

    @property
    def current_sigma(self) -> float:
        """σ of the current episode in the env's action units (0 during the warm-up)."""
        if self.episodes < self.warmup_episodes:
            return 0.0
        return self.sigma * self.decay ** (self.episodes - self.warmup_episodes)

    def __call__(self) -> np.ndarray:
        """Draw one noise vector (one row per env) in SB3's normalised action space."""
        sigma = self.current_sigma * self.scale
        mean = None if self.mean_fn is None else np.asarray(self.mean_fn(), dtype=np.float64)
        shape = (self.n_actions,) if mean is None else mean.shape
        self._open = shape[0] if len(shape) == 2 else 1
        if sigma <= 0.0:
            return np.zeros(shape, dtype=np.float32)
        if mean is None:
            lo, hi, centre = -2.0 * sigma, 2.0 * sigma, np.zeros(shape)
        else:
            lo, hi, centre = -1.0, 1.0, np.clip(mean, -1.0, 1.0)
        sample = self._truncated(centre, sigma, lo, hi)
        return (sample - centre).astype(np.float32)

    def _truncated(self, centre: np.ndarray, sigma: float, lo: float, hi: float) -> np.ndarray:
        out = self.rng.normal(centre, sigma)
        for _ in range(_MAX_REDRAWS):
            bad = (out < lo) | (out > hi)
            if not bad.any():
                break
            out[bad] = self.rng.normal(centre[bad], sigma)
        return np.clip(out, lo, hi)

    def reset(self, indices: Any = None) -> None:
        """End of an episode (of each env in ``indices``): decay σ once per episode.

        SB3 calls ``reset`` after every finished episode (``indices=[i]`` with several
        envs) and also at the start of every ``learn()``; only a reset after draws ends an
        episode, so a resumed search (a second ``learn()``) does not skip a decay step.
        """
        ended = min(1 if indices is None else len(list(indices)), self._open)
        self.episodes += ended
        self._open -= ended

    # --- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: the episode count and the generator's state."""
        return {
            "episodes": self.episodes,
            "drawn": self._open > 0,
            "open": self._open,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.episodes = int(state["episodes"])
        self._open = int(state.get("open", bool(state.get("drawn", False))))
        self.rng.bit_generator.state = state["rng"]

    def __getstate__(self) -> dict[str, Any]:
        # The bound callable refers to the model; never pickle it along with the model.
        state = self.__dict__.copy()
        state["mean_fn"] = None
        return state

    @property  # type: ignore[misc]  # read-only: nothing replaces the one noise
    def noises(self) -> list[ActionNoise]:
        """One noise for every env: this one (VectorizedActionNoise's attribute)."""
        return [self]

    def __repr__(self) -> str:
        return (
            f"TruncatedNormalActionNoise(sigma={self.sigma}, decay={self.decay}, "
            f"warmup_episodes={self.warmup_episodes}, episodes={self.episodes})"
        )


def bind_noise(model: OffPolicyAlgorithm, noise: TruncatedNormalActionNoise) -> None:
    """Install ``noise`` on ``model`` and truncate it to the action bounds around the actor.

    SB3 calls the noise right after predicting on ``model._last_obs``; the bound callable
    repeats that (cheap) deterministic forward pass to learn the action it perturbs.
    """

    def mean() -> np.ndarray:
        action, _ = model.predict(model._last_obs, deterministic=True)  # type: ignore[arg-type]
        return model.policy.scale_action(action)

    noise.mean_fn = mean
    model.action_noise = noise
