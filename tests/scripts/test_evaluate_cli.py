"""`autoshrink evaluate ARTIFACT --dataset D [--json]`."""

from __future__ import annotations

import json

import pytest
import torch

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.artifact import save_artifact
from autoshrink.compression.counting import count_macs, count_params
from autoshrink.compression.data import load_dataset
from autoshrink.compression.evaluate import accuracy
from autoshrink.compression.models import ModelSpec, build_model, load_weights
from autoshrink.compression.policy import uniform_policy
from autoshrink.compression.units import build_units
from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)


@pytest.fixture
def artifact(tmp_path, smallcnn_checkpoint):  # noqa: F811
    spec = ModelSpec("smallcnn", 10, 1)
    model = load_weights(build_model(spec), smallcnn_checkpoint).eval()
    x = torch.zeros(1, 1, 8, 8)
    graph = build_units(model, x)
    policy = uniform_policy(graph, keep=0.5, bits=4)
    small = apply_policy(model, graph, policy)
    info = save_artifact(tmp_path / "m.safetensors", small, spec, (1, 1, 8, 8), policy)
    return info, small


def test_evaluate_json_reports_independent_counts(artifact, capsys):
    info, small = artifact
    assert (
        main(["evaluate", str(info.path), "--dataset", "digits", "--json", "--repeats", "3"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    x = torch.zeros(1, 1, 8, 8)
    assert report["macs"] == count_macs(small, x)
    assert report["params"] == count_params(small)
    assert report["bytes"] == info.payload_bytes
    assert report["file_bytes"] == info.file_bytes > report["bytes"]
    test = load_dataset("digits").loader("test", batch_size=100)
    assert report["accuracy"] == pytest.approx(accuracy(small, test))
    assert report["accuracy"] > 0.15  # the loaded weights are the trained ones, not noise
    assert report["measured_latency_s"] > 0


def test_evaluate_table_and_errors(artifact, tmp_path, capsys):
    info, _ = artifact
    assert main(["evaluate", str(info.path), "--dataset", "digits", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "MACs" in out and "latency" in out
    assert main(["evaluate", str(tmp_path / "none.safetensors"), "--dataset", "digits"]) == 2
    (tmp_path / "bad.safetensors").write_bytes(b"not an artifact")
    assert main(["evaluate", str(tmp_path / "bad.safetensors"), "--dataset", "digits"]) == 2
    assert "error" in capsys.readouterr().err


def test_user_model_artifact_loads_only_with_the_model_flag(tmp_path, capsys):
    from tests.compression.artifact_files import TINY_NET

    factory = tmp_path / "mynet.py"
    factory.write_text(TINY_NET)
    spec = ModelSpec(f"{factory}:build", 10, 1)
    art = save_artifact(tmp_path / "u.safetensors", build_model(spec), spec, (1, 1, 8, 8), {})
    argv = ["evaluate", str(art.path), "--dataset", "digits", "--json", "--repeats", "2"]
    assert main(argv) == 2 and "--model FILE.py:FUNCTION" in capsys.readouterr().err
    assert main([*argv, "--model", spec.name]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == spec.name
    factory.write_text(TINY_NET + "# edited\n")
    assert main([*argv, "--model", spec.name]) == 2
    assert "--allow-changed-model" in capsys.readouterr().err
    assert main([*argv, "--model", spec.name, "--allow-changed-model"]) == 0
