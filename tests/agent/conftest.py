"""Agent-test fixtures: a toy env with the real API, and a tiny trained model for real envs.

Session-scoped fixtures run before the function-scoped cache fixture of tests/conftest.py,
so they point ``AUTOSHRINK_CACHE`` at the session cache themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.toy_env import ToyCompressionEnv

TEST_EPOCHS = 2


@pytest.fixture
def toy_env() -> ToyCompressionEnv:
    return ToyCompressionEnv(n_units=4)


@pytest.fixture(scope="session")
def smallcnn_checkpoint(cache_root: Path) -> Iterator[Path]:
    """A smallcnn trained for 2 epochs on digits, cached for the session."""
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.models import ModelSpec

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        _, path = baseline(ModelSpec("smallcnn", 10, 1), "digits", epochs=TEST_EPOCHS)
        yield path


@pytest.fixture
def make_env(smallcnn_checkpoint: Path) -> Callable[..., Any]:
    """Builds a real CompressionEnv on the tiny smallcnn; keyword arguments override."""
    from autoshrink.env.compression_env import CompressionEnv
    from autoshrink.env.config import EnvConfig

    def make(**overrides: Any) -> Any:
        settings = {"model": "smallcnn", "checkpoint": str(smallcnn_checkpoint)}
        settings |= {"finetune_steps": 0, **overrides}
        return CompressionEnv(EnvConfig(**settings))

    return make
