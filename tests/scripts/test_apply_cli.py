"""`autoshrink apply`: the round trip with search, transfer, the depth map, and bad policies."""

from __future__ import annotations

import json
import math

import pytest
import torch

from autoshrink.agent.search.report import read_result
from autoshrink.compression.artifact import load_artifact, read_header
from autoshrink.compression.counting import count_macs, count_params
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import uniform_policy
from autoshrink.compression.units import build_units
from autoshrink.scripts.cli import main
from tests.scripts.test_search_cli import payload


@pytest.fixture(scope="module")
def smallcnn_checkpoint(cache_root):
    """The smallcnn of tests/agent/conftest.py: 2 epochs on digits, cached for the session."""
    from autoshrink.compression.baselines import baseline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        return baseline(ModelSpec("smallcnn", 10, 1), "digits", epochs=2)[1]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, cache_root, smallcnn_checkpoint):
    """A 3-episode search on the tiny smallcnn, finished with one fine-tune epoch."""
    out = tmp_path_factory.mktemp("search") / "run"
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--episodes", "3", "--final-epochs", "1", "--size", "0.08", "--flops", "0.4"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        assert main([*argv, "--out", str(out)]) == 0
    return out


def test_round_trip_same_macs_bytes_and_accuracy(searched, smallcnn_checkpoint, tmp_path, capsys):
    out = tmp_path / "applied"
    argv = ["apply", "--policy", str(searched / "policy.json"), "--model", "smallcnn"]
    argv += ["--checkpoint", str(smallcnn_checkpoint), "--finetune-epochs", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out  # the comparison, then the per-unit table
    assert "smallcnn on 1x1x8x8: 4 units" in printed and "* pinned by the policy" in printed
    found = read_result(searched / "result.json")
    applied = check_applied(out)
    for key in ("macs", "params", "bytes", "accuracy", "artifact_bytes"):
        assert applied["compressed"][key] == found["compressed"][key], key
    assert applied["budgets"] == {
        m: {**b, "value": b["limit"], "relative": False} for m, b in found["budgets"].items()
    }
    assert payload(out / applied["artifact"]) == payload(searched / found["artifact"])
    assert applied["source"] == {"policy": str(searched / "policy.json")}


def check_applied(out) -> dict:
    """What apply writes, counted independently: MACs, params and bytes of the artifact."""
    result = read_result(out / "result.json")
    assert result["budgets_met"] is True
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["policy.json", "policy.png", "result.json", result["artifact"]]
    )
    path = out / result["artifact"]
    model = load_artifact(path)
    x = torch.zeros(read_header(path).input_shape)
    comp = result["compressed"]
    assert count_macs(model, x) == comp["macs"] and count_params(model) == comp["params"]
    assert payload(path) == comp["bytes"]
    for metric, budget in result["budgets"].items():
        key = {"flops": "macs", "params": "params", "size": "bytes"}[metric]
        assert comp[key] <= budget["limit"]
    return result


