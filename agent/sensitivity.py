"""The ``solver`` agent's sensitivity table: each unit alone at a grid of settings, scored.

A row per unit holds the val accuracy of the model with that unit alone at each of its
channel counts (float weights), each of its bit-widths (every channel) and, in ``deep`` and
``sparse`` mode, each of its sparsities (every channel, float), every other unit whole and
float (pinned layers as the env pins them). The scores come from the env's own evaluator,
so they depend on the model's weights, the dataset and its split, the evaluator's settings
and the grid: :func:`table_key` hashes exactly those, and a table is reused wherever its
key matches.

It is a versioned document (``autoshrink.SensitivityTable``), written to the run folder's
``sensitivity.json`` after every unit (a killed search resumes the table where it
stopped), and, once whole, to ``<cache>/sensitivity/<key>.json``, where a search of the
same model with other budgets finds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoshrink.compression.cache import cache_dir
from autoshrink.compression.documents import field as read_field
from autoshrink.compression.documents import read_document, sequence
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.json_write import write_document
from autoshrink.compression.versioned import unwrap

logger = logging.getLogger(__name__)

TABLE_TYPE = "autoshrink.SensitivityTable"
TABLE_VERSION = 1
#: The table's name in a run folder.
TABLE_FILE = "sensitivity.json"


@dataclass(frozen=True)
class UnitGrid:
    """One unit's settings to score (each list's first entry is the reference setting).

    Args:
        name: The unit.
        channels: Channel counts, whole first, descending.
        bits: Bit-widths, largest first (``(32,)`` where bits are not searched).
        sparsity: Sparsities, 0 first (``(0.0,)`` where sparsity is not searched).
    """

    name: str
    channels: tuple[int, ...]
    bits: tuple[int, ...]
    sparsity: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """The grid as JSON-ready lists."""
        return {
            "name": self.name,
            "channels": list(self.channels),
            "bits": list(self.bits),
            "sparsity": list(self.sparsity),
        }


@dataclass
class SensitivityTable:
    """Accuracies of each unit alone at each setting of its grid.

    Args:
        key: :func:`table_key` of what the scores depend on.
        base_accuracy: The uncompressed model's accuracy (every unit whole and float).
        rows: Per scored unit, in order: ``{"channels": [...], "bits": [...],
            "sparsity": [...]}``, each an accuracy per entry of that unit's grid list.
        evaluations: Policies the evaluator scored to build the table.
        seconds: Wall time spent building it.
    """

    key: str
    base_accuracy: float
    rows: list[dict[str, list[float]]] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The document's data."""
        return {
            "key": self.key,
            "base_accuracy": self.base_accuracy,
            "rows": self.rows,
            "evaluations": self.evaluations,
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> SensitivityTable:
        """A table from a document's data, every field checked (errors name ``where``)."""
        err = CheckpointError
        rows = []
        for i, row in enumerate(read_field(data, "rows", list, where=where, error=err)):
            at = f"{where} row {i}"
            rows.append(
                {
                    k: sequence(
                        read_field(row, k, list, where=at, error=err), float, where=at, error=err
                    )
                    for k in ("channels", "bits", "sparsity")
                }
            )
        return cls(
            key=read_field(data, "key", str, where=where, error=err),
            base_accuracy=float(read_field(data, "base_accuracy", float, where=where, error=err)),
            rows=rows,
            evaluations=read_field(data, "evaluations", int, where=where, error=err),
            seconds=float(read_field(data, "seconds", float, where=where, error=err)),
        )

    def save(self, path: Path) -> None:
        """Write the table atomically as a versioned document."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_document(path, TABLE_TYPE, TABLE_VERSION, self.to_dict())


def read_table(path: Path) -> SensitivityTable:
    """A table written by :meth:`SensitivityTable.save`, through the checked reader.

    Raises:
        CheckpointError: If the file is unreadable, not a table, or malformed.
    """
    obj = read_document(path, "sensitivity table", error=CheckpointError)
    data = unwrap(obj, TABLE_TYPE, TABLE_VERSION, "sensitivity table", CheckpointError)
    return SensitivityTable.from_dict(data, str(path))


def cached_table_path(key: str) -> Path:
    """Where a whole table of key ``key`` is kept for other searches of the same model."""
    return cache_dir() / "sensitivity" / f"{key}.json"


def find_table(key: str, run_dir: Path | None, n_units: int) -> SensitivityTable | None:
    """The best table of ``key`` at hand: the run folder's (whole or partial), else the cache's.

    A file of another key, or one that cannot be read, is passed over (logged).
    """
    paths = [run_dir / TABLE_FILE] if run_dir is not None else []
    paths.append(cached_table_path(key))
    found = None
    for path in paths:
        if not path.is_file():
            continue
        try:
            table = read_table(path)
        except CheckpointError as exc:
            logger.warning("solver: ignoring %s", exc)
            continue
        if table.key != key:
            logger.info("solver: %s is the table of another model or evaluator", path)
            continue
        if found is None or len(table.rows) > len(found.rows):
            found = table
        if len(found.rows) >= n_units:
            break
    return found


def table_key(model_state: dict[str, Any], settings: dict[str, Any], grid: list[UnitGrid]) -> str:
    """A hash of what a table's scores depend on.

    Args:
        model_state: The model's ``state_dict`` (names, dtypes, shapes and values count).
        settings: The dataset, its split and the evaluator's settings, as plain values.
        grid: Every unit's grid.
    """
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"v": TABLE_VERSION, "settings": settings, "grid": [g.to_dict() for g in grid]},
            sort_keys=True,
        ).encode()
    )
    for name in sorted(model_state):
        t = model_state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(dtype=_byte_view(t)).numpy().tobytes())
    return h.hexdigest()[:32]


def _byte_view(t: Any) -> Any:
    """A dtype of the same item size as ``t``'s that numpy can hold (bfloat16 is not one)."""
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
