"""Devices: names checked, resolved against the machine, threads shared out, CPU-only files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoshrink.compression import device as dev
from autoshrink.compression.artifact import load_artifact, save_artifact
from autoshrink.compression.data import load_dataset
from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.compression.evaluate import accuracy
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import uniform_policy
from autoshrink.compression.units import build_units


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_well_formed_devices_pass(name):
    assert dev.check_device(name) == name
    assert dev.device_problem(name) is None


@pytest.mark.parametrize("name", ["tpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "mps ", "", 3, None])
def test_misspelt_devices_are_refused_in_one_line(name):
    with pytest.raises(dev.DeviceError, match=r"^device must be auto, cpu, cuda or cuda:N"):
        dev.check_device(name)
    with pytest.raises(dev.DeviceError):
        dev.resolve_device(name)  # type: ignore[arg-type]


def _cuda(monkeypatch, available: bool, count: int = 0, current: int = 0) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)


def test_auto_takes_the_cpu_without_cuda_and_cuda_refuses(monkeypatch):
    _cuda(monkeypatch, available=False)
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:0", "cuda:7"):
        with pytest.raises(dev.DeviceError, match="needs CUDA, and this machine has none"):
            dev.resolve_device(name)


def test_auto_takes_cuda_where_there_is_one_and_counts_are_checked(monkeypatch):
    _cuda(monkeypatch, available=True, count=2, current=1)
    assert dev.resolve_device("auto") == torch.device("cuda", 1)
    assert dev.resolve_device("cuda") == torch.device("cuda", 1)
    assert dev.resolve_device("cuda:0") == torch.device("cuda", 0)
    assert dev.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(dev.DeviceError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        dev.resolve_device("cuda:7")


def test_default_threads_share_the_cores_out(monkeypatch):
    monkeypatch.setattr(dev, "available_cores", lambda: 8)
    assert [dev.default_threads(w) for w in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    assert dev.default_threads(0) == 8


def test_set_threads_sets_torch_and_refuses_below_one(monkeypatch):
    monkeypatch.setattr(dev, "available_cores", lambda: 6)
    assert dev.set_threads(None, workers=3) == 2 and torch.get_num_threads() == 2
    assert dev.set_threads(1) == 1 and torch.get_num_threads() == 1
    for bad in (0, -2, True):
        with pytest.raises(AutoshrinkError, match="threads must be between 1 and 1,024"):
            dev.set_threads(bad)


def test_on_device_copies_and_never_moves_the_original():
    model = nn.Linear(3, 2)
    assert dev.on_device(model, torch.device("cpu")) is model
    meta = dev.on_device(model, torch.device("meta"))
    assert meta is not model and meta.weight.device.type == "meta"
    assert model.weight.device.type == "cpu"


def test_splits_pin_memory_only_for_cuda_and_give_the_same_batches():
    splits = load_dataset("digits")
    assert splits.for_device(torch.device("cpu")).pin_memory is False
    assert splits.for_device(torch.device("cuda", 0)).pin_memory is True
    plain = next(iter(splits.loader("train", 32, shuffle=True, seed=3)))
    again = next(iter(splits.for_device(torch.device("cpu")).loader("train", 32, True, 3)))
    assert torch.equal(plain[0], again[0]) and torch.equal(plain[1], again[1])


def _compressed(device: str) -> tuple[nn.Module, ModelSpec, object]:
    spec = ModelSpec("smallcnn", num_classes=10, in_channels=1)
    model = build_model(spec)
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    policy = uniform_policy(graph, keep=0.5, bits=4)
    from autoshrink.compression.apply import apply_policy

    return apply_policy(model, graph, policy).to(device), spec, policy


def test_an_artifact_of_a_meta_model_is_refused_in_one_line(tmp_path):
    model, spec, policy = _compressed("meta")
    with pytest.raises(CheckpointError, match="meta device: it has no weights to save"):
        save_artifact(tmp_path / "m.safetensors", model, spec, (1, 1, 8, 8), policy)
    assert not (tmp_path / "m.safetensors").exists()


def test_an_artifact_loads_on_the_cpu_and_scores_where_auto_says(tmp_path):
    model, spec, policy = _compressed("cpu")
    path = tmp_path / "m.safetensors"
    save_artifact(path, model, spec, (1, 1, 8, 8), policy)
    loaded = load_artifact(path)
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)
    device = dev.resolve_device("auto")
    test = load_dataset("digits").for_device(device).loader("test", 128)
    on = dev.on_device(loaded, device)
    assert accuracy(on, test) == accuracy(loaded, load_dataset("digits").loader("test", 128))
