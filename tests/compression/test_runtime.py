from __future__ import annotations

import pytest
import torch

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.names import RUNTIMES
from autoshrink.compression.runtime import runner, runtime_versions


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_computes_the_model_at_any_batch(runtime: str) -> None:
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model(ModelSpec("smallcnn", 10, 1)).eval()
    run = runner(model, torch.zeros(1, 1, 8, 8), runtime)
    for batch in (1, 3):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            want = model(x)
            got = torch.as_tensor(run(x))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_runtime_versions_name_the_runtime_and_refuse_unknown_ones() -> None:
    assert "runtime=compiled" in runtime_versions("compiled")
    assert "onnxruntime=" in runtime_versions("onnxruntime")
    assert runtime_versions("eager") != runtime_versions("compiled")
    with pytest.raises(AutoshrinkError, match="unknown runtime 'tvm'"):
        runtime_versions("tvm")


def test_many_compiled_variants_of_one_class_are_all_compiled() -> None:
    # dynamo's default keeps 8 compilations of one forward, then silently runs eagerly
    from torch._dynamo.utils import counters

    from autoshrink.compression.runtime import RECOMPILE_LIMIT

    x = torch.randn(1, 3, 8, 8)
    before = counters["stats"]["unique_graphs"]
    for width in range(4, 16):
        model = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.ReLU()).eval()
        runner(model, x, "compiled")(x)
    assert counters["stats"]["unique_graphs"] - before == 12
    assert torch._dynamo.config.recompile_limit >= RECOMPILE_LIMIT


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "auto"])
def test_every_eager_layout_computes_the_model(layout: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet20", 10, 3)).eval()
    x = torch.randn(2, 3, 16, 16)
    run = runner(model, x, "eager", layout)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(run(x)), model(x), rtol=1e-4, atol=1e-4)
    assert next(model.parameters()).is_contiguous()  # the model itself is left as it was


def test_the_measured_layout_is_one_of_the_two_and_vectors_stay_contiguous() -> None:
    from autoshrink.compression.runtime import deployed_layout

    model = build_model(ModelSpec("smallcnn", 10, 1)).eval()
    assert deployed_layout(model, torch.zeros(1, 1, 8, 8)) in ("contiguous", "channels_last")
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 2))
    assert deployed_layout(mlp, torch.zeros(1, 4)) == "contiguous"
    assert runner(mlp, torch.zeros(1, 4), "eager") is mlp


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(AutoshrinkError, match="unknown layout 'nhwc'"):
        runner(torch.nn.Linear(4, 2), torch.zeros(1, 4), "eager", "nhwc")
