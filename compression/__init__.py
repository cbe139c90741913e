"""autoshrink.compression: the compression engine (units, cost model, pruning, quantization).

This package knows nothing of reinforcement learning and stays light to import: it does
not import stable-baselines3, Ray or TensorBoard, and the engine's modules load on first
use of a name below. Functions named like their module (``cost.cost``, ``prune.prune``)
are imported from the module, since the package attribute is the module itself.

>>> from autoshrink.compression import build_units, uniform_policy  # doctest: +SKIP
>>> from autoshrink.compression.cost import cost  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autoshrink.compression.errors import (
    AutoshrinkError,
    BudgetInfeasibleError,
    CheckpointError,
    DataError,
    DocumentError,
    PolicyError,
    UnsupportedModelError,
)
from autoshrink.compression.lazy import lazy_attributes

if TYPE_CHECKING:
    from autoshrink.compression.apply import apply_policy
    from autoshrink.compression.artifact import load_artifact, save_artifact
    from autoshrink.compression.cost import Cost
    from autoshrink.compression.models import ModelSpec, build_model
    from autoshrink.compression.policy import Policy, UnitPolicy, uniform_policy
    from autoshrink.compression.policy_map import map_depth
    from autoshrink.compression.units import UnitGraph, build_units

_LAZY = {
    "apply_policy": "autoshrink.compression.apply",
    "load_artifact": "autoshrink.compression.artifact",
    "save_artifact": "autoshrink.compression.artifact",
    "Cost": "autoshrink.compression.cost",
    "ModelSpec": "autoshrink.compression.models",
    "build_model": "autoshrink.compression.models",
    "Policy": "autoshrink.compression.policy",
    "UnitPolicy": "autoshrink.compression.policy",
    "uniform_policy": "autoshrink.compression.policy",
    "map_depth": "autoshrink.compression.policy_map",
    "UnitGraph": "autoshrink.compression.units",
    "build_units": "autoshrink.compression.units",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "AutoshrinkError",
    "BudgetInfeasibleError",
    "CheckpointError",
    "Cost",
    "DataError",
    "DocumentError",
    "ModelSpec",
    "Policy",
    "PolicyError",
    "UnitGraph",
    "UnitPolicy",
    "UnsupportedModelError",
    "apply_policy",
    "build_model",
    "build_units",
    "load_artifact",
    "map_depth",
    "save_artifact",
    "uniform_policy",
]
