"""autoshrink.agent: who picks the actions (SB3 algorithms and non-learning baselines).

>>> from autoshrink.agent import AgentConfig, run_search, finish_search  # doctest: +SKIP
>>> result = run_search(env, AgentConfig(episodes=60), "runs/r1")  # doctest: +SKIP
>>> report = finish_search(env, result)  # fine-tune, artifact, result.json  # doctest: +SKIP

Names are imported on first use, so ``import autoshrink.agent`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoshrink.agent.algorithms import ALGORITHMS, build_agent
    from autoshrink.agent.config import AgentConfig
    from autoshrink.agent.final import FinalConfig, finish_search
    from autoshrink.agent.search import SearchResult, run_search

_LAZY = {
    "ALGORITHMS": "autoshrink.agent.algorithms",
    "build_agent": "autoshrink.agent.algorithms",
    "AgentConfig": "autoshrink.agent.config",
    "FinalConfig": "autoshrink.agent.final",
    "finish_search": "autoshrink.agent.final",
    "SearchResult": "autoshrink.agent.search",
    "run_search": "autoshrink.agent.search",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALGORITHMS",
    "AgentConfig",
    "FinalConfig",
    "SearchResult",
    "build_agent",
    "finish_search",
    "run_search",
]
