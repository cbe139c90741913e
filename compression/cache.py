"""Where autoshrink caches what it can make again: baselines, prepared datasets, latency tables.

``$AUTOSHRINK_CACHE`` if set, else ``$XDG_CACHE_HOME/autoshrink``, else
``~/.cache/autoshrink``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if env := os.environ.get("AUTOSHRINK_CACHE"):
        return Path(env).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "autoshrink"
    return Path.home() / ".cache" / "autoshrink"
