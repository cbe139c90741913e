"""SB3 callbacks of a search: best policy, episode log, TensorBoard, checkpoints, progress.

Each callback sees an episode end in ``_on_step`` (a ``done`` in SB3's ``locals``) and turns
it into the same :class:`EpisodeRecord` through the shared :class:`EpisodeBook`, whichever
callback gets there first; so their order in a ``CallbackList`` does not matter. The book
owns the :class:`~autoshrink.agent.search.episodes.SearchState` (episode count and best policy).

Checkpoints of off-policy agents are written at the start of the next rollout (or at the end
of training): by then SB3 has stored the episode's last transition, reset the noise and done
the episode's gradient steps, so the checkpoint is consistent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from autoshrink.agent.search.episodes import EpisodeBook, EpisodeRecord, SearchState
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.compression.metrics import METRICS

logger = logging.getLogger(__name__)


#: The records' ratio keys, logged under ``budget/``.
RATIO_KEYS = frozenset(m.ratio_key for m in METRICS)


class EpisodeCallback(BaseCallback):
    """Base class: calls :meth:`_on_episode` once per finished episode.

    Args:
        book: The shared episode book.
    """

    def __init__(self, book: EpisodeBook, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.book = book

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        if dones is None:
            return True
        infos = self.locals.get("infos") or [{}] * len(dones)
        rewards = np.asarray(self.locals.get("rewards", np.zeros(len(dones)))).reshape(-1)
        go_on = True
        for i, done in enumerate(np.asarray(dones).reshape(-1)):
            if done:
                record = self.book.record(self.num_timesteps, i, float(rewards[i]), infos[i])
                if record is not None:  # None: past the search's episodes
                    go_on = self._on_episode(record) is not False and go_on
        return go_on

    def _on_episode(self, record: EpisodeRecord) -> bool | None:
        """Handle one finished episode; return False to stop the search."""
        raise NotImplementedError


class EpisodeLogCallback(EpisodeCallback):
    """Appends one JSON line per episode to ``episodes.jsonl`` and flushes it."""

    def __init__(
        self, book: EpisodeBook, path: Path, extra: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        super().__init__(book)
        self.path = Path(path)
        self.extra = extra

    def _on_episode(self, record: EpisodeRecord) -> None:
        if self.extra is not None:
            record.extra.update(self.extra())
        with self.path.open("a") as fh:
            fh.write(json.dumps(record.to_dict()) + "\n")
            fh.flush()


#: A new best's figure is drawn only once this many episodes have passed since the last
#: one: a figure costs about 0.2 s, and early in a search nearly every episode is a new
#: best (6 of 12 in the AMC-sized job, a seventh of its time). The last best is always drawn.
FIGURE_EVERY = 10


class TensorBoardCallback(EpisodeCallback):
    """Per-episode scalars (``episode/*``, ``budget/*``, ``search/*``) and the best policy.

    The x axis is the episode index. When an episode is the new best, a figure of its
    per-unit keep-ratio and bits (``draw``, see :mod:`~autoshrink.agent.search.policy_plot`)
    is added under ``search/best_policy``, at most once every :data:`FIGURE_EVERY` episodes;
    the search's last best is drawn when it ends.
    """

    def __init__(
        self,
        book: EpisodeBook,
        log_dir: Path,
        purge_step: int | None = None,
        draw: Callable[[EpisodeRecord], Any] | None = None,
    ) -> None:
        super().__init__(book)
        self.log_dir = Path(log_dir)
        self.purge_step = purge_step
        self.draw = draw or _record_figure
        self.writer: Any = None
        self.drawn_at: int | None = None
        self.undrawn: EpisodeRecord | None = None  # a best not drawn yet

    def _on_training_start(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=self.purge_step)

    def _on_episode(self, record: EpisodeRecord) -> None:
        w, step = self.writer, record.episode
        w.add_scalar("episode/reward", record.reward, step)
        for key, value in record.metrics.items():
            tag = f"budget/{key}" if key in RATIO_KEYS else f"episode/{key}"
            w.add_scalar(tag, value, step)
        w.add_scalar("search/best_reward", record.best_reward, step)
        w.add_scalar("time/elapsed_s", record.time_s, step)
        for key, value in record.timing.items():
            w.add_scalar(f"time/{key}", value, step)
        best_acc = self.book.state.best_metrics.get("accuracy")
        if best_acc is not None:
            w.add_scalar("search/best_accuracy", best_acc, step)
        sigma = getattr(getattr(self.model, "action_noise", None), "current_sigma", None)
        if sigma is not None:
            w.add_scalar("search/noise_sigma", sigma, step)
        if record.is_best and record.keep:
            self.undrawn = record
            if self.drawn_at is None or step - self.drawn_at >= FIGURE_EVERY:
                self._add_figure()
        w.flush()

    def _add_figure(self) -> None:
        record, self.undrawn = self.undrawn, None
        if record is not None:
            self.drawn_at = record.episode
            figure = self.draw(record)
            self.writer.add_figure("search/best_policy", figure, record.episode, close=False)

    def _on_training_end(self) -> None:
        if self.writer is not None:
            self._add_figure()
            self.writer.close()


class CheckpointCallback(EpisodeCallback):
    """Saves agent, replay buffer, noise and search state after every episode, atomically.

    Args:
        book: The shared episode book.
        folder: The run folder.
        save_agent: Writes the agent's files into a checkpoint directory.
        deferred: Wait for the next rollout start (or training end) before writing, for
            off-policy agents whose episode is not fully stored at ``on_step`` time.
    """

    def __init__(
        self,
        book: EpisodeBook,
        folder: RunFolder,
        save_agent: Callable[[Path], None],
        deferred: bool,
    ) -> None:
        super().__init__(book)
        self.folder = folder
        self.save_agent = save_agent
        self.deferred = deferred
        self.saved_at = book.state.episodes

    def _on_step(self) -> bool:
        go_on = super()._on_step()
        if not self.deferred:  # once every episode of the step is recorded (K envs)
            self.save()
        return go_on

    def _on_episode(self, record: EpisodeRecord) -> None:
        return None

    def _on_rollout_start(self) -> None:
        self.save()

    def _on_training_end(self) -> None:
        self.save()

    def save(self) -> None:
        """Write a checkpoint if episodes finished since the last one."""
        state = self.book.state
        if state.episodes <= self.saved_at:
            return
        state.elapsed_s, self.book.clock_start = self.book.elapsed(), time.perf_counter()
        self.folder.save_checkpoint(state, self.save_agent)
        self.saved_at = state.episodes


class ProgressCallback(EpisodeCallback):
    """Calls ``fn(record, state)`` after every episode (the CLI's progress bar)."""

    def __init__(self, book: EpisodeBook, fn: Callable[[EpisodeRecord, SearchState], None]) -> None:
        super().__init__(book)
        self.fn = fn

    def _on_episode(self, record: EpisodeRecord) -> None:
        self.fn(record, self.book.state)


class StopAfterEpisodes(EpisodeCallback):
    """Stops learning once the search state counts ``episodes`` (on-policy rollouts overshoot)."""

    def __init__(self, book: EpisodeBook, episodes: int) -> None:
        super().__init__(book)
        self.episodes = episodes

    def _on_episode(self, record: EpisodeRecord) -> bool:
        return self.book.state.episodes < self.episodes


class AgentThreadsCallback(BaseCallback):
    """Runs the agent's gradient steps on ``threads`` torch threads, the env on the rest.

    The agent's networks are tiny MLPs: on a few shared cores, several threads per matrix
    product cost more in synchronisation than they gain (on 2 busy cores we measured one
    Adam step of a 2×300 MLP at 5 ms on one thread and 66 ms on two). Evaluation of the
    compressed model keeps the process's thread count. SB3 trains between rollouts, so the
    switch happens at rollout end and is undone at the next rollout start.
    """

    def __init__(self, threads: int = 1) -> None:
        super().__init__()
        self.threads = threads
        self.saved: int | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        import torch

        self.saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def _restore(self) -> None:
        import torch

        if self.saved is not None:
            torch.set_num_threads(self.saved)
            self.saved = None

    def _on_rollout_start(self) -> None:
        self._restore()

    def _on_training_end(self) -> None:
        self._restore()


def _record_figure(record: EpisodeRecord) -> Any:
    """The policy figure of a record alone (no env: no pins, no budgets)."""
    from autoshrink.agent.search.policy_plot import PolicyView, policy_figure

    title = f"best policy, episode {record.episode}: reward {record.reward:.4f}"
    return policy_figure(PolicyView(title, dict(record.keep), dict(record.bits)))
