"""The compressed artifact: a pruned, quantized model in one safetensors file, no pickle.

What the file holds:

- **tensors** (the payload): each conv/linear weight with ``b < 32`` bits as ``b``-bit
  packed bytes (``ceil(numel * b / 8)``, see :mod:`autoshrink.compression.packing`) plus one
  float32 scale per output channel (key ``<weight>#scale``); every other parameter and
  floating-point buffer (BatchNorm statistics included) in float32. Integer buffers such as
  ``num_batches_tracked`` are not stored. The payload therefore equals
  :func:`autoshrink.compression.cost.cost`'s ``bytes`` for the same policy.
- **header metadata** (JSON strings in the safetensors header): the format name and
  version, the base :class:`ModelSpec`, the example input shape, the kept channel count per
  unit, the weight bits per layer, any calibrated activation quantizers, the policy, the
  user's metadata and a SHA-256 over tensors and metadata.

The pruned architecture is stored implicitly: loading rebuilds the base model from its spec,
finds its units, removes channels down to the stored counts (which channels does not matter:
the weights are overwritten), then loads the tensors. The fixed overhead of the format is
the 8-byte length prefix plus the JSON header (about 100 bytes per tensor plus the policy);
:class:`ArtifactInfo` reports it.

>>> info = save_artifact("m.safetensors", model, spec, (1, 1, 8, 8), policy)  # doctest: +SKIP
>>> load_artifact(info.path)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.packing import pack, unpack
from autoshrink.compression.policy import Policy, kept_channels, layer_bits
from autoshrink.compression.quantize import (
    activation_quant_state,
    bake_,
    check_layer_bits,
    dequantize_per_channel,
    quantize_per_channel,
    set_activation_quant_,
)

logger = logging.getLogger(__name__)

FORMAT_NAME = "autoshrink.artifact"
#: 2: the ``frozen`` field (units kept at full width; absent, i.e. none, in version 1).
FORMAT_VERSION = 2
SCALE_SUFFIX = "#scale"
_FIELDS = ("spec", "input_shape", "kept", "weight_bits", "act_quant", "policy", "metadata")


@dataclass(frozen=True)
class ArtifactInfo:
    """Sizes of a saved artifact.

    Attributes:
        path: Where it was written.
        payload_bytes: Bytes of tensor data (equals the cost model's ``bytes``).
        file_bytes: Size of the file on disk.
    """

    path: Path
    payload_bytes: int
    file_bytes: int

    @property
    def overhead_bytes(self) -> int:
        """Fixed cost of the format: length prefix plus JSON header."""
        return self.file_bytes - self.payload_bytes

    @property
    def overhead_ratio(self) -> float:
        """Overhead as a fraction of the payload."""
        return self.overhead_bytes / max(self.payload_bytes, 1)


@dataclass(frozen=True)
class ArtifactHeader:
    """The decoded metadata of an artifact (see :func:`read_header`)."""

    spec: ModelSpec
    input_shape: tuple[int, ...]
    kept: dict[str, int]
    weight_bits: dict[str, int]
    act_quant: dict[str, tuple[int, float, float]]
    policy: Policy | dict[str, int]
    metadata: dict[str, Any]
    frozen: dict[str, str] = field(default_factory=dict)


def _graph(model: nn.Module, input_shape: Sequence[int], frozen: Sequence[str] = ()) -> Any:
    from autoshrink.compression.units import build_units

    return build_units(model, torch.zeros(tuple(input_shape)), ignored_layers=frozen)


def _out_channels(module: nn.Module) -> int:
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return int(weight.shape[0])


def _digest(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and every metadata field."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(dict(meta), sort_keys=True).encode())
    return h.hexdigest()


def save_artifact(
    path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    input_shape: Sequence[int],
    policy: Policy | Mapping[str, int],
    metadata: Mapping[str, Any] | None = None,
) -> ArtifactInfo:
    """Write ``model`` (pruned from ``build_model(spec)``) as a packed artifact.

    Args:
        path: Destination file (conventionally ``*.safetensors``); written atomically.
        model: The compressed model. Its weights may be float, already quantized, or
            fake-quantized; they are quantized here with the bits the policy gives.
        spec: The base model's spec; loading rebuilds from it.
        input_shape: Shape of an example input batch, e.g. ``(1, 3, 32, 32)``.
        policy: The policy, or a plain ``{layer: bits}`` mapping.
        metadata: Extra JSON-ready information to store.

    Returns:
        The path, the payload size and the file size.

    Raises:
        PolicyError: On invalid bits or layer names.
        CheckpointError: If the model is not a pruned ``build_model(spec)``.
    """
    path = Path(path)
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        model = bake_(copy.deepcopy(model))
    frozen = list(policy.frozen) if isinstance(policy, Policy) else []
    graph = _graph(build_model(spec), input_shape, frozen)
    try:
        kept = {u.name: _out_channels(model.get_submodule(u.layers[0])) for u in graph.units}
    except (AttributeError, TypeError) as exc:
        raise CheckpointError(f"the model is not a pruned {spec.name}: {exc}") from exc
    if isinstance(policy, Policy):
        bits = layer_bits(policy, graph)
        expected = kept_channels(policy, graph)
        off = [n for n in policy.units if expected.get(n) != kept.get(n)]
        if off:
            logger.warning("model channels differ from the policy's for units %s", off[:5])
        policy_json = policy.to_json(indent=None)
    else:
        bits = dict(policy)
        policy_json = json.dumps({"layer_bits": bits})
    bits = {n: b for n, b in check_layer_bits(model, bits).items() if b < FLOAT_BITS}

    tensors: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if not value.is_floating_point():
            continue
        layer, _, leaf = key.rpartition(".")
        if leaf == "weight" and layer in bits:
            q, scale = quantize_per_channel(value, bits[layer])
            tensors[key] = pack(q, bits[layer])
            tensors[key + SCALE_SUFFIX] = scale.cpu().contiguous()
        else:
            tensors[key] = value.detach().to(torch.float32).cpu().contiguous().clone()
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "spec": json.dumps(spec.to_dict()),
        "input_shape": json.dumps([int(d) for d in input_shape]),
        "kept": json.dumps(kept),
        "weight_bits": json.dumps(bits),
        "act_quant": json.dumps(activation_quant_state(model)),
        "policy": policy_json,
        "metadata": json.dumps(dict(metadata or {})),
        "frozen": json.dumps(graph.frozen),
    }
    meta["sha256"] = _digest(tensors, meta)

    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    payload = sum(t.numel() * t.element_size() for t in tensors.values())
    return ArtifactInfo(path, payload, path.stat().st_size)


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Read and verify an artifact file: structure, format, version, checksum."""
    if not path.is_file():
        raise CheckpointError(f"artifact not found: {path}")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise CheckpointError(f"{path} is truncated or not an artifact ({len(raw)} bytes)")
    n = int.from_bytes(raw[:8], "little")
    if 8 + n > len(raw):
        if n > 100_000_000:
            raise CheckpointError(f"{path} is not an autoshrink artifact (no safetensors header)")
        raise CheckpointError(f"{path} is truncated: header needs {n} bytes, has {len(raw) - 8}")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is not an autoshrink artifact (no JSON header)") from None
    meta = header.pop("__metadata__", None) if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path} is not an autoshrink artifact (format {found!r})")
    version = meta.get("format_version", "")
    if not version.isdigit() or int(version) < 1:
        raise CheckpointError(f"{path} has an invalid format version {version!r}")
    if int(version) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {version}, newer than this autoshrink reads "
            f"({FORMAT_VERSION}); upgrade autoshrink"
        )
    try:
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise CheckpointError(f"{path} has a corrupt tensor table") from None
    if len(raw) - 8 - n != end:
        have = len(raw) - 8 - n
        what = "truncated" if have < end else "corrupt (trailing bytes)"
        raise CheckpointError(f"{path} is {what}: {have} data bytes, header says {end}")
    from safetensors.torch import load

    try:
        tensors = load(raw)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is corrupt: {exc}") from exc
    stored = meta.pop("sha256", None)
    if stored != _digest(tensors, meta):
        raise CheckpointError(f"{path} failed its checksum: the file was modified or corrupted")
    return meta, tensors


