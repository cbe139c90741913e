"""Partial pruning: frozen units instead of refusals, exact costs, and artifacts that load."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autoshrink.compression import artifact as artifact_module
from autoshrink.compression.artifact import load_artifact, read_header, save_artifact
from autoshrink.compression.cost import cost
from autoshrink.compression.errors import UnsupportedModelError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, layer_bits, uniform_policy
from autoshrink.compression.prune import prune
from autoshrink.compression.quantize import quantize_weights_
from autoshrink.compression.units import build_units
from tests.compression.artifact_files import split, unpacked
from tests.compression.busy import make_busy
from tests.compression.exact import assert_exact

REX = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Rex(nn.Module):
        # The issue's reproduction: a split whose pieces meet again in a concat.
        def __init__(s):
            super().__init__()
            s.stem, s.pw = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 24, 1)
            s.pw2, s.head = nn.Conv2d(24, 32, 1), nn.Linear(32, 10)

        def forward(s, x):
            x = s.stem(x); y = s.pw(x); y = torch.cat([y[:, :16] + x, y[:, 16:]], 1)
            return s.head(s.pw2(y).mean((2, 3)))


    def rex():
        return Rex()
    """
)
X = torch.randn(2, 3, 8, 8)


@pytest.fixture
def rex_spec(tmp_path: Path) -> ModelSpec:
    path = tmp_path / "rex.py"
    path.write_text(REX)
    return ModelSpec(f"{path}:rex")


def test_rex_split_concat_is_exact_or_frozen_never_a_crash(rex_spec: ModelSpec) -> None:
    model = build_model(rex_spec)
    graph = assert_exact(model, X, policies=5)  # the l1 scorer once raised IndexError here
    assert graph.unit_names == ("pw2",)
    assert "beyond" in graph.frozen["stem"] and "pw" in graph.frozen["stem"]


def test_every_plan_entry_fits_its_module(rex_spec: ModelSpec) -> None:
    model = build_model(rex_spec)
    modules = dict(model.named_modules())
    for entry in build_units(model, X, verify=False).plan:  # the trace's judgement alone
        m = modules[entry.module]
        width = m.weight.shape[1 if entry.dim == "in" else 0]
        assert 0 <= entry.target.min() and entry.target.max() < width, entry.module


def _round_trip(tmp_path: Path, model: nn.Module, spec: ModelSpec, policy: Policy) -> None:
    graph = build_units(model, X, ignored_layers=list(policy.frozen))
    pruned = prune(model, graph, policy.keep())
    bits = layer_bits(policy, graph)
    info = save_artifact(tmp_path / "m.safetensors", pruned, spec, tuple(X.shape), policy)
    assert info.payload_bytes == cost(graph, policy.keep(), bits).bytes
    loaded = load_artifact(info.path, factory=spec.name)
    simulated = quantize_weights_(pruned, bits)
    with torch.no_grad():
        assert (loaded(X) - simulated(X)).abs().max() <= 1e-5
    header = read_header(info.path)
    assert header.frozen == graph.frozen and header.policy == policy


def test_a_model_with_automatically_frozen_units_round_trips(
    rex_spec: ModelSpec, tmp_path: Path
) -> None:
    model = build_model(rex_spec)
    policy = uniform_policy(build_units(model, X), keep=0.5, bits=4)
    assert set(policy.frozen) == {"stem"}
    _round_trip(tmp_path, model, rex_spec, policy)


def test_a_model_with_user_ignored_layers_round_trips(tmp_path: Path) -> None:
    spec = ModelSpec("resnet20")
    model = build_model(spec)
    graph = build_units(model, X, ignored_layers=["layer1.0.conv1", "layer3.2.conv1"])
    policy = uniform_policy(graph, keep=0.5, bits=8)
    assert set(policy.frozen) == {"layer1.0.conv1", "layer3.2.conv1"}
    assert Policy.from_json(policy.to_json()) == policy
    _round_trip(tmp_path, model, spec, policy)


def test_a_version_1_artifact_without_frozen_units_still_loads(tmp_path: Path) -> None:
    spec = ModelSpec("resnet20")
    model = build_model(spec)
    policy = uniform_policy(build_units(model, X), keep=0.5, bits=6)
    pruned = prune(model, build_units(model, X), policy.keep())
    path = tmp_path / "v2.safetensors"
    save_artifact(path, pruned, spec, tuple(X.shape), policy)
    meta = dict(unpacked(split(path)[0]))
    assert json.loads(meta.pop("frozen")) == {}
    meta.pop("sha256")
    meta["format_version"] = "1"
    tensors = load_file(str(path))
    meta["sha256"] = artifact_module._digest(tensors, meta)
    old = tmp_path / "v1.safetensors"
    save_file(tensors, str(old), metadata=meta)
    with torch.no_grad():
        assert torch.equal(load_artifact(old)(X), load_artifact(path)(X))
    assert read_header(old).frozen == {}


def test_a_group_too_large_to_follow_is_frozen_by_its_size_not_its_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autoshrink.compression import _depgraph

    monkeypatch.setattr(_depgraph, "GROUP_LIMITS", (1, 10**6))
    with pytest.raises(UnsupportedModelError, match=r"no prunable unit left.*over 1 dep"):
        build_units(build_model(ModelSpec("smallcnn")), X)
    monkeypatch.setattr(_depgraph, "GROUP_LIMITS", (10**6, 10))
    with pytest.raises(UnsupportedModelError, match=r"through over 10 channel indices"):
        build_units(build_model(ModelSpec("smallcnn")), X)


def test_a_slow_grouping_gives_the_units_of_a_fast_one(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(ModelSpec("resnet20"))
    fast = build_units(model, X)
    make_busy(monkeypatch, lambda m: m is model.conv1 or m is model.layer2[0].conv1)
    slow = build_units(model, X)
    assert slow.unit_names == fast.unit_names and slow.frozen == fast.frozen == {}
    assert [u.layers for u in slow.units] == [u.layers for u in fast.units]


def test_a_deadline_keeps_a_callers_own_timer() -> None:
    import signal
    import time

    from autoshrink.compression.deadline import deadline

    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # e.g. a batch job's timeout
        with deadline(10.0, TimeoutError):
            pass
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # still armed
        time.sleep(0.8)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


SHARED = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Shared(nn.Module):
        # A conv shared by two names (as CoaT shares its position encoders) and a
        # non-persistent float buffer (as ConViT's): neither is stored twice, or at all.
        def __init__(s):
            super().__init__()
            s.a, s.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
            s.again, s.c, s.head = s.b, nn.Conv2d(8, 16, 1), nn.Linear(16, 10)
            s.register_buffer("gain", torch.full((1, 8, 1, 1), 2.0), persistent=False)

        def forward(s, x):
            y = s.again(s.b(s.a(x)).relu()) * s.gain
            return s.head(s.c(y).relu().mean((2, 3)))


    def shared():
        return Shared()
    """
)


def test_shared_and_non_persistent_tensors_are_counted_as_stored(tmp_path: Path) -> None:
    path = tmp_path / "shared.py"
    path.write_text(SHARED)
    spec = ModelSpec(f"{path}:shared")
    model = build_model(spec)
    graph = assert_exact(model, X, policies=3)
    assert "c" in graph.unit_names
    policy = uniform_policy(graph, keep=0.5, bits=4)
    _round_trip(tmp_path, model, spec, policy)  # payload equals the cost model's bytes
    header, _ = split(tmp_path / "m.safetensors")
    assert "b.weight" in header and "again.weight" not in header and "gain" not in header
