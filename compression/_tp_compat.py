"""Running Torch-Pruning's grouping robustly (private to ``_depgraph`` and ``importance``).

Torch-Pruning maps channel indices through concats, splits and reshapes once per
``build_dependency`` and again on every ``get_pruning_group``; one node it fails on stops
every call, and some graphs make a single group take minutes. These helpers map node by
node (freezing what fails), skip the redundant re-mapping, and bound a group's size.
Nothing of Torch-Pruning is copied or changed on disk: its mapping function and its
group's ``add_dep`` are swapped only inside the ``with`` block.

The bound is a count, never a time: the same model gives the same groups on a quiet
machine and on a busy one, so an artifact's units do not depend on where it was made.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn
from torch_pruning import ops
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.group import Group

from autoshrink.compression._ops import grad_fn_name

_INDEX_MAPPERS = {
    ops.OPTYPE.CONCAT: index_mapping.update_concat_index_mapping,
    ops.OPTYPE.SPLIT: index_mapping.update_split_index_mapping,
    ops.OPTYPE.RESHAPE: index_mapping.update_reshape_index_mapping,
    ops.OPTYPE.UNBIND: index_mapping.update_unbind_index_mapping,
    ops.OPTYPE.EXPAND: index_mapping.update_expand_index_mapping,
    ops.OPTYPE.SLICE: index_mapping.update_slice_index_mapping,
}


_SHUFFLES = frozenset({"TransposeBackward0", "PermuteBackward0"})


def map_indices_per_node(dg: Any) -> set[int]:
    """Torch-Pruning's index-mapping step, node by node: the ids of the nodes it fails on.

    A channel shuffle (reshape, transpose, reshape) makes its reshape mapping divide by
    zero; every group through such a node is then frozen rather than the whole model.
    """
    failed: list[Any] = []
    for node in list(dg.module2node.values()):
        mapper = _INDEX_MAPPERS.get(node.type)
        if mapper is None:
            continue
        try:
            mapper(dg, node)
        except Exception:  # the failure itself is what we record
            failed.append(node)
            continue
        if node.type == ops.OPTYPE.RESHAPE and any(
            grad_fn_name(m) in _SHUFFLES for m in (*node.inputs, *node.outputs)
        ):  # a reshape around a transpose: a channel shuffle, whose mapping multiplies
            failed.append(node)
    broken: set[int] = set()
    for node in failed:  # after all mappings are set, so that none of them is set again
        broken.update(_cut_off(node))
    return broken


def _cut_off(node: Any, depth: int = 3) -> set[int]:
    """Stop every group at ``node`` and at the functional ops next to it (ids returned).

    The ops around a failed mapping (the other reshape and the transpose of a shuffle) carry
    mappings that multiply the indices on every pass; a group reaches them and stops.
    """
    seen, frontier = {id(node)}, [node]
    for _ in range(depth + 1):
        nxt = []
        for n in frontier:
            for dep in n.dependencies:
                dep.index_mapping[0] = _no_channels
            for m in (*n.inputs, *n.outputs):
                if id(m) not in seen and not isinstance(m.module, nn.Module):
                    seen.add(id(m))
                    nxt.append(m)
        frontier = nxt
    return seen


def _no_channels(idxs: list[Any]) -> list[Any]:
    return []


def _keep_mapping(dg: Any) -> set[int]:
    return set()


@contextlib.contextmanager
def tolerant_index_mapping(again: bool = True) -> Iterator[None]:
    """Within: Torch-Pruning maps channel indices node by node, skipping nodes it fails on.

    ``build_dependency`` and every ``get_pruning_group`` call redo the whole mapping, and
    one failing node would stop all of them; callers freeze the groups through such nodes.
    With ``again=False`` the mapping is not redone: right for groups of a graph that
    nothing has pruned since it was built, and most of the time a group takes.
    """
    original = index_mapping.update_index_mapping
    index_mapping.update_index_mapping = map_indices_per_node if again else _keep_mapping
    try:
        yield
    finally:
        index_mapping.update_index_mapping = original


#: How much one Torch-Pruning group may collect while it follows a root's channels:
#: (dependencies, channel indices over all of them). Ordinary groups collect tens to a
#: few hundred dependencies and under 100,000 indices; the largest seen that ends by
#: itself, timm's resnest14d's last split attention, 450 and 2.8 million (10 s, 1 GB).
#: DPN's dense dual-path concats make one group of timm's dpn68 collect 25,811
#: dependencies (one to two minutes on one core); an expand in timm's coatnet_nano_rw_224
#: at 224x224 makes one collect over 35 million indices in 66 dependencies (past 20 GB of
#: memory). Past either bound the walk stops and the group is frozen: counts, so the
#: outcome never depends on the clock or the load.
GROUP_LIMITS = (5_000, 8_000_000)


class GroupTooLarge(Exception):
    """A Torch-Pruning group collected more than its bounds allow."""


@contextlib.contextmanager
def bounded_group(limits: tuple[int, int]) -> Iterator[None]:
    """Within: building a Torch-Pruning group raises :class:`GroupTooLarge` past ``limits``.

    Torch-Pruning adds every (dependency, indices) pair it reaches to the group it builds
    (``Group.add_dep``), and once more when it merges them; counting those additions and
    their indices bounds the walk's time and memory by what the graph is. Enter it once
    per ``get_pruning_group`` call.
    """
    original = Group.add_dep
    added = [0, 0]

    def add_dep(group: Any, dep: Any, idxs: Any) -> None:
        added[0] += 1
        added[1] += len(idxs)
        if added[0] > limits[0]:
            raise GroupTooLarge(f"over {limits[0]} dependencies")
        if added[1] > limits[1]:
            raise GroupTooLarge(f"over {limits[1]} channel indices")
        original(group, dep, idxs)

    Group.add_dep = add_dep
    try:
        yield
    finally:
        Group.add_dep = original
