"""What a search knows between episodes: its state, and one record per finished episode.

:class:`SearchState` is all a resume needs of the search itself (the agent and its
generators are saved beside it); :class:`EpisodeRecord` is one line of ``episodes.jsonl``;
:class:`EpisodeBook` turns each episode's end into its record once and keeps the state.
The records hold what the search decided and measured, not how long it took, so the log of
a search is a function of its seed alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.json_write import to_jsonable
from autoshrink.compression.metrics import METRICS
from autoshrink.compression.versioned import unwrap, wrap

STATE_TYPE = "autoshrink.SearchState"
STATE_VERSION = 1


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
        data = unwrap(obj, STATE_TYPE, STATE_VERSION, "search state", CheckpointError)
        kinds: dict[str, tuple[type, ...]] = {
            "episodes": (int,),
            "best_reward": (int, float, type(None)),
            "best_episode": (int, type(None)),
            "best_metrics": (dict,),
            "best_policy": (dict, type(None)),
            "elapsed_s": (int, float),
        }
        for key, value in data.items():
            if key not in kinds:
                raise CheckpointError(f"search state has an unknown key {key!r}")
            if isinstance(value, bool) or not isinstance(value, kinds[key]):
                raise CheckpointError(f"search state {key!r} has the wrong type")
        if data.get("episodes", 0) < 0:
            raise CheckpointError("search state 'episodes' must be >= 0")
        return cls(**data)

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
EXTRA_KEYS: tuple[str, ...] = ("budgets_met",)
#: info keys of how long the episode took, kept out of the log (TensorBoard shows them), so
#: that the log is a function of the seed alone and a resumed search writes the same one.
TIMING_KEYS: tuple[str, ...] = ("eval_cached", "eval_seconds", "prep_seconds")


@dataclass
class EpisodeRecord:
    """One finished episode, as logged to ``episodes.jsonl`` (its timing is not logged)."""

    episode: int
    reward: float
    metrics: dict[str, float]
    keep: dict[str, float]
    bits: dict[str, int]
    is_best: bool
    best_reward: float
    time_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON line (``sparsity`` per unit only where some unit has any)."""
        spars = {"sparsity": self.sparsity} if any(self.sparsity.values()) else {}
        return to_jsonable(
            {
                "episode": self.episode,
                "reward": self.reward,
                **self.metrics,
                "is_best": self.is_best,
                "best_reward": self.best_reward,
                **self.extra,
                "keep": self.keep,
                "bits": self.bits,
                **spars,
            }
        )


class EpisodeBook:
    """Turns episode ends into records once, and keeps the search state.

    Args:
        state: The state to continue (a fresh one, or a checkpoint's on resume).
        reference: The uncompressed model's ``macs``, ``params`` and ``bytes``, for ratios.
        clock_start: ``time.perf_counter()`` at the start of this run of the search.
        limit: The search's episodes: episodes past them are not recorded (the extra
            episodes of a last round of K, with ``workers = K``); None: no limit.
    """

    def __init__(
        self,
        state: SearchState,
        reference: Mapping[str, float] | None = None,
        clock_start: float | None = None,
        limit: int | None = None,
    ) -> None:
        self.state = state
        self.limit = limit
        self.reference = dict(reference or {})
        self.clock_start = time.perf_counter() if clock_start is None else clock_start
        self._seen_step = -1
        self._seen: dict[int, EpisodeRecord] = {}

    def elapsed(self) -> float:
        """Wall time of the whole search, earlier runs included."""
        return self.state.elapsed_s + time.perf_counter() - self.clock_start

    def record(
        self, step: int, env_index: int, reward: float, info: Mapping[str, Any]
    ) -> EpisodeRecord | None:
        """The record of the episode that ended at ``step`` in env ``env_index``.

        None for an episode past the limit, which is not recorded.
        """
        if step != self._seen_step:
            self._seen_step, self._seen = step, {}
        if env_index in self._seen:
            return self._seen[env_index]
        if self.limit is not None and self.state.episodes >= self.limit:
            return None
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
            timing={k: float(info[k]) for k in TIMING_KEYS if k in info},
            sparsity={name: float(u.sparsity) for name, u in units.items()},
        )
        self._seen[env_index] = record
        return record
