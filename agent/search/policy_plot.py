"""The figure of one policy: keep-ratio, bits (and sparsity) per unit, pins, budget use.

Drawn for the best policy in TensorBoard (``search/best_policy``) and, for the shipped
policy, as ``policy.png`` in the run folder. One horizontal bar per unit, in network
order from the top: its length is the keep-ratio (channels kept of all, written at its
end), its colour the weight bits (the legend lists the bit-widths used). A unit that
holds a layer the policy pins (HAQ's first and last layers, at 8 bits) is starred,
and a note under the bars names every pinned layer. A second panel shows each budget's
use: the policy's share of the baseline against the budget's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.metrics import FLOAT_BITS, METRICS

if TYPE_CHECKING:
    from autoshrink.agent.search.episodes import EpisodeRecord
    from autoshrink.compression.policy import Policy

#: Inches per unit row, and the figure's width.
ROW_INCHES, WIDTH_INCHES = 0.3, 9.0
_LABELS = {m.name: m.unit for m in METRICS}


@dataclass(frozen=True)
class PolicyView:
    """What the figure shows of a policy.

    Args:
        title: The figure's title.
        keep: Realised keep-ratio per unit name, in network order.
        bits: Weight bits per unit name.
        pinned: Pinned bits per layer name.
        owner: The unit owning each pinned layer (absent: no unit, as the classifier).
        use: Per budget name, the policy's share of the baseline and the budget's.
        sparsity: Fine-grained sparsity per unit name (deep and sparse mode; absent: 0).
    """

    title: str
    keep: dict[str, float]
    bits: dict[str, int]
    pinned: dict[str, int] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    use: dict[str, tuple[float, float]] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)


def view_of(
    env: gym.Env,
    keep: Mapping[str, float],
    bits: Mapping[str, int],
    ratios: Mapping[str, float],
    title: str,
) -> PolicyView:
    """The view of a policy on ``env``: its pins, and its budget use from ``ratios``.

    Args:
        env: The compression env (a test's toy env lacks the pins and limits: no matter).
        keep: Keep-ratio per unit.
        bits: Bits per unit.
        ratios: The policy's cost as a share of the baseline, per budget name.
        title: The figure's title.
    """
    inner = env.unwrapped
    pinned = dict(getattr(inner, "pinned", {}) or {})
    graph = getattr(inner, "graph", None)
    owner = {}
    if graph is not None:
        owner = {n: u.name for u in graph.units for n in u.layers if n in pinned}
    limits, base = getattr(inner, "limits", {}) or {}, getattr(inner, "baseline", {}) or {}
    use = {
        m: (ratios[m], limit / base[m])
        for m, limit in limits.items()
        if m in ratios and base.get(m) and m in _LABELS
    }
    return PolicyView(title, dict(keep), dict(bits), pinned, owner, use)


def policy_figure(view: PolicyView) -> Any:
    """The matplotlib figure of ``view`` (on an Agg canvas; no global backend is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(view.keep)
    height = 1.9 + ROW_INCHES * len(names) + (0.5 if view.use else 0)
    fig = Figure(figsize=(WIDTH_INCHES, height), layout="constrained")
    FigureCanvasAgg(fig)
    rows = [len(names), max(len(view.use), 1)] if view.use else [1]
    axes = fig.subplots(len(rows), 1, height_ratios=rows, squeeze=False)[:, 0]
    _units(axes[0], view, names)
    if view.use:
        _budgets(axes[1], view.use)
    fig.suptitle(view.title, fontsize="medium")
    return fig


def _units(ax: Any, view: PolicyView, names: list[str]) -> None:
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    used = sorted({view.bits.get(n, FLOAT_BITS) for n in names})
    ramp = colormaps["viridis"]  # fewer bits darker, float grey
    colour = {b: "0.7" if b >= FLOAT_BITS else ramp((b - 2) / 7) for b in used}
    starred = set(view.owner.values())
    labels = [f"{n} *" if n in starred else n for n in names]
    y = list(range(len(names)))
    ax.barh(y, [view.keep[n] for n in names], color=[colour[view.bits[n]] for n in names])
    for i, n in enumerate(names):
        b = view.bits[n]
        text = f"{view.keep[n]:.2f}, {'float' if b >= FLOAT_BITS else f'{b} bits'}"
        text += f", {view.sparsity[n]:.0%} zeroed" if view.sparsity.get(n) else ""
        ax.text(view.keep[n] + 0.01, i, text, va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()  # the first unit on top
    ax.set_xlim(0, 1.22)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("keep-ratio: channels kept of the unit's")
    ax.grid(True, axis="x", alpha=0.3)
    handles = [
        Patch(color=colour[b], label="float" if b >= FLOAT_BITS else f"{b} bits") for b in used
    ]
    ax.legend(handles=handles, title="weight bits", fontsize=8, loc="lower right")
    if view.pinned:
        pins = ", ".join(
            f"{layer} ({'in ' + view.owner[layer] if layer in view.owner else 'in no unit'}) "
            f"at {b} bits"
            for layer, b in view.pinned.items()
        )
        ax.set_title(f"* holds a pinned layer. Pinned: {pins}", fontsize=8, loc="left")


def _budgets(ax: Any, use: dict[str, tuple[float, float]]) -> None:
    metrics = list(use)
    y = list(range(len(metrics)))
    ax.barh(y, [100 * use[m][0] for m in metrics], color="0.55", label="the policy")
    ax.scatter([100 * use[m][1] for m in metrics], y, marker="|", s=300, color="C3", label="budget")
    for i, m in enumerate(metrics):  # right of both the bar and the budget mark
        at = 100 * max(use[m]) + 1.5
        ax.text(at, i, f"{use[m][0]:.1%} of {use[m][1]:.1%}", va="center", fontsize=8)
    ax.set_yticks(y, [_LABELS[m] for m in metrics], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of the baseline's")
    ax.legend(fontsize=8, loc="lower right")


def save_policy_png(view: PolicyView, path: Path) -> Path:
    """Write the figure of ``view`` to ``path`` as PNG, atomically."""
    fig = policy_figure(view)
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=100))
    return path


def record_drawer(env: gym.Env) -> Callable[[EpisodeRecord], Any]:
    """TensorBoard's figure of an episode's policy on ``env`` (the best one so far)."""

    def draw(record: EpisodeRecord) -> Any:
        ratios = {
            m.name: record.metrics[m.ratio_key] for m in METRICS if m.ratio_key in record.metrics
        }
        acc = record.metrics.get("accuracy")
        title = f"best policy so far, episode {record.episode}: reward {record.reward:.4f}"
        title += f", val accuracy {acc:.2%}" if acc is not None else ""
        view = view_of(env, record.keep, record.bits, ratios, title)
        spars = {n: s for n, s in record.sparsity.items() if s}
        return policy_figure(dataclasses.replace(view, sparsity=spars))

    return draw


def shipped_view(env: gym.Env, policy: Policy, title: str) -> PolicyView:
    """The view of the policy a run ships, realised on ``env``'s units."""
    from autoshrink.agent.env_view import search_env
    from autoshrink.agent.search.report import realised_costs
    from autoshrink.compression.policy import kept_channels

    inner = search_env(env, ("graph", "baseline"))
    kept = kept_channels(policy, inner.graph)
    keep = {u.name: kept[u.name] / u.c_out for u in inner.graph.units}
    bits = {
        u.name: policy.units[u.name].bits if u.name in policy.units else FLOAT_BITS
        for u in inner.graph.units
    }
    costs = realised_costs(env, policy)
    ratios = {m: v / inner.baseline[m] for m, v in costs.items() if inner.baseline.get(m)}
    spars = {n: u.sparsity for n, u in policy.units.items() if u.sparsity}
    return dataclasses.replace(view_of(env, keep, bits, ratios, title), sparsity=spars)