def _header(path: Path, meta: Mapping[str, str]) -> ArtifactHeader:
    try:
        fields = {k: json.loads(meta[k]) for k in _FIELDS}
        obj = fields["policy"]
        policy = dict(obj["layer_bits"]) if "layer_bits" in obj else Policy.from_dict(obj)
        return ArtifactHeader(
            spec=ModelSpec.from_dict(fields["spec"]),
            input_shape=tuple(int(d) for d in fields["input_shape"]),
            kept={str(k): int(v) for k, v in fields["kept"].items()},
            weight_bits={str(k): int(v) for k, v in fields["weight_bits"].items()},
            act_quant={
                k: (int(b), float(lo), float(hi)) for k, (b, lo, hi) in fields["act_quant"].items()
            },
            policy=policy,
            metadata=dict(fields["metadata"]),
            frozen={str(k): str(v) for k, v in json.loads(meta.get("frozen", "{}")).items()},
        )
    except Exception as exc:  # any malformed field: one line, not a traceback
        raise CheckpointError(f"{path} has a malformed header: {exc!r}") from exc


def read_header(path: str | Path) -> ArtifactHeader:
    """Read and verify an artifact, returning its metadata (spec, policy, ...) only.

    Raises:
        CheckpointError: On a missing, truncated, tampered, foreign or newer file.
    """
    path = Path(path)
    meta, _ = _read(path)
    return _header(path, meta)


def load_artifact(path: str | Path) -> nn.Module:
    """Rebuild the compressed model stored in an artifact.

    Args:
        path: A file written by :func:`save_artifact`.

    Returns:
        The model in eval mode, with dequantized weights (and activation quantizers, if the
        saved model had them): its outputs equal the simulated model's.

    Raises:
        CheckpointError: On a missing, truncated, tampered, foreign or newer file, or when
            the base model cannot be rebuilt.
    """
    path = Path(path)
    meta, tensors = _read(path)
    head = _header(path, meta)
    try:
        from autoshrink.compression.prune import prune_channels

        base = build_model(head.spec)
        graph = _graph(base, head.input_shape, list(head.frozen))
        model = prune_channels(base, graph, head.kept)
    except Exception as exc:  # unknown spec, changed zoo, failed trace: all one message
        raise CheckpointError(
            f"cannot rebuild the base model {head.spec.name!r} of {path}: {exc}"
        ) from exc
    state = model.state_dict()
    try:
        for key, own in state.items():
            if not own.is_floating_point():
                continue
            layer, _, leaf = key.rpartition(".")
            if leaf == "weight" and layer in head.weight_bits:
                q = unpack(tensors[key], head.weight_bits[layer], own.numel()).view(own.shape)
                value = dequantize_per_channel(q, tensors[key + SCALE_SUFFIX])
            else:
                value = tensors[key]
            if value.shape != own.shape:
                raise ValueError(f"{key}: shape {tuple(value.shape)} vs {tuple(own.shape)}")
            state[key] = value.to(own.dtype)
        model.load_state_dict(state)
        set_activation_quant_(model, head.act_quant)
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not match its rebuilt architecture: {exc}") from exc
    return model.eval()
