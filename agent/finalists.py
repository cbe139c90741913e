"""Finalists: the search's best few distinct policies, re-scored with the final fine-tune.

A search ranks policies by a cheap reward (a short fine-tune scored on a val subset). Among
policies whose rewards differ by less than that reward's noise, the one ranked first is not
reliably the best after the long final fine-tune. With ``FinalConfig.finalists = k``, the
end of a search fine-tunes each of the ``k`` best distinct policies exactly as it fine-tunes
the one it ships, scores each on the whole val split, and ships the best of them. The test
split is still touched only by the shipped model.

Candidates come from ``episodes.jsonl``: every record holds the realised keep-ratio and bits
of each unit, and the search's best policy supplies what records leave out (pinned layers,
channel granularity, activation bits, the model the policy was made for).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.policy import Policy


@dataclass(frozen=True)
class Candidate:
    """A distinct policy that a search evaluated.

    Args:
        episode: The first episode that realised it.
        reward: Its search reward.
        policy: The realised policy.
    """

    episode: int
    reward: float
    policy: Policy


def policy_from_record(record: Mapping[str, Any], template: Policy) -> Policy:
    """The policy an ``episodes.jsonl`` record realised.

    Args:
        record: One episode record, with ``keep`` and ``bits`` per unit name.
        template: A policy of the same search (its best), for the fields records omit.

    Raises:
        AutoshrinkError: If the record's units are not the template's.
    """
    keep, bits = record.get("keep", {}), record.get("bits", {})
    if set(keep) != set(template.units) or set(bits) != set(template.units):
        raise AutoshrinkError(
            f"episode {record.get('episode')} does not name the search's units; "
            "is episodes.jsonl from this run?"
        )
    units = {
        name: replace(u, keep=float(keep[name]), bits=int(bits[name]))
        for name, u in template.units.items()
    }
    return replace(template, units=units, meta={**template.meta, "episode": record["episode"]})


def top_candidates(
    records: Iterable[Mapping[str, Any]], template: Policy, k: int
) -> list[Candidate]:
    """The ``k`` best distinct realised policies of a search, best reward first.

    Ties in reward go to the earlier episode, as in the search's own best. A policy realised
    by several episodes counts once, with its first episode and reward. Episodes that missed
    a budget are left out.

    Args:
        records: The search's episode records (``RunFolder.read_episodes()``).
        template: The search's best policy (see :func:`policy_from_record`).
        k: How many to return at most.
    """
    firsts: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for record in records:
        reward = record.get("reward")
        if not isinstance(reward, int | float) or reward != reward:  # missing or NaN
            continue
        if record.get("budgets_met") is False:
            continue
        key = tuple((name, record["keep"][name], record["bits"][name]) for name in template.units)
        firsts.setdefault(key, record)
    ranked = sorted(firsts.values(), key=lambda r: (-float(r["reward"]), int(r["episode"])))
    return [
        Candidate(int(r["episode"]), float(r["reward"]), policy_from_record(r, template))
        for r in ranked[:k]
    ]
