"""The agent's parts with K envs: credit per env, one noise stream, scripted rounds, devices."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from autoshrink.agent.noise import TruncatedNormalActionNoise
from autoshrink.agent.replay import EpisodeRewardReplayBuffer
from autoshrink.agent.worker_env import worker_devices, worker_threads
from autoshrink.compression.errors import AutoshrinkError


def _buffer(n_envs: int) -> EpisodeRewardReplayBuffer:
    obs = spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    act = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
    return EpisodeRewardReplayBuffer(100, obs, act, device="cpu", n_envs=n_envs)


def _step(buffer: EpisodeRewardReplayBuffer, t: int, rewards: list[float], done: bool) -> None:
    k = len(rewards)
    buffer.add(
        np.full((k, 3), t, dtype=np.float32) + np.arange(k)[:, None] * 100,
        np.full((k, 3), t + 1, dtype=np.float32),
        np.full((k, 1), 0.1 * t, dtype=np.float32),
        np.array(rewards if done else [0.0] * k, dtype=np.float32),
        np.array([done] * k),
        [{} for _ in range(k)],
    )


def test_each_envs_steps_get_that_envs_final_reward() -> None:
    buffer = _buffer(n_envs=2)
    for t in range(3):
        _step(buffer, t, [0.9, 0.4], done=t == 2)
    assert buffer.pending == 0 and buffer.size() == 3  # 3 rows of 2 transitions
    np.testing.assert_allclose(buffer.rewards[:3, 0], [0.9] * 3, rtol=1e-6)
    np.testing.assert_allclose(buffer.rewards[:3, 1], [0.4] * 3, rtol=1e-6)
    np.testing.assert_array_equal(buffer.dones[:3], np.ones((3, 2)))
    # each env keeps its own observations, in step order
    np.testing.assert_array_equal(buffer.observations[:3, 1, 0], [100, 101, 102])
    mean, std = buffer.reward_stats()
    assert mean == pytest.approx(0.65) and std == pytest.approx(0.25)


def test_envs_out_of_lockstep_are_refused() -> None:
    buffer = _buffer(n_envs=2)
    with pytest.raises(ValueError, match="end together"):
        buffer.add(
            np.zeros((2, 3), np.float32),
            np.zeros((2, 3), np.float32),
            np.zeros((2, 1), np.float32),
            np.zeros(2, np.float32),
            np.array([True, False]),
            [{}, {}],
        )


def test_one_noise_draws_a_different_row_for_each_env_and_decays_per_episode() -> None:
    noise = TruncatedNormalActionNoise(n_actions=1, sigma=0.5, decay=0.5, seed=0)
    noise.mean_fn = lambda: np.zeros((3, 1))  # the actor's batch: 3 envs
    draw = noise()
    assert draw.shape == (3, 1) and len(set(draw[:, 0].tolist())) == 3
    for i in range(3):  # SB3 resets the noise once per env whose episode ended
        noise.reset(indices=[i])
    assert noise.episodes == 3 and noise.current_sigma == pytest.approx(0.5 * 0.5**3)
    noise.reset()  # learn()'s reset, with no draw since: no episode ended
    assert noise.episodes == 3


def test_sb3_keeps_the_one_noise_instead_of_copying_it_per_env() -> None:
    from stable_baselines3.common.noise import VectorizedActionNoise

    noise = TruncatedNormalActionNoise(n_actions=1, sigma=0.5, seed=0)
    assert isinstance(noise, VectorizedActionNoise) and noise.noises == [noise]


def test_workers_devices_and_threads() -> None:
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]
    assert worker_devices("cuda:1", 3) == ["cuda:1"] * 3
    assert worker_threads(3, 2) == 3
    assert worker_threads(None, 10_000) == 1
    with pytest.raises(AutoshrinkError, match="threads must be between 1 and 1,024, got 0"):
        worker_threads(0, 2)


@pytest.mark.gpu
def test_cuda_workers_go_round_robin_over_the_gpus() -> None:
    import torch

    count = torch.cuda.device_count()
    devices = worker_devices("cuda", 2 * count)
    assert devices == [f"cuda:{i % count}" for i in range(2 * count)]


def test_the_warm_up_is_whole_rounds_of_the_workers() -> None:
    from autoshrink.agent.algorithms import _off_policy_kwargs
    from autoshrink.agent.config import AgentConfig

    def starts(warmup: int, workers: int) -> int:
        config = AgentConfig(warmup_episodes=warmup, workers=workers)
        return int(_off_policy_kwargs(config, 4)["learning_starts"])

    assert starts(3, 1) == 12 and starts(4, 2) == 16
    assert starts(3, 2) == 16  # 2 rounds of 2 episodes, not 1.5
    assert starts(0, 2) == 0
