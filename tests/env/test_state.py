from __future__ import annotations

import numpy as np
import pytest
import torch

from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.units import build_units
from autoshrink.env.state import FEATURES, N_STATIC, Observer, decode_action, static_features

BITS = (2, 3, 4, 5, 6, 7, 8)


def test_bits_follow_haq_equal_width_bins() -> None:
    # HAQ: round(b_min - 0.5 + a * (b_max - b_min + 1)) for contiguous choices
    for a in np.linspace(0.0, 1.0, 1001):
        _, bits = decode_action([a], "quant", 0.2, BITS)
        haq = int(np.clip(np.floor(2 - 0.5 + a * 7 + 0.5), 2, 8))
        assert bits == haq, a


def test_keep_is_affine_in_the_action_and_modes_fix_the_rest() -> None:
    assert decode_action([0.0], "prune", 0.2, BITS) == (0.2, 32)
    assert decode_action([1.0], "prune", 0.2, BITS) == (1.0, 32)
    assert decode_action([0.5], "prune", 0.2, BITS)[0] == pytest.approx(0.6)
    assert decode_action([0.5], "quant", 0.2, BITS)[0] == 1.0
    assert decode_action([1.7, -3.0], "joint", 0.2, BITS) == (1.0, 2)  # clipped
    assert decode_action([0.0, 0.5], "joint", 0.2, (2, 8)) == (0.2, 8)


@pytest.mark.parametrize("bad", [[0.5], [0.1, 0.2, 0.3], [np.nan, 0.5]])
def test_malformed_actions_are_refused(bad: list[float]) -> None:
    with pytest.raises(ValueError, match="joint mode needs 2"):
        decode_action(bad, "joint", 0.2, BITS)


def test_static_features_are_normalised_per_column() -> None:
    model = build_model(ModelSpec("resnet20", num_classes=10, in_channels=1))
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    feats = static_features(graph)
    assert feats.shape == (len(graph.units), N_STATIC)
    assert feats.min() >= 0.0 and feats.max() <= 1.0
    assert feats[0, 0] == 0.0 and feats[-1, 0] == 1.0  # index
    c_out = np.array([u.c_out for u in graph.units])
    assert np.array_equal(np.argsort(feats[:, 4], kind="stable"), np.argsort(c_out, kind="stable"))
    assert np.all(feats[:, 1] == 0.0)  # every unit of resnet20 is a conv


def test_observation_dynamic_features() -> None:
    model = build_model(ModelSpec("smallcnn", num_classes=10, in_channels=1))
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    baseline = {"flops": 1000.0, "size": 4000.0}
    obs = Observer(graph, baseline, {"flops": 500.0}, BITS)
    low = {"flops": 300.0, "size": 1000.0}
    high = {"flops": 800.0, "size": 2000.0}
    vec = obs.observe(1, low, high, prev_keep=0.5, prev_bits=5)
    assert vec.shape == (len(FEATURES),) and vec.dtype == np.float32
    named = dict(zip(FEATURES, vec.tolist(), strict=True))
    assert named["macs_done"] == pytest.approx(0.8)
    assert named["bytes_done"] == pytest.approx(0.5)
    assert named["budget_slack"] == pytest.approx((500 - 300) / (800 - 300))
    assert named["prev_keep"] == 0.5
    assert named["prev_bits"] == pytest.approx(0.5)
    assert named["macs_rest"] == 1.0  # clipped: unit MACs exceed the made-up baseline
    free = Observer(graph, baseline, {}, BITS).observe(0, low, high, 1.0, 32)
    assert free[FEATURES.index("budget_slack")] == 1.0
    assert free[FEATURES.index("prev_bits")] == 1.0
