"""Where the engine runs: the torch device a search's models and data go to, and its threads.

A device is named as a user writes it: ``auto`` (CUDA when available, else the CPU), ``cpu``,
``cuda`` or ``cuda:N``. :func:`check_device` checks the spelling alone, so a config can hold
``auto`` and still read on any machine; :func:`resolve_device` checks it against this
machine and gives the ``torch.device`` to use, or one :class:`DeviceError` line:

>>> check_device("cuda:1")
'cuda:1'
>>> resolve_device("cpu")
device(type='cpu')
>>> device_problem("tpu")
"device must be auto, cpu, cuda or cuda:N, got 'tpu'"

Models live on the CPU between evaluations (tracing, costs, latency and artifacts stay
there); each evaluation copies its compressed model to the device (:func:`on_device`).
Everything written to disk is taken from the CPU, so files do not depend on the device.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.names import MAX_THREADS

if TYPE_CHECKING:  # torch is imported where used: ``--help`` builds the flags without it
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

#: The device every config defaults to: CUDA where there is one, else the CPU.
DEFAULT_DEVICE = "auto"
#: The forms a device is given in, for ``--help`` and error messages.
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda)$|^cuda:(\d{1,4})$")


class DeviceError(AutoshrinkError):
    """A device is misspelt, or names one this machine does not have."""


def device_problem(name: object) -> str | None:
    """What is wrong with the spelling of device ``name``, or None when it is well formed."""
    if isinstance(name, str) and _DEVICE.match(name):
        return None
    return f"device must be {DEVICE_FORMS}, got {name!r}"


def check_device(name: object) -> str:
    """``name`` if it is a well-formed device name (not checked against this machine).

    Raises:
        DeviceError: If it is not one of ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
    """
    problem = device_problem(name)
    if problem is not None:
        raise DeviceError(problem)
    return str(name)


def resolve_device(name: str | torch.device = DEFAULT_DEVICE) -> torch.device:
    """The ``torch.device`` that ``name`` means on this machine.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``.

    Returns:
        ``cpu`` or ``cuda:N`` (``cuda`` is the current CUDA device, ``cuda:0`` at first).

    Raises:
        DeviceError: On a misspelt name, ``cuda`` without CUDA, or ``cuda:N`` past the count.
    """
    import torch

    text = str(name)
    check_device(text)
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {text!r} needs CUDA, and this machine has none: use cpu")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if text in ("auto", "cuda") else int(text[5:])
    if index >= count:
        raise DeviceError(
            f"device {text!r} does not exist: this machine has {count} CUDA device(s), "
            f"cuda:0 to cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what a run header says."""
    import torch

    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


def pins_memory(device: torch.device) -> bool:
    """Whether loaders feeding ``device`` pin their batches (CUDA: faster, async copies)."""
    return device.type == "cuda"


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` if it is on ``device`` already, else a copy of it moved there.

    The original is never moved: the CPU copy stays the master that is pruned and saved.
    """
    param = next(model.parameters(), None)
    if param is not None and param.device == device:
        return model
    return copy.deepcopy(model).to(device)


#: Where Linux states a cgroup's CPU quota (v2, then v1's quota and period).
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"
CGROUP_V1 = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read(256).strip()
    except (OSError, ValueError):
        return None


def cgroup_cores() -> float | None:
    """The CPUs this process's cgroup quota allows (``2.5`` = 250 ms a 100 ms period), or None.

    None where no quota is set (``max``) or none can be read: not Linux, no cgroup file.
    """
    text = _read(CGROUP_CPU_MAX)
    parts = text.split() if text else [_read(CGROUP_V1[0]) or "", _read(CGROUP_V1[1]) or ""]
    try:
        quota, period = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):  # "max": no quota
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cores() -> int:
    """The CPU cores this process may use: its affinity, capped by its cgroup's CPU quota.

    Never the load of the moment: results of a computation depend on its thread count, so
    the threads a run chooses by default must not change with what else is running
    (:func:`load_warning` says when the machine is busy).
    """
    if hasattr(os, "sched_getaffinity"):
        cores = max(1, len(os.sched_getaffinity(0)))
    else:
        cores = max(1, os.cpu_count() or 1)
    quota = cgroup_cores()
    return cores if quota is None else max(1, min(cores, int(quota)))


def machine_load() -> float | None:
    """The one-minute load average, or None where the system keeps none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def load_warning(threads: int, load: float | None = None) -> str | None:
    """One line when the machine is busier than its cores, else None.

    ``threads`` are the torch threads about to run. Beside a load above the cores, several
    threads per process wait on each other (a search ran 13x slower at 2 threads than at
    1 on a 2-core machine at load 8), so the line suggests ``--threads 1``.

    >>> load_warning(2, load=1e6)[:25]
    'the machine is busy (load'
    >>> load_warning(2, load=0.0) is None
    True
    """
    load = machine_load() if load is None else load
    cores = available_cores()
    if load is None or load <= cores:
        return None
    fewer = "--threads 1" if threads > 1 else "fewer workers"
    return (
        f"the machine is busy (load {load:.1f} on {cores} usable cores): {threads} torch "
        f"thread(s) will wait on each other; {fewer} may run much faster, and timings "
        "taken now are flagged"
    )


def threads_problem(threads: object, name: str = "threads") -> str | None:
    """What is wrong with a thread count (None, or an integer from 1 to MAX_THREADS).

    Torch crashes on absurd counts (``--threads 100000000`` segfaulted).

    >>> threads_problem(0)
    'threads must be between 1 and 1,024, got 0'
    """
    if threads is None or (
        isinstance(threads, int) and not isinstance(threads, bool) and 1 <= threads <= MAX_THREADS
    ):
        return None
    return f"{name} must be between 1 and {MAX_THREADS:,}, got {threads!r}"


def default_threads(workers: int = 1) -> int:
    """Torch threads for each of ``workers`` processes: the cores shared out, at least 1.

    >>> default_threads(workers=10_000)
    1
    """
    return max(1, available_cores() // max(1, workers))


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` torch intra-op threads, then restore torch's count."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def set_threads(threads: int | None = None, workers: int = 1) -> int:
    """Set torch's intra-op threads: ``threads``, or :func:`default_threads` of ``workers``.

    Returns:
        The threads set.

    Raises:
        AutoshrinkError: If ``threads`` is given and not between 1 and ``MAX_THREADS``.
    """
    import torch

    if threads is not None and (problem := threads_problem(threads)) is not None:
        raise AutoshrinkError(problem)
    chosen = default_threads(workers) if threads is None else int(threads)
    torch.set_num_threads(chosen)
    logger.debug("torch intra-op threads: %d", chosen)
    return chosen
