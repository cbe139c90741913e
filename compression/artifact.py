"""The compressed artifact: a pruned, quantized model in one safetensors file, no pickle.

What the file holds:

- **tensors** (the payload, :mod:`autoshrink.compression.artifact_payload`): each
  conv/linear weight with ``b < 32`` bits as ``b``-bit packed bytes (``ceil(numel * b /
  8)``, see :mod:`autoshrink.compression.packing`) plus one float32 scale per output
  channel (key ``<weight>#scale``); every other parameter and stored floating-point buffer
  (BatchNorm statistics included) in float32, a shared one once. Integer buffers such as
  ``num_batches_tracked`` are not stored. A layer with fine-grained sparsity that is
  smaller stored sparse goes as positions and packed survivors, both entropy coded where
  that is smaller (format 3). The payload before entropy coding therefore equals
  :func:`autoshrink.compression.cost.cost_from_channels`'s ``bytes`` for the same policy,
  and the payload on disk is never above it.
- **header metadata** (JSON strings in the safetensors header): the format name and
  version, the base :class:`ModelSpec`, the example input shape, the kept channel count per
  unit, the weight bits per layer, any calibrated activation quantizers, the policy, the
  user's metadata, for a user-factory model the factory's file path, name and the SHA-256
  of the file's bytes, the frozen units, the pruned architecture (format 4: the channels
  each module dimension lost, and the attention blocks whose head count follows), and a
  SHA-256 over tensors and metadata.

Loading never runs code named by the file. A built-in model is rebuilt from its name; a
user-factory model only from a factory the caller names (``load_artifact(path,
factory="mynet.py:build")``, ``--model`` on the CLI), and only if that file's hash equals
the recorded one (unless ``allow_changed_factory``). The header is read and fully checked
(:mod:`autoshrink.compression.artifact_header`) before any payload byte is read.

Loading rebuilds the base model from its spec, cuts it as the header records
(:mod:`autoshrink.compression.artifact_arch`; the model is not traced, so the units are
not decided again), then loads the tensors. An artifact before format 4 has its units found
again, with its recorded frozen units kept frozen. The format's fixed overhead (length
prefix and JSON header) is in :class:`ArtifactInfo`.

>>> info = save_artifact("m.safetensors", model, spec, (1, 1, 8, 8), policy)  # doctest: +SKIP
>>> load_artifact(info.path)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from autoshrink.compression.artifact_arch import (
    find_units,
    one_line,
    rebuild,
    record_cuts,
    record_heads,
)
from autoshrink.compression.artifact_checks import restore
from autoshrink.compression.artifact_header import (
    FORMAT_NAME,
    FORMAT_VERSION,
    PACKED_KEY,
    ArtifactHeader,
    base_spec,
    decode_header,
    read_raw_header,
)
from autoshrink.compression.artifact_payload import SCALE_SUFFIX, encode, entropy_code, sparse_plan
from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.models import ModelSpec, build_model, factory_source, is_factory_ref
from autoshrink.compression.policy import Policy, kept_channels, layer_bits
from autoshrink.compression.quantize import (
    activation_quant_state,
    bake_,
    check_layer_bits,
)
from autoshrink.compression.sparsity import layer_sparsity

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SCALE_SUFFIX",
    "ArtifactHeader",
    "ArtifactInfo",
    "load_artifact",
    "read_header",
    "save_artifact",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactInfo:
    """Sizes of a saved artifact.

    Attributes:
        path: Where it was written.
        payload_bytes: Bytes of tensor data on disk.
        file_bytes: Size of the file on disk.
        bound_bytes: Bytes of tensor data before entropy coding: the cost model's
            ``bytes``, the bound ``payload_bytes`` never exceeds (None: no entropy coding,
            so the same as ``payload_bytes``).
    """

    path: Path
    payload_bytes: int
    file_bytes: int
    bound_bytes: int | None = None

    @property
    def bound(self) -> int:
        """The stored bytes before entropy coding (the size budget's bound)."""
        return self.payload_bytes if self.bound_bytes is None else self.bound_bytes

    @property
    def overhead_bytes(self) -> int:
        """Fixed cost of the format: length prefix plus JSON header."""
        return self.file_bytes - self.payload_bytes

    @property
    def overhead_ratio(self) -> float:
        """Overhead as a fraction of the payload."""
        return self.overhead_bytes / max(self.payload_bytes, 1)


def _out_channels(module: nn.Module) -> int:
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor")
    return int(weight.shape[0])


def _on_cpu(model: nn.Module) -> nn.Module:
    """``model``, or a CPU copy of it: an artifact never depends on the device it came from."""
    devices = {t.device.type for t in itertools.chain(model.parameters(), model.buffers())}
    if "meta" in devices:
        raise CheckpointError("the model is on the meta device: it has no weights to save")
    return model if devices <= {"cpu"} else copy.deepcopy(model).cpu()


def _digest(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and every metadata field."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(json.dumps(dict(meta), sort_keys=True).encode())
    return h.hexdigest()


def _header_strings(fields: Mapping[str, Any], policy_json: str) -> dict[str, str]:
    """The safetensors metadata: format, version and each field as a JSON string."""
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)}
    meta |= {name: json.dumps(value) for name, value in fields.items()}
    return meta | {"policy": policy_json}


