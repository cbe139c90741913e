"""Attention heads as prunable units: whole heads go, and ``num_heads`` follows.

Torch-Pruning cannot map channels through the reshape that splits a fused ``qkv``
projection into heads, so without help every attention block's heads stay frozen. This
module recognises the attention blocks whose heads can be removed whole, in the way
Torch-Pruning's own ViT examples do it: a module with a fused ``qkv`` Linear, an output
``proj`` Linear and a ``num_heads`` attribute that its forward reads (timm's ``Attention``
in ViT, DeiT and friends, and its Swin ``WindowAttention``). For such a block, one unit
channel is one head: its ``3 x head_dim`` rows of ``qkv`` (q, k and v), its ``head_dim``
input columns of ``proj``, its slice of a norm over the heads' width, and its column of a
relative-position bias table. After pruning, :func:`set_heads` writes the new head count
(and timm's ``attn_dim``) into the module.

The attention matmuls cost MACs per head too. On the CPU, ``F.scaled_dot_product_attention``
runs an op that ``FlopCounterMode`` does not count; :func:`count_cpu_attention` registers
it with the formula FlopCounterMode uses for the same op on a GPU, so every count in the
project includes attention. Whatever is accepted here is still checked on a really pruned
model by ``_verify``: a block whose forward does not follow ``num_heads`` is frozen.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["HeadItem", "Heads", "count_cpu_attention", "find_heads", "head_items", "set_heads"]


@dataclass(frozen=True)
class Heads:
    """One attention block whose heads are a unit, by module names.

    Args:
        module: The attention module.
        qkv: Its fused q/k/v projection (the unit's leading layer).
        proj: Its output projection.
        num_heads: Heads at full width.
        head_dim: Channels per head in each of q, k and v.
        norm: A norm over all heads' channels before ``proj`` (timm's ``scale_norm``).
        table: A relative-position bias table with one column per head (Swin).
    """

    module: str
    qkv: str
    proj: str
    num_heads: int
    head_dim: int
    norm: str | None = None
    table: str | None = None


#: A plan item of a head unit: (module or parameter name, dim, target channels, root heads,
#: targets per head).
HeadItem = tuple[str, str, np.ndarray, np.ndarray, int]


def _heads_of(name: str, m: nn.Module) -> Heads | None:
    """The :class:`Heads` of ``m`` if it is an attention block of the known form."""
    qkv, proj, h = getattr(m, "qkv", None), getattr(m, "proj", None), getattr(m, "num_heads", None)
    if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)):
        return None
    if isinstance(h, bool) or not isinstance(h, int) or h < 2:
        return None
    if getattr(m, "gate", None) is not None:  # a gate's rows would follow the heads too
        return None
    d, rest = divmod(qkv.out_features, 3 * h)
    if rest or d < 1 or proj.in_features != h * d:
        return None
    norm = getattr(m, "norm", None)
    norm_name = None
    if isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (h * d,):
        norm_name = f"{name}.norm"
    elif norm is not None and not isinstance(norm, nn.Identity):
        return None
    table = getattr(m, "relative_position_bias_table", None)
    table_name = None
    if isinstance(table, nn.Parameter):
        if table.dim() != 2 or table.shape[1] != h:
            return None
        table_name = f"{name}.relative_position_bias_table"
    return Heads(name, f"{name}.qkv", f"{name}.proj", h, d, norm_name, table_name)


def find_heads(model: nn.Module, executed: Collection[str]) -> dict[str, Heads]:
    """The attention blocks of ``model`` whose heads can be units, keyed by their ``qkv``.

    Args:
        model: The model.
        executed: Names of the layers the traced forward pass called as modules; a block
            whose ``qkv`` or ``proj`` runs as a bare function (torchvision's Swin) is left
            out, since its forward does not go through the modules we would cut.

    Returns:
        ``{qkv layer name: Heads}``.
    """
    found = {}
    for name, m in model.named_modules():
        heads = _heads_of(name, m) if name else None
        if heads is not None and heads.qkv in executed and heads.proj in executed:
            found[heads.qkv] = heads
    return found


def head_items(heads: Heads) -> list[HeadItem]:
    """The channel plan of one head unit: which channels go with each head.

    Args:
        heads: The attention block.

    Returns:
        One item per cut: ``qkv`` rows, ``proj`` columns, norm channels, table columns.
    """
    h, d = heads.num_heads, heads.head_dim
    root = np.repeat(np.arange(h, dtype=np.int64), d)  # head of each channel of q (or k, v)
    inner = np.arange(h * d, dtype=np.int64)
    qkv_target = np.concatenate([s * h * d + inner for s in range(3)])
    items: list[HeadItem] = [
        (heads.qkv, "out", qkv_target, np.tile(root, 3), 3 * d),
        (heads.proj, "in", inner, root, d),
    ]
    if heads.norm is not None:
        items.append((heads.norm, "c", inner, root, d))
    if heads.table is not None:
        items.append((heads.table, "p1", np.arange(h, dtype=np.int64), np.arange(h), 1))
    return items


def set_heads(model: nn.Module, heads: Iterable[Heads]) -> None:
    """Write each block's head count, read off its (pruned) ``qkv``, into the module.

    Args:
        model: A pruned copy of the model the heads were found in.
        heads: Its attention blocks.
    """
    for item in heads:
        m = model.get_submodule(item.module)
        qkv = model.get_submodule(item.qkv)
        assert isinstance(qkv, nn.Linear)
        num_heads = qkv.out_features // (3 * item.head_dim)
        setattr(m, "num_heads", num_heads)  # noqa: B010  (not a typed attribute of Module)
        if isinstance(getattr(m, "attn_dim", None), int):
            setattr(m, "attn_dim", num_heads * item.head_dim)  # noqa: B010


def inner_macs(
    module_flops: Mapping[str, int], heads: Heads, layers: Collection[str]
) -> int | None:
    """MACs of a block's attention matmuls: the block's FLOPs minus its layers', halved.

    Args:
        module_flops: FlopCounterMode's total FLOPs per module name (no root class prefix).
        heads: The attention block.
        layers: Names of every conv/linear layer (their FLOPs are the layers' own).

    Returns:
        The MACs, or None if the block was not counted.
    """
    total = module_flops.get(heads.module)
    if total is None:
        return None
    prefix = heads.module + "."
    own = sum(f for n, f in module_flops.items() if n.startswith(prefix) and n in layers)
    return (total - own) // 2


def module_flops(counts: Mapping[str, Mapping[Any, int]]) -> dict[str, int]:
    """FlopCounterMode's per-module counts as total FLOPs by module name.

    Its keys are ``RootClass.path.to.module`` (and ``Global``); the root is dropped.
    """
    out: dict[str, int] = {}
    for key, ops in counts.items():
        if key == "Global":
            continue
        _, _, name = key.partition(".")
        out[name] = int(sum(ops.values()))
    return out


@functools.cache
def count_cpu_attention() -> None:
    """Let ``FlopCounterMode`` count the CPU kernel of scaled dot-product attention.

    FlopCounterMode counts ``_scaled_dot_product_flash_attention`` (a GPU kernel) as two
    batched matmuls, ``q @ k^T`` and ``attn @ v``, but not the CPU's
    ``_scaled_dot_product_flash_attention_for_cpu``, so attention would cost nothing on
    the CPU. This registers the same formula for it, once per process.
    """
    from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_registry or op.default in flop_registry:
        return

    def formula(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kw: Any) -> int:
        return int(sdpa_flop_count(q, k, v))

    register_flop_formula(op)(formula)


def head_scores(model: nn.Module, heads: Heads, importance: str) -> torch.Tensor:
    """One score per head: its q, k, v rows of ``qkv`` and its columns of ``proj``.

    ``l1`` sums ``|w|``, ``l2`` sums ``w²``, ``taylor`` ``|w x grad|`` and ``hessian``
    ``w² x grad`` (the gradient field then holds the mean squared per-sample gradient);
    ``bn`` has no BatchNorm here and falls back to ``l1``, as for any group without one.

    Args:
        model: The model (gradients already filled for ``taylor``/``hessian``).
        heads: The attention block.
        importance: The scorer's name.

    Returns:
        A float tensor of ``num_heads`` scores.
    """
    h, d = heads.num_heads, heads.head_dim
    qkv, proj = model.get_submodule(heads.qkv), model.get_submodule(heads.proj)
    assert isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear)
    # (3, heads, head_dim, in) and (out, heads, head_dim): one slice per head each.
    rows = _elementwise(qkv.weight, importance).reshape(3, h, d, -1).sum((0, 2, 3))
    cols = _elementwise(proj.weight, importance).reshape(-1, h, d).sum((0, 2))
    return (rows + cols).detach().float().cpu().clone()


def _elementwise(w: torch.Tensor, importance: str) -> torch.Tensor:
    grad = w.grad if w.grad is not None else torch.zeros_like(w)
    if importance == "l2":
        return w.detach() ** 2
    if importance == "taylor":
        return (w.detach() * grad).abs()
    if importance == "hessian":
        return w.detach() ** 2 * grad
    return w.detach().abs()
