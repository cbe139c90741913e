"""The set-up of a transfer: which agent, which env, checked before any work.

``autoshrink apply --agent`` and a batch job with ``agent_from`` both play a searched agent
once on another model (:func:`~autoshrink.agent.search.transfer.transfer`). Both set it up
here: the env settings the caller does not give come from the agent's search (its run
folder's ``config.json``), budgets given replace all of the search's, the search's
checkpoint is dropped (it is another model's), and the agent must act in the env's mode.

>>> plan = plan_transfer("runs/r20", {"model": "resnet56"})  # doctest: +SKIP
>>> plan.config.model, plan.algorithm  # doctest: +SKIP
('resnet56', 'ddpg')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from autoshrink.agent.algorithms import ALGORITHMS
from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.config import SearchConfig
from autoshrink.agent.search.transfer import agent_algorithm, agent_spaces
from autoshrink.compression.errors import PolicyError
from autoshrink.compression.metrics import BUDGET_NAMES
from autoshrink.env.config import EnvConfig
from autoshrink.env.state import MODE_DIMS

#: Actions per step of each mode's env.
_ACTIONS = {mode: (len(dims),) for mode, dims in MODE_DIMS.items()}


@dataclass(frozen=True)
class TransferPlan:
    """A checked transfer: the agent file, its alias, the target env's settings, the source.

    Args:
        agent: The ``agent.zip``.
        algorithm: Its alias.
        config: The target env's settings.
        source: What ``result.json`` records of where the policy came from.
    """

    agent: Path
    algorithm: str
    config: EnvConfig
    source: dict[str, Any]


def agent_file(path: str | Path) -> Path:
    """The ``agent.zip`` of ``path``: the file itself, or the one in a run folder."""
    path = Path(path)
    return path / "agent.zip" if path.is_dir() else path


def plan_transfer(agent: str | Path, settings: Mapping[str, Any]) -> TransferPlan:
    """Check a transfer of ``agent`` and build the target env's settings.

    Args:
        agent: A search's ``agent.zip`` or its run folder.
        settings: EnvConfig fields the caller gives (``model`` at least); None values are
            left out. Budgets among them replace all of the search's.

    Raises:
        CheckpointError: If the agent file is missing, unreadable or a scripted search.
        PolicyError: If the agent acts in another mode than the target env.
    """
    path = agent_file(agent)
    algorithm = agent_algorithm(path)
    saved = path.parent / "config.json"
    base = SearchConfig.load(saved).env if saved.is_file() else EnvConfig()
    given = {k: v for k, v in settings.items() if v is not None}
    if "bit_choices" in given:
        given["bit_choices"] = tuple(given["bit_choices"])
    if any(m in given for m in BUDGET_NAMES):
        base = base.replace(**dict.fromkeys(BUDGET_NAMES))
    # The device is where this run goes, not the search's: the default unless given.
    config = base.replace(checkpoint=None, device=EnvConfig.device).replace(**given)
    obs, act = agent_spaces(path)
    if act != _ACTIONS.get(config.mode):
        raise PolicyError(f"{path} acts on {act} actions, not {config.mode} mode's")
    check_agent_loads(path, algorithm, obs, act)
    source = {"agent": str(path), "algorithm": algorithm, "transferred_from": base.model}
    return TransferPlan(path, algorithm, config, source)


class _Spaces(gym.Env[np.ndarray, np.ndarray]):
    """An env of nothing but the spaces a saved agent acts in: enough to load it."""

    def __init__(self, obs: tuple[int, ...], act: tuple[int, ...]) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, obs, np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, act, np.float32)


def check_agent_loads(
    path: Path, algorithm: str, obs: tuple[int, ...], act: tuple[int, ...]
) -> None:
    """Load the agent once into an env of its spaces, before any model is built.

    Its weights are read and put in place as the transfer will (never unpickled), so that
    weights of another shape, or unreadable ones, are refused in one line before a line of
    progress, not after the target env took minutes to build.

    Raises:
        CheckpointError: If the agent's weights cannot be read or do not fit it.
    """
    ALGORITHMS[algorithm].load(path, _Spaces(obs, act), AgentConfig(algorithm=algorithm), 1)
