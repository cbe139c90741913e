from __future__ import annotations

import copy
import operator
from typing import Any

import pytest
import torch
from torch import nn

from autoshrink.compression.errors import PolicyError, UnsupportedModelError
from autoshrink.compression.int8 import Int8Model, to_int8
from autoshrink.compression.models import ModelSpec
from autoshrink.compression.quantize import fake_quantize_, quantizable_layers


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, Any, Any]:
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.data import load_dataset

    model, _ = baseline(ModelSpec("resnet20", 10, 1), "digits")
    splits = load_dataset("digits")
    return model, splits.loader("train", 64, shuffle=True), splits.loader("test", 256)


def _test_set(test: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*test, strict=True)
    return torch.cat(xs), torch.cat(ys)


def _ops(model: Int8Model) -> list[str]:
    return [str(n.target) for n in model.program.graph.nodes if n.op == "call_function"]


def test_int8_model_has_int8_weights_and_agrees_with_float_on_99_percent(
    digits: tuple[nn.Module, Any, Any],
) -> None:
    model, train, test = digits
    before = copy.deepcopy(model.state_dict())
    int8 = to_int8(model, train, n_batches=4)
    assert isinstance(int8, Int8Model) and int8.compiled and not int8.training
    ops = _ops(int8)
    # every conv (19 + 2 downsample) and the classifier: int8 weights, per output channel
    assert sum("dequantize_per_channel" in op for op in ops) == 22
    assert any("quantize_per_tensor" in op for op in ops)  # uint8 activations
    assert not any("batch_norm" in op for op in ops)  # folded into the convs
    attrs = [
        operator.attrgetter(str(n.target))(int8.program)
        for n in int8.program.graph.nodes
        if n.op == "get_attr"
    ]
    assert sum(isinstance(t, torch.Tensor) and t.dtype == torch.int8 for t in attrs) == 22
    x, y = _test_set(test)  # one batch: the compiled model compiles once
    with torch.no_grad():
        same = int8(x).argmax(1).eq(model(x).argmax(1)).float().mean().item()
        acc_float = model(x).argmax(1).eq(y).float().mean().item()
    assert same >= 0.99
    assert acc_float > 0.9  # a trained baseline: agreeing with chance would prove nothing
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_int8_accepts_a_fake_quantized_8_bit_model(digits: tuple[nn.Module, Any, Any]) -> None:
    model, train, _ = digits
    bits = dict.fromkeys(quantizable_layers(model), 8)
    fake = fake_quantize_(copy.deepcopy(model), bits)
    x = next(iter(train))[0][:8]
    int8 = to_int8(fake, train, n_batches=2, bits_by_layer=bits, compile=False)
    out, ref = int8(x), fake(x)
    assert out.argmax(1).eq(ref.argmax(1)).float().mean() >= 0.75


def test_int8_refuses_policies_below_8_bits(digits: tuple[nn.Module, Any, Any]) -> None:
    model, train, _ = digits
    bits = dict.fromkeys(quantizable_layers(model), 8) | {"layer2.0.conv1": 4}
    with pytest.raises(PolicyError, match=r"8 bits or more; 1 layer\(s\).*layer2.0.conv1"):
        to_int8(model, train, bits_by_layer=bits)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow defeats symbolic tracing
            return self.conv(x)
        return self.conv(-x)


def test_untraceable_model_gives_unsupported_model_error() -> None:
    with pytest.raises(UnsupportedModelError, match="cannot trace"):
        to_int8(Untraceable(), [torch.randn(2, 1, 8, 8)], n_batches=1)


def test_int8_model_cannot_be_put_in_train_mode(digits: tuple[nn.Module, Any, Any]) -> None:
    model, train, _ = digits
    int8 = to_int8(model, train, n_batches=1, compile=False)
    with pytest.raises(UnsupportedModelError, match="cannot be trained"):
        int8.train()
