"""`autoshrink search` end to end on a tiny model, and the no-argument default run (slow)."""

from __future__ import annotations

import json
import time

import pytest
from safetensors import safe_open

from autoshrink.agent.search.report import read_result
from autoshrink.compression.artifact import load_artifact, read_header
from autoshrink.compression.counting import count_macs, count_params
from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)


def payload(path) -> int:
    with safe_open(str(path), framework="pt") as fh:
        return sum(fh.get_tensor(k).numel() * fh.get_tensor(k).element_size() for k in fh.keys())


def check_run_folder(out) -> dict:
    result = read_result(out / "result.json")
    assert result["budgets_met"] is True
    for side in ("baseline", "compressed"):  # val beside test, both measured on the model
        assert 0 <= result[side]["val_accuracy"] <= 1 and 0 <= result[side]["accuracy"] <= 1
    for name in ("policy.json", "policy.png", "episodes.jsonl", "agent.zip", result["artifact"]):
        assert (out / name).is_file(), name
    assert list((out / "tb" / "search").glob("events.out.tfevents.*"))
    # an independent count of the shipped artifact agrees with result.json
    path = out / result["artifact"]
    model = load_artifact(path)
    import torch

    x = torch.zeros(read_header(path).input_shape)
    comp = result["compressed"]
    assert count_macs(model, x) == comp["macs"]
    assert count_params(model) == comp["params"]
    assert payload(path) == comp["bytes"]
    for metric, budget in result["budgets"].items():
        key = {"flops": "macs", "params": "params", "size": "bytes"}[metric]
        assert comp[key] <= budget["limit"]
        if budget["relative"]:
            assert comp[key] <= budget["value"] * result["baseline"][key]
    return result


def test_search_cli_writes_a_verified_run_folder(tmp_path, smallcnn_checkpoint, capsys):  # noqa: F811
    out = tmp_path / "run"
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--episodes", "4", "--final-epochs", "1", "--size", "0.08", "--flops", "0.4"]
    assert main([*argv, "--out", str(out)]) == 0
    result = check_run_folder(out)
    assert result["episodes"] == 4 and result["agent"] == "ddpg"
    assert result["budgets"]["size"]["value"] == 0.08
    table = capsys.readouterr().out
    assert "test accuracy" in table and "MACs" in table and "latency" in table
    assert "val accuracy" in table
    # then the shipped policy per unit, as `autoshrink show` prints it (compact when piped)
    assert "* pinned by the policy: features.0.0 at 8 bits, classifier at 8 bits" in table
    assert "smallcnn on 1x1x8x8: 4 units" in table and "/128" in table
    assert result["final"]["finalists"] == 1  # the default on digits
    # resuming a finished search re-finishes it without new episodes, here with finalists
    lines = (out / "episodes.jsonl").read_text()
    again = ["search", "--resume", "--out", str(out), "--final-epochs", "1", "--finalists", "2"]
    assert main([*again, "--finalist-spacing", "0.1", "--json"]) == 0
    assert (out / "episodes.jsonl").read_text() == lines
    refinished = json.loads(capsys.readouterr().out)
    assert refinished["episodes"] == 4 and refinished["final"]["finalists"] == 2
    assert refinished["final"]["finalist_spacing"] == 0.1
    assert 1 <= len(refinished["finalists"]) <= 2
    assert check_run_folder(out)["shipped_episode"] == refinished["shipped_episode"]
    # without --resume an existing run folder is refused, in one line
    assert main([*argv, "--out", str(out)]) == 2
    assert "already holds a search" in capsys.readouterr().err


def test_search_cli_refuses_bad_budgets_and_resume_without_out(
    tmp_path,
    smallcnn_checkpoint,  # noqa: F811
    capsys,
):
    base = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    assert main([*base, "--flops", "0.0001", "--out", str(tmp_path / "x")]) == 2
    assert "cannot be met" in capsys.readouterr().err
    assert main(["search", "--resume"]) == 2
    # bad final settings are refused before the search runs, with nothing written
    assert main([*base, "--finalists", "0", "--out", str(tmp_path / "y")]) == 2
    assert "finalists must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    assert main([*base, "--finalist-spacing", "2", "--out", str(tmp_path / "y")]) == 2
    assert "finalist_spacing must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_default_search_finishes_in_three_minutes(tmp_path, monkeypatch):
    """`autoshrink search` with no arguments (the baseline is trained first, not timed)."""
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.models import ModelSpec

    baseline(ModelSpec("resnet20", 10, 1), "digits")
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    assert main(["search"]) == 0
    elapsed = time.perf_counter() - start
    (out,) = (tmp_path / "runs").iterdir()
    check_run_folder(out)
    assert elapsed <= 180, f"default search took {elapsed:.0f}s"
