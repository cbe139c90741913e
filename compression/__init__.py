"""autoshrink.compression: the compression engine (units, cost model, pruning, quantization).

This package knows nothing of reinforcement learning and stays light to import: it does
not import stable-baselines3, Ray or TensorBoard, and the engine's modules load on first
use of a name below. Functions named like their module (``cost.cost``, ``prune.prune``)
are imported from the module, since the package attribute is the module itself.

>>> from autoshrink.compression import build_units, uniform_policy  # doctest: +SKIP
>>> from autoshrink.compression.cost import cost  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoshrink.compression.errors import (
    AutoshrinkError,
    BudgetInfeasibleError,
    CheckpointError,
    DataError,
    DocumentError,
    PolicyError,
    UnsupportedModelError,
)

if TYPE_CHECKING:
    from autoshrink.compression.apply import apply_policy
    from autoshrink.compression.artifact import load_artifact, save_artifact
    from autoshrink.compression.cost import Cost
    from autoshrink.compression.models import ModelSpec, build_model
    from autoshrink.compression.policy import Policy, UnitPolicy, uniform_policy
    from autoshrink.compression.policy_map import map_depth
    from autoshrink.compression.units import UnitGraph, build_units

_LAZY = {
    "apply_policy": "apply",
    "load_artifact": "artifact",
    "save_artifact": "artifact",
    "Cost": "cost",
    "ModelSpec": "models",
    "build_model": "models",
    "Policy": "policy",
    "UnitPolicy": "policy",
    "uniform_policy": "policy",
    "map_depth": "policy_map",
    "UnitGraph": "units",
    "build_units": "units",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
