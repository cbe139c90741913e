"""``autoshrink inspect``: the JSON schema, the table, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.units import build_units
from autoshrink.scripts.cli import main

UNIT_KEYS = {"name", "kind", "c_in", "c_out", "kernel", "stride", "groups", "fmap", "macs"}


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["inspect", "--json", *argv]) == 0
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout is one JSON document


def test_default_is_resnet20_on_digits_with_exact_totals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = _json(capsys)
    assert set(report) == {"units", "frozen", "total"} and report["frozen"] == {}
    assert set(report["total"]) == {"macs", "params", "bytes"}
    model = build_model(ModelSpec("resnet20", num_classes=10, in_channels=1))
    x = torch.zeros(1, 1, 8, 8)  # digits: 8x8 grey images
    assert report["total"] == {
        "macs": count_macs(model, x),
        "params": count_params(model),
        "bytes": count_bytes(model),
    }
    graph = build_units(model, x)
    assert [u["name"] for u in report["units"]] == list(graph.unit_names)
    for row in report["units"]:
        assert UNIT_KEYS | {"params"} <= set(row)
        assert row["kind"] in ("conv", "linear")
        assert isinstance(row["macs"], int) and isinstance(row["params"], int)


def test_input_shape_and_round_to(capsys: pytest.CaptureFixture[str]) -> None:
    report = _json(
        capsys, "--model", "mobilenet_v2", "--input-shape", "1,3,32,32", "--round-to", "8"
    )
    assert any(row["depthwise"] for row in report["units"])
    assert {row["round_to"] for row in report["units"]} == {8}
    model = build_model(ModelSpec("mobilenet_v2", num_classes=10, in_channels=3))
    assert report["total"]["macs"] == count_macs(model, torch.zeros(1, 3, 32, 32))


def test_table_lists_units_and_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", "smallcnn", "--input-shape", "1,3,16,16"]) == 0
    out = capsys.readouterr().out
    for name in ("features.0.0", "features.3.0", "total:", "fixed layers: classifier"):
        assert name in out


def _error_line(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["inspect", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--model", "resnet21"], "unknown model 'resnet21'"),
        (["--input-shape", "1,3,x"], "malformed --input-shape '1,3,x'"),
        (["--input-shape", "0,3,32,32"], "malformed --input-shape '0,3,32,32'"),
        (["--input-shape", "32"], "malformed --input-shape '32'"),
        (["--checkpoint", "/no/such/file.pt"], "checkpoint not found"),
        (["--dataset", "nosuch"], "nosuch"),
        (["--keep", "1.5"], "(0, 1], got 1.5"),
        (["--keep", "0"], "(0, 1], got 0.0"),
        (["--keep", "-0.2"], "(0, 1], got -0.2"),
        (["--keep", "nan"], "(0, 1], got nan"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert needle in _error_line(capsys, *argv)


def test_checkpoint_of_another_architecture(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "resnet20.pt"
    torch.save(build_model(ModelSpec("resnet20", in_channels=1)).state_dict(), path)
    line = _error_line(capsys, "--model", "resnet32", "--checkpoint", str(path))
    assert "another architecture" in line
    assert main(["inspect", "--json", "--checkpoint", str(path)]) == 0  # the right one loads


def test_keep_what_if_matches_the_pruned_model(capsys: pytest.CaptureFixture[str]) -> None:
    from autoshrink.compression.prune import prune

    report = _json(capsys, "--keep", "0.5")
    model = build_model(ModelSpec("resnet20", num_classes=10, in_channels=1))
    x = torch.zeros(1, 1, 8, 8)
    graph = build_units(model, x)
    small = prune(model, graph, dict.fromkeys(graph.unit_names, 0.5))
    assert report["pruned"]["macs"] == count_macs(small, x)
    assert report["pruned"]["params"] == count_params(small)
    assert [row["kept"] for row in report["units"]] == [u.kept(0.5) for u in graph.units]


SHUFFLED = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=3):
        super().__init__()
        self.a, self.b = nn.Conv2d(in_channels, 8, 3), nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.roll(self.a(x), 1, dims=1)  # channels rotated: no unit can follow them
        x = torch.roll(self.b(x), 1, dims=1)
        return self.head(x.mean((2, 3)))


def build(num_classes=10, in_channels=3):
    return Net(num_classes, in_channels)
"""


def test_a_model_with_nothing_left_to_prune_is_refused_naming_a_layer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # ShuffleNet is pruned where its shuffles allow; a model whose every unit runs through a
    # channel-mixing op has nothing left, and the refusal names the layer that leads one
    factory = tmp_path / "shuffled.py"
    factory.write_text(SHUFFLED)
    line = _error_line(capsys, "--model", f"{factory}:build", "--input-shape", "1,3,16,16")
    assert "no prunable unit left" in line and "'a'" in line


def test_frozen_units_are_listed_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["inspect", "--model", "shufflenet_v2_x0_5", "--input-shape", "1,3,32,32"]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("frozen")]
    report = _json(capsys, *argv[1:])
    assert report["frozen"] and len(lines) == len(report["frozen"])
    assert all(f"frozen unit {name}: {why}" in lines for name, why in report["frozen"].items())
