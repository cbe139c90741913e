"""The pruned architecture an artifact records, so that loading it never traces the model.

Format 4 stores, beside the kept count per unit, what pruning did to the base model:
``cuts``, one ``[module, dim, removed]`` per cut dimension (``dim`` as in a unit graph's
plan: ``out``, ``in``, ``dw``, ``c`` or ``p<d>`` for a parameter), and ``heads``, the
attention blocks whose head count follows their ``qkv``. Loading builds the base model and
removes that many channels from each; the stored tensors then fill them. The units are
not found again, so an artifact loads wherever it was made, however its units came out
there, and a model that takes minutes to trace loads in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from autoshrink.compression.attention import Heads
from autoshrink.compression.documents import field, sequence
from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.quantize import quantizable_layers
from autoshrink.compression.unit_graph import DIMS, UnitGraph

if TYPE_CHECKING:
    from autoshrink.compression.artifact_header import ArtifactHeader

#: One cut: (module or parameter name, dim, channels removed).
Cut = tuple[str, str, int]


def record_cuts(graph: UnitGraph, kept: Mapping[str, int]) -> list[Cut]:
    """The channels each module dimension loses when ``graph``'s units keep ``kept``.

    Which channels go depends on the scores, how many does not: every plan entry follows
    each of its unit's channels with the same number of its own.
    """
    from autoshrink.compression.prune import keep_mask

    scores = {u.name: torch.zeros(u.c_out) for u in graph.units}
    mask = keep_mask(graph, kept, scores)
    removed: dict[tuple[str, str], int] = {}
    for entry in graph.plan:
        n = int((~mask[entry.root]).sum())
        if n:
            key = (entry.module, entry.dim)
            removed[key] = removed.get(key, 0) + n
    return [(module, dim, n) for (module, dim), n in removed.items()]


def record_heads(graph: UnitGraph) -> list[dict[str, Any]]:
    """The graph's attention blocks, as JSON-ready objects."""
    return [asdict(h) for h in graph.heads]


def decode_cuts(obj: object, where: str) -> tuple[Cut, ...]:
    """The ``cuts`` field, type-checked.

    Raises:
        CheckpointError: If an entry is not ``[name, dim, removed]`` with a known dim.
    """
    cuts = []
    for entry in sequence(obj, list, where=where, error=CheckpointError):
        ok = len(entry) == 3 and all(isinstance(v, str) for v in entry[:2])
        ok = ok and isinstance(entry[2], int) and not isinstance(entry[2], bool)
        dim = entry[1] if ok else ""
        ok = ok and (dim in DIMS or (dim[:1] == "p" and dim[1:].isdigit())) and entry[2] > 0
        if not ok:
            raise CheckpointError(f"{where}: {entry!r} is not [name, dim, removed]"[:200])
        cuts.append((entry[0], dim, int(entry[2])))
    return tuple(cuts)


def _positive(value: int) -> str | None:
    return None if value >= 1 else "must be positive"


def decode_heads(obj: object, where: str) -> tuple[Heads, ...]:
    """The ``heads`` field, type-checked.

    Raises:
        CheckpointError: If an entry is not an attention block's record.
    """
    kw: dict[str, Any] = {"where": where, "error": CheckpointError}
    heads = []
    positive = _positive
    for item in sequence(obj, dict, where=where, error=CheckpointError):
        heads.append(
            Heads(
                module=field(item, "module", str, **kw),
                qkv=field(item, "qkv", str, **kw),
                proj=field(item, "proj", str, **kw),
                num_heads=field(item, "num_heads", int, check=positive, **kw),
                head_dim=field(item, "head_dim", int, check=positive, **kw),
                norm=field(item, "norm", (str, type(None)), default=None, **kw),
                table=field(item, "table", (str, type(None)), default=None, **kw),
            )
        )
    return tuple(heads)


def _width(model: nn.Module, name: str, dim: str) -> int:
    """The channels of ``name`` along ``dim`` (KeyError: no such module or parameter)."""
    from autoshrink.compression._depgraph import width

    if dim.startswith("p"):
        param = dict(model.named_parameters())[name]
        if int(dim[1:]) >= param.dim():
            raise KeyError(name)
        return width(param, dim)
    return width(dict(model.named_modules())[name], dim)


