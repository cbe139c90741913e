from __future__ import annotations

import copy
import random
from typing import Any

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import parametrize

from autoshrink.compression.errors import PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.quantize import (
    activation_quant_state,
    bake_,
    calibrate_activations_,
    dequantize_per_channel,
    fake_quantize,
    fake_quantize_,
    first_and_last_layers,
    quantizable_layers,
    quantize_per_channel,
    quantize_weights_,
    remove_activation_quant_,
    set_activation_quant_,
)

BIT_CHOICES = [2, 3, 4, 5, 6, 7, 8, 32]


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec("resnet20", 10, 1))


def random_bits(model: nn.Module, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    return {name: rng.choice(BIT_CHOICES) for name in quantizable_layers(model)}


# --- the quantizer ---------------------------------------------------------------------
@pytest.mark.parametrize("bits", range(2, 9))
def test_per_channel_symmetric_grid(bits: int) -> None:
    w = torch.randn(6, 3, 3, 3) * torch.linspace(0.01, 5, 6).view(-1, 1, 1, 1)
    q, scale = quantize_per_channel(w, bits)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and scale.shape == (6,) and scale.dtype == torch.float32
    assert int(q.abs().max()) <= qmax
    # each channel's largest weight lands on the top level, with its own scale
    assert q.reshape(6, -1).abs().amax(1).tolist() == [qmax] * 6
    assert torch.allclose(scale, w.reshape(6, -1).abs().amax(1) / qmax)
    err = (dequantize_per_channel(q, scale) - w).abs()
    assert bool((err <= scale.view(-1, 1, 1, 1) / 2 + 1e-6).all())
    assert torch.equal(fake_quantize(w, bits), dequantize_per_channel(q, scale))


def test_all_zero_channel_is_guarded() -> None:
    w = torch.zeros(2, 4)
    w[1] = torch.tensor([1.0, -2.0, 0.5, 0.0])
    q, scale = quantize_per_channel(w, 4)
    assert scale[0] == 1.0 and bool((q[0] == 0).all())
    assert torch.isfinite(fake_quantize(w, 4)).all()


def test_32_bits_leaves_weights_alone() -> None:
    model = resnet20()
    before = copy.deepcopy(model.state_dict())
    quantize_weights_(model, dict.fromkeys(quantizable_layers(model), 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("bits", [1, 9, 64, 0, True])
@pytest.mark.parametrize("how", ["weights", "fake", "acts"])
def test_bits_outside_2_to_8_or_32_rejected(bits: int, how: str) -> None:
    model = resnet20()
    mapping = {"layer1.0.conv2": bits}
    with pytest.raises(PolicyError) as info:
        if how == "weights":
            quantize_weights_(model, mapping)
        elif how == "fake":
            fake_quantize_(model, mapping)
        else:
            calibrate_activations_(model, mapping, [torch.zeros(1, 1, 8, 8)], 1)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"bits must be 2..8 or 32, got {bits!r} for layer layer1.0.conv2"


def test_unknown_layer_rejected() -> None:
    with pytest.raises(PolicyError, match=r"no conv or linear layer named 'layer1\.0\.bn1'"):
        quantize_weights_(resnet20(), {"layer1.0.bn1": 8})


# --- simulation for evaluation -----------------------------------------------------------
def test_quantize_weights_changes_weights_once_and_adds_nothing_to_forward() -> None:
    model = resnet20()
    bits = random_bits(model, seed=1)
    float_state = copy.deepcopy(model.state_dict())
    quantize_weights_(model, bits)
    layers = quantizable_layers(model)
    for name, b in bits.items():
        weight = layers[name].weight
        expected = fake_quantize(float_state[f"{name}.weight"], b)
        assert torch.equal(weight, expected)
        assert (b == 32) == torch.equal(weight, float_state[f"{name}.weight"])
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    assert all(type(p) is nn.Parameter for p in model.parameters())


# --- fake quantization for fine-tuning -----------------------------------------------------
def test_fake_quant_forward_equals_simulation_and_bake_keeps_it() -> None:
    model = resnet20()
    bits = random_bits(model, seed=2)
    simulated = quantize_weights_(copy.deepcopy(model), bits)
    fake_quantize_(model, bits)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), simulated(x))
    bake_(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    for key, value in simulated.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_straight_through_estimator_passes_gradients() -> None:
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(16, 8))
    x = torch.randn(32, 16)
    reference = quantize_weights_(copy.deepcopy(layer), {"0": 3})
    fake_quantize_(layer, {"0": 3})
    layer(x).square().sum().backward()
    reference(x).square().sum().backward()
    original = layer[0].parametrizations.weight.original  # type: ignore[union-attr]
    grad, expected = original.grad, reference[0].weight.grad
    assert isinstance(grad, torch.Tensor) and isinstance(expected, torch.Tensor)
    assert grad.abs().sum() > 0
    # d(loss)/d(float weight) == d(loss)/d(quantized weight): rounding is passed straight
    assert torch.allclose(grad, expected)


def test_short_finetune_learns_under_fake_quantization() -> None:
    torch.manual_seed(0)
    target = nn.Linear(8, 1)
    x = torch.randn(256, 8)
    y = target(x).detach()
    model = nn.Sequential(nn.Linear(8, 1))
    fake_quantize_(model, {"0": 4})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


# --- activations ------------------------------------------------------------------------
def test_activation_quantization_calibrates_and_round_trips() -> None:
    model = resnet20()
    batches = [torch.randn(8, 1, 8, 8) for _ in range(3)]
    x = torch.randn(4, 1, 8, 8)
    reference = model(x)
    names = ["layer1.0.conv1", "layer2.0.conv2", "fc"]
    calibrate_activations_(model, dict.fromkeys(names, 2) | {"conv1": 32}, batches, n_batches=2)
    state = activation_quant_state(model)
    assert sorted(state) == sorted(names)
    assert all(bits == 2 and lo <= 0.0 <= hi for bits, lo, hi in state.values())
    out = model(x)
    assert (out - reference).abs().max() > 1e-3  # the simulation is not a no-op
    copied = copy.deepcopy(model)
    assert torch.equal(copied(x), out)
    fresh = set_activation_quant_(resnet20(), state)
    assert torch.equal(fresh(x), out)
    remove_activation_quant_(model)
    assert torch.equal(model(x), reference)


def test_eight_bit_activations_stay_close() -> None:
    model = resnet20()
    batches = [torch.randn(8, 1, 8, 8) for _ in range(2)]
    reference = model(batches[0])
    calibrate_activations_(model, dict.fromkeys(quantizable_layers(model), 8), batches, 2)
    rel = (model(batches[0]) - reference).norm() / reference.norm()
    assert 0 < rel < 0.05


# --- first and last layers ------------------------------------------------------------------
class Reordered(nn.Module):
    """The classifier is registered before the convolution it follows."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.stem = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x).mean((2, 3)))


def test_first_and_last_layers_in_execution_order() -> None:
    assert first_and_last_layers(resnet20()) == ("conv1", "fc")
    mobilenet = torchvision.models.mobilenet_v2(num_classes=10)
    assert first_and_last_layers(mobilenet) == ("features.0.0", "classifier.1")
    assert first_and_last_layers(Reordered()) == ("stem", "head")
    with pytest.raises(PolicyError, match="no conv or linear"):
        first_and_last_layers(nn.Sequential(nn.ReLU()))


# --- accuracy on the digits baseline --------------------------------------------------------
@pytest.fixture(scope="module")
def digits_baseline() -> tuple[nn.Module, Any]:
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.data import load_dataset

    model, _ = baseline(ModelSpec("resnet20", 10, 1), "digits")
    return model, load_dataset("digits").loader("test", 256)


def test_eight_bits_keeps_accuracy_and_two_bits_drops_it(
    digits_baseline: tuple[nn.Module, Any],
) -> None:
    from autoshrink.compression.evaluate import accuracy

    model, loader = digits_baseline
    first, last = first_and_last_layers(model)
    names = quantizable_layers(model)
    acc_float = accuracy(model, loader)
    acc8 = accuracy(quantize_weights_(copy.deepcopy(model), dict.fromkeys(names, 8)), loader)
    # 2 bits everywhere except the first and last layers, pinned to 8 as in HAQ
    bits2 = dict.fromkeys(names, 2) | {first: 8, last: 8}
    acc2 = accuracy(quantize_weights_(copy.deepcopy(model), bits2), loader)
    assert acc_float > 0.9
    assert abs(acc8 - acc_float) <= 0.005
    assert acc2 < acc_float - 0.2


def test_baking_a_copy_leaves_the_original_fake_quantized() -> None:
    # torch's remove_parametrizations edits the class that deepcopy shares between copies
    bits = random_bits(resnet20(), seed=3) | {"layer1.0.conv1": 4}
    model = fake_quantize_(resnet20(), bits)
    x = torch.randn(2, 1, 8, 8)
    reference = model(x)
    baked = bake_(copy.deepcopy(model))
    assert torch.equal(baked(x), reference)
    assert torch.equal(model(x), reference)
    assert parametrize.is_parametrized(model.layer1[0].conv1)


def test_bake_keeps_the_parameter_object_for_the_optimizer() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    fake_quantize_(model, {"0": 4})
    original = model[0].parametrizations.weight.original  # type: ignore[union-attr]
    bake_(model)
    assert model[0].weight is original
    assert type(model[0]) is nn.Linear


def test_first_and_last_layers_of_a_unit_graph() -> None:
    from autoshrink.compression.units import build_units

    graph = build_units(resnet20(), torch.zeros(1, 1, 8, 8))
    assert first_and_last_layers(graph) == ("conv1", "fc")


@pytest.mark.parametrize("bits", range(2, 9))
def test_quantizing_twice_changes_nothing(bits: int) -> None:
    # save_artifact re-quantizes a baked model: that must reproduce it exactly
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(bits))
    w = w * torch.rand(32, 1, 1, 1, generator=torch.Generator().manual_seed(99)) * 3
    once = fake_quantize(w, bits)
    assert torch.equal(fake_quantize(once, bits), once)
