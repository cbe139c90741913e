"""What ``autoshrink search`` shows while it runs: its header, then its progress bars."""

from __future__ import annotations

from typing import Any

from rich.progress import TextColumn

from autoshrink.compression.metrics import result_key
from autoshrink.scripts.console import err_console, make_progress


class SearchBars:
    """The search's progress bar, then the final fine-tune's (added at its first step)."""

    def __init__(self, config: Any, env: Any) -> None:
        self.config, self.env = config, env
        self.progress = make_progress(
            TextColumn("best {task.fields[best]}"),
            TextColumn("val acc {task.fields[acc]}"),
            TextColumn("{task.fields[budget]}"),
        )
        total = config.agent.episodes
        self.task = self.progress.add_task("search", total=total, best="-", acc="-", budget="")
        self.final_task: Any = None

    def episode(self, record: Any, state: Any) -> None:
        """After an episode: the episodes done, the best reward, its accuracy and budgets."""
        acc = state.best_metrics.get("accuracy")
        self.progress.update(
            self.task,
            completed=state.episodes,
            best=f"{state.best_reward:.4f}",
            acc="-" if acc is None else f"{acc:.2%}",
            budget=_budget_use(state.best_metrics, self.env.baseline, self.env.limits),
        )

    def step(self, step: int, loss: float) -> None:
        """After a step of the final fine-tune (its bar appears at the first)."""
        if self.final_task is None:
            what = "final fine-tune"
            if self.config.final.finalists > 1:
                what += f" of {self.config.final.finalists} finalists"
            self.final_task = self.progress.add_task(what, total=None, best="", acc="", budget="")
        self.progress.update(self.final_task, completed=step)

    def done(self, episodes: int) -> None:
        """Fill both bars: the search is finished."""
        self.progress.update(self.task, completed=episodes)
        if self.final_task is not None:
            self.progress.update(self.final_task, total=1, completed=1)


def _budget_use(
    metrics: dict[str, Any], baseline: dict[str, float], limits: dict[str, float]
) -> str:
    parts = []
    for metric, limit in limits.items():
        value = metrics.get(result_key(metric))
        if value is not None and baseline.get(metric):
            parts.append(f"{metric} {value / baseline[metric]:.1%}/{limit / baseline[metric]:.1%}")
    return " ".join(parts)


def announce(header: str, env: Any) -> None:
    """The run header, a warning when the machine is busier than its cores, frozen units."""
    import torch

    from autoshrink.compression.device import load_warning

    err_console.print(header, highlight=False, soft_wrap=True)
    busy = load_warning(torch.get_num_threads())  # the search's own threads, set by now
    if busy is not None:
        err_console.print(f"warning: {busy}", highlight=False, soft_wrap=True)
    for name, why in env.graph.frozen.items():
        err_console.print(f"frozen unit {name}: {why}", highlight=False, soft_wrap=True)
