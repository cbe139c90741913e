"""An SB3 replay buffer saved as plain arrays, and loaded back without unpickling.

A checkpoint holds the buffer's numpy arrays in ``replay_buffer.npz``, written and read with
``allow_pickle=False``, and its position, full flag and shape in ``replay_buffer.json``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.documents import read_document
from autoshrink.compression.json_write import write_document
from autoshrink.compression.versioned import unwrap

REPLAY_TYPE = "autoshrink.ReplayBuffer"
REPLAY_VERSION = 1
REPLAY_ARRAYS = "replay_buffer.npz"
REPLAY_META = "replay_buffer.json"


def _buffer_arrays(buffer: Any) -> dict[str, np.ndarray]:
    """The buffer's own numpy arrays by name (``observations.<key>`` for dict observations)."""
    out: dict[str, np.ndarray] = {}
    for name, value in vars(buffer).items():
        if isinstance(value, np.ndarray):
            out[name] = value
        elif (
            isinstance(value, dict)
            and value
            and all(isinstance(v, np.ndarray) for v in value.values())
        ):
            out.update({f"{name}.{key}": array for key, array in value.items()})
    return out


def save_replay_buffer(buffer: Any, folder: Path) -> None:
    """Write an SB3 replay buffer into ``folder`` as ``replay_buffer.npz`` + ``.json``.

    The arrays go to the ``.npz`` (numeric dtypes only); the position, the full flag and
    what the arrays must match go to the JSON.
    """
    arrays = _buffer_arrays(buffer)
    write_atomic(folder / REPLAY_ARRAYS, lambda p: _savez(p, arrays))
    meta = {
        "class": type(buffer).__name__,
        "pos": int(buffer.pos),
        "full": bool(buffer.full),
        "buffer_size": int(buffer.buffer_size),
        "n_envs": int(buffer.n_envs),
        "arrays": sorted(arrays),
    }
    write_document(folder / REPLAY_META, REPLAY_TYPE, REPLAY_VERSION, meta)


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` refusing object arrays (their .npy would hold a pickle)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


def read_replay_meta(folder: Path) -> dict[str, Any]:
    """The replay buffer's JSON of a checkpoint folder, checked to be one (arrays not read).

    Raises:
        CheckpointError: If the files are missing, or the JSON is not a replay buffer's.
    """
    from autoshrink.compression.errors import CheckpointError

    arrays_path, meta_path = folder / REPLAY_ARRAYS, folder / REPLAY_META
    if not arrays_path.exists() or not meta_path.exists():
        hint = ""
        if (folder / "replay_buffer.pkl").exists():
            hint = (
                ": it holds a pickled replay_buffer.pkl (an older autoshrink), which is never "
                "loaded; start the search again in a new folder"
            )
        raise CheckpointError(f"the checkpoint {folder} has no replay buffer{hint}")
    obj = read_document(meta_path, "replay buffer", error=CheckpointError)
    meta = unwrap(obj, REPLAY_TYPE, REPLAY_VERSION, f"replay buffer {meta_path}", CheckpointError)
    return meta


def load_replay_buffer(buffer: Any, folder: Path) -> None:
    """Fill ``buffer`` (built by SB3 for the same config) in place from ``folder``.

    The arrays are read with ``np.load(allow_pickle=False)`` and must have the names,
    shapes and dtypes of the buffer's own; ``pos`` and ``full`` come from the JSON.

    Raises:
        CheckpointError: If the files are missing, malformed or do not fit ``buffer``.
    """
    from autoshrink.compression.errors import CheckpointError

    arrays_path, meta_path = folder / REPLAY_ARRAYS, folder / REPLAY_META
    meta = read_replay_meta(folder)
    targets = _buffer_arrays(buffer)
    want = {
        "class": type(buffer).__name__,
        "buffer_size": int(buffer.buffer_size),
        "n_envs": int(buffer.n_envs),
        "arrays": sorted(targets),
    }
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in want.items()):
        raise CheckpointError(f"the replay buffer in {folder} does not fit the agent's: {want}")
    pos, full = meta.get("pos"), meta.get("full")
    if not _is_index(pos, int(buffer.buffer_size)) or not isinstance(full, bool):
        raise CheckpointError(f"{meta_path} has a bad position {pos!r} or full flag {full!r}")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(targets):
                raise CheckpointError(f"{arrays_path} holds the arrays {sorted(npz.files)}")
            loaded = {name: npz[name] for name in targets}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{arrays_path} is malformed: {exc}") from exc
    for name, value in loaded.items():
        target = targets[name]
        if value.shape != target.shape or value.dtype != target.dtype:
            raise CheckpointError(
                f"{arrays_path}: {name} is {value.dtype}{list(value.shape)}, the agent's "
                f"buffer {target.dtype}{list(target.shape)}"
            )
    for name, value in loaded.items():
        targets[name][...] = value
    buffer.pos, buffer.full = pos, full


def _is_index(value: Any, size: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < size
