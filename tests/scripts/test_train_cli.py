from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoshrink.compression.models import ModelSpec, build_model, load_weights
from autoshrink.scripts.cli import main


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(root))
    return root


def test_train_digits_writes_a_loadable_checkpoint_and_caches_it(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ckpt" / "resnet20.pt"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out)]) == 0
    first = capsys.readouterr()
    assert "val accuracy" in first.out and "test accuracy" in first.out
    assert str(out) in first.out
    assert "cached:" not in first.out
    model = load_weights(build_model(ModelSpec("resnet20", 10, 1)), out)
    assert len(list((cache / "baselines").glob("*.pt"))) == 1

    # the same command again loads the cache instead of training
    again = tmp_path / "again.pt"
    assert main(["train", "--epochs", "1", "--out", str(again)]) == 0
    second = capsys.readouterr()
    assert "cached:" in second.out
    assert "training" not in second.err
    reloaded = load_weights(build_model(ModelSpec("resnet20", 10, 1)), again)
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_writes_safetensors(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "small.safetensors"
    args = ["train", "--model", "smallcnn", "--dataset", "fake", "--epochs", "1"]
    assert main([*args, "--out", str(out)]) == 0
    load_weights(build_model(ModelSpec("smallcnn", 10, 3)), out)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "no-such-model"], "unknown model"),
        (["--dataset", "no-such-data"], "unknown dataset"),
        (["--dataset", "imagefolder:/no/such/folder"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cache: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert main(["train", "--epochs", "1", *args]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error:") and words in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not cache.exists() or not list(cache.rglob("*.pt"))


def test_help_mentions_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--dataset", "--data-dir", "--epochs", "--out", "resnet20"):
        assert option in text


def test_a_train_subset_is_a_baseline_of_its_own(
    cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--model", "smallcnn", "--epochs", "1"]
    assert main([*argv, "--train-subset", "200"]) == 0
    assert "cached:" not in capsys.readouterr().out
    assert main([*argv, "--train-subset", "200"]) == 0  # the same subset: cached
    assert "cached:" in capsys.readouterr().out
    assert main(argv) == 0  # all of digits: another baseline, trained
    assert "cached:" not in capsys.readouterr().out
    names = sorted(p.name for p in (cache / "baselines").glob("*.pt"))
    assert len(names) == 2, names  # the subset is in the key, so in the name's hash
    with pytest.raises(SystemExit) as refused:
        main([*argv, "--train-subset", "0"])
    assert refused.value.code == 2
