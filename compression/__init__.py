"""autoshrink.compression: the compression engine (units, cost model, pruning, quantization).

This package knows nothing of reinforcement learning and stays light to import: it does
not import stable-baselines3, Ray or TensorBoard.
"""

from autoshrink.compression.errors import (
    AutoshrinkError,
    BudgetInfeasibleError,
    CheckpointError,
    DataError,
    PolicyError,
    UnsupportedModelError,
)

__all__ = [
    "AutoshrinkError",
    "BudgetInfeasibleError",
    "CheckpointError",
    "DataError",
    "PolicyError",
    "UnsupportedModelError",
]
