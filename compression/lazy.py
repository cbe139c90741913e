"""Lazy package attributes: a facade that imports a name's module on first use.

Each package ``__init__`` names what it offers and where it lives, so that importing the
package stays light (``import autoshrink.agent`` does not pull in SB3):

>>> __getattr__ = lazy_attributes("autoshrink.compression", {"Cost": "autoshrink.compression.cost"})
>>> __getattr__("Cost").__name__
'Cost'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``where[name]`` and returns its ``name``.

    Args:
        package: The package's ``__name__``, for the error message.
        where: Attribute name -> the module (full dotted name) that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
