"""Running a user's model without leaving a trace on it (private to ``units``).

Tracing runs forward passes, some with gradients on. Some models keep what a forward
computed: timm's LeViT, EfficientFormer, EfficientFormerV2 and TinyViT cache their
attention biases in a plain dict on the first eval forward. A cache filled while tracing
holds a tensor tied to the autograd graph, so the model can no longer be deep-copied (nor
pruned, which copies it), and a pruned copy would read biases of the full width.
:func:`untouched` puts every module back as it was: its attributes, the contents of its
dicts, lists and sets (parameters, buffers, submodules and hooks included), and the
values of buffers a forward changed in place. It is general: no model is named here.

>>> from torch import nn
>>> m = nn.Linear(2, 2)
>>> with untouched(m):
...     m.cache = {"cpu": m.weight * 2}
>>> hasattr(m, "cache")
False
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class _Saved:
    """One module's state as it was: its attributes and what its containers held."""

    module: nn.Module
    attrs: dict[str, Any]
    contents: dict[str, Any]
    buffers: dict[str, tuple[torch.Tensor, int, torch.Tensor]]


def _contents(value: Any) -> Any:
    """A shallow copy of a container's contents (None for anything else)."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list | set):
        return list(value)
    return None


def _save(module: nn.Module) -> _Saved:
    attrs = dict(module.__dict__)
    contents = {k: c for k, v in attrs.items() if (c := _contents(v)) is not None}
    with torch.no_grad():
        buffers = {
            k: (b, b._version, b.detach().clone())
            for k, b in module._buffers.items()
            if b is not None
        }
    return _Saved(module, attrs, contents, buffers)


def _put_back(value: Any, items: list[Any]) -> None:
    """Refill a container in place with the items it held."""
    if isinstance(value, dict):
        value.clear()
        value.update(items)
    elif isinstance(value, list):
        value[:] = items
    else:
        value.clear()
        value.update(items)


def _restore(saved: _Saved) -> None:
    state = saved.module.__dict__
    for key in [k for k in state if k not in saved.attrs]:
        del state[key]
    state.update(saved.attrs)
    for key, items in saved.contents.items():
        _put_back(state[key], items)
    with torch.no_grad():
        for tensor, version, value in saved.buffers.values():
            if tensor._version != version:
                tensor.copy_(value)


@contextlib.contextmanager
def untouched(model: nn.Module) -> Iterator[None]:
    """Within, ``model`` may run and change; after, every module is as it was before.

    Args:
        model: The model; its modules are snapshot on entry (buffers copied).
    """
    saved = [_save(m) for m in model.modules()]
    try:
        yield
    finally:
        for item in saved:
            _restore(item)
