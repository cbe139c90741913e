from __future__ import annotations

import numpy as np
import pytest

from autoshrink.agent.noise import TruncatedNormalActionNoise


def test_zero_during_warmup_then_decays():
    noise = TruncatedNormalActionNoise(2, sigma=0.5, decay=0.9, warmup_episodes=2, seed=0)
    assert noise.current_sigma == 0.0
    assert np.all(noise() == 0)
    noise.reset()
    noise.reset()  # no draw since the last reset (SB3 resets at every learn() start too)
    assert noise.episodes == 1
    noise()
    noise.reset()
    assert noise.current_sigma == pytest.approx(0.5)
    noise()
    noise.reset()
    assert noise.current_sigma == pytest.approx(0.45)


@pytest.mark.parametrize("centre", [-1.0, -0.3, 0.0, 0.9, 1.0])
def test_bound_noise_stays_inside_the_action_bounds_and_is_not_clipped(centre):
    noise = TruncatedNormalActionNoise(3, sigma=0.5, seed=1)
    noise.mean_fn = lambda: np.full((1, 3), centre)
    samples = np.stack([centre + noise() for _ in range(2000)])
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    # truncation, not clipping: almost no sample sits exactly on a bound
    assert np.mean(np.isclose(np.abs(samples), 1.0)) < 0.01
    # sigma 0.5 of a width-1 space is 1.0 in SB3's [-1, 1] space: wide spread
    assert samples.std() > 0.3


def test_unbound_noise_is_truncated_at_two_sigma():
    noise = TruncatedNormalActionNoise(4, sigma=0.1, seed=2)
    draws = np.stack([noise() for _ in range(500)])
    assert np.abs(draws).max() <= 2 * 0.1 * 2 + 1e-6
    assert draws.std() > 0.05


def test_state_round_trip_reproduces_draws():
    a = TruncatedNormalActionNoise(2, sigma=0.3, seed=3)
    a()
    a.reset()
    a()
    state = a.state_dict()
    first = [a() for _ in range(3)]
    b = TruncatedNormalActionNoise(2, sigma=0.3, seed=99)
    b.load_state_dict(state)
    assert all(np.array_equal(x, y) for x, y in zip(first, [b() for _ in range(3)], strict=True))
    assert b.episodes == 1


def test_pickling_drops_the_bound_model():
    import pickle

    noise = TruncatedNormalActionNoise(2, sigma=0.3, seed=3)
    noise.mean_fn = lambda: np.zeros(2)
    clone = pickle.loads(pickle.dumps(noise))
    assert clone.mean_fn is None and clone.sigma == 0.3
