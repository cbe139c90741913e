from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from autoshrink.compression.artifact import (
    FORMAT_NAME,
    FORMAT_VERSION,
    load_artifact,
    read_header,
    save_artifact,
)
from autoshrink.compression.cost import cost
from autoshrink.compression.counting import count_bytes
from autoshrink.compression.errors import CheckpointError, PolicyError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy, layer_bits
from autoshrink.compression.prune import prune
from autoshrink.compression.quantize import (
    activation_quant_state,
    calibrate_activations_,
    fake_quantize_,
    first_and_last_layers,
    quantize_weights_,
)
from autoshrink.compression.units import UnitGraph, build_units

BIT_CHOICES = [2, 3, 4, 5, 6, 7, 8, 32]
CASES = {
    "resnet20": (ModelSpec("resnet20", 10, 1), (1, 1, 8, 8)),
    "mobilenet_v2": (ModelSpec("mobilenet_v2", 10, 3), (1, 3, 32, 32)),
}


def randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Give BatchNorm non-trivial statistics, so a lost buffer changes the outputs."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


Case = tuple[nn.Module, ModelSpec, tuple[int, ...], Policy, UnitGraph]


def compressed(name: str, seed: int) -> Case:
    """A randomly pruned base model and a random policy (bits per unit, pinned layers)."""
    spec, shape = CASES[name]
    torch.manual_seed(seed)
    base = build_model(spec)
    randomise_bn(base, torch.Generator().manual_seed(seed))
    graph = build_units(base, torch.zeros(shape))
    rng = random.Random(seed)
    units = {
        u.name: UnitPolicy(keep=rng.uniform(0.2, 1.0), bits=rng.choice(BIT_CHOICES))
        for u in graph.units
    }
    first, last = first_and_last_layers(graph)
    policy = Policy(units=units, layers={first: rng.choice(BIT_CHOICES), last: 8})
    return prune(base, graph, policy.keep()), spec, shape, policy, graph


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_random_policy_payload_equals_cost_and_outputs_equal_simulation(
    name: str, seed: int, tmp_path: Path
) -> None:
    model, spec, shape, policy, graph = compressed(name, seed)
    bits = layer_bits(policy, graph)
    assert len(set(bits.values())) > 2  # really mixed
    simulated = quantize_weights_(copy.deepcopy(model), bits)
    info = save_artifact(tmp_path / "m.safetensors", model, spec, shape, policy, {"run": seed})
    expected = cost(graph, policy.keep(), bits)
    assert info.payload_bytes == expected.bytes
    assert info.payload_bytes == count_bytes(model, {n: b for n, b in bits.items() if b < 32})
    assert info.file_bytes == (tmp_path / "m.safetensors").stat().st_size
    assert 0 < info.overhead_bytes == info.file_bytes - info.payload_bytes

    loaded = load_artifact(info.path)
    x = torch.randn(3, *shape[1:], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert (loaded(x) - simulated(x)).abs().max() <= 1e-5
    assert not loaded.training
    header = read_header(info.path)
    assert header.spec == spec and header.policy == policy and header.metadata == {"run": seed}


def test_four_bit_weights_take_half_a_byte(tmp_path: Path) -> None:
    model, spec, shape, _, graph = compressed("resnet20", 0)
    policy4 = {layer.name: 4 for layer in graph.layers}
    policy8 = dict.fromkeys(policy4, 8)
    size4 = save_artifact(tmp_path / "4.safetensors", model, spec, shape, policy4).payload_bytes
    size8 = save_artifact(tmp_path / "8.safetensors", model, spec, shape, policy8).payload_bytes
    numels = [m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert size8 - size4 == sum(n - (n + 1) // 2 for n in numels)  # 8 bits = 2 x 4 bits


def test_fake_quantized_and_activation_quantized_model_round_trips(tmp_path: Path) -> None:
    model, spec, shape, policy, graph = compressed("resnet20", 3)
    bits = layer_bits(policy, graph)
    fake_quantize_(model, bits)
    batches = [torch.randn(8, *shape[1:]) for _ in range(2)]
    calibrate_activations_(model, {"layer2.0.conv1": 4, "fc": 6}, batches, 2)
    info = save_artifact(tmp_path / "m.safetensors", model, spec, shape, policy)
    loaded = load_artifact(info.path)
    assert activation_quant_state(loaded) == activation_quant_state(model)
    with torch.no_grad():
        assert (loaded(batches[0]) - model(batches[0])).abs().max() <= 1e-5


def test_resnet18_header_overhead_under_two_percent(tmp_path: Path) -> None:
    spec = ModelSpec("resnet18", 10, 3)
    model = build_model(spec)
    bits = {n: 2 for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    info = save_artifact(tmp_path / "r18.safetensors", model, spec, (1, 3, 32, 32), bits)
    assert info.overhead_ratio < 0.02  # 2 bits: the smallest payload, the worst ratio


def test_invalid_bits_rejected_on_save(tmp_path: Path) -> None:
    model, spec, shape, _, _ = compressed("resnet20", 0)
    with pytest.raises(PolicyError, match=r"bits must be 2\.\.8 or 32, got 9 for layer conv1$"):
        save_artifact(tmp_path / "m.safetensors", model, spec, shape, {"conv1": 9})


# --- bad files --------------------------------------------------------------------------
@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    model, spec, shape, policy, _ = compressed("resnet20", 0)
    return save_artifact(tmp_path / "good.safetensors", model, spec, shape, policy).path


def assert_one_line_error(path: Path, match: str) -> None:
    with pytest.raises(CheckpointError, match=match) as info:
        load_artifact(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.01, 0.5, 0.999])
def test_truncated_file(artifact: Path, fraction: float) -> None:
    data = artifact.read_bytes()
    artifact.write_bytes(data[: int(len(data) * fraction)])
    assert_one_line_error(artifact, "truncated")


@pytest.mark.parametrize("where", [-1, -5000, -40000])
def test_tampered_tensor_data(artifact: Path, where: int) -> None:
    data = bytearray(artifact.read_bytes())
    data[where] ^= 0x10
    artifact.write_bytes(bytes(data))
    assert_one_line_error(artifact, "checksum")


def test_tampered_header(artifact: Path) -> None:
    # A well-formed file whose header says one layer has other bits than were packed.
    data = artifact.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = unpacked(header)
    bits = json.loads(meta["weight_bits"])
    layer = next(iter(bits))
    bits[layer] = 8 if bits[layer] != 8 else 4
    meta["weight_bits"] = json.dumps(bits)
    repack(header, meta)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    artifact.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n :])
    assert_one_line_error(artifact, "checksum")


def test_foreign_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    random_bytes = tmp_path / "noise.bin"
    random_bytes.write_bytes(bytes(random.Random(0).randbytes(5000)))
    assert_one_line_error(random_bytes, "not an autoshrink artifact")
    pickle_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pickle_file)
    assert_one_line_error(pickle_file, "not an autoshrink artifact")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    assert_one_line_error(plain, r"not an autoshrink artifact \(format None\)")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"format": "pt"})
    assert_one_line_error(other, r"not an autoshrink artifact \(format 'pt'\)")
    assert_one_line_error(tmp_path / "missing.safetensors", "not found")


