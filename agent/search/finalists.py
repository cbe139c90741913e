"""Finalists: the search's best few distinct policies, re-scored with the final fine-tune.

A search ranks policies by a cheap reward (a short fine-tune scored on a val subset). Among
policies whose rewards differ by less than that reward's noise, the one ranked first is not
reliably the best after the long final fine-tune. With ``FinalConfig.finalists = k``, the
end of a search fine-tunes each of the ``k`` best distinct policies exactly as it fine-tunes
the one it ships, scores each on the whole val split, and ships the best of them. The test
split is still touched only by the shipped model.

Finalists are spaced apart: a policy joins only if it differs from every finalist already
taken by at least ``spacing`` (:func:`record_distance`: mean absolute keep-ratio difference
per unit, plus mean bit-width difference over 8, plus mean sparsity difference in deep and
sparse mode). A search that converged evaluates many
near-copies of its best policy; five of them are one guess, re-scored. The rule is the same
for every agent. When too few policies are that far apart, the best of the rest fill the
list, so every search gets the same number of finalists.

Candidates come from ``episodes.jsonl``: every record holds the realised keep-ratio and bits
(and, with any, the sparsity) of each unit, and the search's best policy supplies what
records leave out (pinned layers, channel granularity, activation bits, the model the
policy was made for).
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
        record: One episode record, with ``keep`` and ``bits`` (and ``sparsity``, absent
            when none) per unit name.
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
    spars = record.get("sparsity", {})
    units = {
        name: replace(
            u, keep=float(keep[name]), bits=int(bits[name]), sparsity=float(spars.get(name, 0.0))
        )
        for name, u in template.units.items()
    }
    return replace(template, units=units, meta={**template.meta, "episode": record["episode"]})


def record_distance(a: Mapping[str, Any], b: Mapping[str, Any], units: Iterable[str]) -> float:
    """How far apart two episode records' policies are.

    The mean over ``units`` of the absolute keep-ratio difference, plus the mean absolute
    bit-width difference divided by 8 (one bit on every unit counts like 0.125 of keep),
    plus the mean absolute sparsity difference (0 where records hold none).

    Args:
        a: One episode record, with ``keep`` and ``bits`` per unit name.
        b: Another, over the same units.
        units: The unit names to compare.
    """
    names = list(units)
    if not names:
        return 0.0
    keep = sum(abs(float(a["keep"][n]) - float(b["keep"][n])) for n in names)
    bits = sum(abs(int(a["bits"][n]) - int(b["bits"][n])) for n in names)
    sa, sb = a.get("sparsity", {}), b.get("sparsity", {})
    spars = sum(abs(float(sa.get(n, 0.0)) - float(sb.get(n, 0.0))) for n in names)
    return (keep + bits / 8 + spars) / len(names)


def top_candidates(
    records: Iterable[Mapping[str, Any]], template: Policy, k: int, spacing: float = 0.0
) -> list[Candidate]:
    """The ``k`` best distinct realised policies of a search, spaced apart, best reward first.

    Ties in reward go to the earlier episode, as in the search's own best. A policy realised
    by several episodes counts once, with its first episode and reward. Episodes that missed
    a budget are left out. Walking down the ranking, a policy is taken only if its
    :func:`record_distance` to every policy already taken is at least ``spacing``; if fewer
    than ``k`` are taken that way, the best of the skipped ones fill the list. The search's
    best is always first.

    Args:
        records: The search's episode records (``RunFolder.read_episodes()``).
        template: The search's best policy (see :func:`policy_from_record`).
        k: How many to return at most.
        spacing: Least distance between finalists (0 = any two distinct policies).
    """
    firsts: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for record in records:
        reward = record.get("reward")
        if not isinstance(reward, int | float) or reward != reward:  # missing or NaN
            continue
        if record.get("budgets_met") is False:
            continue
        spars = record.get("sparsity", {})
        key = tuple(
            (name, record["keep"][name], record["bits"][name], spars.get(name, 0.0))
            for name in template.units
        )
        firsts.setdefault(key, record)
    ranked = sorted(firsts.values(), key=lambda r: (-float(r["reward"]), int(r["episode"])))
    taken: list[Mapping[str, Any]] = []
    for record in ranked:
        if len(taken) == k:
            break
        if all(record_distance(record, t, template.units) >= spacing for t in taken):
            taken.append(record)
    skipped = [r for r in ranked if not any(r is t for t in taken)]
    taken += skipped[: k - len(taken)]
    taken.sort(key=lambda r: (-float(r["reward"]), int(r["episode"])))
    return [
        Candidate(int(r["episode"]), float(r["reward"]), policy_from_record(r, template))
        for r in taken
    ]
