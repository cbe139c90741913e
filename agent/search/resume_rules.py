"""What a run keeps from its start: its workers and its threads, in every door.

A search's numbers depend on more than its seed. K workers fill the replay buffer K
transitions a row, so a resume on another K is another search. And a computation's
floating-point sums depend on its torch threads (a fine-tune at 2 threads differs from
one at 1 in the last bits of every BatchNorm statistic), so a resume whose threads default
to this moment's machine ships other weights. The search therefore resolves its threads
once, when it starts, records them in ``config.json``, and a resume computes with them.

The threads a search starts with never depend on the load of the moment: the default is
the usable cores (affinity and cgroup quota, :func:`~autoshrink.compression.device.
available_cores`), so the same seed gives the same files on a quiet and on a busy machine.

>>> agent = AgentConfig(workers=2, threads=1)
>>> started = with_threads(agent)
>>> started.threads, started.worker_threads
(1, 1)
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from autoshrink.agent.config import AgentConfig
from autoshrink.agent.search.config import saved_agent
from autoshrink.compression.device import default_threads
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.models import is_factory_ref

#: The settings a resume keeps, with the flag that sets each.
KEPT = {"workers": "--workers", "threads": "--threads", "worker_threads": "--threads"}


class ResumeMismatchError(AutoshrinkError):
    """A resume asked for other workers or threads than its search started with."""


def with_threads(agent: AgentConfig) -> AgentConfig:
    """``agent`` with its threads resolved: the given ones, else this machine's defaults.

    The search's own process gets every usable core; each of K > 1 workers a K-th of them.
    A thread count given alone (``threads``) serves the workers too, as ``--threads`` does.
    """
    threads = agent.threads if agent.threads is not None else default_threads(1)
    if agent.worker_threads is not None:
        each = agent.worker_threads
    elif agent.threads is not None:
        each = agent.threads
    else:
        each = default_threads(agent.workers)
    return replace(agent, threads=threads, worker_threads=each)


def resumed_agent(folder: Path, agent: AgentConfig) -> AgentConfig:
    """``agent`` as the search saved in ``folder`` started it: its workers and threads.

    Settings ``agent`` leaves as None take the saved ones; a saved None (a search started
    before threads were recorded) takes this machine's defaults.

    Raises:
        ResumeMismatchError: If ``agent`` asks for other workers or threads than the saved
            search's (one line naming the flag).
        CheckpointError: If ``config.json`` is missing or unreadable.
    """
    saved = saved_agent(folder / "config.json")
    kept = dict(workers=agent.workers)
    for name in ("threads", "worker_threads"):
        asked, was = getattr(agent, name), getattr(saved, name)
        kept[name] = was if asked is None else asked
        if asked is not None and was is not None and asked != was:
            raise ResumeMismatchError(_mismatch(folder, name, was, asked))
    if agent.workers != saved.workers:
        raise ResumeMismatchError(_mismatch(folder, "workers", saved.workers, agent.workers))
    return with_threads(replace(agent, **kept))


def check_named_model(folder: Path, saved: str, given: str | None) -> None:
    """Refuse to resume a search of a user factory that the command line does not name.

    A run folder is data: a ``file.py:factory`` written in its ``config.json`` is never
    imported unless the user names the same factory (``--model``), as for an artifact.

    Args:
        folder: The run folder.
        saved: The model its ``config.json`` names.
        given: The model the user named (None: not named).

    Raises:
        ResumeMismatchError: If the user named another model, or none for a factory.
    """
    if given is None and not is_factory_ref(saved):
        return
    if given is None:
        raise ResumeMismatchError(
            f"{folder} is a search of the user model {saved!r}; a resume never runs a file "
            f"that a run folder names: pass --model {saved} to resume it"
        )
    if _model_key(given) != _model_key(saved):
        raise ResumeMismatchError(
            f"{folder} is a search of {saved!r}, not {given!r}: a resume keeps its model"
        )


def _model_key(name: str) -> str:
    """A model name with a factory's file resolved (``./m.py:f`` and ``/abs/m.py:f`` agree)."""
    if not is_factory_ref(name):
        return name
    path, _, function = name.rpartition(":")
    return f"{Path(path).expanduser().resolve()}:{function}"


def _mismatch(folder: Path, name: str, was: object, asked: object) -> str:
    flag = KEPT[name]
    what = "workers" if name == "workers" else "torch threads"
    return (
        f"{folder} is a search on {flag} {was}, not {asked}: its resume keeps its {what} "
        f"(other {what} would compute another search); leave {flag} out or give {was}"
    )