def test_future_version(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION + 1)}
    save_file({"w": torch.zeros(3)}, str(path), metadata=meta)
    assert_one_line_error(path, f"format version {FORMAT_VERSION + 1}, newer")


def test_unbuildable_base_model(tmp_path: Path) -> None:
    factory = tmp_path / "mynet.py"
    factory.write_text(
        "from torch import nn\n"
        "def build(num_classes=10, in_channels=3):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),\n"
        "        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n"
    )
    spec = ModelSpec(f"{factory}:build", 10, 3)
    model = build_model(spec)
    path = save_artifact(tmp_path / "m.safetensors", model, spec, (1, 3, 8, 8), {"0": 4}).path
    # A user model is rebuilt only from a factory the caller names (issue 17), while the
    # code exists; without the name, the file named in the header is never imported.
    assert isinstance(load_artifact(path, factory=spec.name), nn.Sequential)
    assert_one_line_error(path, "holds a user model")
    factory.unlink()
    with pytest.raises(CheckpointError, match=r"cannot use factory .*not readable") as info:
        load_artifact(path, factory=spec.name)
    assert "\n" not in str(info.value)


def test_header_is_json_with_format_and_checksum(artifact: Path) -> None:
    data = artifact.read_bytes()
    n = int.from_bytes(data[:8], "little")
    meta = unpacked(json.loads(data[8 : 8 + n]))
    assert meta["format"] == FORMAT_NAME and meta["format_version"] == str(FORMAT_VERSION)
    assert len(meta["sha256"]) == 64
    assert b"pickle" not in data and not data.startswith(b"PK")


