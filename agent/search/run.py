"""One whole search from a :class:`~autoshrink.agent.search.config.SearchConfig`.

``autoshrink search``, a batch search job and the Python API all run a search through
:func:`search`: build the env, search, finish. So the same config and seed give the same
policy, whichever door it came through.

>>> from autoshrink.agent.search import SearchConfig, search
>>> report = search(SearchConfig.create(flops=0.5, episodes=12), "runs/r1")  # doctest: +SKIP
>>> report["budgets_met"]  # doctest: +SKIP
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym

from autoshrink.agent.search.config import SearchConfig
from autoshrink.agent.search.finish import finish_search
from autoshrink.agent.search.loop import Progress, run_search
from autoshrink.agent.search.resume_rules import resumed_agent, with_threads
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.compression.device import torch_threads
from autoshrink.compression.locking import hold


def search(
    config: SearchConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    env: gym.Env | None = None,
    progress: Progress | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Search, fine-tune and ship: the run folder of ``config`` in ``out_dir``.

    The search computes on ``config.agent.threads`` torch threads (its workers on
    ``worker_threads``), resolved when it starts and recorded in ``config.json``; a resume
    computes on the recorded ones (:mod:`~autoshrink.agent.search.resume_rules`). Torch's
    threads are restored when it returns.

    Args:
        config: The search.
        out_dir: The run folder.
        resume: Continue the search in ``out_dir`` from its last checkpoint.
        env: ``config.make_env()`` already built (a caller that reports on it first).
        progress: Called after every episode (see :func:`~.loop.run_search`).
        on_step: Called after every final fine-tune step with ``(step, loss)``.
        on_start: Called once the search is set up (resumed, or its agent built).

    Returns:
        The content of ``result.json``.

    Raises:
        ResumeMismatchError: If a resume asks for other workers or threads than its start.
    """
    folder = RunFolder(Path(out_dir))
    with hold(folder.root, "search"):
        resuming = resume and folder.latest_checkpoint() is not None
        agent = resumed_agent(folder.root, config.agent) if resuming else with_threads(config.agent)
        config = replace(config, agent=agent)
        assert agent.threads is not None
        with torch_threads(agent.threads):
            env = env if env is not None else config.make_env()
            result = run_search(
                env,
                agent,
                out_dir,
                resume=resume,
                progress=progress,
                final=config.final,
                on_start=on_start,
            )
            return finish_search(env, result, config.final, seed=agent.seed, on_step=on_step)
