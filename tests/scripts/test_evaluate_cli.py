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
from autoshrink.scripts.evaluate import EvalOptions, evaluate_artifact
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


def _artifact(tmp_path, checkpoint, bits):
    spec = ModelSpec("smallcnn", 10, 1)
    model = load_weights(build_model(spec), checkpoint).eval()
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    policy = uniform_policy(graph, keep=0.5, bits=bits)
    small = apply_policy(model, graph, policy)
    return save_artifact(tmp_path / f"m{bits}.safetensors", small, spec, (1, 1, 8, 8), policy)


def test_evaluate_times_against_the_uncompressed_model_with_a_spread(artifact, capsys):
    info, _ = artifact
    argv = ["evaluate", str(info.path), "--dataset", "digits", "--json", "--repeats", "3"]
    argv += ["--runtime", "onnxruntime"]
    assert main(argv) == 0
    latency = json.loads(capsys.readouterr().out)["latency"]
    assert latency["runtime"] == "onnxruntime" and latency["rounds"] == 3
    assert {"spread", "ratio", "warning"} <= set(latency)
    assert latency["baseline"]["median_s"] > 0 and latency["compressed"]["median_s"] > 0
    assert latency["spread"] >= 0 and latency["baseline"]["spread"] >= 0


def test_evaluate_int8_scores_the_int8_path(tmp_path, smallcnn_checkpoint, capsys):  # noqa: F811
    info = _artifact(tmp_path, smallcnn_checkpoint, 8)
    argv = ["evaluate", str(info.path), "--dataset", "digits", "--json", "--repeats", "2", "--int8"]
    assert main([*argv, "--calib-batches", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["int8"] is True and report["latency"]["runtime"] == "eager"
    float_report = evaluate_artifact(info.path, EvalOptions("digits", repeats=2))
    assert abs(report["accuracy"] - float_report["accuracy"]) <= 0.03


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--int8"], "8 bits"),
        (["--int8", "--calib-batches", "0"], "--calib-batches must be between"),
    ],
)
def test_evaluate_refuses_bad_runtime_and_int8_in_one_line(artifact, capsys, flags, message):
    info, _ = artifact  # 4-bit weights: no int8 kernels
    assert main(["evaluate", str(info.path), "--dataset", "digits", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_evaluate_refuses_an_unknown_runtime_with_argparse_usage(artifact, capsys):
    info, _ = artifact
    with pytest.raises(SystemExit) as refused:
        main(["evaluate", str(info.path), "--runtime", "tensorrt"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tensorrt'" in err and "Traceback" not in err
