from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from torch import nn

from autoshrink.compression.data import DataSplits
from autoshrink.env import CompressionEnv, EnvConfig
from autoshrink.env.evaluator import Evaluator
from autoshrink.env.state import decode_action
from autoshrink.env.wrappers import DiscretizeAction

FAST = {"finetune_steps": 0, "bn_batches": 1, "eval_batches": 1}


@pytest.fixture(scope="module")
def joint_env(smallcnn: nn.Module, digits: DataSplits) -> CompressionEnv:
    return CompressionEnv(EnvConfig(model="smallcnn", **FAST), model=smallcnn, data=digits)


def test_every_index_maps_to_its_level(joint_env: CompressionEnv) -> None:
    env = DiscretizeAction(joint_env, keep_levels=5)
    cfg = joint_env.config
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    assert list(env.action_space.nvec) == [5, len(cfg.bit_choices)]
    keeps = [
        decode_action(env.action([i, 0]), "joint", cfg.min_keep, cfg.bit_choices)[0]
        for i in range(5)
    ]
    assert keeps == pytest.approx(list(np.linspace(cfg.min_keep, 1.0, 5)))
    bits = [
        decode_action(env.action([0, j]), "joint", cfg.min_keep, cfg.bit_choices)[1]
        for j in range(len(cfg.bit_choices))
    ]
    assert bits == list(cfg.bit_choices)  # one index, one bit-width


def test_only_the_action_space_changes(joint_env: CompressionEnv) -> None:
    env = DiscretizeAction(joint_env)
    assert env.observation_space == joint_env.observation_space
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_refuses_other_envs_and_bad_levels(joint_env: CompressionEnv) -> None:
    with pytest.raises(ValueError, match="CompressionEnv"):
        DiscretizeAction(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="keep_levels"):
        DiscretizeAction(joint_env, keep_levels=1)


def test_ppo_learns_a_few_steps_on_the_discrete_env(
    smallcnn: nn.Module, digits: DataSplits
) -> None:
    base = CompressionEnv(EnvConfig(model="smallcnn", **FAST), model=smallcnn, data=digits)
    env = DiscretizeAction(base)
    n = len(base.units)
    agent = PPO("MlpPolicy", env, n_steps=2 * n, batch_size=n, n_epochs=1, seed=0, device="cpu")
    agent.learn(total_timesteps=4 * n)
    assert isinstance(base.evaluator, Evaluator)
    assert base.evaluator.calls >= 3  # whole episodes ran, each scored at its end
    action, _ = agent.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)
