"""Shared, session-wide pieces for env tests: the digits splits and tiny trained baselines.

Baselines are trained with few epochs into the session's isolated cache; module- and
session-scoped fixtures run before the function-scoped cache fixture of tests/conftest.py,
so they point ``AUTOSHRINK_CACHE`` at the session cache themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn

from autoshrink.compression.baselines import baseline
from autoshrink.compression.data import DataSplits, load_dataset
from autoshrink.compression.models import ModelSpec

TEST_EPOCHS = 2


@pytest.fixture(scope="session")
def session_cache(cache_root: Path) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        yield cache_root


@pytest.fixture(scope="session")
def digits(session_cache: Path) -> DataSplits:
    return load_dataset("digits")


def _trained(name: str, data: DataSplits) -> nn.Module:
    spec = ModelSpec(name, data.num_classes, data.in_channels)
    model, _ = baseline(spec, "digits", epochs=TEST_EPOCHS, splits=data)
    return model


@pytest.fixture(scope="session")
def smallcnn(digits: DataSplits) -> nn.Module:
    return _trained("smallcnn", digits)


@pytest.fixture(scope="session")
def resnet20(digits: DataSplits) -> nn.Module:
    return _trained("resnet20", digits)
