"""AMC's credit assignment as an SB3 replay buffer: every step gets the episode's reward.

A compression episode scores its policy once, at the end; the env's reward on every other
step is zero. Left like that, a critic with γ = 1 must carry the final reward back through
one bootstrap per unit (20 for a ResNet-20) before the first unit's action sees it, which
takes far more episodes than a search has. AMC instead stores every transition of the
episode with the final reward. :class:`EpisodeRewardReplayBuffer` does that, and marks each
transition terminal, so the critic regresses each (state, action) directly onto the
episode's outcome: a contextual bandit per unit, which is what the decision is, because the
state already holds what earlier units spent of the budget.

AMC also subtracts a moving average of the rewards before the update. The buffer does the
same at sampling time: rewards are centred on the mean of the rewards it holds (the last
``buffer_size / units`` episodes) and divided by their standard deviation, so that the
critic sees differences of a few tenths of a percent of accuracy at a usable scale.
Centring and scaling change neither the actor's greedy action nor what is stored, so a
saved buffer (``replay_buffer.npz``) holds the raw rewards.

Transitions are held back until their episode ends; the search loop checkpoints only at
episode ends, when nothing is held back. With several envs (``--workers``) the episodes of
one round run in lockstep: they all have one step per unit, so they all end at the same
step, and each env's steps are stored with that env's own final reward.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

#: Smallest reward std that scaling divides by (below it the rewards are taken as equal).
_MIN_STD = 1e-6


class EpisodeRewardReplayBuffer(ReplayBuffer):
    """A ReplayBuffer that stores each episode's steps with its final reward, as terminal.

    Args:
        *args: ReplayBuffer's arguments.
        center: Subtract the mean of the stored rewards when sampling (AMC's baseline).
        scale: Divide the centred rewards by their standard deviation when sampling.
        **kwargs: ReplayBuffer's keyword arguments.
    """

    def __init__(self, *args: Any, center: bool = True, scale: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.center = center
        self.scale = scale
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]] = []

    @property
    def pending(self) -> int:
        """Steps of the episode in flight, not yet stored."""
        return len(self._pending)

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Hold the step back; at the episodes' last step, store all of them.

        Each step of env ``i`` is stored with env ``i``'s last reward and ``done = True``.

        Raises:
            ValueError: If some envs end an episode and others do not (not in lockstep).
        """
        self._pending.append((np.array(obs), np.array(next_obs), np.array(action), infos))
        ended = np.asarray(done).reshape(-1).astype(bool)
        if not ended.any():
            return
        if not ended.all():
            raise ValueError("the envs' episodes must end together (one step per unit each)")
        final = np.asarray(reward, dtype=np.float32).reshape(self.n_envs)
        terminal = np.ones(self.n_envs, dtype=np.float32)
        for step_obs, step_next, step_action, step_infos in self._pending:
            super().add(step_obs, step_next, step_action, final, terminal, step_infos)
        self._pending.clear()

    def reset(self) -> None:
        """Empty the buffer, the held-back steps included."""
        super().reset()
        self._pending = []

    def reward_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the stored rewards (0 and 1 when empty)."""
        stored = self.rewards[: self.size()]
        if stored.size == 0:
            return 0.0, 1.0
        return float(stored.mean()), float(stored.std())

    def _get_samples(
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> ReplayBufferSamples:
        samples = super()._get_samples(batch_inds, env)
        if not (self.center or self.scale):
            return samples
        mean, std = self.reward_stats()
        rewards = samples.rewards
        if self.center:
            rewards = rewards - mean
        if self.scale and std > _MIN_STD:
            rewards = rewards / std
        return samples._replace(rewards=rewards)
