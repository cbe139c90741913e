"""export(): ONNX (run in onnxruntime), int8 QDQ ONNX and TorchScript match the artifact."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from autoshrink.compression import export as export_module
from autoshrink.compression.apply import apply_policy
from autoshrink.compression.artifact import load_artifact, save_artifact
from autoshrink.compression.errors import AutoshrinkError, PolicyError
from autoshrink.compression.export import FLOAT_TOL, export
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import uniform_policy
from autoshrink.compression.quantize import calibrate_activations_, first_and_last_layers
from autoshrink.compression.units import build_units

SHAPE = (1, 1, 8, 8)


def needs_onnxruntime():
    pytest.importorskip("onnx", reason="onnx is not installed: pip install 'autoshrink[onnx]'")
    return pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed: pip install 'autoshrink[onnx]'"
    )


def make_artifact(path, name="resnet20", bits=4, act_bits=None):
    torch.manual_seed(0)
    spec = ModelSpec(name, 10, 1)
    model = build_model(spec)
    for m in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    graph = build_units(model, torch.zeros(SHAPE))
    policy = uniform_policy(graph, keep=0.5, bits=bits)
    small = apply_policy(model, graph, policy)
    if act_bits is not None:
        layers = dict.fromkeys(first_and_last_layers(small), act_bits)
        calibrate_activations_(small, layers, [torch.randn(16, *SHAPE[1:]) for _ in range(2)])
    save_artifact(path, small, spec, SHAPE, policy)
    return path


def ort_run(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def inputs(n=5):
    return torch.randn((n, *SHAPE[1:]), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("act_bits", [None, 4, 8])
def test_onnx_export_runs_in_onnxruntime_and_matches_the_artifact(tmp_path, act_bits):
    needs_onnxruntime()
    art = make_artifact(tmp_path / "m.safetensors", act_bits=act_bits)
    info = export(art, "onnx", tmp_path / "m.onnx", exporter="legacy")
    assert info.path.is_file() and info.exporter == "legacy" and not info.int8
    assert info.max_abs_diff <= info.atol == FLOAT_TOL
    # independently: another batch size than the traced one, against the loaded artifact
    x = inputs()
    want = load_artifact(art)(x).detach().numpy()
    np.testing.assert_allclose(ort_run(info.path, x), want, rtol=FLOAT_TOL, atol=FLOAT_TOL)


def test_dynamo_exporter_offline(tmp_path):
    needs_onnxruntime()
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    art = make_artifact(tmp_path / "m.safetensors", name="smallcnn", act_bits=4)
    info = export(art, "onnx", exporter="dynamo")
    assert info.exporter == "dynamo" and info.path == tmp_path / "m.onnx"
    x = inputs()
    want = load_artifact(art)(x).detach().numpy()
    np.testing.assert_allclose(ort_run(info.path, x), want, rtol=FLOAT_TOL, atol=FLOAT_TOL)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:FutureWarning")
def test_torchscript_export_matches_exactly(tmp_path):
    art = make_artifact(tmp_path / "m.safetensors", act_bits=4)
    info = export(art, "torchscript", tmp_path / "m.pt")
    assert info.exporter == "jit.trace" and info.max_abs_diff == 0.0
    x = inputs()
    got = torch.jit.load(str(info.path))(x)
    torch.testing.assert_close(got, load_artifact(art)(x), rtol=0, atol=0)


def test_int8_path_exports_as_qdq_onnx(tmp_path):
    needs_onnxruntime()
    import onnx

    from autoshrink.compression.int8 import to_int8

    art = make_artifact(tmp_path / "m.safetensors", bits=8)
    calib = [
        torch.randn(16, *SHAPE[1:], generator=torch.Generator().manual_seed(i)) for i in range(4)
    ]
    info = export(art, "onnx", tmp_path / "q.onnx", int8=True, calibration=calib)
    assert info.int8 and info.exporter == "dynamo"
    graph = onnx.load(str(info.path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    tensors = [*graph.initializer]
    tensors += [a.t for node in graph.node if node.op_type == "Constant" for a in node.attribute]
    int8_weights = [t for t in tensors if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2]
    assert len(int8_weights) == 22  # every conv (21) and the classifier store int8 weights
    # onnxruntime against the reference int8 graph of the same calibration
    reference = to_int8(load_artifact(art), calib, 4, compile=False).eval()
    x = calib[0]
    want = reference(x).numpy()
    got = ort_run(info.path, x)
    step = (want.max() - want.min()) / 127
    assert info.atol == pytest.approx(1e-4 + 8 * step)
    assert np.abs(got - want).max() <= info.atol
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    float_size = export(art, "onnx", tmp_path / "f.onnx", exporter="legacy").file_bytes
    assert info.file_bytes < 0.6 * float_size


def test_int8_refuses_layers_below_8_bits_and_leaves_no_file(tmp_path):
    needs_onnxruntime()
    art = make_artifact(tmp_path / "m.safetensors", bits=4)
    with pytest.raises(PolicyError, match="8 bits"):
        export(art, "onnx", tmp_path / "q.onnx", int8=True, calibration=[torch.randn(4, 1, 8, 8)])
    with pytest.raises(AutoshrinkError, match="QDQ ONNX only"):
        export(art, "torchscript", tmp_path / "q.pt", int8=True)
    with pytest.raises(AutoshrinkError, match="dynamo exporter only"):
        export(art, "onnx", tmp_path / "q.onnx", int8=True, exporter="legacy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_outputs_outside_the_tolerance_leave_no_file(tmp_path, monkeypatch):
    needs_onnxruntime()
    art = make_artifact(tmp_path / "m.safetensors")
    real = export_module._run_onnx
    monkeypatch.setattr(export_module, "_run_onnx", lambda p, x: real(p, x) + 1e-3)
    with pytest.raises(AutoshrinkError, match="differ"):
        export(art, "onnx", tmp_path / "m.onnx", exporter="legacy")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    pytest.importorskip("onnx", reason="onnx is not installed")
    art = make_artifact(tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(AutoshrinkError, match=r"autoshrink\[onnx\]"):
        export(art, "onnx", tmp_path / "m.onnx", exporter="legacy")
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_needs_an_example_and_an_output(tmp_path):
    model = build_model(ModelSpec("smallcnn", 10, 1))
    with pytest.raises(AutoshrinkError, match="example_input"):
        export(model, "torchscript", tmp_path / "m.pt")
    with pytest.raises(AutoshrinkError, match="output path"):
        export(model, "torchscript", example_input=torch.zeros(SHAPE))
    with pytest.raises(AutoshrinkError, match="unknown export format"):
        export(model, "tflite", tmp_path / "m.tfl", torch.zeros(SHAPE))
    info = export(model, "torchscript", tmp_path / "m.pt", torch.zeros(SHAPE))
    assert info.max_abs_diff == 0.0
