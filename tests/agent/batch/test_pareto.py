"""The batch's Pareto plot, read back from the figure's artists."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.ticker import PercentFormatter

from autoshrink.agent.batch.pareto import pareto_figure, plot_pareto, points

BASE = {"accuracy": 0.95, "macs": 2_000_000, "params": 270_000, "bytes": 1_000_000}


def record(job: int, agent: str, seed: int, flops: float, size: float) -> dict:
    rng = random.Random(job)
    comp = {
        "accuracy": 0.9 - 0.05 * rng.random(),
        "macs": BASE["macs"] * flops * (0.9 + 0.1 * rng.random()),
        "params": BASE["params"] * 0.4,
        "bytes": BASE["bytes"] * size * (0.8 + 0.2 * rng.random()),
    }
    budgets = {
        "flops": {"value": flops, "relative": True, "limit": flops * BASE["macs"]},
        "size": {"value": size, "relative": True, "limit": size * BASE["bytes"]},
    }
    settings = {"agent": agent, "seed": seed, "model": "resnet20", "dataset": "digits"}
    return {
        "job": f"j{job}",
        "status": "ok",
        "kind": "search",
        "settings": {**settings, "flops": flops, "size": size},
        "result": {"baseline": BASE, "compressed": comp, "budgets": budgets, "agent": agent},
    }


def grid() -> list[dict]:
    """2 agents x 2 budgets x 3 seeds, and a failed job that must not be drawn."""
    jobs, n = [], 0
    for agent in ("ddpg", "random"):
        for flops, size in ((0.5, 0.1), (0.3, 0.05)):
            for seed in range(3):
                jobs.append(record(n, agent, seed, flops, size))
                n += 1
    return [*jobs, {"job": "bad", "status": "failed", "settings": {"agent": "sac"}}]


def test_each_agent_has_one_legend_entry_its_colour_and_marker():
    fig = pareto_figure(points(grid()))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["ddpg", "random", "baseline", "budget"]
    for ax in fig.axes:
        by_agent: dict[str, list[PathCollection]] = {"C0": [], "C1": []}
        for coll in ax.collections:
            color = coll.get_facecolor()[0]
            for name in by_agent:
                if np.allclose(color[:3], _rgb(name)):
                    by_agent[name].append(coll)
        # per agent: its 6 jobs and 2 means (one per budget set), all in one marker
        ddpg, rand = by_agent["C0"], by_agent["C1"]
        assert sum(len(c.get_offsets()) for c in ddpg) == 6 + 2
        assert sum(len(c.get_offsets()) for c in rand) == 6 + 2
        assert not _same(_marker(ddpg[0]), _marker(rand[0]))
        assert all(_same(_marker(c), _marker(ddpg[0])) for c in ddpg)
        assert all(_same(_marker(c), _marker(rand[0])) for c in rand)


def test_baseline_budgets_and_percent_axes():
    fig = pareto_figure(points(grid()))
    assert [ax.get_xlabel().split(" of ")[0] for ax in fig.axes] == ["MACs", "bytes"]
    for ax, limits in zip(fig.axes, ([30, 50], [5, 10]), strict=True):
        assert isinstance(ax.xaxis.get_major_formatter(), PercentFormatter)
        assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
        stars = [
            c
            for c in ax.collections
            if c.get_label() in ("baseline", "_nolegend_")
            and np.allclose(c.get_offsets(), [[100, 95]])
        ]
        assert stars, "no baseline point at (100 %, 95 %)"
        vertical = sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":")
        assert np.allclose(vertical, limits)
        points_y = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
        assert points_y.max() <= 100 and points_y.min() >= 80  # accuracy in percent


def test_plot_pareto_writes_png_and_svg_or_nothing(tmp_path: Path):
    assert plot_pareto([{"job": "x", "status": "failed"}], tmp_path / "p.png") is None
    assert not list(tmp_path.iterdir())
    assert plot_pareto(grid(), tmp_path / "pareto.png") == tmp_path / "pareto.png"
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "pareto.svg").read_bytes()[:400]


def _rgb(name: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(name)


def _marker(coll: PathCollection) -> np.ndarray:
    return coll.get_paths()[0].vertices


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b)
