"""Fine-grained sparsity: the storage rule is the artifact's, to the byte; masks stay fixed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.artifact import load_artifact, read_header, save_artifact
from autoshrink.compression.artifact_header import read_raw_header
from autoshrink.compression.cost import cost_from_channels, nonzero_macs
from autoshrink.compression.errors import CheckpointError, PolicyError
from autoshrink.compression.evaluate import finetune
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy, kept_channels, layer_bits
from autoshrink.compression.prune import prune_channels
from autoshrink.compression.quantize import bake_, pinned_layers, quantizable_layers
from autoshrink.compression.sparse_codec import decode_sparse, encode_sparse
from autoshrink.compression.sparsity import (
    fake_quantize_sparse_,
    layer_sparsity,
    position_bytes,
    stored_weight_bytes,
    zeroed_count,
)
from autoshrink.compression.units import build_units
from tests.compression.artifact_files import edit_meta

ARCHITECTURES = [
    ("resnet20", (1, 1, 8, 8)),
    ("smallcnn", (1, 3, 16, 16)),
    ("mobilenet_v2", (1, 3, 32, 32)),
]


def random_policy(graph, rng: np.random.Generator) -> Policy:
    units = {}
    for u in graph.units:
        sparsity = 0.0 if rng.random() < 0.2 else float(rng.uniform(0.0, 0.99))
        bits = int(rng.choice([2, 3, 4, 5, 6, 7, 8, 32]))
        keep = float(rng.uniform(0.2, 1.0))
        units[u.name] = UnitPolicy(keep=keep, bits=bits, channels=u.c_out, sparsity=sparsity)
    pins = dict.fromkeys(pinned_layers(graph), 8) if rng.random() < 0.5 else {}
    return Policy(units=units, layers=pins, frozen=dict(graph.frozen))


@pytest.mark.parametrize(("name", "shape"), ARCHITECTURES)
def test_bound_is_the_stored_bytes_and_the_file_never_above_it(
    name: str, shape: tuple[int, ...], tmp_path: Path
) -> None:
    spec = ModelSpec(name, 10, shape[1])
    torch.manual_seed(0)
    model = build_model(spec).eval()
    graph = build_units(model, torch.zeros(shape))
    rng = np.random.default_rng(len(name))
    x = torch.randn(2, *shape[1:])
    sparse_layers = 0
    for i in range(20):
        policy = random_policy(graph, rng)
        small = apply_policy(model, graph, policy)
        kept, bits = kept_channels(policy, graph), layer_bits(policy, graph)
        bound = cost_from_channels(graph, kept, bits, layer_sparsity(policy, graph)).bytes
        info = save_artifact(tmp_path / f"{i}.safetensors", small, spec, shape, policy)
        raw = read_raw_header(info.path)
        assert info.bound == bound  # the stored bytes before entropy coding, exactly
        assert info.payload_bytes <= bound
        assert info.file_bytes <= bound + 8 + raw.header_bytes
        sparse_layers += len(read_header(info.path).sparse)
        if i < 5:  # round trip: outputs of the simulated model, exactly
            back = load_artifact(info.path)
            with torch.no_grad():
                assert (back(x) - small(x)).abs().max().item() <= 1e-6
            for layer_name, layer in quantizable_layers(small).items():
                w = quantizable_layers(back)[layer_name].weight
                assert torch.equal(w, layer.weight), layer_name
    assert sparse_layers > 20  # the sparse format was exercised, not only dense storage


def test_storage_rule_matches_the_streams() -> None:
    rng = np.random.default_rng(0)
    for numel, sparsity, bits in [(1000, 0.9, 4), (37, 0.5, 2), (5000, 0.99, 3), (9, 0.95, 2)]:
        n = numel - int(zeroed_count(numel, sparsity))
        q = np.zeros(numel, np.int8)
        q[rng.choice(numel, n, replace=False)] = rng.integers(1, 2 ** (bits - 1), n)
        layer = encode_sparse(torch.from_numpy(q), n, bits)
        assert len(layer.positions) == int(position_bytes(numel, n))
        assert len(layer.values) == (n * bits + 7) // 8
        assert torch.equal(decode_sparse(layer, numel, bits), torch.from_numpy(q))
    # Worst case for relative indices: every survivor at the end.
    q = np.zeros(4096, np.int8)
    q[-40:] = 1
    layer = encode_sparse(torch.from_numpy(q), 40, 2)
    assert torch.equal(decode_sparse(layer, 4096, 2), torch.from_numpy(q))
    assert int(stored_weight_bytes(100, 100, 4, 2)) == 50 + 8  # nothing zeroed: dense


def test_zeroed_weights_stay_zero_through_a_finetune() -> None:
    torch.manual_seed(0)
    spec = ModelSpec("smallcnn", 10, 1)
    model = build_model(spec)
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    units = {u.name: UnitPolicy(keep=0.75, bits=4, sparsity=0.8) for u in graph.units}
    policy = Policy(units=units, frozen=dict(graph.frozen))
    small = prune_channels(model, graph, kept_channels(policy, graph))
    sparsity = layer_sparsity(policy, graph)
    before = {n: m.weight.detach().clone() for n, m in quantizable_layers(small).items()}
    fake_quantize_sparse_(small, layer_bits(policy, graph), sparsity)
    batches = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))) for _ in range(4)]
    finetune(small, batches, 20, lr=0.1)
    bake_(small)
    for name, s in sparsity.items():
        w0, w = before[name], quantizable_layers(small)[name].weight.detach()
        order = torch.sort(w0.reshape(-1).abs(), stable=True).indices
        zeroed = order[: int(zeroed_count(w0.numel(), s))]
        assert len(zeroed) > 0 and bool((w.reshape(-1)[zeroed] == 0).all()), name
        assert not torch.equal(w, w0)  # the survivors did train


def test_dense_macs_are_the_budget_and_nonzero_macs_are_fewer() -> None:
    spec = ModelSpec("resnet20", 10, 1)
    graph = build_units(build_model(spec), torch.zeros(1, 1, 8, 8))
    kept = {u.name: u.c_out for u in graph.units}
    sparsity = {layer.name: 0.9 for layer in graph.layers}
    dense = cost_from_channels(graph, kept, None, sparsity).macs
    assert dense == cost_from_channels(graph, kept).macs
    assert nonzero_macs(graph, kept, sparsity) < 0.2 * dense
    assert nonzero_macs(graph, kept) == dense


def test_sparse_policy_round_trips_and_old_policies_read() -> None:
    p = Policy(units={"a": UnitPolicy(keep=0.5, bits=4, sparsity=0.75), "b": UnitPolicy()})
    back = Policy.from_json(p.to_json())
    assert back == p and back.units["a"].sparsity == 0.75
    assert "sparsity" not in p.to_dict()["data"]["units"]["b"]  # dense units read as before
    with pytest.raises(PolicyError, match="sparsity"):
        UnitPolicy(sparsity=1.0)


def test_model_without_its_sparsity_is_refused(tmp_path: Path) -> None:
    spec = ModelSpec("smallcnn", 10, 1)
    model = build_model(spec).eval()
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    units = {u.name: UnitPolicy(bits=4, sparsity=0.9) for u in graph.units}
    policy = Policy(units=units, frozen=dict(graph.frozen))
    with pytest.raises(CheckpointError, match="sparsity"):
        save_artifact(tmp_path / "a.safetensors", model, spec, (1, 1, 8, 8), policy)


def _sparse_artifact(tmp_path: Path) -> tuple[Path, nn.Module]:
    spec = ModelSpec("resnet20", 10, 1)
    model = build_model(spec).eval()
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    units = {u.name: UnitPolicy(keep=0.5, bits=3, sparsity=0.9) for u in graph.units}
    policy = Policy(units=units, frozen=dict(graph.frozen))
    small = apply_policy(model, graph, policy)
    return save_artifact(tmp_path / "s.safetensors", small, spec, (1, 1, 8, 8), policy).path, small


def test_tampered_sparse_fields_fail_in_one_line(tmp_path: Path) -> None:
    path, _ = _sparse_artifact(tmp_path)
    head = read_header(path)
    assert head.sparse and head.coded
    layer = next(iter(head.sparse))

    def bad_count(meta: dict[str, str]) -> None:
        import json

        sparse = json.loads(meta["sparse"])
        sparse[layer][0] += 1
        meta["sparse"] = json.dumps(sparse)

    edit_meta(path, bad_count)
    with pytest.raises(CheckpointError) as info:
        load_artifact(path)
    assert "\n" not in str(info.value)


def test_format_2_artifact_still_loads(tmp_path: Path) -> None:
    spec = ModelSpec("smallcnn", 10, 1)
    model = build_model(spec).eval()
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    policy = Policy(units={u.name: UnitPolicy(keep=0.5, bits=4) for u in graph.units})
    small = apply_policy(model, graph, policy)
    path = save_artifact(tmp_path / "d.safetensors", small, spec, (1, 1, 8, 8), policy).path

    def to_v2(meta: dict[str, str]) -> None:
        meta["format_version"] = "2"
        del meta["sparse"], meta["coded"]

    edit_meta(path, to_v2)
    assert read_header(path).format_version == 2
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_artifact(path)(x), small(x))


def test_breakdown_rows_add_up_to_the_bound_with_sparsity() -> None:
    from autoshrink.compression.breakdown import breakdown

    spec = ModelSpec("resnet20", 10, 1)
    graph = build_units(build_model(spec), torch.zeros(1, 1, 8, 8))
    policy = random_policy(graph, np.random.default_rng(3))
    kept, bits = kept_channels(policy, graph), layer_bits(policy, graph)
    sparsity = layer_sparsity(policy, graph)
    table = breakdown(graph, kept, bits, policy.layers, sparsity)
    assert table.after == cost_from_channels(graph, kept, bits, sparsity)
    assert sum(r.after.bytes for r in table.rows) == table.after.bytes
    assert any(r.sparsity > 0 for r in table.rows)


def test_a_coded_stream_claiming_more_bytes_is_refused_unexpanded(tmp_path: Path) -> None:
    import json

    path, _ = _sparse_artifact(tmp_path)
    key = next(iter(read_header(path).coded))

    def inflate(meta: dict[str, str]) -> None:
        coded = json.loads(meta["coded"])
        coded[key][1] = 1 << 30  # a decompression bomb's claim
        meta["coded"] = json.dumps(coded)

    edit_meta(path, inflate)
    with pytest.raises(CheckpointError, match="claims") as info:
        load_artifact(path)
    assert "\n" not in str(info.value)


def test_a_zstd_frame_is_never_expanded_past_its_stated_size() -> None:
    from autoshrink.compression.entropy import compress, decompress

    bomb = compress(bytes(10_000_000), "zstd")
    with pytest.raises(ValueError, match="expected 100"):
        decompress(bomb, "zstd", 100)
