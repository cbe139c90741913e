"""The run folder of a search: its layout, atomic writes, the search state and checkpoints.

::

    run/
      config.json        the AgentConfig (and the env settings) the search started with
      episodes.jsonl     one line per finished episode, appended and flushed
      tb/                TensorBoard events: per-episode scalars, the best policy's figure
      checkpoint/        latest.json -> ckpt-NNNNN/{agent.zip, replay_buffer.npz,
                                               replay_buffer.json, state.json}
      policy.json        the best policy found
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
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.json_write import to_jsonable, write_document, write_json
from autoshrink.compression.metrics import METRICS
from autoshrink.compression.versioned import unwrap, wrap

logger = logging.getLogger(__name__)

STATE_TYPE = "autoshrink.SearchState"
STATE_VERSION = 1
POINTER_TYPE = "autoshrink.CheckpointPointer"
POINTER_VERSION = 1


@dataclass
class SearchState:
    """What a search knows between episodes; enough to resume it.

    Args:
        episodes: Episodes finished (and logged).
        best_reward: Highest episode reward so far (None before the first episode).
        best_episode: Index of that episode.
        best_metrics: Its metrics (accuracy, macs, params, bytes, ratios, ...).
        best_policy: Its realised policy as ``Policy.to_dict()``.
        elapsed_s: Wall time spent in earlier runs of this search (before a resume).
    """

    episodes: int = 0
    best_reward: float | None = None
    best_episode: int | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    best_policy: dict[str, Any] | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Versioned JSON-ready form."""
        return wrap(STATE_TYPE, STATE_VERSION, to_jsonable(asdict(self)))

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> SearchState:
        """Inverse of :meth:`to_dict`."""
        return cls(**unwrap(obj, STATE_TYPE, STATE_VERSION, "search state", CheckpointError))

    def offer(self, episode: int, reward: float, metrics: dict[str, Any], policy: Any) -> bool:
        """Record a finished episode; return True if it is the new best."""
        self.episodes = max(self.episodes, episode + 1)
        if not math.isfinite(reward) or (
            self.best_reward is not None and reward <= self.best_reward
        ):
            return False
        self.best_reward = float(reward)
        self.best_episode = episode
        self.best_metrics = to_jsonable(metrics)
        self.best_policy = policy.to_dict() if hasattr(policy, "to_dict") else policy
        return True


#: info keys of the episode's metrics, copied into each record when present.
METRIC_KEYS: tuple[str, ...] = ("accuracy", *(m.key for m in METRICS))
#: other info keys copied into each record when present.
EXTRA_KEYS: tuple[str, ...] = ("budgets_met", "eval_cached", "eval_seconds")


@dataclass
class EpisodeRecord:
    """One finished episode, as logged to ``episodes.jsonl``."""

    episode: int
    reward: float
    metrics: dict[str, float]
    keep: dict[str, float]
    bits: dict[str, int]
    is_best: bool
    best_reward: float
    time_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line."""
        return to_jsonable(
            {
                "episode": self.episode,
                "reward": self.reward,
                **self.metrics,
                "is_best": self.is_best,
                "best_reward": self.best_reward,
                "time_s": round(self.time_s, 3),
                **self.extra,
                "keep": self.keep,
                "bits": self.bits,
            }
        )


class EpisodeBook:
    """Turns episode ends into records once, and keeps the search state.

    Args:
        state: The state to continue (a fresh one, or a checkpoint's on resume).
        reference: The uncompressed model's ``macs``, ``params`` and ``bytes``, for ratios.
        clock_start: ``time.perf_counter()`` at the start of this run of the search.
    """

    def __init__(
        self,
        state: SearchState,
        reference: Mapping[str, float] | None = None,
        clock_start: float | None = None,
    ) -> None:
        self.state = state
        self.reference = dict(reference or {})
        self.clock_start = time.perf_counter() if clock_start is None else clock_start
        self._seen_step = -1
        self._seen: dict[int, EpisodeRecord] = {}

    def elapsed(self) -> float:
        """Wall time of the whole search, earlier runs included."""
        return self.state.elapsed_s + time.perf_counter() - self.clock_start

    def record(
        self, step: int, env_index: int, reward: float, info: Mapping[str, Any]
    ) -> EpisodeRecord:
        """The record of the episode that ended at ``step`` in env ``env_index``."""
        if step != self._seen_step:
            self._seen_step, self._seen = step, {}
        if env_index in self._seen:
            return self._seen[env_index]
        policy = info.get("policy")
        metrics = {k: float(info[k]) for k in METRIC_KEYS if info.get(k) is not None}
        for m in METRICS:
            if info.get(m.ratio_key) is not None:
                metrics[m.ratio_key] = float(info[m.ratio_key])
            elif m.key in metrics and self.reference.get(m.key):
                metrics[m.ratio_key] = metrics[m.key] / self.reference[m.key]
        episode = self.state.episodes
        reward = float(reward)
        is_best = self.state.offer(episode, reward, metrics, policy)
        units = getattr(policy, "units", {}) or {}
        record = EpisodeRecord(
            episode=episode,
            reward=reward,
            metrics=metrics,
            keep={name: float(u.keep) for name, u in units.items()},
            bits={name: int(u.bits) for name, u in units.items()},
            is_best=is_best,
            best_reward=float(
                self.state.best_reward if self.state.best_reward is not None else reward
            ),
            time_s=self.elapsed(),
            extra={k: info[k] for k in EXTRA_KEYS if k in info},
        )
        self._seen[env_index] = record
        return record


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
    def tensorboard(self) -> Path:  # noqa: D102
        return self.root / "tb"

    @property
    def checkpoints(self) -> Path:  # noqa: D102
        return self.root / "checkpoint"

    @property
    def policy(self) -> Path:  # noqa: D102
        return self.root / "policy.json"

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

        The checkpoint becomes the current one only once it is complete, by an atomic
        rewrite of ``checkpoint/latest.json``; older checkpoints are then deleted.
        """
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = f"ckpt-{state.episodes:06d}"
        folder = self.checkpoints / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        save_agent(folder)
        write_json(folder / "state.json", state.to_dict())
        pointer = {"dir": name, "episodes": state.episodes}
        write_document(self.checkpoints / "latest.json", POINTER_TYPE, POINTER_VERSION, pointer)
        for old in self.checkpoints.glob("ckpt-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def latest_checkpoint(self) -> tuple[Path, SearchState] | None:
        """The current checkpoint's folder and state, or None if there is none."""
        pointer = self.checkpoints / "latest.json"
        if not pointer.exists():
            return None
        obj = json.loads(pointer.read_text())
        if isinstance(obj, dict) and "type" not in obj:  # v0.1 wrote the pointer bare
            data = obj
        else:
            data = unwrap(obj, POINTER_TYPE, POINTER_VERSION, "checkpoint pointer", CheckpointError)
        folder = self.checkpoints / data["dir"]
        state = SearchState.from_dict(json.loads((folder / "state.json").read_text()))
        return folder, state

    # --- the episode log -----------------------------------------------------------------
    def read_episodes(self) -> list[dict[str, Any]]:
        """Every line of ``episodes.jsonl`` (a torn last line is skipped)."""
        if not self.episodes.exists():
            return []
        rows = []
        for line in self.episodes.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("skipping a torn line in %s", self.episodes)
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
