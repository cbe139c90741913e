from __future__ import annotations

import pytest

from autoshrink.compression.timing import (
    SPREAD_LIMIT,
    FakeClock,
    compare,
    relative_spread,
    time_interleaved,
)


def test_interleaved_rounds_alternate_order_and_give_exact_fake_timings() -> None:
    clock = FakeClock()
    order: list[str] = []

    def model(name: str, seconds: float):
        run = clock.model(seconds)

        def call(x: object) -> None:
            order.append(name)
            run(x)

        return call

    got = time_interleaved(
        {"a": model("a", 0.002), "b": model("b", 0.001)}, None, rounds=4, warmup=1, clock=clock
    )
    assert got["a"] == pytest.approx((0.002,) * 4) and got["b"] == pytest.approx((0.001,) * 4)
    # warm-up, then blocks of >= 5 ms (3 calls of a, 5 of b), the order reversed every round
    timed = order[2:]
    blocks = [timed[i] for i in (0, 3, 8, 13, 16, 19, 24)]
    assert blocks == ["a", "b", "b", "a", "a", "b", "b"]


def test_comparison_reports_median_ratio_and_spread() -> None:
    clock = FakeClock()
    c = compare(clock.model(0.004), clock.model(0.001), None, rounds=7, clock=clock)
    assert c.ratio == pytest.approx(0.25) and c.spread == pytest.approx(0.0)
    assert c.reference.median == pytest.approx(0.004)
    report = c.to_dict()
    assert {"ratio", "spread", "rounds", "warning"} <= set(report)
    assert report["baseline"]["spread"] == pytest.approx(0.0) and report["warning"] is None


def test_a_noisy_ratio_warns_in_one_line() -> None:
    clock = FakeClock()
    steps = iter([0.001, 0.003] * 50)

    def jumpy(x: object) -> None:
        clock.now += next(steps)

    c = compare(clock.model(0.002), jumpy, None, rounds=8, warmup=1, clock=clock)
    assert c.spread > SPREAD_LIMIT and c.noisy
    warning = c.warning()
    assert warning is not None and "\n" not in warning and "too noisy" in warning


def test_relative_spread_is_the_interquartile_range_over_the_median() -> None:
    assert relative_spread([1.0, 1.0, 1.0]) == 0.0
    assert relative_spread([0.9, 1.0, 1.1, 1.0, 1.0]) == pytest.approx(0.0)
    assert relative_spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0 / 3.0)
    assert relative_spread([5.0]) == 0.0


@pytest.mark.parametrize("block_s", [0.001, 0.05])
def test_timing_gives_back_what_runners_drew_from_the_global_generator(block_s: float) -> None:
    """However many calls the clock makes a round take, training after it sees one stream.

    Two measurements whose blocks differ in calls (as on a quiet and a busy machine) must
    leave the global generator as they found it.
    """
    import torch

    clock = FakeClock()
    run = clock.model(0.001)

    def draws(x: object) -> None:
        torch.rand(3)  # e.g. a runner that builds its input, or a layer's init
        run(x)

    torch.manual_seed(7)
    time_interleaved({"a": draws}, None, rounds=3, warmup=1, clock=clock, min_block_s=block_s)
    after = torch.rand(4)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(4))


def test_a_comparison_timed_on_an_oversubscribed_machine_is_flagged() -> None:
    from dataclasses import replace

    clock = FakeClock()
    quiet = compare(clock.model(0.002), clock.model(0.001), None, rounds=5, clock=clock)
    assert quiet.warning() is None and quiet.load is None  # a fake clock measured nothing
    busy = replace(quiet, load=9.0, cores=2)
    assert busy.oversubscribed and "oversubscribed (load 9.0 on 2" in (busy.warning() or "")
    assert busy.to_dict()["load"] == 9.0
    assert not replace(quiet, load=1.5, cores=2).oversubscribed
