"""The batch's Pareto plot: test accuracy against each cost, as percentages of the baseline.

One panel per cost (MACs, bytes, and params when a job had a params budget). Every agent
has its colour and marker and one legend entry; each job is a small point, and the mean
of the seeds of one agent on one model and dataset under one set of budgets is a large
one. The uncompressed
baseline is a black star at 100 %, every budget a dotted vertical line at its share, and
the dashed step the front that no job beats.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from autoshrink.agent.batch.results import OK, latest_records, pareto_front, summary_row
from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.metrics import METRICS

#: Markers by agent, in the agents' alphabetical order (colours are C0, C1, ...).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
#: The costs drawn, by budget name: always MACs and bytes, params when budgeted.
PANELS = ("flops", "size", "params")
#: Ticks of the (log) cost axes, in percent.
TICKS = (0.1, 0.2, 0.5, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)


@dataclass(frozen=True)
class Point:
    """One finished job, in percent of its baseline."""

    agent: str
    group: str  # model, dataset and budgets: the seeds of one setting
    cost: dict[str, float]  # budget name -> % of the baseline's
    limits: dict[str, float]  # budget name -> the budget, as % of the baseline's
    accuracy: float  # test accuracy, %
    baseline: float  # the baseline's test accuracy, %


def points(records: Iterable[dict[str, Any]]) -> list[Point]:
    """The plottable jobs: succeeded, with an accuracy and the costs' ratios."""
    out = []
    for record in latest_records(records).values():
        row = summary_row(record)
        if record.get("status") != OK or row["accuracy"] is None:
            continue
        result = record.get("result") or {}
        base = result.get("baseline") or {}
        cost = {m.name: 100 * row[m.ratio_key] for m in METRICS[:3] if row.get(m.ratio_key)}
        limits = {
            m.name: 100 * b["limit"] / base[m.key]
            for m in METRICS[:3]
            if isinstance(b := (result.get("budgets") or {}).get(m.name), dict)
            and isinstance(b.get("limit"), int | float)
            and base.get(m.key)
        }
        if "flops" in cost and row["base_accuracy"] is not None:
            agent = str(row["agent"] or record.get("kind") or "?")
            out.append(
                Point(
                    agent,
                    f"{row['model']} {row['dataset']} {row['budgets']}",
                    cost,
                    limits,
                    100 * row["accuracy"],
                    100 * row["base_accuracy"],
                )
            )
    return out


def pareto_figure(pts: list[Point]) -> Any:
    """The figure (a matplotlib ``Figure`` on an Agg canvas; no global backend is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [p for p in PANELS if p != "params" or any("params" in q.limits for q in pts)]
    fig = Figure(figsize=(5.2 * len(panels), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    agents = sorted({p.agent for p in pts})  # the same colours whatever order jobs ended in
    for ax, metric in zip(axes, panels, strict=True):
        _panel(ax, metric, [p for p in pts if metric in p.cost], agents)
    axes[0].set_ylabel("test accuracy")
    legend: dict[str, Any] = {}  # one entry per label, whichever panel drew it
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(text, handle)
    fig.legend(
        list(legend.values()),
        list(legend),
        loc="outside lower center",
        ncols=len(legend),
        fontsize="small",
    )
    fig.suptitle(
        f"test accuracy against cost, in % of the baseline: {len(pts)} jobs, "
        f"{len(agents)} agent(s)\nsmall: one job (seed); large: the mean of an agent's seeds "
        "on one model under one set of budgets; dashed: the Pareto front",
        fontsize="medium",
    )
    return fig


def _panel(ax: Any, metric: str, pts: list[Point], agents: list[str]) -> None:
    from matplotlib.ticker import FixedLocator, NullFormatter, PercentFormatter

    label = {m.name: m.unit for m in METRICS}[metric]
    for i, agent in enumerate(agents):
        style = {"color": f"C{i % 10}", "marker": MARKERS[i % len(MARKERS)]}
        mine = [p for p in pts if p.agent == agent]
        xs, ys = [p.cost[metric] for p in mine], [p.accuracy for p in mine]
        ax.scatter(xs, ys, s=22, alpha=0.55, label=agent, **style)
        for setting in dict.fromkeys(p.group for p in mine):
            group = [p for p in mine if p.group == setting]
            mean_x, mean_y = fmean(p.cost[metric] for p in group), fmean(p.accuracy for p in group)
            ax.scatter([mean_x], [mean_y], s=110, edgecolors="black", linewidths=0.8, **style)
    for j, base in enumerate(sorted({p.baseline for p in pts})):
        ax.scatter([100], [base], marker="*", s=220, color="black", label=None if j else "baseline")
    for j, limit in enumerate(sorted({p.limits[metric] for p in pts if metric in p.limits})):
        ax.axvline(limit, color="0.3", linestyle=":", linewidth=1.2, label=None if j else "budget")
    front = [pts[i] for i in pareto_front([(p.cost[metric], p.accuracy) for p in pts])]
    ax.step(
        [p.cost[metric] for p in front],
        [p.accuracy for p in front],
        where="post",
        color="0.45",
        linestyle="--",
        linewidth=1,
    )
    # log x: a 5 % budget and the baseline at 100 % are both readable on one panel
    limits = {float(f"{p.limits[metric]:.4g}") for p in pts if metric in p.limits}
    low = min([p.cost[metric] for p in pts] + list(limits)) / 1.5
    ax.set_xscale("log")
    ax.set_xlim(low, 130)
    # the round ticks in view, and each budget's own (a round tick next to one is left out)
    ticks = {t for t in TICKS if t >= low and all(abs(t / x - 1) > 0.15 for x in limits)}
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks | limits)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=None))
    ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))
    ax.set_xlabel(f"{label} of the compressed model, % of the baseline's (log)")
    ax.grid(True, alpha=0.3)


def plot_pareto(records: Iterable[dict[str, Any]], path: Path) -> Path | None:
    """Write the plot as ``path`` (PNG) and beside it as SVG, which a browser opens.

    Returns None (and writes nothing) when no job has succeeded yet.
    """
    pts = points(records)
    if not pts:
        return None
    fig = pareto_figure(pts)
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110))
    write_atomic(path.with_suffix(".svg"), lambda p: fig.savefig(p, format="svg"))
    return path
