"""autoshrink.agent.search: one search run, from its config to its run folder.

- ``config``: :class:`SearchConfig` (env, agent and finish) and the search's defaults;
- ``run``: :func:`search`, the one path from a config to a finished run folder;
- ``loop``: :func:`run_search`, the episodes (any agent), checkpointed and resumable;
- ``callbacks``: the episode log, TensorBoard, checkpoints and progress (SB3 callbacks);
- ``run_folder``: the folder's layout, search state and episode records;
- ``finish``, ``finalists`` and ``report``: the final fine-tune, the best few policies, and
  ``result.json``;
- ``transfer`` and ``policy_plan``: a trained agent or a saved policy on another model.

Names are imported on first use, so ``import autoshrink.agent.search`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoshrink.compression.lazy import lazy_attributes

if TYPE_CHECKING:
    from autoshrink.agent.search.config import FinalConfig, SearchConfig
    from autoshrink.agent.search.finish import finish_search
    from autoshrink.agent.search.loop import SearchResult, run_search
    from autoshrink.agent.search.report import read_result
    from autoshrink.agent.search.run import search

_LAZY = {
    "FinalConfig": "autoshrink.agent.search.config",
    "SearchConfig": "autoshrink.agent.search.config",
    "finish_search": "autoshrink.agent.search.finish",
    "SearchResult": "autoshrink.agent.search.loop",
    "run_search": "autoshrink.agent.search.loop",
    "read_result": "autoshrink.agent.search.report",
    "search": "autoshrink.agent.search.run",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "FinalConfig",
    "SearchConfig",
    "SearchResult",
    "finish_search",
    "read_result",
    "run_search",
    "search",
]
