"""A busy machine, simulated: Torch-Pruning's grouping of chosen layers is slow.

Units must not depend on it. Code that bounded a group by time (a 15 s deadline, once)
froze a unit whose grouping took longer, so what a model's units were depended on the
machine's load; ``time_limit`` is what such a limit would be set to in the simulation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import torch_pruning as tp
from torch import nn

from autoshrink.compression import _depgraph


def make_busy(
    monkeypatch: pytest.MonkeyPatch, slow: Callable[[nn.Module], bool], seconds: float = 0.3
) -> None:
    """Make grouping the channels of every module ``slow`` picks take ``seconds`` longer.

    Any time limit a grouping might have is set well below ``seconds`` (none exists: that
    is the point), so a grouping that waited for the clock would show it.
    """
    real = tp.DependencyGraph.get_pruning_group

    def get_pruning_group(self: Any, module: nn.Module, fn: Any, idxs: Any) -> Any:
        if slow(module):
            time.sleep(seconds)  # the machine is busy: this one takes long
        return real(self, module, fn, idxs)

    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", get_pruning_group)
    monkeypatch.setattr(_depgraph, "GROUP_TIME_LIMIT", seconds / 3, raising=False)
