from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from autoshrink.compression import baselines
from autoshrink.compression.baselines import baseline, default_epochs, read_result
from autoshrink.compression.cache import cache_dir
from autoshrink.compression.data import DataSplits, load_dataset
from autoshrink.compression.errors import DataError
from autoshrink.compression.evaluate import (
    TrainResult,
    accuracy,
    finetune,
    recalibrate_bn,
    train_model,
)
from autoshrink.compression.models import ModelSpec, build_model


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset("digits")


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


class Constant(nn.Module):
    """Always predicts ``label``."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, self.label] = 1.0
        return logits


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_accuracy_is_the_fraction_correct(digits: DataSplits) -> None:
    labels = digits.val.tensors[1]
    for label in (0, 3):
        expected = float((labels == label).float().mean())
        assert accuracy(Constant(label), digits.loader("val", batch_size=32)) == pytest.approx(
            expected
        )
    first = digits.loader("val", batch_size=16)
    expected = float((labels[:32] == 3).float().mean())
    assert accuracy(Constant(3), first, max_batches=2) == pytest.approx(expected)


def test_accuracy_restores_mode_and_rejects_empty_loaders(digits: DataSplits) -> None:
    model = tiny_net().train()
    assert 0.0 <= accuracy(model, digits.loader("val")) <= 1.0
    assert model.training
    with pytest.raises(ValueError, match="no samples"):
        accuracy(model, [])


def test_recalibrate_bn_recomputes_running_stats(digits: DataSplits) -> None:
    model = tiny_net()
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.running_mean is not None and bn.running_var is not None
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(7.0)
    loader = digits.loader("train", batch_size=64)
    recalibrate_bn(model, loader, n_batches=3)
    # a cumulative average: the plain mean of the three per-batch statistics
    conv = model[0]
    with torch.no_grad():
        feats = [conv(x) for x, _ in list(loader)[:3]]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-5)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-4)
    assert bn.momentum == 0.1 and not model.training
    assert bn.num_batches_tracked is not None and int(bn.num_batches_tracked) == 3

    again = tiny_net()
    recalibrate_bn(again, digits.loader("train", batch_size=64), n_batches=3)
    assert _same(_params(model), _params(again))


def test_recalibrate_bn_fixes_stale_statistics(digits: DataSplits) -> None:
    model = finetune(tiny_net(), digits.loader("train", shuffle=True), steps=40, lr=0.05)
    good = accuracy(model, digits.loader("val"))
    model[1].running_mean.add_(3.0)  # as if the input channels had changed
    broken = accuracy(model, digits.loader("val"))
    recalibrate_bn(model, digits.loader("train", shuffle=True), n_batches=5)
    fixed = accuracy(model, digits.loader("val"))
    assert broken < good - 0.1
    assert fixed > broken + 0.1


def test_finetune_improves_a_tiny_model(digits: DataSplits) -> None:
    model = tiny_net()
    before = accuracy(model, digits.loader("val"))
    losses: list[tuple[int, float]] = []
    finetune(
        model,
        digits.loader("train", batch_size=64, shuffle=True),
        steps=60,
        lr=0.05,
        on_step=lambda step, loss: losses.append((step, loss)),
    )
    after = accuracy(model, digits.loader("val"))
    assert after > before + 0.2
    assert [s for s, _ in losses] == list(range(1, 61))  # cycles past the 21 batches per pass
    assert all(math.isfinite(loss) for _, loss in losses)
    assert sum(v for _, v in losses[-10:]) < sum(v for _, v in losses[:10])
    assert not model.training


def test_finetune_is_deterministic_under_a_seed(digits: DataSplits) -> None:
    def run(seed: int, loader_seed: int = 0) -> list[torch.Tensor]:
        loader = digits.loader("train", batch_size=64, shuffle=True, seed=loader_seed)
        return _params(finetune(tiny_net(), loader, steps=15, seed=seed))

    assert _same(run(0), run(0))
    assert not _same(run(0), run(0, loader_seed=1))

    # a plain DataLoader shuffles with the global RNG, which finetune seeds
    def plain(seed: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(digits.train, batch_size=64, shuffle=True)
        return _params(finetune(tiny_net(), loader, steps=15, seed=seed))

    assert _same(plain(3), plain(3))
    assert not _same(plain(3), plain(4))


def test_finetune_zero_steps_changes_nothing(digits: DataSplits) -> None:
    model = tiny_net()
    before = _params(model)
    finetune(model, digits.loader("train"), steps=0)
    assert _same(before, _params(model))


def test_distillation_pulls_the_student_to_the_teacher(digits: DataSplits) -> None:
    teacher = Constant(7)
    loader = digits.loader("train", batch_size=64, shuffle=True)
    student = finetune(
        tiny_net(), loader, steps=30, lr=0.05, teacher=teacher, distill_alpha=1.0, temperature=1.0
    )
    agree = accuracy(student, [(x, torch.full((len(x),), 7)) for x, _ in digits.loader("val")])
    assert agree > 0.9


def test_train_model_reports_per_epoch(digits: DataSplits) -> None:
    epochs: list[tuple[int, float]] = []
    result = train_model(
        tiny_net(),
        digits,
        epochs=2,
        lr=0.05,
        batch_size=64,
        on_epoch=lambda e, a: epochs.append((e, a)),
    )
    assert isinstance(result, TrainResult)
    assert [e for e, _ in epochs] == [1, 2]
    assert result.val_accuracy == epochs[-1][1]
    assert 0.0 <= result.test_accuracy <= 1.0 and result.epochs == 2 and result.seconds > 0
    assert result.val_accuracy > 0.3  # well above chance after 2 epochs


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("AUTOSHRINK_CACHE")
    assert cache_dir() == tmp_path / "x" / "autoshrink"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "autoshrink"


def test_default_epochs() -> None:
    assert default_epochs("digits") >= 1
    assert default_epochs("imagefolder:/some/where") >= 1
    with pytest.raises(DataError):
        default_epochs("nope")


def test_baseline_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    spec = ModelSpec("smallcnn", num_classes=10, in_channels=1)
    seen: list[int] = []
    model, path = baseline(spec, "digits", epochs=1, on_epoch=lambda e, a: seen.append(e))
    assert seen == [1]
    assert path.is_file() and path.is_relative_to(tmp_path)
    result = read_result(path)
    assert result is not None and result.epochs == 1 and 0.0 <= result.val_accuracy <= 1.0
    record = json.loads(path.with_suffix(".json").read_text())
    assert (
        record["type"] == "autoshrink.BaselineRecord" and record["data"]["spec"] == spec.to_dict()
    )
    assert not list(path.parent.glob(".*.tmp"))

    def no_training(*args: object, **kwargs: object) -> TrainResult:
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(baselines, "train_model", no_training)
    monkeypatch.setattr(baselines, "load_dataset", no_training)
    cached, cached_path = baseline(spec, "digits", epochs=1)
    assert cached_path == path
    assert _same(_params(model), _params(cached))
    assert not cached.training
    with pytest.raises(AssertionError, match="trained again"):
        baseline(spec, "digits", epochs=1, seed=1)  # another key: must train


def test_baseline_on_a_training_subset_has_its_own_cache_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    spec = ModelSpec("smallcnn", num_classes=10, in_channels=1)
    full = load_dataset("digits")
    subset = load_dataset("digits", train_subset=200)
    assert (full.variant, subset.variant) == ("", "sub200")
    _, full_path = baseline(spec, "digits", epochs=1, splits=full)
    assert baseline(spec, "digits", epochs=1)[1] == full_path  # default splits: same entry
    _, sub_path = baseline(spec, "digits", epochs=1, splits=subset)
    assert sub_path != full_path and sub_path.is_file()


def test_baseline_checks_the_spec_against_the_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="channels"):
        baseline(ModelSpec("smallcnn", num_classes=10, in_channels=3), "digits", epochs=1)


def test_baseline_loads_back_with_load_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from autoshrink.compression.models import load_weights

    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path))
    spec = ModelSpec("smallcnn", num_classes=10, in_channels=3)
    model, path = baseline(spec, "fake", epochs=1)
    loaded = load_weights(build_model(spec), path)
    assert _same(_params(model), _params(loaded))
    assert copy.deepcopy(loaded) is not loaded