def cut_architecture(model: nn.Module, cuts: Sequence[Cut], heads: Sequence[Heads]) -> nn.Module:
    """A copy of ``model`` with each cut's channels removed (the last ones: weights follow).

    Raises:
        CheckpointError: If a cut names what ``model`` does not have, or removes all of a
            dimension's channels, or a head record does not fit it.
    """
    from autoshrink.compression.errors import first_line
    from autoshrink.compression.prune import cut_channels

    plan = []
    for name, dim, n in cuts:
        try:
            full = _width(model, name, dim)
        except (KeyError, AttributeError, TypeError):
            raise CheckpointError(f"it cuts {dim} channels of {name!r}, which it lacks") from None
        if n >= full:
            raise CheckpointError(f"it cuts {n} of the {full} {dim} channels of {name!r}")
        plan.append((name, dim, list(range(full - n, full))))
    modules = dict(model.named_modules())
    for h in heads:
        if not isinstance(modules.get(h.qkv), nn.Linear) or h.module not in modules:
            raise CheckpointError(f"its attention block {h.module!r} is not one of the model")
    try:
        return cut_channels(model, plan, tuple(heads))
    except AutoshrinkError as exc:
        raise CheckpointError(str(exc)) from None
    except Exception as exc:  # a pruning function fails on a cut the model cannot take
        raise CheckpointError(f"its cuts do not fit the model ({first_line(exc)})") from None


def one_line(exc: BaseException) -> str:
    """An error's message on one line, at most 200 characters."""
    return " ".join(str(exc).split())[:200]


def find_units(model: nn.Module, input_shape: Sequence[int], frozen: Sequence[str] = ()) -> Any:
    """The units of ``model`` on a zero input of ``input_shape``, ``frozen`` ignored."""
    from autoshrink.compression.units import build_units

    return build_units(model, torch.zeros(tuple(input_shape)), ignored_layers=frozen)


def rebuild(path: Path, spec: ModelSpec, head: ArtifactHeader) -> nn.Module:
    """Build the base model and prune it as ``head`` says; every name it holds must exist.

    From format 4 the header records the cuts themselves (:mod:`.artifact_arch`): the
    model is not traced. Before, its units are found again, with the recorded frozen ones.
    """
    try:
        base = build_model(spec)
        graph = (
            None if head.cuts is not None else find_units(base, head.input_shape, list(head.frozen))
        )
    except Exception as exc:  # unknown spec, changed zoo, failed trace: all one message
        raise CheckpointError(
            f"cannot rebuild the base model {spec.name!r} of {path}: {one_line(exc)}"
        ) from None
    layers = quantizable_layers(base)
    units = layers if graph is None else graph.unit_names  # untraced: a unit leads a layer
    problems = [f"unit {n!r}" for n in head.kept if n not in units]
    problems += [f"weight_bits layer {n!r}" for n in head.weight_bits if n not in layers]
    problems += [f"act_quant layer {n!r}" for n in head.act_quant if n not in layers]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{path} names what its base model {spec.name!r} does not have: "
            f"{', '.join(problems[:3])}{more}"[:300]
        )
    try:
        if graph is None:
            return _check_kept(cut_architecture(base, head.cuts or (), head.heads), head)
        from autoshrink.compression.prune import prune_channels

        return prune_channels(base, graph, head.kept)
    except Exception as exc:  # out-of-range counts, cuts the model cannot take
        raise CheckpointError(f"{path} cannot be pruned as it says: {one_line(exc)}") from None


def _check_kept(model: nn.Module, head: ArtifactHeader) -> nn.Module:
    """``model``, once the kept count of every unit matches its leading layer's width.

    Raises:
        CheckpointError: If a unit keeps another number of channels than the cuts leave.
    """
    widths = {h.qkv: 3 * h.head_dim for h in head.heads}  # a head unit's channel: a head
    for name, n in head.kept.items():
        weight = model.get_submodule(name).weight
        have = int(weight.shape[0]) if isinstance(weight, torch.Tensor) else -1
        if have != n * widths.get(name, 1):
            raise CheckpointError(f"unit {name!r} keeps {n} channels, the cuts leave {have}")
    return model
