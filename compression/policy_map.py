"""Stretch a policy over a network of another depth, by the relative position of its units.

A policy found on ResNet-20 names ResNet-20's twelve units; ResNet-56 has thirty. The depth
map gives every unit of the target the decision (keep-ratio and bits) of the source unit
that plays the same part at the same relative depth:

1. Units are compared by *role*: the unit name with the numbers of its enclosing modules
   replaced by ``#`` (``layer2.3.conv1`` has role ``layer#.#.conv1``; the last component is
   kept, so ``conv1`` and ``conv2`` stay apart). In a CIFAR ResNet the roles are the stem
   (``conv1``), the first conv of each block (``layer#.#.conv1``) and the residual stream of
   a later stage (``layer#.#.conv2``, led by its first block).
2. Among the source units of the same role and the same channel count (a stage of the same
   width), falling back to the same role, then the same width, then all units, the target
   unit takes the one whose relative position ``index / (n - 1)`` is nearest (the earlier
   one on a tie).

Keep-ratios are copied as ratios, so the target's realised channels follow its own
rounding rule (:meth:`~autoshrink.compression.units.Unit.kept`). Per-layer bit overrides
(the first and last layers, which HAQ pins) are kept where the target has a layer of that
name and dropped, with a warning, where it has none. Mapping a policy onto the model it was
made for gives its units and layers back unchanged.

>>> import torch
>>> from autoshrink.compression.models import ModelSpec, build_model
>>> from autoshrink.compression.units import build_units
>>> def units(name):
...     model = build_model(ModelSpec(name, num_classes=10, in_channels=1))
...     return build_units(model, torch.zeros(1, 1, 8, 8))
>>> r20, r56 = units("resnet20"), units("resnet56")
>>> policy = Policy({u.name: UnitPolicy(keep=0.5 if "conv1" in u.name else 1.0) for u in r20.units})
>>> mapped = map_depth(policy, r56)
>>> len(mapped.units), mapped.units["layer2.8.conv1"].keep, mapped.units["layer3.0.conv2"].keep
(30, 0.5, 1.0)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from autoshrink.compression.errors import PolicyError
from autoshrink.compression.policy import Policy, UnitPolicy

if TYPE_CHECKING:  # for annotations only: apply --help reads MAPS without torch
    from autoshrink.compression.unit_graph import UnitGraph

logger = logging.getLogger(__name__)

MAPS: tuple[str, ...] = ("depth",)
_NUMBER = re.compile(r"\d+")


def role(name: str) -> str:
    """A unit's role: its name with the numbers of enclosing modules replaced by ``#``.

    >>> role("layer2.3.conv1"), role("conv1"), role("features.3.0")
    ('layer#.#.conv1', 'conv1', 'features.#.0')
    """
    *parents, leaf = name.split(".")
    return ".".join([*(_NUMBER.sub("#", p) for p in parents), leaf])


def _position(index: int, count: int) -> float:
    return index / (count - 1) if count > 1 else 0.0


def _nearest(candidates: Sequence[tuple[float, str]], position: float) -> str:
    return min(candidates, key=lambda c: (abs(c[0] - position), c[0]))[1]


def map_depth(policy: Policy, graph: UnitGraph) -> Policy:
    """Stretch ``policy`` over the units of ``graph`` by role and relative position.

    Args:
        policy: The source policy. Its units must be in the source model's execution order,
            as every policy autoshrink writes is; ``UnitPolicy.channels`` (when recorded)
            is each source unit's width.
        graph: The target model's units.

    Returns:
        A policy with exactly the target's units, each recording its own channel count, and
        ``meta["mapped_from"]`` naming the source model and the map.

    Raises:
        PolicyError: If the source policy has no units, or the target has none.
    """
    if not policy.units:
        raise PolicyError("cannot map a policy with no units")
    if not graph.units:
        raise PolicyError("the target model has no prunable unit")
    names = list(policy.units)
    source = [
        (_position(i, len(names)), name, role(name), policy.units[name].channels)
        for i, name in enumerate(names)
    ]
    filters: tuple[Callable[[str, int, str | None, int | None], bool], ...] = (
        lambda r, c, sr, sc: sr == r and sc == c,
        lambda r, c, sr, sc: sr == r,
        lambda r, c, sr, sc: sc == c,
        lambda r, c, sr, sc: True,
    )
    units: dict[str, UnitPolicy] = {}
    for j, unit in enumerate(graph.units):
        position, unit_role = _position(j, len(graph.units)), role(unit.name)
        for keep in filters:
            candidates = [
                (pos, name) for pos, name, r, c in source if keep(unit_role, unit.c_out, r, c)
            ]
            if candidates:
                break
        chosen = policy.units[_nearest(candidates, position)]
        units[unit.name] = replace(chosen, channels=unit.c_out)
    layer_names = set(graph.layer_names)
    dropped = sorted(n for n in policy.layers if n not in layer_names)
    if dropped:
        logger.warning("the target has no layers %s: their bit overrides are dropped", dropped)
    layers = {n: b for n, b in policy.layers.items() if n in layer_names}
    source_model = policy.meta.get("model")
    meta = {**policy.meta, "mapped_from": {"model": source_model, "map": "depth"}}
    meta.pop("budgets", None)  # absolute limits of the source model mean nothing here
    return Policy(units=units, layers=layers, round_to=policy.round_to, meta=meta)
