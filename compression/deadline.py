"""A time limit on a block of code, by SIGALRM, that nests inside a caller's own limit.

A batch job runs under its timeout (and a benchmark under its own). Finding a model's
units has no time limit: what they are must not depend on the machine's load (see
``_tp_compat.GROUP_LIMITS``). An outer timer due first is left alone;
otherwise the outer timer and handler are put back, less the time spent, when the block
ends. Off the main thread, or where there is no ``setitimer``, the block runs unlimited.

>>> with deadline(5.0, lambda: TimeoutError("too slow")):
...     pass
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def deadline(seconds: float | None, expired: Callable[[], BaseException]) -> Iterator[None]:
    """Raise ``expired()`` inside the block once ``seconds`` have passed (None: no limit).

    Args:
        seconds: The limit.
        expired: Makes the exception raised when the limit is reached.
    """
    usable = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
    if not seconds or not usable:
        yield
        return
    outer, interval = signal.getitimer(signal.ITIMER_REAL)
    if outer and outer <= seconds:  # the caller's timer fires first: leave it alone
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise expired()

    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            left = max(outer - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, interval)
