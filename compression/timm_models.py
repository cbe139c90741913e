"""timm models (``timm:NAME``) for the model zoo of :mod:`autoshrink.compression.models`.

timm is optional (``autoshrink[timm]``) and imported only when such a model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from autoshrink.compression.errors import CheckpointError, UnsupportedModelError

if TYPE_CHECKING:
    from autoshrink.compression.models import ModelSpec


TIMM_PREFIX = "timm:"


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the weights hub answers at all (so a missing network fails at once)."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _build_timm(spec: ModelSpec, hub_reachable: Callable[[], bool] = _hub_reachable) -> nn.Module:
    """A timm model by name: random weights unless ``spec.pretrained``.

    Args:
        spec: The model's spec; its name starts with :data:`TIMM_PREFIX`.
        hub_reachable: Whether the weights hub answers (checked only for pretrained weights).

    Returns:
        The timm model.

    Raises:
        UnsupportedModelError: If timm is not installed or does not know the name.
        CheckpointError: If pretrained weights cannot be fetched.
    """
    name = spec.name[len(TIMM_PREFIX) :]
    try:
        import timm
    except ImportError:
        raise UnsupportedModelError(
            f"model {spec.name!r} needs timm: pip install 'autoshrink[timm]'"
        ) from None
    if not timm.is_model(name):
        raise UnsupportedModelError(
            f"unknown timm model {name!r}; timm.list_models() names the ones it has"
        )
    shape: dict[str, Any] = {"num_classes": spec.num_classes, "in_chans": spec.in_channels}
    if not spec.pretrained:
        return timm.create_model(name, pretrained=False, **shape)
    if not hub_reachable():
        raise CheckpointError(
            f"cannot fetch pretrained weights for {spec.name}: the weights hub is not "
            "reachable from here; drop --pretrained or pass a checkpoint"
        )
    try:
        return timm.create_model(name, pretrained=True, **shape)
    except Exception as exc:  # hub, cache or file errors of every kind: one line
        raise CheckpointError(
            f"cannot fetch pretrained weights for {spec.name}: {type(exc).__name__}: {exc}"
        ) from exc
