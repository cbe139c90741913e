"""The policy figure (policy.png and TensorBoard's), read back from its artists."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.patches import Rectangle

from autoshrink.agent.search.policy_plot import policy_figure, save_policy_png, shipped_view
from autoshrink.compression.policy import UnitPolicy, uniform_policy


@pytest.fixture
def env(make_env):
    return make_env(mode="joint", flops=0.6, size=0.2)


def test_the_figure_shows_keep_bits_pins_and_budgets(env, tmp_path: Path):
    units = [u.name for u in env.graph.units]
    policy = uniform_policy(env.graph, keep=0.5, bits=4, pinned=env.pinned)
    policy.units[units[1]] = UnitPolicy(keep=1.0, bits=8, channels=env.graph.units[1].c_out)
    view = shipped_view(env, policy, "the title")
    assert list(view.keep) == units and view.bits[units[1]] == 8
    assert view.pinned == env.pinned and len(view.pinned) == 2  # first and last layers
    first = env.graph.layers[0].name
    assert view.owner == {first: units[0]}  # the classifier is in no unit
    assert set(view.use) == {"flops", "size"}
    assert view.use["flops"][1] == pytest.approx(0.6) and view.use["size"][1] == pytest.approx(0.2)
    assert all(0 < used <= limit + 1e-9 for used, limit in view.use.values())

    fig = policy_figure(view)
    bars, budget = fig.axes
    widths = [p.get_width() for p in bars.patches if isinstance(p, Rectangle)]
    assert widths == pytest.approx([view.keep[n] for n in units])
    labels = [t.get_text() for t in bars.get_yticklabels()]
    assert labels[0] == f"{units[0]} *" and labels[1:] == units[1:]  # the pinned unit starred
    legend = bars.get_legend()
    assert legend.get_title().get_text() == "weight bits"
    assert [t.get_text() for t in legend.get_texts()] == ["4 bits", "8 bits"]
    assert "Pinned:" in bars.get_title(loc="left") and f"{first} (in {units[0]}) at 8" in (
        bars.get_title(loc="left")
    )
    assert [t.get_text() for t in budget.get_yticklabels()] == ["MACs", "bytes"]
    png = save_policy_png(view, tmp_path / "policy.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
