"""The unit graph's types: units, layers, their channel coupling, and the graph itself.

:func:`~autoshrink.compression.units.build_units` makes a :class:`UnitGraph`; the cost
model, the pruner, the importance scores and the quantizer read it. The types live apart
from the tracing so that the modules tracing uses can name them without importing it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn

from autoshrink.compression.attention import Heads
from autoshrink.compression.errors import PolicyError

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYER_TYPES = (*CONV_TYPES, nn.Linear)
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)
#: How a plan entry cuts a module: its output channels, input channels, both at once
#: (depthwise conv) or the one channel dimension of a normalisation layer. A parameter
#: outside any known module is cut along its dim ``d`` (``"p0"``, ``"p1"``, ...).
DIMS = ("out", "in", "dw", "c")


@dataclass(frozen=True)
class Unit:
    """One pruning decision: a group of layers that keep the same channels.

    Args:
        name: Name of the leading conv/linear module; policies are keyed by it.
        index: Position in :attr:`UnitGraph.units` (execution order of the leaders).
        kind: ``"conv"`` or ``"linear"`` (the leading module).
        depthwise: Whether the group contains a depthwise conv.
        c_in: Input channels of the leading module.
        c_out: Output channels of the leading module: the prunable channels N.
        kernel: Kernel side of the leading module (the largest; 1 for linear).
        stride: Stride of the leading module (the largest; 1 for linear).
        groups: ``groups`` of the leading module.
        fmap: Output positions (H*W) of the leading module for one sample.
        macs: MACs, at full width, of the layers whose output channels this unit prunes.
        params: Weights and biases of those layers.
        layers: Names of those layers, leader first: they take the unit's bit-width.
        round_to: Effective channel granularity: lcm of the requested one and the groups.
        channel_groups: Convolution groups the channels are balanced over (1 if none).
        width: Output channels of the leading layer per unit channel: 1, or for the heads
            of an attention block (one unit channel per head) ``3 * head_dim``.
        steps: The channel counts this unit may keep, ascending and ending with
            ``c_out``, when hardware-aware rounding chose them (the counts that run faster
            than every larger one, :mod:`~autoshrink.compression.channel_steps`); empty
            means every multiple of ``round_to``.
    """

    name: str
    index: int
    kind: str
    depthwise: bool
    c_in: int
    c_out: int
    kernel: int
    stride: int
    groups: int
    fmap: int
    macs: int
    params: int
    layers: tuple[str, ...]
    round_to: int = 1
    channel_groups: int = 1
    width: int = 1
    steps: tuple[int, ...] = ()

    @property
    def is_heads(self) -> bool:
        """Whether the unit's channels are attention heads."""
        return self.width > 1

    def kept(self, keep: float) -> int:
        """The channels kept at ``keep``: THE rounding rule of cost model and pruning alike.

        ``keep * N`` rounded (half up) to the nearest of ``r, 2r, ...`` and ``N`` itself,
        so ``keep=1`` always keeps all N; at least ``r`` (``N`` if ``N < r``). With
        :attr:`steps`, to the nearest of those counts instead (ties to the larger).

        >>> unit = Unit("c", 0, "conv", False, 3, 60, 3, 1, 1, 64, 0, 0, ("c",), round_to=8)
        >>> unit.kept(0.3), unit.kept(0.95), unit.kept(1.0)
        (16, 56, 60)
        >>> stepped = replace(unit, steps=(16, 32, 48, 60))
        >>> stepped.kept(0.3), stepped.kept(0.66), stepped.kept(0.95)
        (16, 48, 60)

        Raises:
            PolicyError: If ``keep`` is not a number in (0, 1].
        """
        if isinstance(keep, bool) or not isinstance(keep, int | float):
            raise PolicyError(f"keep-ratio of unit {self.name} must be a number, got {keep!r}")
        if not (math.isfinite(keep) and 0.0 < keep <= 1.0):
            raise PolicyError(f"keep-ratio of unit {self.name} must lie in (0, 1], got {keep!r}")
        r, n = self.round_to, self.c_out
        x = keep * n
        if self.steps:
            return min(self.steps, key=lambda c: (abs(c - x), -c))
        kept = math.floor(x / r + 0.5) * r
        if kept > n or n - x <= abs(x - kept):
            kept = n
        return max(kept, min(r, n))


@dataclass(frozen=True)
class Layer:
    """A conv or linear layer with weights, as executed on the example input.

    Args:
        name: Module name.
        kind: ``"conv"`` or ``"linear"``.
        c_in: Input channels (features).
        c_out: Output channels (features).
        kernel: Kernel side (the largest; 1 for linear).
        stride: Stride (the largest; 1 for linear).
        groups: Convolution groups (1 for linear).
        unit: The unit that prunes its output channels, or None if they are fixed.
        fmap: Output positions per sample (H*W; 1 for a linear on vectors).
        macs: MACs at full width on the example input.
        params: Weight and bias elements at full width.
    """

    name: str
    kind: str
    c_in: int
    c_out: int
    kernel: int
    stride: int
    groups: int
    unit: str | None
    fmap: int = 1
    macs: int = 0
    params: int = 0


