"""EnvConfig.device and AgentConfig.device: defaults defined once, spelling checked, JSON."""

from __future__ import annotations

import pytest

from autoshrink.agent.config import AgentConfig, AgentConfigError
from autoshrink.agent.search.config import SearchConfig
from autoshrink.compression.device import DEFAULT_DEVICE
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.env.config import EnvConfig


def test_the_env_runs_on_auto_and_the_agent_on_the_cpu_by_default():
    assert EnvConfig().device == DEFAULT_DEVICE == "auto"
    assert AgentConfig().device == "cpu"
    cfg = SearchConfig.create(episodes=6)
    assert (cfg.env.device, cfg.agent.device) == ("auto", "cpu")


@pytest.mark.parametrize("bad", ["tpu", "gpu", "cuda:", 0])
def test_a_misspelt_device_is_refused_by_every_config(bad):
    with pytest.raises(AutoshrinkError, match="device must be auto, cpu, cuda or cuda:N"):
        EnvConfig(device=bad)
    with pytest.raises(AgentConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        AgentConfig(device=bad)
    with pytest.raises(AutoshrinkError, match="device must be"):
        SearchConfig.create(device=bad)


def test_the_device_is_a_flat_setting_that_round_trips():
    cfg = SearchConfig.create(device="cuda:1", episodes=6)
    assert cfg.env.device == "cuda:1"  # a spelling: not checked against this machine here
    assert cfg.settings()["device"] == "cuda:1"
    assert SearchConfig.from_json(cfg.to_json()) == cfg
    assert cfg.replace(device="cpu").env.device == "cpu"


def test_a_config_written_before_devices_reads_with_the_default():
    data = EnvConfig(flops=0.5).to_dict()
    del data["data"]["device"]
    assert EnvConfig.from_dict(data).device == "auto"
