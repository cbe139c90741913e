"""`autoshrink export`: the file is written, checked, and reported; bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autoshrink.compression.artifact import load_artifact
from autoshrink.scripts.cli import main
from tests.compression.test_export import make_artifact, needs_onnxruntime


def test_export_cli_onnx_and_torchscript(tmp_path, capsys):
    needs_onnxruntime()
    art = make_artifact(tmp_path / "m.safetensors", name="smallcnn")
    out = tmp_path / "m.onnx"
    argv = ["export", str(art), "--format", "onnx", "--exporter", "legacy"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and report["exporter"] == "legacy"
    assert report["max_abs_diff"] <= report["atol"] and report["file_bytes"] == out.stat().st_size
    import onnxruntime as ort

    x = torch.randn(3, 1, 8, 8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, load_artifact(art)(x).detach().numpy(), atol=1e-4, rtol=1e-4)
    # TorchScript, default output path next to the artifact, rich table on stdout
    assert main(["export", str(art), "--format", "torchscript"]) == 0
    assert (tmp_path / "m.pt").is_file()
    assert "jit.trace" in capsys.readouterr().out


def test_export_cli_int8_calibrates_on_a_dataset(tmp_path, capsys):
    needs_onnxruntime()
    art = make_artifact(tmp_path / "m.safetensors", name="smallcnn", bits=8)
    out = tmp_path / "q.onnx"
    argv = ["export", str(art), "--int8", "--dataset", "digits", "--calib-batches", "2"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["int8"] is True and out.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.safetensors"], "no artifact"),
        (["{art}", "--int8"], "--int8 needs --dataset"),
        (["{art}", "--int8", "--dataset", "digits", "--format", "torchscript"], "QDQ ONNX only"),
        (["{art}", "--int8", "--dataset", "digits"], "8 bits"),
        (["{art}", "--calib-batches", "0", "--int8", "--dataset", "digits"], "at least 1"),
    ],
)
def test_export_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    art = make_artifact(tmp_path / "m.safetensors", name="smallcnn", bits=4)
    argv = ["export", *(a.replace("{art}", str(art)) for a in args), "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_export_cli_user_model_needs_the_model_flag(tmp_path, capsys):
    from autoshrink.compression.artifact import save_artifact
    from autoshrink.compression.models import ModelSpec, build_model
    from tests.compression.artifact_files import TINY_NET

    factory = tmp_path / "mynet.py"
    factory.write_text(TINY_NET)
    spec = ModelSpec(f"{factory}:build", 10, 1)
    art = save_artifact(tmp_path / "u.safetensors", build_model(spec), spec, (1, 1, 8, 8), {})
    argv = ["export", str(art.path), "--format", "torchscript", "--json"]
    assert main(argv) == 2 and "holds a user model" in capsys.readouterr().err
    assert not (tmp_path / "u.pt").exists()
    assert main([*argv, "--model", spec.name]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == str(tmp_path / "u.pt")
