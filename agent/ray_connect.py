"""Connecting to Ray, for a batch's jobs and a search's workers alike.

Ray is an optional extra (``autoshrink[ray]``): :func:`import_ray` says so in one line
where it is missing. :func:`init_ray` connects to a cluster, or starts a local Ray, and
turns every failure into one :class:`~autoshrink.compression.errors.AutoshrinkError` line.
An address of the form ``host:port`` (or ``ray://host:port``) is first tried with a plain
TCP connection, because Ray itself retries an unreachable head for minutes, printing as
it goes.

>>> reachable_problem("auto") is None
True
"""

from __future__ import annotations

import re
import socket
from typing import Any

from autoshrink.compression.errors import AutoshrinkError

RAY_EXTRA = "the ray backend needs Ray: pip install 'autoshrink[ray]'"
#: Seconds a TCP connection to a Ray head may take before it is called unreachable.
CONNECT_TIMEOUT_S = 5.0
_HOST_PORT = re.compile(r"^(?:ray://)?\[?([^\[\]/]+?)\]?:(\d{1,5})$")


def import_ray() -> Any:
    """Import Ray, or say in one line which extra to install."""
    try:
        import ray
    except ImportError:
        raise AutoshrinkError(RAY_EXTRA) from None
    return ray


def reachable_problem(address: str | None) -> str | None:
    """Why ``host:port`` does not answer a TCP connection (None: it does, or no host:port)."""
    match = _HOST_PORT.match(address or "")
    if match is None:
        return None
    host, port = match.group(1), int(match.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{host}:{port} does not answer ({exc.strerror or exc})"


def init_ray(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address`` (None: start a local one) unless connected.

    Returns:
        Whether this call made the connection (its caller shuts it down).

    Raises:
        AutoshrinkError: If Ray is missing or the cluster cannot be started or reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    where = f"the Ray cluster at {address}" if address else "Ray"
    problem = reachable_problem(address)
    if problem is not None:
        raise AutoshrinkError(f"cannot reach {where}: {problem}")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise AutoshrinkError(f"cannot start or reach {where}: {exc}") from exc
    return True
