"""Which autograd ops a prunable group may pass through (private to ``_depgraph``).

Torch-Pruning treats every op it does not know as element-wise: channel ``i`` in is
channel ``i`` out. That holds for activations, arithmetic and pooling, and for the norm op
inside a module that Torch-Pruning knows as a norm (timm's ``BatchNormAct2d`` and
``GroupNormAct`` call ``F.batch_norm``/``F.group_norm`` and then an activation, so the
module's own output is the activation and the norm op shows up as an unknown op). It does
not hold for a channel shuffle, a reduction over channels or an arbitrary transpose: such a
group is frozen.

A permute that moves the channel dimension to the end (channels-last, as in timm's
``LayerNorm2d`` and ConvNeXt blocks) or back is followed too: Torch-Pruning's channel of a
Linear or LayerNorm is the last dimension, so its index mapping stays right. Whatever is
accepted here is still checked on a really pruned model by ``_verify``.
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn
from torch_pruning import ops

from autoshrink.compression.unit_graph import NORM_TYPES

# Autograd ops that act on each channel separately (or broadcast over them): pruning a
# channel before them removes exactly that channel after them.
_CHANNELWISE = re.compile(
    r"^(Relu|Hardtanh|Hardswish|Hardsigmoid|Sigmoid|Silu|Gelu|Tanh|LeakyRelu|Elu|Celu|Selu"
    r"|Softplus|Mish|Threshold|Add|Sub|Mul|Div|Neg|Clamp|ClampMin|ClampMax|Pow|Exp|Sqrt"
    r"|Rsqrt|Abs|Log|Reciprocal|Clone|Alias|ToCopy|NativeDropout|Softmax|LogSoftmax|Where"
    r"|(Adaptive)?(Max|Avg)Pool\dD(WithIndices)?|Upsample\w+|ConstantPadNd"
    r"|(Reflection|Replication)Pad\dD)Backward\d*$"
)
_REDUCTIONS = re.compile(r"^(Mean|Sum|Amax|Amin|Squeeze|Unsqueeze)Backward\d*$")
#: The functional norm ops, by autograd name, and the saved tensor that must belong to a
#: norm module the group prunes (then the op is that module's own normalisation).
_NORM_OPS = {
    re.compile(r"^(Native|Cudnn|Miopen)BatchNormBackward\d*$"): (
        "_saved_weight",
        "_saved_running_mean",
    ),
    re.compile(r"^NativeGroupNormBackward\d*$"): ("_saved_weight",),
    re.compile(r"^NativeLayerNormBackward\d*$"): ("_saved_weight",),
}
# The matmul that nn.Linear runs on a (batch, ..., features) input: inside the module, so
# its channels are the Linear's own.
_LINEAR_INNER = re.compile(r"^(Addmm|Mm|Bmm|UnsafeView|View|Expand)Backward\d*$")
_STRUCTURAL = (ops.OPTYPE.CONCAT, ops.OPTYPE.SPLIT, ops.OPTYPE.RESHAPE, ops.OPTYPE.SLICE)


def norm_tensor_ptrs(model: nn.Module) -> frozenset[int]:
    """Storage addresses of every norm module's weight and running mean.

    A LayerNorm counts only if it normalises one (the channel) dimension.
    """
    ptrs = set()
    for m in model.modules():
        if not isinstance(m, NORM_TYPES):
            continue
        if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) != 1:
            continue
        for t in (getattr(m, "weight", None), getattr(m, "running_mean", None)):
            if t is not None:
                ptrs.add(t.data_ptr())
    return frozenset(ptrs)


def grad_fn_name(node: Any) -> str:
    """The autograd name of a Torch-Pruning node's op."""
    fn = node.grad_fn
    return str(fn.name()) if hasattr(fn, "name") else type(fn).__name__


def signed(dim: int) -> int:
    """Autograd stores negative dims as unsigned 64-bit values: undo that."""
    dim = int(dim)
    return dim - 2**64 if dim >= 2**63 else dim


def _norm_op_ok(fn: Any, attrs: tuple[str, ...], norm_ptrs: frozenset[int]) -> bool:
    for attr in attrs:
        t = getattr(fn, attr, None)
        if t is not None:
            return bool(t.data_ptr() in norm_ptrs)
    return False


def _channels_last_move(dims: tuple[int, ...]) -> bool:
    """Whether a permute only moves the channel dim to the end, or the end to dim 1."""
    n = len(dims)
    to_last = (0, *range(2, n), 1)
    to_first = (0, n - 1, *range(1, n - 1))
    return n >= 3 and dims in (to_last, to_first)


def op_problem(node: Any, norm_ptrs: frozenset[int]) -> str | None:
    """Why a non-module node cannot sit inside a prunable group, or None if it can."""
    if node.type in _STRUCTURAL or node.type == ops.OPTYPE.OUTPUT or not node.inputs:
        return None
    if node.type != ops.OPTYPE.ELEMENTWISE:
        return f"op {grad_fn_name(node)} ({node.type.name.lower()})"
    name = grad_fn_name(node)
    if _CHANNELWISE.match(name):
        return None
    if (
        _LINEAR_INNER.match(name)
        and node.outputs
        and all(isinstance(out.module, nn.Linear) for out in node.outputs)
    ):
        return None
    fn = node.grad_fn
    for pattern, attrs in _NORM_OPS.items():
        if pattern.match(name):
            if _norm_op_ok(fn, attrs, norm_ptrs):
                return None
            return f"op {name} (a norm outside any norm module)"
    if _REDUCTIONS.match(name):
        dims = getattr(fn, "_saved_dim", None)
        sizes = getattr(fn, "_saved_self_sym_sizes", None)
        if dims is not None and sizes is not None:
            dims = dims if isinstance(dims, tuple | list) else (dims,)
            rank = max(len(sizes), 1)
            if all(signed(d) % rank not in (0, 1) for d in dims):
                return None
        return f"op {name} (a reduction over channels)"
    if name == "TransposeBackward0":  # fine between spatial dims, given as positive numbers
        if {signed(fn._saved_dim0), signed(fn._saved_dim1)}.isdisjoint({-2, -1, 0, 1}):
            return None
    if name == "PermuteBackward0":
        dims = tuple(signed(d) for d in fn._saved_dims)
        if dims[:2] == (0, 1) or _channels_last_move(dims):
            return None
    return f"op {name} (it may reorder or mix channels)"


def nearest_layer(node: Any, dg: Any) -> str | None:
    """Name of the closest named module upstream of ``node``; None if there is none."""
    seen, queue = set(), [node]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        name = dg._module2name.get(current.module)
        if name and current is not node and isinstance(current.module, nn.Module):
            return str(name)
        queue.extend(current.inputs)
    return None