def _kept_and_bits(
    model: nn.Module, spec: ModelSpec, graph: Any, policy: Policy | Mapping[str, int]
) -> tuple[dict[str, int], dict[str, int], str]:
    """The model's kept channels per unit, its sub-float bits per layer, the policy JSON."""
    try:
        kept = {u.name: _out_channels(model.get_submodule(u.name)) // u.width for u in graph.units}
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
    return kept, bits, policy_json


def _fields(
    model: nn.Module,
    spec: ModelSpec,
    input_shape: Sequence[int],
    kept: Mapping[str, int],
    bits: Mapping[str, int],
    metadata: Mapping[str, Any] | None,
    graph: Any,
) -> dict[str, Any]:
    """The header's fields but the policy, the sparse layers and the coded streams."""
    return {
        "spec": spec.to_dict(),
        "input_shape": [int(d) for d in input_shape],
        "kept": dict(kept),
        "weight_bits": dict(bits),
        "act_quant": activation_quant_state(model),
        "metadata": dict(metadata or {}),
        "factory": asdict(factory_source(spec.name)) if is_factory_ref(spec.name) else None,
        "frozen": dict(graph.frozen),
        "cuts": [list(cut) for cut in record_cuts(graph, kept)],
        "heads": record_heads(graph),
    }


def save_artifact(
    path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    input_shape: Sequence[int],
    policy: Policy | Mapping[str, int],
    metadata: Mapping[str, Any] | None = None,
    graph: Any = None,
) -> ArtifactInfo:
    """Write ``model`` (pruned from ``build_model(spec)``) as a packed artifact.

    Args:
        path: Destination file (conventionally ``*.safetensors``); written atomically.
        model: The compressed model, on any device (it is saved from a CPU copy). Its
            weights may be float, already quantized, or fake-quantized; they are quantized
            here with the bits the policy gives.
        spec: The base model's spec; loading rebuilds from it.
        input_shape: Shape of an example input batch, e.g. ``(1, 3, 32, 32)``.
        policy: The policy, or a plain ``{layer: bits}`` mapping.
        metadata: Extra JSON-ready information to store.
        graph: The units of ``build_model(spec)`` on ``input_shape``, as the caller found
            them (with the policy's frozen units ignored); None: found here. Some models
            take minutes to trace.

    Returns:
        The path, the payload size and the file size.

    Raises:
        PolicyError: On invalid bits or layer names.
        CheckpointError: If the model is not a pruned ``build_model(spec)``.
    """
    path = Path(path)
    model = _on_cpu(model)
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        model = bake_(copy.deepcopy(model))
    frozen = list(policy.frozen) if isinstance(policy, Policy) else []
    if graph is None:
        graph = find_units(build_model(spec), input_shape, frozen)
    elif tuple(graph.input_shape[1:]) != tuple(input_shape)[1:] or set(frozen) - set(graph.frozen):
        raise CheckpointError("the unit graph given is not the one of this model and policy")
    kept, bits, policy_json = _kept_and_bits(model, spec, graph, policy)
    sparsity = layer_sparsity(policy, graph) if isinstance(policy, Policy) else {}
    try:
        raw, sparse = encode(model, bits, sparse_plan(model, bits, sparsity))
    except ValueError as exc:
        raise CheckpointError(f"the model does not have its policy's sparsity: {exc}") from None
    tensors, coded = entropy_code(raw, sparse)
    meta = _fields(model, spec, input_shape, kept, bits, metadata, graph)
    meta |= {"sparse": sparse, "coded": coded}
    meta = _header_strings(meta, policy_json)
    meta["sha256"] = _digest(tensors, meta)

    from safetensors.torch import save_file

    # One metadata entry: safetensors writes a map in no fixed order, and one entry makes the
    # same model the same bytes (a resumed search ships the file an unkilled one does).
    packed = {PACKED_KEY: json.dumps(meta, sort_keys=True)}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=packed))
    payload, bound = _nbytes(tensors), _nbytes(raw)
    return ArtifactInfo(path, payload, path.stat().st_size, bound)


