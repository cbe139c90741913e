"""Latency measurements a ratio can be read from: interleaved rounds, warm-up, median, spread.

Timing one model and then another compares two moments of a busy machine as much as two
models. Here the models are timed *interleaved*: every round times each of them once (a
block of calls, so that fast models are not timed at the clock's resolution), in an order
reversed every other round, after a warm-up. What is reported:

- per model, the median seconds of one call over the rounds, and the **spread**: the
  interquartile range of the rounds over their median (0.05 = the middle half of the
  rounds lies within 5 % of the median);
- for a pair, the median of the per-round ratios and their spread. A ratio whose spread is
  above :data:`SPREAD_LIMIT` cannot be read to two digits: :meth:`Comparison.warning` says so
  in one line.

>>> clock = FakeClock()
>>> fast, slow = clock.model(0.001), clock.model(0.003)
>>> c = compare(fast, slow, None, rounds=5, clock=clock)
>>> round(c.ratio, 6), c.spread, c.warning() is None
(3.0, 0.0, True)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from autoshrink.compression.device import available_cores, machine_load

Runner = Callable[[Any], Any]
Clock = Callable[[], float]

#: Rounds of a measurement, and warm-up calls of each model before them.
DEFAULT_ROUNDS = 15
WARMUP = 3
#: A round times each model for at least this long (a block of calls).
MIN_BLOCK_S = 0.005
#: A ratio's spread above this (relative interquartile range) is too noisy to read.
SPREAD_LIMIT = 0.10


def relative_spread(values: list[float]) -> float:
    """Interquartile range over median (0 for fewer than 2 values or a zero median)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    median = statistics.median(values)
    return (q3 - q1) / median if median > 0 else 0.0


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one model over the rounds of a measurement.

    Args:
        median: Median seconds of one call.
        spread: Interquartile range of the rounds over their median.
        samples: Seconds of one call, per round.
    """

    median: float
    spread: float
    samples: tuple[float, ...] = field(repr=False)

    def to_dict(self) -> dict[str, float]:
        """``{"median_s", "spread"}``: the JSON-ready summary."""
        return {"median_s": self.median, "spread": self.spread}


@dataclass(frozen=True)
class Comparison:
    """A candidate against a reference, timed interleaved.

    Args:
        reference: The reference's timing (the baseline).
        candidate: The candidate's timing (the compressed model).
        ratio: Median over rounds of candidate / reference seconds.
        spread: Interquartile range of those per-round ratios over their median.
        rounds: Rounds measured.
        load: The machine's one-minute load average when the measurement ended (None where
            unknown, or for a fake clock).
        cores: The cores this process could use then.
    """

    reference: Timing
    candidate: Timing
    ratio: float
    spread: float
    rounds: int
    load: float | None = None
    cores: int | None = None

    @property
    def noisy(self) -> bool:
        """Whether the ratio's spread is above :data:`SPREAD_LIMIT`."""
        return self.spread > SPREAD_LIMIT

    @property
    def oversubscribed(self) -> bool:
        """Whether the machine was busier than its cores: even a small spread may mislead."""
        return self.load is not None and self.cores is not None and self.load > self.cores

    def warning(self) -> str | None:
        """One line when the ratio is too noisy to read or was timed on a busy machine."""
        if self.noisy:
            return (
                f"latency ratio {self.ratio:.3f} has a spread of {self.spread:.0%} over "
                f"{self.rounds} rounds (above {SPREAD_LIMIT:.0%}): too noisy to read; "
                "measure again on a quiet machine"
            )
        if self.oversubscribed:
            return (
                f"latency ratio {self.ratio:.3f} (spread {self.spread:.0%}) was timed while the "
                f"machine was oversubscribed (load {self.load:.1f} on {self.cores} usable "
                "cores): measure again on a quiet machine"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: both timings, the ratio, its spread, rounds, warning."""
        return {
            "baseline": self.reference.to_dict(),
            "compressed": self.candidate.to_dict(),
            "ratio": self.ratio,
            "spread": self.spread,
            "rounds": self.rounds,
            "load": self.load,
            "warning": self.warning(),
        }


def _block(run: Runner, x: Any, calls: int, clock: Clock) -> float:
    """Seconds per call of ``calls`` back-to-back calls."""
    start = clock()
    for _ in range(calls):
        run(x)
    return (clock() - start) / calls


def time_interleaved(
    runners: Mapping[str, Runner],
    x: Any,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = WARMUP,
    clock: Clock = time.perf_counter,
    min_block_s: float = MIN_BLOCK_S,
) -> dict[str, tuple[float, ...]]:
    """Seconds per call of each runner, per round, timed interleaved.

    Args:
        runners: Callables on ``x`` by name (models, compiled models, onnxruntime sessions).
        x: The input every runner is called with.
        rounds: Rounds; each times every runner once, the order reversed every other round.
        warmup: Untimed calls of each runner first (the last one sizes its block).
        clock: Seconds now (tests pass a fake one).
        min_block_s: A runner is called often enough per round to take at least this long.

    Returns:
        Per runner, ``rounds`` samples of seconds per call.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(runners)
    calls: dict[str, int] = {}
    # How many calls a round makes depends on the clock: whatever a runner draws from the
    # global generator is given back, so that no later training sees the machine's load.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for name in names:
            seconds = 0.0
            for _ in range(max(warmup, 1)):
                seconds = _block(runners[name], x, 1, clock)
            calls[name] = max(1, math.ceil(min_block_s / seconds)) if seconds > 0 else 1
        samples: dict[str, list[float]] = {name: [] for name in names}
        for i in range(rounds):
            for name in names if i % 2 == 0 else reversed(names):
                samples[name].append(_block(runners[name], x, calls[name], clock))
    return {name: tuple(values) for name, values in samples.items()}


def timing(samples: tuple[float, ...]) -> Timing:
    """The median and spread of per-round samples."""
    return Timing(statistics.median(samples), relative_spread(list(samples)), samples)


def compare(
    reference: Runner,
    candidate: Runner,
    x: Any,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = WARMUP,
    clock: Clock = time.perf_counter,
) -> Comparison:
    """Time ``candidate`` against ``reference`` interleaved; see :func:`time_interleaved`."""
    got = time_interleaved({"ref": reference, "cand": candidate}, x, rounds, warmup, clock)
    ratios = [c / r for r, c in zip(got["ref"], got["cand"], strict=True) if r > 0]
    ratio = statistics.median(ratios) if ratios else math.nan
    real = clock is time.perf_counter  # a fake clock measures nothing of this machine
    return Comparison(
        timing(got["ref"]),
        timing(got["cand"]),
        ratio,
        relative_spread(ratios),
        rounds,
        load=machine_load() if real else None,
        cores=available_cores() if real else None,
    )


class FakeClock:
    """A clock that only its fake models move: deterministic timings for tests and docs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        """The fake time in seconds."""
        return self.now

    def model(self, seconds: float) -> Runner:
        """A runner that takes ``seconds`` of fake time per call."""

        def run(x: Any) -> None:
            self.now += seconds

        return run