def test_apply_an_agent_with_tighter_budgets(searched, smallcnn_checkpoint, tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["apply", "--agent", str(searched / "agent.zip"), "--model", "smallcnn"]
    argv += ["--checkpoint", str(smallcnn_checkpoint), "--finetune-epochs", "0"]
    assert main([*argv, "--flops", "0.3", "--size", "0.06", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"]["agent"] == str(searched / "agent.zip")
    assert report["agent"] == "ddpg" and report["episodes"] == 1
    assert report["budgets"]["flops"]["value"] == 0.3
    check_applied(out)


def test_map_depth_fits_resnet20_policy_through_resnet32_budgets(tmp_path):
    torch.manual_seed(0)
    r32 = tmp_path / "r32.pt"  # an untrained checkpoint: budgets do not depend on training
    torch.save(build_model(ModelSpec("resnet32", 10, 1)).state_dict(), r32)
    r20 = build_model(ModelSpec("resnet20", 10, 1))
    graph = build_units(r20, torch.zeros(1, 1, 8, 8))
    pins = {"conv1": 8, "fc": 8}
    policy = uniform_policy(graph, keep=0.8, bits=6, pinned=pins).with_meta(model="resnet20")
    policy.save(tmp_path / "p.json")
    out = tmp_path / "m"
    argv = ["apply", "--policy", str(tmp_path / "p.json"), "--map", "depth", "--model", "resnet32"]
    argv += ["--checkpoint", str(r32), "--finetune-epochs", "0", "--flops", "0.4", "--size", "0.1"]
    assert main([*argv, "--out", str(out)]) == 0
    result = check_applied(out)
    assert result["source"] == {"policy": str(tmp_path / "p.json"), "map": "depth"} | {
        "mapped_from": "resnet20"
    }
    applied = json.loads((out / "policy.json").read_text())["data"]
    assert len(applied["units"]) == 18  # resnet32's units, each decided
    assert result["compressed"]["macs_ratio"] <= 0.4  # 0.8 keep alone would give ~0.64


def write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def valid_policy() -> dict:
    model = build_model(ModelSpec("smallcnn", 10, 1))
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    return uniform_policy(graph, keep=0.5, bits=4).to_dict()


def mutate(change):
    def make():
        obj = valid_policy()
        change(obj)
        return obj

    return make


def set_unit(key, value, unit="features.1.0"):
    return mutate(lambda o: o["data"]["units"][unit].__setitem__(key, value))


BAD = {
    "malformed JSON": (lambda: '{"type": "autoshrink.Policy", "version": 1,', "malformed"),
    "wrong format": (
        mutate(lambda o: o.__setitem__("type", "torchao.Config")),
        "not an autoshrink",
    ),
    "future version": (mutate(lambda o: o.__setitem__("version", 99)), "newer"),
    "unknown unit": (
        mutate(lambda o: o["data"]["units"].__setitem__("layer9.conv", {"keep": 0.5})),
        "unknown units ['layer9.conv']",
    ),
    "missing unit": (mutate(lambda o: o["data"]["units"].pop("features.2.0")), "missing units"),
    "other channels": (set_unit("channels", 48), "has 64 channels, policy expects 48"),
    "NaN ratio": (set_unit("keep", math.nan), "keep-ratio must lie in (0, 1]"),
    "negative ratio": (set_unit("keep", -0.5), "keep-ratio must lie in (0, 1]"),
    "bits 0": (set_unit("bits", 0), "bits must be 2..8 or 32, got 0"),
    "bits 64": (set_unit("bits", 64), "bits must be 2..8 or 32, got 64"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_policy_files_fail_clearly_and_write_nothing(
    case, tmp_path, capsys, smallcnn_checkpoint
):
    make, message = BAD[case]
    path = write(tmp_path / "policy.json", make())
    out = tmp_path / "out"
    argv = ["apply", "--policy", str(path), "--model", "smallcnn"]
    assert main([*argv, "--checkpoint", str(smallcnn_checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_every_mismatch_is_listed_in_one_error(tmp_path, capsys, smallcnn_checkpoint):
    obj = valid_policy()
    obj["data"]["units"]["features.1.0"]["channels"] = 48
    obj["data"]["units"]["extra"] = obj["data"]["units"].pop("features.3.0")
    path = write(tmp_path / "policy.json", obj)
    argv = ["apply", "--policy", str(path), "--model", "smallcnn", "--out", str(tmp_path / "o")]
    assert main([*argv, "--checkpoint", str(smallcnn_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "unknown units ['extra']" in err and "missing units ['features.3.0']" in err
    assert "has 64 channels, policy expects 48" in err and not (tmp_path / "o").exists()


def test_refusals_before_any_work(tmp_path, capsys, smallcnn_checkpoint):
    path = write(tmp_path / "policy.json", valid_policy())
    base = ["apply", "--policy", str(path), "--model", "smallcnn"]
    base += ["--checkpoint", str(smallcnn_checkpoint)]
    # a policy over the given budgets
    assert main([*base, "--flops", "0.1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "does not meet the budgets" in err and "--map depth" in err
    # a folder that holds something
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").touch()
    assert main([*base, "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    # another architecture's checkpoint
    other = [*base[:4], "resnet20", "--checkpoint", str(smallcnn_checkpoint)]
    assert main([*other, "--out", str(tmp_path / "o")]) == 2
    assert "another architecture" in capsys.readouterr().err
    # an agent file that is not one
    bad = write(tmp_path / "agent.zip", "not a zip")
    assert main(["apply", "--agent", str(bad), "--model", "smallcnn", "--out", str(bad) + "o"]) == 2
    assert "not a saved" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.zip", "full", "policy.json"]
