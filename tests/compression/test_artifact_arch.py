"""An artifact records its pruned architecture: it loads wherever it was made, untraced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn

from autoshrink.compression import _depgraph
from autoshrink.compression.artifact import load_artifact, read_header, save_artifact
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import uniform_policy
from autoshrink.compression.prune import prune
from autoshrink.compression.units import build_units
from tests.compression.artifact_files import edit_field, edit_meta
from tests.compression.busy import make_busy

SPEC, SHAPE = ModelSpec("resnet20", 10, 1), (1, 1, 8, 8)
X = torch.randn(2, 1, 8, 8)


def _saved(tmp_path: Path, name: str = "a.safetensors") -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = build_model(SPEC)
    graph = build_units(model, torch.zeros(SHAPE))
    policy = uniform_policy(graph, keep=0.5, bits=8)
    small = prune(model, graph, policy.keep())
    return save_artifact(tmp_path / name, small, SPEC, SHAPE, policy).path, small


def _same(a: nn.Module, b: nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(X), b.eval()(X))


def test_an_artifact_made_on_a_quiet_machine_loads_on_a_busy_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _saved(tmp_path)
    quiet = load_artifact(path)
    # Grouping the stem's channels (the largest group) takes longer than on the quiet
    # machine: were the units found again, by the clock, the stem would come out frozen.
    make_busy(monkeypatch, lambda m: isinstance(m, nn.Conv2d) and m.in_channels == 1)
    assert _same(load_artifact(path), quiet)


def test_an_artifact_made_with_one_group_bound_loads_with_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _saved(tmp_path)
    before = load_artifact(path)
    with monkeypatch.context() as m:
        m.setattr(_depgraph, "GROUP_LIMITS", (10, 10**6))  # the stem's residual group is larger
        small_bound, _ = _saved(tmp_path, "b.safetensors")
    assert "conv1" in read_header(small_bound).frozen  # frozen where it was made ...
    assert "conv1" not in read_header(path).frozen
    load_artifact(small_bound)  # ... and loads with the default bound
    monkeypatch.setattr(_depgraph, "GROUP_LIMITS", (10, 10**6))
    assert _same(load_artifact(path), before)  # and the other way round


def test_loading_does_not_trace_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, small = _saved(tmp_path)

    def no_tracing(*args: object, **kw: object) -> None:
        raise AssertionError("loading traced the model")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", no_tracing)
    loaded = load_artifact(path)
    assert [p.shape for p in loaded.parameters()] == [p.shape for p in small.parameters()]
    assert read_header(path).cuts  # what it loaded from


def test_a_format_3_artifact_still_loads_by_finding_its_units(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    now = load_artifact(path)

    def to_v3(meta: dict[str, str]) -> None:
        meta["format_version"] = "3"
        del meta["cuts"], meta["heads"]

    edit_meta(path, to_v3)
    head = read_header(path)
    assert head.format_version == 3 and head.cuts is None
    assert _same(load_artifact(path), now)


@pytest.mark.parametrize(
    ("cuts", "match"),
    [
        ([["no.such", "out", 2]], r"cuts out channels of 'no\.such', which it lacks"),
        ([["conv1", "out", 16]], r"cuts 16 of the 16 out channels of 'conv1'"),
        ([["conv1", "sideways", 2]], r"'cuts'.*is not \[name, dim, removed\]"),
        ([["conv1", "out", 0]], r"'cuts'.*is not \[name, dim, removed\]"),
        ({"conv1": 2}, r"'cuts'"),
    ],
)
def test_a_forged_cut_is_one_line(tmp_path: Path, cuts: object, match: str) -> None:
    path, _ = _saved(tmp_path)
    edit_field(path, "cuts", cuts)
    with pytest.raises(CheckpointError, match=match) as info:
        load_artifact(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_a_cut_the_weights_do_not_fit_is_refused(tmp_path: Path) -> None:
    path, _ = _saved(tmp_path)
    cuts = json.loads(json.dumps(read_header(path).cuts))
    inputs = next(c for c in cuts if c[1] == "in")
    inputs[2] -= 1  # one input channel fewer cut than the stored weight has
    edit_field(path, "cuts", cuts)
    # the payload's own check names the weight the rebuilt layer cannot hold
    with pytest.raises(CheckpointError, match=r"has a malformed tensor: layer1\.0\.conv1\.weight"):
        load_artifact(path)
    outputs = next(c for c in cuts if c[0] == "conv1" and c[1] == "out")
    outputs[2] -= 1  # and a unit's leading layer left wider than the unit keeps
    edit_field(path, "cuts", cuts)
    with pytest.raises(CheckpointError, match=r"unit 'conv1' keeps 8 channels, the cuts leave 9"):
        load_artifact(path)


def test_saving_with_the_callers_graph_writes_the_same_file_untraced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, small = _saved(tmp_path)
    torch.manual_seed(0)
    graph = build_units(build_model(SPEC), torch.zeros(SHAPE))
    policy = uniform_policy(graph, keep=0.5, bits=8)
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", None)  # no tracing here
    again = save_artifact(tmp_path / "b.safetensors", small, SPEC, SHAPE, policy, graph=graph)
    assert again.path.read_bytes() == path.read_bytes()
    with pytest.raises(CheckpointError, match="unit graph given is not the one"):
        save_artifact(tmp_path / "c.safetensors", small, SPEC, (1, 1, 16, 16), policy, graph=graph)
