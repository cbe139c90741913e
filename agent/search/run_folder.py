"""The run folder of a search: its layout, atomic writes, the search state and checkpoints.

::

    run/
      config.json        the AgentConfig (and the env settings) the search started with
      episodes.jsonl     one line per finished episode, appended and flushed
      tb/search/         TensorBoard: our per-episode scalars (step = episode), the figure
      tb/agent/          TensorBoard: SB3's own train/* and rollout/* (step = timestep)
      checkpoint/        latest.json -> ckpt-NNNNN/{agent.zip, replay_buffer.npz,
                                               replay_buffer.json, state.json}
      policy.json        the best policy found (after the finish: the one shipped)
      sensitivity.json   the solver agent's table of each unit alone (``--agent solver``)
      policy.png         its figure: keep-ratio and bits per unit, pinned layers, budgets
      agent.zip          the agent at the end
      model.safetensors  the compressed, fine-tuned artifact
      result.json        baseline against compressed, budgets, whether they were met

Every file that a kill could leave half-written is written to a temporary name first and
renamed; a checkpoint becomes current only when ``latest.json`` names it.

Nothing here is a pickle: the replay buffer (off-policy agents) is stored as arrays
(:mod:`autoshrink.agent.replay_file`), and ``agent.zip`` is loaded without unpickling
(:mod:`autoshrink.agent.agent_file`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoshrink.agent.search.checkpoint_seal import check_seal, seal
from autoshrink.agent.search.episodes import SearchState
from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.documents import parse_document, read_document
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.json_write import write_document, write_json
from autoshrink.compression.versioned import unwrap

logger = logging.getLogger(__name__)

POINTER_TYPE = "autoshrink.CheckpointPointer"
#: 2: the pointer seals the checkpoint (:mod:`~autoshrink.agent.search.checkpoint_seal`).
POINTER_VERSION = 2


#: The checkpoint's copy of the episode log.
LOG_COPY = "episodes.jsonl"
_CHECKPOINT_NAME = re.compile(r"ckpt-[0-9]{6}")


def read_json(path: Path, what: str) -> object:
    """A JSON file of the run folder, through the checked reader; failures are one line."""
    return read_document(path, what, error=CheckpointError)


def parse_record(line: str, what: str) -> object:
    """One line of a JSON-lines log, through the checked reader (NaN allowed: a reward may be)."""
    return parse_document(line, what, allow_nonfinite=True, error=CheckpointError)


def _numbered(lines: list[str]) -> bool:
    """Whether ``lines`` are JSON records of episodes 0, 1, ... in order."""
    for i, line in enumerate(lines):
        try:
            record = parse_record(line, "episode record")
        except CheckpointError:
            return False
        if not isinstance(record, dict) or record.get("episode") != i:
            return False
    return True


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder (nothing is created until :meth:`create`)."""

    root: Path

    @property
    def config(self) -> Path:  # noqa: D102
        return self.root / "config.json"

    @property
    def episodes(self) -> Path:  # noqa: D102
        return self.root / "episodes.jsonl"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard's log folder; each writer has its own run subfolder in it.

        SB3 steps its scalars by timestep and we step ours by episode. In one folder
        TensorBoard's reader takes the smaller steps for a restart and purges the larger
        ones, so SB3's curves would end empty: they go to :attr:`tensorboard_agent`.
        """
        return self.root / "tb"

    @property
    def tensorboard_search(self) -> Path:
        """Our per-episode scalars and the best policy's figure (step = episode)."""
        return self.tensorboard / "search"

    @property
    def tensorboard_agent(self) -> Path:
        """SB3's own scalars, ``train/*`` and ``rollout/*`` (step = timestep)."""
        return self.tensorboard / "agent"

    @property
    def checkpoints(self) -> Path:  # noqa: D102
        return self.root / "checkpoint"

    @property
    def policy(self) -> Path:  # noqa: D102
        return self.root / "policy.json"

    @property
    def policy_png(self) -> Path:
        """The figure of ``policy.json``: keep and bits per unit, pins, budget use."""
        return self.root / "policy.png"

    @property
    def agent(self) -> Path:  # noqa: D102
        return self.root / "agent.zip"

    @property
    def artifact(self) -> Path:  # noqa: D102
        return self.root / "model.safetensors"

    @property
    def result(self) -> Path:  # noqa: D102
        return self.root / "result.json"

    def create(self) -> RunFolder:
        """Create the folder (and its parents)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def has_search(self) -> bool:
        """Whether a search already ran (or started) here."""
        return self.episodes.exists() or (self.checkpoints / "latest.json").exists()

    # --- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self, state: SearchState, save_agent: Callable[[Path], None]) -> Path:
        """Write a checkpoint of ``state`` and let ``save_agent(dir)`` add the agent's files.

        The checkpoint keeps a copy of the episode log as it stands (one line per episode
        ``state`` knows), from which a resume repairs a log that was torn or lost. It
        becomes the current one only once it is complete, by an atomic rewrite of
        ``checkpoint/latest.json``; older checkpoints are then deleted.
        """
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{state.episodes:06d}"
        folder = self.checkpoints / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        save_agent(folder)
        lines = self._log_lines(state.episodes)
        write_atomic(folder / LOG_COPY, lambda p: p.write_text("".join(lines)))
        write_json(folder / "state.json", state.to_dict())
        pointer = {"dir": name, "episodes": state.episodes, **seal(folder, self.config)}
        write_document(self.checkpoints / "latest.json", POINTER_TYPE, POINTER_VERSION, pointer)
        for old in self.checkpoints.glob("ckpt-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def latest_checkpoint(self) -> tuple[Path, SearchState] | None:
        """The current checkpoint's folder and state, or None if there is none.

        Raises:
            CheckpointError: If ``latest.json`` or the state is unreadable, or the pointer
                names a folder that is not a checkpoint of this run folder.
        """
        pointer = self.checkpoints / "latest.json"
        if not pointer.exists():
            return None
        obj = read_json(pointer, "checkpoint pointer")
        if isinstance(obj, dict) and "type" not in obj:  # v0.1 wrote the pointer bare
            data: Any = obj
        else:
            data = unwrap(obj, POINTER_TYPE, POINTER_VERSION, f"{pointer}", CheckpointError)
        name = data.get("dir")
        if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name):
            raise CheckpointError(f"{pointer}: 'dir' must name a ckpt-NNNNNN folder of this run")
        folder = self.checkpoints / name
        state = SearchState.from_dict(read_json(folder / "state.json", "search state"))
        return folder, state

    def check_sealed(self, checkpoint: Path) -> None:
        """Refuse ``checkpoint`` unless its files and ``config.json`` are as it was sealed.

        Called once the files have been read (so a malformed one is named by its reader),
        before a resume trusts them. A pointer of version 1 has no seal: only links are
        refused then.

        Raises:
            CheckpointError: On a link, or a file missing, added or changed.
        """
        obj = read_json(self.checkpoints / "latest.json", "checkpoint pointer")
        data = unwrap(obj, POINTER_TYPE, POINTER_VERSION, "checkpoint pointer", CheckpointError)
        if "files" in data:  # sealed (pointer v2): every file as it was saved
            check_seal(checkpoint, self.config, data)
        elif checkpoint.is_symlink() or self.checkpoints.is_symlink():
            raise CheckpointError(f"{checkpoint} is a link: a resume reads only its own files")

    def restore_log(self, checkpoint: Path, episodes: int) -> int:
        """Make the episode log the checkpoint's: its ``episodes`` lines, nothing after.

        A log torn, garbled or deleted since is repaired from the checkpoint's copy (with a
        warning); lines past the checkpoint are dropped, since the search runs them again.
        A checkpoint of autoshrink 0.1 has no copy: the log must then hold those episodes.

        Returns:
            How many lines of the log were dropped.

        Raises:
            CheckpointError: If the log cannot be made whole.
        """
        lines = self.checkpoint_log(checkpoint, episodes)
        current = read_log(self.episodes)
        had = current.splitlines(keepends=True)
        if had[:episodes] != lines:
            logger.warning("repaired %s from the checkpoint (%d episodes)", self.episodes, episodes)
        text = "".join(lines)
        write_atomic(self.episodes, lambda p: p.write_text(text))
        return max(0, len(had) - episodes)

    def checkpoint_log(self, checkpoint: Path, episodes: int) -> list[str]:
        """The log lines a resume from ``checkpoint`` restores (nothing is written).

        Raises:
            CheckpointError: If neither the checkpoint's copy nor the log holds them, or
                either is a folder (the log could not be written back).
        """
        copy = checkpoint / LOG_COPY
        read_log(self.episodes)  # a folder in the log's place is refused before any work
        if not copy.exists():
            return self._log_lines(episodes)
        lines = read_log(copy).splitlines(keepends=True)
        if len(lines) != episodes or not _numbered(lines):
            raise CheckpointError(f"{copy} does not hold episodes 0..{episodes - 1}")
        return lines

    def _log_lines(self, episodes: int) -> list[str]:
        """The log's first ``episodes`` lines, checked to be episodes 0, 1, ... in order.

        Raises:
            CheckpointError: If the log has fewer, or a line is torn or out of place.
        """
        text = read_log(self.episodes)
        lines = [line if line.endswith("\n") else line + "\n" for line in text.splitlines()]
        lines = lines[:episodes]
        if len(lines) < episodes or not _numbered(lines):
            raise CheckpointError(
                f"{self.episodes} does not hold episodes 0..{episodes - 1} as the checkpoint "
                "does (lines lost or garbled); start the search again in a new folder"
            )
        return lines

    # --- the episode log -----------------------------------------------------------------
    def read_episodes(self) -> list[dict[str, Any]]:
        """Every line of ``episodes.jsonl`` (a torn last line is skipped)."""
        rows = []
        for line in read_log(self.episodes).splitlines():
            try:
                row = parse_record(line, f"a line of {self.episodes}")
            except CheckpointError:
                logger.warning("skipping a torn line in %s", self.episodes)
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def truncate_episodes(self, keep: int) -> int:
        """Keep only episodes ``0 .. keep-1`` in the log (those the checkpoint knows).

        Returns:
            How many lines were dropped.
        """
        rows = self.read_episodes()
        kept = [r for r in rows if isinstance(r.get("episode"), int) and r["episode"] < keep]
        dropped = len(rows) - len(kept)
        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_atomic(self.episodes, lambda p: p.write_text(text))
        return dropped


def read_log(path: Path) -> str:
    """The text of an episode log, "" if there is none.

    Bytes that are not UTF-8 read as U+FFFD, so that their line reads as garbled (and is
    repaired from the checkpoint's copy, or refused), not as a traceback.

    Raises:
        CheckpointError: If ``path`` is a folder or another non-file, or cannot be read.
    """
    if not path.exists():
        return ""
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file: move it away to resume the search")
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
