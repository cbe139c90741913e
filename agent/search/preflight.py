"""Everything a resume will read, read first: a bad file is refused before any work.

A resume loads its checkpoint only once the env is built, which can mean training a
baseline. :func:`check_resume` reads every file of the checkpoint that needs no env (the
pointer, the state, the episode log, the agent zip's JSON, the generators' state and the
replay buffer's JSON) through the same checked readers, so that ``autoshrink search
--resume`` refuses a damaged folder in one line, before it prints or builds anything.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from autoshrink.agent import rng_state
from autoshrink.agent.agent_file import read_agent_zip, zip_document
from autoshrink.agent.algorithms import ALGORITHMS
from autoshrink.agent.replay_file import read_replay_meta
from autoshrink.agent.scripted import STATE_FILE, scripted_state
from autoshrink.agent.search.config import SearchConfig, saved_agent
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.compression.errors import CheckpointError


def check_resume(out_dir: str | Path) -> None:
    """Read the checkpoint files a resume of ``out_dir`` loads (none if it has none).

    Raises:
        CheckpointError: If ``out_dir`` holds no search, or on the first file that is
            unreadable, malformed or inconsistent.
    """
    folder = RunFolder(Path(out_dir))
    if not folder.has_search():
        raise CheckpointError(
            f"{folder.root} holds no search to resume; drop --resume to start one"
        )
    checkpoint = folder.latest_checkpoint()
    if checkpoint is None:
        return
    if not folder.config.is_file():  # the defaults would resume another search
        raise CheckpointError(
            f"{folder.config} is missing: the search in {folder.root} cannot be resumed as "
            "it started; restore it, or start a new search in another folder"
        )
    ckpt, state = checkpoint
    folder.checkpoint_log(ckpt, state.episodes)
    spec = ALGORITHMS.get(saved_agent(folder.config).algorithm)
    agent = ckpt / "agent.zip"
    if spec is not None and spec.learning:
        read_agent_zip(agent)
        if spec.off_policy:
            read_replay_meta(ckpt)
    elif spec is not None:
        try:
            with zipfile.ZipFile(agent) as zf:
                scripted_state(zip_document(zf, STATE_FILE, agent))
        except (OSError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"{agent} is not a saved agent: {exc}") from exc
    rng_state.read(ckpt)
    SearchConfig.load(folder.config)  # the whole config reads (it imports nothing)
    folder.check_sealed(ckpt)  # last: a malformed file is named by its own reader first
