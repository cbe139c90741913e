"""autoshrink.env: the Gymnasium side of the search.

Importing this package registers ``autoshrink/Compress-v3`` (and ``-v2``, the same env,
for code written before the ``deep`` and ``sparse`` modes):

>>> import gymnasium as gym
>>> import autoshrink.env
>>> "autoshrink/Compress-v3" in gym.registry and "autoshrink/Compress-v2" in gym.registry
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym

from autoshrink.compression.lazy import lazy_attributes
from autoshrink.env.config import Budget, EnvConfig, parse_budget

if TYPE_CHECKING:
    from autoshrink.env.compression_env import CompressionEnv
    from autoshrink.env.evaluator import Evaluation, Evaluator
    from autoshrink.env.wrappers import DiscretizeAction

ENV_ID = "autoshrink/Compress-v3"

for _id in (ENV_ID, "autoshrink/Compress-v2"):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point="autoshrink.env.compression_env:CompressionEnv")

_LAZY = {
    "CompressionEnv": "autoshrink.env.compression_env",
    "Evaluator": "autoshrink.env.evaluator",
    "Evaluation": "autoshrink.env.evaluator",
    "DiscretizeAction": "autoshrink.env.wrappers",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "ENV_ID",
    "Budget",
    "CompressionEnv",
    "DiscretizeAction",
    "EnvConfig",
    "Evaluation",
    "Evaluator",
    "parse_budget",
]
