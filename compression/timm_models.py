"""timm models (``timm:NAME``) for the model zoo of :mod:`autoshrink.compression.models`.

timm is optional (``autoshrink[timm]``) and imported only when such a model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from autoshrink.compression.errors import CheckpointError, UnsupportedModelError

if TYPE_CHECKING:
    from autoshrink.compression.model_spec import ModelSpec


TIMM_PREFIX = "timm:"


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the weights hub answers at all (so a missing network fails at once)."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def timm_image_size(name: str, size: int) -> int | None:
    """The ``img_size`` to build model ``name`` with for inputs of side ``size``.

    ViT, DeiT, Swin and other timm models whose position embeddings or windows fix their
    input size (``fixed_input_size`` in their pretrained config) are built for ``size``
    when it is not their default; every other model, timm's or not, gets None.

    >>> timm_image_size("resnet20", 8) is None
    True
    """
    if not name.startswith(TIMM_PREFIX):
        return None
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name[len(TIMM_PREFIX) :])
    except Exception:  # no timm, or a name it does not know: building it says so
        return None
    if cfg is None or not getattr(cfg, "fixed_input_size", False):
        return None
    default = tuple(getattr(cfg, "input_size", ()))[-1:]
    return None if default == (size,) else int(size)


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
    if spec.image_size is not None:
        shape["img_size"] = spec.image_size
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
