from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from autoshrink.compression.errors import PolicyError, UnsupportedModelError
from autoshrink.compression.int8 import to_int8
from autoshrink.compression.models import ModelSpec
from autoshrink.compression.quantize import fake_quantize_, quantizable_layers


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, Any, Any]:
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.data import load_dataset

    model, _ = baseline(ModelSpec("resnet20", 10, 1), "digits")
    splits = load_dataset("digits")
    return model, splits.loader("train", 64, shuffle=True), splits.loader("test", 256)


def test_int8_model_runs_quantized_kernels_and_keeps_accuracy(
    digits: tuple[nn.Module, Any, Any],
) -> None:
    from autoshrink.compression.evaluate import accuracy

    model, train, test = digits
    before = copy.deepcopy(model.state_dict())
    int8 = to_int8(model, train, n_batches=4)
    kinds = {type(m).__module__ for m in int8.modules()}
    assert any(k.startswith("torch.ao.nn.quantized") for k in kinds)
    assert not any(isinstance(m, nn.Conv2d) for m in int8.modules())  # all convs converted
    acc_float, acc_int8 = accuracy(model, test), accuracy(int8, test)
    assert acc_int8 >= acc_float - 0.01
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_int8_accepts_a_fake_quantized_8_bit_model(digits: tuple[nn.Module, Any, Any]) -> None:
    model, train, _ = digits
    bits = dict.fromkeys(quantizable_layers(model), 8)
    fake = fake_quantize_(copy.deepcopy(model), bits)
    x = next(iter(train))[0][:8]
    int8 = to_int8(fake, train, n_batches=2, bits_by_layer=bits)
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
