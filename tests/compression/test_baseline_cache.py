"""The baseline cache cannot go stale: the key covers the model's source; near chance warns."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from autoshrink.compression import baselines
from autoshrink.compression.baselines import baseline, baseline_path, model_source, read_result
from autoshrink.compression.evaluate import TrainResult
from autoshrink.compression.models import ModelSpec

NET = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d({act}, 1), 1))

def build(num_classes=10, in_channels=1):
    return Net(num_classes, in_channels)
"""


def write_net(folder: Path, act: str = "torch.relu(self.conv(x))") -> ModelSpec:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mynet.py").write_text(NET.format(act=act))
    return ModelSpec(f"{folder / 'mynet.py'}:build", num_classes=10, in_channels=1)


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_editing_a_factory_forward_retrains_and_says_why(
    cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_net(tmp_path / "net")
    _, first = baseline(spec, "digits", epochs=1)
    trained: list[int] = []
    real = baselines.train_model

    def counting(*args: object, **kwargs: object) -> TrainResult:
        trained.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(baselines, "train_model", counting)
    assert baseline(spec, "digits", epochs=1)[1] == first and trained == []  # cached
    write_net(tmp_path / "net", act="torch.tanh(self.conv(x))")  # same shapes
    with caplog.at_level(logging.INFO, logger="autoshrink.compression.baselines"):
        _, second = baseline(spec, "digits", epochs=1)
    assert trained == [1] and second != first and first.is_file()
    why = [r for r in caplog.records if "source changed" in r.getMessage()]
    assert why and why[0].levelno == logging.WARNING and "sha256" in why[0].getMessage()


def test_two_factories_of_one_name_in_two_folders_do_not_share_an_entry(
    cache: Path, tmp_path: Path
) -> None:
    a, b = write_net(tmp_path / "a"), write_net(tmp_path / "b")
    assert Path(a.name).name == Path(b.name).name == "mynet.py:build"
    assert baseline_path(a, "digits", 1) != baseline_path(b, "digits", 1)
    assert model_source(a.name)["path"] != model_source(b.name)["path"]
    # the same content has the same hash: only the path tells them apart
    assert model_source(a.name)["sha256"] == model_source(b.name)["sha256"]


def test_torchvision_key_covers_its_version(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    import torchvision

    spec = ModelSpec("mobilenet_v2", 10, 3)
    before = baseline_path(spec, "cifar10", 1)
    assert model_source("mobilenet_v2") == {"torchvision": torchvision.__version__}
    monkeypatch.setattr(torchvision, "__version__", "0.0.1")
    assert baseline_path(spec, "cifar10", 1) != before
    assert model_source("resnet20") == {}  # zoo keys are unchanged: old caches stay valid


def test_near_chance_baseline_warns_and_is_flagged(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def chance_training(model: torch.nn.Module, *args: object, **kwargs: object) -> TrainResult:
        return TrainResult(0.1, 0.11, 1, 0.1)

    monkeypatch.setattr(baselines, "train_model", chance_training)
    spec = ModelSpec("smallcnn", 10, 1)
    with caplog.at_level(logging.WARNING, logger="autoshrink.compression.baselines"):
        _, path = baseline(spec, "digits", epochs=1)
    assert any("near chance" in r.getMessage() for r in caplog.records)
    result = read_result(path)
    assert result is not None and result.chance_accuracy == pytest.approx(0.1)
    assert result.near_chance() and not TrainResult(0.9, 0.9, 1, 1.0, 0.1).near_chance()
    assert TrainResult(0.9, 0.9, 1, 1.0, 0.1).near_chance(min_accuracy=0.95)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autoshrink.compression.baselines"):
        baseline(spec, "digits", epochs=1)  # loaded from the cache: still reported
    assert any("near chance" in r.getMessage() for r in caplog.records)
