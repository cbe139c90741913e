from __future__ import annotations

import json

import pytest

from autoshrink.agent.config import AgentConfig, AgentConfigError


def test_round_trip_with_kwargs(tmp_path):
    cfg = AgentConfig(
        algorithm="td3", episodes=7, warmup_episodes=2, policy_kwargs={"net_arch": [8, 8]}
    )
    assert AgentConfig.from_json(cfg.to_json()) == cfg
    assert AgentConfig.load(cfg.save(tmp_path / "a.json")) == cfg


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"algorithm": "dqn"}, "unknown algorithm"),
        ({"episodes": 0}, "episodes"),
        ({"warmup_episodes": -1}, "warmup_episodes"),
        ({"noise_decay": 0.0}, "noise_decay"),
        ({"actor_lr": -1.0}, "actor_lr"),
        ({"gamma": 1.5}, "gamma"),
        ({"buffer_size": 0}, "buffer_size"),
    ],
)
def test_bad_values_are_named(changes, needle):
    with pytest.raises(AgentConfigError, match=needle):
        AgentConfig(**changes)


def test_foreign_future_and_unknown_keys_are_refused():
    good = AgentConfig().to_dict()
    with pytest.raises(AgentConfigError, match="not an agent config"):
        AgentConfig.from_dict({**good, "type": "x"})
    with pytest.raises(AgentConfigError, match="newer"):
        AgentConfig.from_dict({**good, "version": 99})
    with pytest.raises(AgentConfigError, match="unknown keys"):
        AgentConfig.from_dict({**good, "data": {**good["data"], "lr": 1}})
    with pytest.raises(AgentConfigError, match="malformed"):
        AgentConfig.from_json("{")
    assert json.loads(AgentConfig().to_json())["data"]["algorithm"] == "ddpg"


def test_the_agent_names_help_reads_are_the_agents_there_are() -> None:
    """``AGENTS`` (read by --help without SB3) names exactly what ALGORITHMS builds."""
    from autoshrink.agent.algorithms import ALGORITHMS
    from autoshrink.agent.config import AGENTS

    assert list(ALGORITHMS) == list(AGENTS)
    assert all(spec.description == AGENTS[name] for name, spec in ALGORITHMS.items())
