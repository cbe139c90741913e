"""A checkpoint's seal: what a resume checks before it trusts the files it continues from.

A resume must either equal the search that was never stopped, or be refused. Files of a
run folder can be lost or changed between the two: ``rng.json`` deleted, ``agent.zip``
replaced by another search's, ``state.json`` edited, ``config.json`` given another seed, a
checkpoint folder replaced by a link to another run's. Each would resume *another*
search, silently.

So every checkpoint is sealed when it becomes current: ``latest.json`` records the SHA-256
of every file in the checkpoint folder and of ``config.json`` (less where the search runs:
a resume may move to another device or cluster). A resume recomputes them
and refuses, in one line naming the file, anything missing, added, linked or changed.
A pointer written before seals (version 1) carries none and is trusted as before.

The seal is a checksum, not a signature: it stops accidents and stale copies, not a
forger who rewrites the pointer too (the readers still check every field they read).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from autoshrink.compression.errors import CheckpointError

#: Bytes hashed per read.
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


#: Settings of ``config.json`` that say where a search runs, not what it searches: a
#: resume may move (another device, another Ray cluster), so the seal leaves them out.
WHERE_IT_RUNS = {"env": ("device",), "agent": ("device", "backend", "address")}


def config_digest(config: Path) -> str:
    """SHA-256 of what ``config.json`` says the search is, where it runs left out.

    A file that is no search config document is hashed as its bytes.
    """
    raw = config.read_bytes()
    try:
        doc = json.loads(raw)
        parts = doc["data"]
        for part, names in WHERE_IT_RUNS.items():
            for name in names:
                parts[part]["data"].pop(name, None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return hashlib.sha256(raw).hexdigest()
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def seal(checkpoint: Path, config: Path) -> dict[str, object]:
    """The seal of a complete checkpoint folder: ``{"files": {name: sha}, "config": sha}``.

    ``config`` is the run folder's ``config.json`` (None in the seal where there is none).
    """
    files = {p.name: file_sha256(p) for p in sorted(checkpoint.iterdir()) if p.is_file()}
    return {"files": files, "config": config_digest(config) if config.is_file() else None}


def check_seal(checkpoint: Path, config: Path, sealed: dict[str, object]) -> None:
    """Refuse a checkpoint whose files, or whose run's ``config.json``, are not as sealed.

    Args:
        checkpoint: The checkpoint folder the pointer names.
        config: The run folder's ``config.json``.
        sealed: The pointer's ``files`` and ``config`` fields.

    Raises:
        CheckpointError: On a linked folder or file, or a file missing, added or changed.
    """
    files = sealed.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise CheckpointError(
            f"{checkpoint.parent / 'latest.json'}: 'files' must map names to digests"
        )
    for path in (checkpoint.parent, checkpoint):
        if path.is_symlink():
            raise CheckpointError(f"{path} is a link: a resume reads only its own run's files")
    present = {p.name for p in checkpoint.iterdir()} if checkpoint.is_dir() else set()
    for name in sorted(present | set(files)):
        _check_file(checkpoint / name, files.get(name))
    expected = sealed.get("config")
    if expected is not None and (not config.is_file() or config_digest(config) != expected):
        what = "changed" if config.is_file() else "missing"
        raise CheckpointError(
            f"{config} is {what} since the search started: a resume would search something "
            "else; restore it, or start a new search in another folder"
        )


def _check_file(path: Path, expected: object) -> None:
    """One file of a sealed checkpoint, against its recorded digest (None: not sealed)."""
    if expected is None:
        raise CheckpointError(f"{path} was not in its checkpoint when it was saved")
    if path.is_symlink() or not path.is_file():
        state = "a link" if path.is_symlink() else "missing"
        raise CheckpointError(f"{path} is {state}: the checkpoint is not as it was saved")
    if file_sha256(path) != expected:
        raise CheckpointError(
            f"{path} has changed since its checkpoint was saved: a resume from it would "
            "not continue the same search"
        )
