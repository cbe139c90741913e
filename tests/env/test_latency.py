from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from autoshrink.compression.units import Unit
from autoshrink.env import latency as lat
from autoshrink.env.latency import LatencyTable, latency_table, measure_table


def _unit(name: str, c_out: int) -> Unit:
    return Unit(name, 0, "conv", False, 3, c_out, 3, 1, 1, 16, 100, 10, (name,))


class _Pruned(nn.Module):
    def __init__(self, kept: Mapping[str, int]) -> None:
        super().__init__()
        self.kept = dict(kept)


def _fake(graph: Any) -> tuple[Any, Any, list[int]]:
    calls = [0]

    def prune(model: nn.Module, g: Any, kept: Mapping[str, int]) -> nn.Module:
        return _Pruned(kept)

    def timer(model: nn.Module, x: torch.Tensor) -> float:
        calls[0] += 1
        if isinstance(model, _Pruned):
            # a noisy but mostly linear cost: unit "b" is non-monotone at its lowest level
            return (
                1.0
                + sum(0.01 * c for c in model.kept.values())
                + (0.2 if model.kept.get("b") == 4 else 0.0)
            )
        return 1.0 + 0.01 * sum(u.c_out for u in graph.units)

    return prune, timer, calls


def test_measured_table_is_monotone_and_exact_at_full() -> None:
    graph = SimpleNamespace(units=[_unit("a", 16), _unit("b", 32)])
    prune, timer, _ = _fake(graph)
    table = measure_table(nn.Identity(), graph, torch.zeros(1), prune, timer=timer)
    full = {"a": 16, "b": 32}
    assert table(full) == pytest.approx(table.base)
    for name, c_out in full.items():
        xs, ys = table.channels[name], table.seconds[name]
        assert xs[-1] == c_out and xs == sorted(xs)
        assert all(y0 <= y1 for y0, y1 in itertools.pairwise(ys))
    # the additive estimate decreases monotonically when any unit loses channels
    for a, b in itertools.product(range(1, 17), range(1, 33)):
        est = table({"a": a, "b": b})
        assert est <= table({"a": min(a + 1, 16), "b": b}) + 1e-12
        assert est <= table({"a": a, "b": min(b + 1, 32)}) + 1e-12
    # unit a is linear: interpolation between the measured levels is exact
    assert table({"a": 6, "b": 32}) == pytest.approx(table.base - 0.01 * 10)


def test_table_round_trips_and_is_cached(tmp_path: Path) -> None:
    graph = SimpleNamespace(units=[_unit("a", 16)])
    prune, timer, calls = _fake(graph)
    model = nn.Conv2d(1, 16, 3)
    x = torch.zeros(1, 1, 8, 8)
    first = latency_table(model, graph, x, prune, cache=tmp_path, timer=timer)
    n = calls[0]
    assert n > 1
    assert first.runtime == "eager" and first.spread == 0.0
    second = latency_table(model, graph, x, prune, cache=tmp_path, timer=timer)
    assert calls[0] == n  # loaded, not measured again
    assert second == first
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    assert LatencyTable.from_dict(json.loads(files[0].read_text())) == first
    # another input shape is another table
    latency_table(model, graph, torch.zeros(1, 1, 16, 16), prune, cache=tmp_path, timer=timer)
    assert calls[0] > n
    # and so is another runtime, which the table records
    n = calls[0]
    compiled = latency_table(
        model, graph, x, prune, cache=tmp_path, runtime="compiled", timer=timer
    )
    assert calls[0] > n and compiled.runtime == "compiled"
    assert len(list(tmp_path.glob("*.json"))) == 3


class _Conv(nn.Module):
    """A conv whose width is its cost: the real interleaved measurement times it."""

    def __init__(self, kept: Mapping[str, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, kept.get("a", 64), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_interleaved_table_has_a_spread_and_is_measured_against_the_full_model() -> None:
    graph = SimpleNamespace(units=[_unit("a", 64)])
    table = measure_table(
        _Conv({}), graph, torch.zeros(1, 8, 16, 16), lambda m, g, k: _Conv(k), repeats=3
    )
    assert table.spread >= 0.0 and table.runtime == "eager"
    xs, ys = table.channels["a"], table.seconds["a"]
    assert xs[-1] == 64 and ys[-1] == table.base > 0
    assert all(0 < y <= table.base for y in ys)  # monotone, ending at the full model
    assert "spread" in table.to_dict()["data"]


def test_calibration_makes_the_estimate_exact_where_savings_do_not_add_up() -> None:
    """Two units whose widths multiply (a conv between them): one-unit savings over-promise."""
    graph = SimpleNamespace(units=[_unit("a", 16), _unit("b", 32)])

    def prune(model: nn.Module, g: Any, kept: Mapping[str, int]) -> nn.Module:
        return _Pruned(kept)

    def cost(kept: Mapping[str, int]) -> float:
        return 1.0 + 0.001 * kept["a"] * kept["b"]

    def timer(model: nn.Module, x: torch.Tensor) -> float:
        return cost(model.kept if isinstance(model, _Pruned) else {"a": 16, "b": 32})

    table = measure_table(nn.Identity(), graph, torch.zeros(1), prune, timer=timer)
    assert table.calib_added and len(table.calib_added) == len(table.calib_saved)
    for level in lat.LEVELS:  # exact at every measured uniform policy
        kept = {u.name: u.kept(level) for u in graph.units}
        assert table(kept) == pytest.approx(cost(kept))
        assert table.base - table.added_saving(kept) < cost(kept) - 1e-9  # the sum over-promises
    assert table({"a": 16, "b": 32}) == pytest.approx(table.base)
    floor = cost({"a": 2, "b": 4})
    for a, b in itertools.product(range(1, 17), range(1, 33)):
        est = table({"a": a, "b": b})
        assert est >= floor - 1e-12  # never below the smallest measured model
        assert est <= table({"a": min(a + 1, 16), "b": b}) + 1e-12
        assert est <= table({"a": a, "b": min(b + 1, 32)}) + 1e-12
    assert LatencyTable.from_dict(table.to_dict()) == table


def test_calibration_points_are_ascending_capped_and_never_negative() -> None:
    xs, ys = lat.calibration([(0.3, 0.25), (0.1, 0.12), (0.2, 0.05), (0.2, 0.08), (0.0, 0.1)])
    assert xs == [0.1, 0.2, 0.3]
    assert ys == [0.05, 0.05, 0.25]  # 0.12 capped by the 0.05 measured further out
    assert lat.calibration([(0.1, -0.2)]) == ([0.1], [0.0])
    assert lat.calibration([]) == ([], [])


def test_time_forward_is_positive() -> None:
    assert lat.time_forward(nn.Linear(4, 4), torch.zeros(1, 4), repeats=3) > 0