def test_eight_bit_artifact_keeps_digits_accuracy(tmp_path: Path) -> None:
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.evaluate import accuracy

    spec = ModelSpec("resnet20", 10, 1)
    model, _ = baseline(spec, "digits")
    test = load_dataset("digits").loader("test", 256)
    bits = {n: 8 for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    info = save_artifact(tmp_path / "r20.safetensors", model, spec, (1, 1, 8, 8), bits)
    assert abs(accuracy(load_artifact(info.path), test) - accuracy(model, test)) <= 0.005
    assert info.file_bytes < 0.3 * 4 * sum(p.numel() for p in model.parameters())


# --- user-model artifacts: the factory is named by the caller, never by the file --------
from tests.compression.artifact_files import TINY_NET, edit_field, edit_meta, repack, unpacked  # noqa: E402


@pytest.fixture
def user_artifact(tmp_path: Path) -> tuple[Path, Path, str]:
    factory = tmp_path / "mynet.py"
    factory.write_text(TINY_NET)
    spec = ModelSpec(f"{factory}:build", 10, 3)
    path = save_artifact(tmp_path / "u.safetensors", build_model(spec), spec, (1, 3, 8, 8), {})
    return path.path, factory, spec.name


def test_user_artifact_records_its_factory_file_and_hash(user_artifact) -> None:
    import hashlib

    path, factory, _ = user_artifact
    head = read_header(path)  # reading a header never needs (or imports) the factory
    assert head.factory is not None and head.format_version == FORMAT_VERSION == 4
    assert head.factory.path == str(factory.resolve()) and head.factory.function == "build"
    assert head.factory.sha256 == hashlib.sha256(factory.read_bytes()).hexdigest()


def test_changed_factory_is_refused_unless_allowed(user_artifact) -> None:
    path, factory, ref = user_artifact
    factory.write_text(TINY_NET + "# edited\n")
    with pytest.raises(CheckpointError, match="allow-changed-model") as info:
        load_artifact(path, factory=ref)
    assert "\n" not in str(info.value)
    assert isinstance(load_artifact(path, factory=ref, allow_changed_factory=True), nn.Module)


def test_factory_for_a_builtin_model_must_be_its_own_name(artifact: Path) -> None:
    assert isinstance(load_artifact(artifact, factory="resnet20"), nn.Module)
    with pytest.raises(CheckpointError, match="only for artifacts of user models"):
        load_artifact(artifact, factory="other.py:build")


def test_format_1_artifact_still_loads(artifact: Path, user_artifact) -> None:
    def to_v1(meta: dict[str, str]) -> None:
        meta["format_version"] = "1"
        del meta["factory"]

    before = load_artifact(artifact)
    edit_meta(artifact, to_v1)
    assert read_header(artifact).format_version == 1
    after = load_artifact(artifact)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(before(x), after(x))
    path, _, ref = user_artifact
    edit_meta(path, to_v1)  # an old user-model artifact: loads with the explicit factory
    assert_one_line_error(path, "holds a user model")
    assert isinstance(load_artifact(path, factory=ref), nn.Sequential)


def test_unknown_layer_in_weight_bits_is_refused(artifact: Path) -> None:
    bits = read_header(artifact).weight_bits
    edit_field(artifact, "weight_bits", {**bits, "no.such.layer": 4})
    assert_one_line_error(artifact, "weight_bits layer 'no.such.layer'")


def test_load_base_rebuilds_the_uncompressed_architecture(tmp_path):
    from autoshrink.compression.apply import apply_policy
    from autoshrink.compression.artifact import load_base
    from autoshrink.compression.counting import count_params
    from autoshrink.compression.policy import uniform_policy
    from autoshrink.compression.units import build_units

    spec = ModelSpec("resnet20", 10, 1)
    model = build_model(spec)
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    policy = uniform_policy(graph, keep=0.5, bits=8)
    small = apply_policy(model, graph, policy)
    save_artifact(tmp_path / "a.safetensors", small, spec, (1, 1, 8, 8), policy)
    base = load_base(tmp_path / "a.safetensors")
    assert count_params(base) == count_params(model) > count_params(small)
    assert not base.training
