"""Every random generator a search draws from, saved and restored, so a resume is exact.

A search draws from Python's and numpy's global generators (SB3 samples replay minibatches
with ``np.random``), torch's (SAC's and TD3's sampling, shuffled loaders), the agent's
action space (random warm-up actions) and the exploration noise (saved with the agent).
SB3's ``load`` re-seeds the action space and the global generators with the saved seed,
so a resumed search would replay draws the killed one had already made. A checkpoint
therefore stores each generator's state here, and a resume puts them back after loading.

>>> state = capture(None)
>>> restore(None, state)  # the global generators continue exactly where they were
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autoshrink.compression.documents import read_document
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.json_write import write_document
from autoshrink.compression.versioned import unwrap

RNG_TYPE = "autoshrink.RandomState"
RNG_VERSION = 1
RNG_FILE = "rng.json"


def capture(agent: Any) -> dict[str, Any]:
    """The state of every generator, JSON-ready (``agent`` may be None or a baseline)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
    }
    space = getattr(agent, "action_space", None)
    if space is not None and getattr(space, "_np_random", None) is not None:
        state["action_space"] = space.np_random.bit_generator.state
    return state


def restore(agent: Any, state: dict[str, Any]) -> None:
    """Put back what :func:`capture` returned.

    Raises:
        CheckpointError: If the state is malformed.
    """
    try:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        space = getattr(agent, "action_space", None)
        if "action_space" in state and space is not None:
            space.np_random.bit_generator.state = state["action_space"]
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, RuntimeError) as exc:
        # OverflowError: an integer too large for a C word, e.g. one of 90 digits
        raise CheckpointError(f"the checkpoint's random state is malformed: {exc}") from exc


def save(agent: Any, folder: Path) -> None:
    """Write the generators' state into a checkpoint folder."""
    write_document(folder / RNG_FILE, RNG_TYPE, RNG_VERSION, capture(agent))


def read(folder: Path) -> dict[str, Any] | None:
    """The generators' state saved in a checkpoint folder (None if it has none), checked.

    It is checked by restoring it and putting the present state back, so a state that
    reads is a state that restores.

    Raises:
        CheckpointError: If the file is unreadable or malformed.
    """
    path = folder / RNG_FILE
    if not path.is_file():
        return None
    obj = read_document(path, "random state", error=CheckpointError)
    state = unwrap(obj, RNG_TYPE, RNG_VERSION, f"random state {path}", CheckpointError)
    present = capture(None)
    try:
        restore(None, state)
    finally:
        restore(None, present)
    return state


def load(agent: Any, folder: Path) -> bool:
    """Restore the generators from a checkpoint folder; False if it has no such file.

    Raises:
        CheckpointError: If the file is unreadable or malformed.
    """
    state = read(folder)
    if state is not None:
        restore(agent, state)
    return state is not None