@dataclass(frozen=True, eq=False)  # numpy fields: compare by identity
class PlanEntry:
    """Which channels of one module's dimension follow which root channels.

    ``target[i]`` (a channel index of ``module`` along ``dim``) is removed with root channel
    ``root[i]``, a global index: the unit's offset in :attr:`Coupling.unit_offsets` plus the
    channel's index in its unit.
    """

    module: str
    dim: str
    target: np.ndarray
    root: np.ndarray


@dataclass(frozen=True, eq=False)  # numpy fields: compare by identity
class Coupling:
    """Per-module channel counts as affine functions of the channels removed per unit.

    For a removal vector ``r`` (one entry per unit), a layer has ``out0 - out_a @ r``
    output and ``in0 - in_a @ r`` input channels; a norm layer ``norm_c0 - norm_a @ r``.
    The norm rows also hold parameters outside any known module (a layer scale), with
    ``norm_params`` elements per channel. MACs outside the layers are ``other_macs -
    unit_macs @ r``: an attention head's matmuls go with the head.
    Layers are in execution order; every other tensor and MAC is a constant.
    """

    unit_channels: np.ndarray
    unit_offsets: np.ndarray
    unit_groups: np.ndarray
    layer_out0: np.ndarray
    layer_in0: np.ndarray
    layer_groups: np.ndarray
    layer_dw: np.ndarray
    layer_kk: np.ndarray
    layer_mcoef: np.ndarray
    layer_bias: np.ndarray
    layer_out_a: np.ndarray
    layer_in_a: np.ndarray
    norm_names: tuple[str, ...]
    norm_c0: np.ndarray
    norm_params: np.ndarray
    norm_fbufs: np.ndarray
    norm_a: np.ndarray
    const_params: int
    const_fbytes: int
    other_macs: int
    unit_macs: np.ndarray


@dataclass(frozen=True, eq=False)  # numpy fields: compare by identity
class UnitGraph:
    """The units and layers of one model on one input shape, with their coupling.

    Built by :func:`build_units`; holds no reference to the model, so it pickles and can
    be shared by workers. ``frozen`` maps the leading layer of every group that stays at
    full width, though it is not the classifier, to the one-line reason why. ``heads``
    lists the attention blocks whose heads are units; pruning updates their head count.
    ``cache`` is scratch space for the cost model's tables.
    """

    units: tuple[Unit, ...]
    layers: tuple[Layer, ...]
    input_shape: tuple[int, ...]
    coupling: Coupling
    plan: tuple[PlanEntry, ...]
    frozen: dict[str, str] = field(default_factory=dict)
    heads: tuple[Heads, ...] = ()
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def unit_names(self) -> tuple[str, ...]:
        """Unit names in order."""
        return tuple(u.name for u in self.units)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Layer names in execution order."""
        return tuple(layer.name for layer in self.layers)

    @property
    def steps(self) -> dict[str, list[int]]:
        """The units' hardware-aware steps, for a policy to carry (empty when none has any)."""
        return {u.name: list(u.steps) for u in self.units if u.steps}

    def with_steps(self, steps: Mapping[str, Sequence[int]]) -> UnitGraph:
        """This graph with the named units rounding to ``steps`` (see :attr:`Unit.steps`).

        Units not named keep their plain rounding. The cost model's tables do not depend on
        the rounding; the copy starts with an empty cache only because it holds the units.

        Raises:
            PolicyError: On an unknown unit or steps that do not fit it.
        """
        for name in steps:
            self.unit(name)  # raises on an unknown unit
        units = tuple(
            replace(u, steps=check_steps(u, steps[u.name])) if u.name in steps else u
            for u in self.units
        )
        return replace(self, units=units, cache={})

    def unit(self, name: str) -> Unit:
        """The unit called ``name``.

        Raises:
            PolicyError: If there is no such unit.
        """
        index = self.cache.get("unit_index")
        if index is None:
            index = self.cache["unit_index"] = {u.name: u for u in self.units}
        if name not in index:
            raise PolicyError(f"unknown unit {name!r}; units are {_preview(index)}")
        return index[name]


def check_steps(unit: Unit, steps: object) -> tuple[int, ...]:
    """``steps`` as a unit's allowed channel counts, if they are valid for ``unit``.

    Valid: ascending distinct integers, each a multiple of the unit's ``round_to`` (or its
    full width), ending with the unit's ``c_out``.

    Raises:
        PolicyError: Naming the unit and what is wrong.
    """
    ok = isinstance(steps, list | tuple) and bool(steps)
    counts: tuple[Any, ...] = tuple(steps) if ok else ()  # type: ignore[arg-type]
    ok = ok and all(isinstance(c, int) and not isinstance(c, bool) for c in counts)
    ok = ok and list(counts) == sorted(set(counts)) and counts[-1] == unit.c_out
    ok = ok and all(c > 0 and (c % unit.round_to == 0 or c == unit.c_out) for c in counts)
    if not ok:
        raise PolicyError(
            f"channel steps of unit {unit.name} must be ascending multiples of "
            f"{unit.round_to} ending with its {unit.c_out} channels, got {steps!r}"
        )
    return counts


def _preview(names: Iterable[str], most: int = 6) -> str:
    names = list(names)
    more = f", ... ({len(names)} in all)" if len(names) > most else ""
    return ", ".join(names[:most]) + more
