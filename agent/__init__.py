"""autoshrink.agent: the learners, the search run and batch jobs.

The learners live here: ``config`` (AgentConfig), ``algorithms`` (SB3 agents by alias),
``policies`` (the split actor learning rate), ``scripted`` (random, uniform and global
searches), ``noise``, ``replay``, ``agent_file`` and ``replay_file`` (saved without pickle)
and ``env_view`` (what they read of the env). One search run is
:mod:`autoshrink.agent.search`; many are :mod:`autoshrink.agent.batch`.

>>> from autoshrink.agent.search import SearchConfig, search  # doctest: +SKIP
>>> report = search(SearchConfig.create(flops=0.5, size=0.1), "runs/r1")  # doctest: +SKIP

Names are imported on first use, so ``import autoshrink.agent`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoshrink.compression.lazy import lazy_attributes

if TYPE_CHECKING:
    from autoshrink.agent.algorithms import ALGORITHMS, build_agent
    from autoshrink.agent.config import AgentConfig
    from autoshrink.agent.search.config import FinalConfig, SearchConfig
    from autoshrink.agent.search.finish import finish_search
    from autoshrink.agent.search.loop import SearchResult, run_search

_LAZY = {
    "ALGORITHMS": "autoshrink.agent.algorithms",
    "build_agent": "autoshrink.agent.algorithms",
    "AgentConfig": "autoshrink.agent.config",
    "FinalConfig": "autoshrink.agent.search.config",
    "SearchConfig": "autoshrink.agent.search.config",
    "finish_search": "autoshrink.agent.search.finish",
    "SearchResult": "autoshrink.agent.search.loop",
    "run_search": "autoshrink.agent.search.loop",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "ALGORITHMS",
    "AgentConfig",
    "FinalConfig",
    "SearchConfig",
    "SearchResult",
    "build_agent",
    "finish_search",
    "run_search",
]