def _nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def state_dict_file_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s whole ``state_dict`` as one safetensors file (the float file)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return len(save(state))


def _read(path: Path) -> tuple[ArtifactHeader, dict[str, torch.Tensor]]:
    """Read an artifact: header checked in full first, then payload, then the checksum."""
    raw = read_raw_header(path)
    head = decode_header(path, raw.meta)
    stored = raw.meta.get("sha256", "")
    from safetensors.torch import load

    try:
        with path.open("rb") as fh:
            data = fh.read(raw.file_bytes)
        tensors = load(data)
    except OSError as exc:
        raise CheckpointError(f"cannot read artifact {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is corrupt: {one_line(exc)}") from None
    meta = {k: v for k, v in raw.meta.items() if k != "sha256"}
    if stored != _digest(tensors, meta):
        raise CheckpointError(f"{path} failed its checksum: the file was modified or corrupted")
    return head, tensors


def read_header(path: str | Path) -> ArtifactHeader:
    """Read and verify an artifact, returning its metadata (spec, policy, ...) only.

    Nothing is imported or built: a user-factory artifact's header can be read without
    its factory.

    Raises:
        CheckpointError: On a missing, truncated, tampered, foreign or newer file, or a
            header field of the wrong type.
    """
    head, _ = _read(Path(path))
    return head


def load_artifact(
    path: str | Path, factory: str | None = None, *, allow_changed_factory: bool = False
) -> nn.Module:
    """Rebuild the compressed model stored in an artifact.

    Args:
        path: A file written by :func:`save_artifact`.
        factory: For an artifact of a user model, the factory ``path/to/file.py:fn`` to
            rebuild it with; the file is imported (its code runs) only when named here.
            For a built-in model leave it None (or pass the model's own name).
        allow_changed_factory: Load even if the factory's file differs from the one the
            artifact was made with (its SHA-256 or function name); a warning is logged.

    Returns:
        The model in eval mode, with dequantized weights (and activation quantizers, if the
        saved model had them): its outputs equal the simulated model's.

    Raises:
        CheckpointError: On a missing, truncated, tampered, foreign or newer file, a bad
            header field, a user model without (or with a changed) ``factory``, or when the
            base model cannot be rebuilt as the header says.
    """
    path = Path(path)
    head, tensors = _read(path)
    model = rebuild(path, base_spec(path, head, factory, allow_changed_factory), head)
    restore(path, model, tensors, head)
    return model.eval()


def load_base(
    path: str | Path, factory: str | None = None, *, allow_changed_factory: bool = False
) -> nn.Module:
    """The uncompressed architecture an artifact was cut from, freshly initialised.

    Its weights are not stored (only the compressed model is), so it serves what does not
    depend on them: a latency baseline. ``factory`` is as for :func:`load_artifact`.
    """
    path = Path(path)
    head = read_header(path)
    spec = base_spec(path, head, factory, allow_changed_factory)
    return build_model(spec).eval()
