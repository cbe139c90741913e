"""EpisodeRewardReplayBuffer: every step stored with the episode's reward, centred when sampled."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from autoshrink.agent.config import AgentConfig, AgentConfigError
from autoshrink.agent.replay import EpisodeRewardReplayBuffer


def _buffer(**kwargs: bool) -> EpisodeRewardReplayBuffer:
    obs = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    act = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    return EpisodeRewardReplayBuffer(100, obs, act, device="cpu", **kwargs)


def _play(buffer: EpisodeRewardReplayBuffer, steps: int, reward: float, start: float = 0.0) -> None:
    for t in range(steps):
        last = t == steps - 1
        buffer.add(
            np.full((1, 3), start + t, dtype=np.float32),
            np.full((1, 3), start + t + 1, dtype=np.float32),
            np.array([[0.1 * t]], dtype=np.float32),
            np.array([reward if last else 0.0], dtype=np.float32),
            np.array([last]),
            [{}],
        )


def test_steps_are_held_until_the_episode_ends() -> None:
    buffer = _buffer()
    _play(buffer, 3, 0.7)
    buffer.add(
        np.zeros((1, 3), np.float32),
        np.ones((1, 3), np.float32),
        np.zeros((1, 1), np.float32),
        np.zeros(1, np.float32),
        np.array([False]),
        [{}],
    )
    assert buffer.size() == 3
    assert buffer.pending == 1


def test_every_step_gets_the_final_reward_and_is_terminal() -> None:
    buffer = _buffer()
    _play(buffer, 4, 0.8)
    _play(buffer, 4, 0.6, start=10.0)
    assert buffer.size() == 8
    np.testing.assert_allclose(buffer.rewards[:8, 0], [0.8] * 4 + [0.6] * 4, rtol=1e-6)
    np.testing.assert_array_equal(buffer.dones[:8, 0], np.ones(8))
    # the steps keep their own observations and actions, in order
    np.testing.assert_array_equal(buffer.observations[:4, 0, 0], [0, 1, 2, 3])
    np.testing.assert_allclose(buffer.actions[:4, 0, 0], [0.0, 0.1, 0.2, 0.3], rtol=1e-6)


@pytest.mark.parametrize(("center", "scale"), [(True, True), (True, False), (False, False)])
def test_sampled_rewards_are_centred_and_scaled(center: bool, scale: bool) -> None:
    buffer = _buffer(center=center, scale=scale)
    _play(buffer, 5, 0.9)
    _play(buffer, 5, 0.7)
    sample = buffer.sample(64)
    rewards = sorted(set(np.round(sample.rewards.numpy().ravel(), 5)))
    if center and scale:  # mean 0.8, std 0.1
        assert rewards == pytest.approx([-1.0, 1.0], abs=1e-4)
    elif center:
        assert rewards == pytest.approx([-0.1, 0.1], abs=1e-5)
    else:
        assert rewards == pytest.approx([0.7, 0.9], abs=1e-5)
    assert bool((sample.dones == 1).all())


def test_equal_rewards_are_not_divided_by_zero() -> None:
    buffer = _buffer()
    _play(buffer, 3, 0.5)
    sample = buffer.sample(8)
    np.testing.assert_allclose(sample.rewards.numpy(), 0.0, atol=1e-7)


def test_reset_drops_held_back_steps() -> None:
    buffer = _buffer()
    _play(buffer, 2, 0.5)
    buffer.add(
        np.zeros((1, 3), np.float32),
        np.ones((1, 3), np.float32),
        np.zeros((1, 1), np.float32),
        np.zeros(1, np.float32),
        np.array([False]),
        [{}],
    )
    buffer.reset()
    assert buffer.size() == 0
    assert buffer.pending == 0


def test_agent_config_switches_the_buffer() -> None:
    from autoshrink.agent.algorithms import _off_policy_kwargs

    on = _off_policy_kwargs(AgentConfig(), n_units=5)
    off = _off_policy_kwargs(AgentConfig(episode_reward=False), n_units=5)
    assert on["replay_buffer_class"] is EpisodeRewardReplayBuffer
    assert off["replay_buffer_class"] is None
    with pytest.raises(AgentConfigError, match="episode_reward"):
        AgentConfig(episode_reward="yes")  # type: ignore[arg-type]
