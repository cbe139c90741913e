"""The error hierarchy of autoshrink.

Every error a user can cause (a bad name, a bad file, an impossible budget) is an
:class:`AutoshrinkError`. The CLI turns these into one clear line and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AutoshrinkError(Exception):
    """Base class of every user-facing autoshrink error."""


class PolicyError(AutoshrinkError):
    """A policy is malformed, out of range, or does not match the model's units."""


class BudgetInfeasibleError(AutoshrinkError):
    """A budget is tighter than the most aggressive compression can reach."""


class UnsupportedModelError(AutoshrinkError):
    """A model (or one of its layers) cannot be handled by the compression engine."""


class DataError(AutoshrinkError):
    """A dataset cannot be found, downloaded or read."""


class CheckpointError(AutoshrinkError):
    """A checkpoint or artifact is missing, corrupt, foreign or of another architecture."""


class DocumentError(AutoshrinkError):
    """A JSON or TOML document is unreadable, too large, too deep or of the wrong shape."""


def first_line(exc: BaseException, most: int = 160) -> str:
    r"""``exc``'s type and the first line of its message, at most ``most`` characters.

    What a one-line refusal quotes of the error behind it, so that the user has its own
    words to act on.

    >>> first_line(RuntimeError("shape mismatch\nat layer 3"))
    'RuntimeError: shape mismatch'
    """
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return text if len(text) <= most else text[: most - 3] + "..."
