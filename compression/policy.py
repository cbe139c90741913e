"""Compression policies: a keep-ratio and bit-widths per unit, keyed by module name.

A :class:`Policy` is what a search finds and what ``autoshrink apply`` applies. It
round-trips through versioned JSON (``{"type": ..., "version": ..., "data": ...}``), and
loading checks the type and the version before anything else, so a file from another tool or
from a newer autoshrink fails with one clear line.

>>> p = Policy(units={"conv1": UnitPolicy(keep=0.5, bits=4)})
>>> Policy.from_json(p.to_json()) == p
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from autoshrink.compression.errors import AutoshrinkError, PolicyError
from autoshrink.compression.metrics import FLOAT_BITS
from autoshrink.compression.versioned import JsonFile, unwrap, wrap

if TYPE_CHECKING:
    from autoshrink.compression.unit_graph import UnitGraph

POLICY_TYPE = "autoshrink.Policy"
POLICY_VERSION = 1
BIT_CHOICES: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, FLOAT_BITS)
#: Largest fine-grained sparsity a unit may take (:mod:`autoshrink.compression.sparsity`).
MAX_SPARSITY = 0.99


def check_bits(bits: object, where: str) -> int:
    """Return ``bits`` as an int if it is one of :data:`BIT_CHOICES`, else raise PolicyError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BIT_CHOICES:
        raise PolicyError(f"bits must be 2..8 or 32, got {bits!r} for {where}")
    return bits


def check_keep(keep: object, where: str) -> float:
    """Return ``keep`` as a float if it lies in (0, 1], else raise PolicyError."""
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise PolicyError(f"keep-ratio must be a number in (0, 1], got {keep!r} for {where}")
    value = float(keep)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise PolicyError(f"keep-ratio must lie in (0, 1], got {keep!r} for {where}")
    return value


def check_sparsity(value: object, where: str) -> float:
    """Return ``value`` as a float in ``[0, MAX_SPARSITY]``, else raise PolicyError."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) <= MAX_SPARSITY:  # type: ignore[arg-type]
        raise PolicyError(f"sparsity must lie in [0, {MAX_SPARSITY}], got {value!r} for {where}")
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class UnitPolicy:
    """The decision for one unit.

    Args:
        keep: Fraction of the unit's channels to keep, in (0, 1]. The realised channel count
            is ``Unit.kept(keep)``, the one rounding rule shared by cost model and pruning.
        bits: Weight bit-width of every layer whose output channels the unit owns
            (2..8, or 32 for float).
        act_bits: Input-activation bit-width of those layers (32 = not quantized).
        channels: The unit's channel count in the model the policy was made for; used to
            refuse a policy on a model whose unit has another width. None = unchecked.
        sparsity: Fraction of each of the unit's (unpinned) layers' weights zeroed, the
            smallest by magnitude, in ``[0, MAX_SPARSITY]`` (Deep Compression mode; see
            :mod:`autoshrink.compression.sparsity`). Written to JSON only when non-zero.
    """

    keep: float = 1.0
    bits: int = FLOAT_BITS
    act_bits: int = FLOAT_BITS
    channels: int | None = None
    sparsity: float = 0.0

    def __post_init__(self) -> None:
        check_keep(self.keep, "unit")
        check_bits(self.bits, "unit")
        check_bits(self.act_bits, "unit activations")
        check_sparsity(self.sparsity, "unit")


@dataclass(frozen=True)
class Policy(JsonFile):
    """A whole compression policy.

    Args:
        units: Decision per unit, keyed by the unit's (leading module's) name.
        layers: Explicit weight-bit overrides per layer name, e.g. first and last layers
            pinned to 8 bits as in HAQ. They win over the unit's bits.
        round_to: Channel granularity the policy was realised with.
        meta: Free-form JSON-ready information (model, budgets, search that found it).
        frozen: The units that stayed at full width although they are not the classifier,
            keyed by leading layer, with the one-line reason (``UnitGraph.frozen``). The
            artifact rebuilds the model with exactly these frozen.
        steps: Per unit, the channel counts hardware-aware rounding allowed (``Unit.steps``),
            so that the policy realises the same channels wherever it is applied. Written
            to JSON only when non-empty.
    """

    units: dict[str, UnitPolicy] = field(default_factory=dict)
    layers: dict[str, int] = field(default_factory=dict)
    round_to: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    frozen: dict[str, str] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)

    json_what: ClassVar[str] = "autoshrink policy"
    json_error: ClassVar[type[AutoshrinkError]] = PolicyError
    # from_dict checks every number it reads (a NaN keep-ratio is "must lie in (0, 1]").
    json_allow_nonfinite: ClassVar[bool] = True

    def keep(self) -> dict[str, float]:
        """Keep-ratio per unit name."""
        return {name: u.keep for name, u in self.units.items()}

    def with_meta(self, **meta: Any) -> Policy:
        """Return a copy with ``meta`` updated."""
        return replace(self, meta={**self.meta, **meta})

    # --- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the versioned JSON-ready form ``{"type", "version", "data"}``."""
        units = {name: _unit_dict(u) for name, u in self.units.items()}
        data = {"units": units, "layers": dict(self.layers), "round_to": self.round_to}
        if self.frozen:  # optional: files without frozen units read as before
            data["frozen"] = dict(self.frozen)
        if self.steps:  # optional too: only hardware-aware rounding writes it
            data["steps"] = {name: list(c) for name, c in self.steps.items()}
        return wrap(POLICY_TYPE, POLICY_VERSION, {**data, "meta": self.meta})

    @classmethod
    def from_dict(cls, obj: object) -> Policy:
        """Build a policy from :meth:`to_dict` output, checking type, version and values.

        Raises:
            PolicyError: On a foreign type, a future version or any bad value; the message
                lists every problem found.
        """
        data = unwrap(obj, POLICY_TYPE, POLICY_VERSION, "autoshrink policy", PolicyError)
        if not isinstance(data.get("units"), dict):
            raise PolicyError("policy has no 'data.units' mapping")
        problems: list[str] = []
        units = _parse_units(data["units"], problems)
        layers: dict[str, int] = {}
        raw_layers = data.get("layers", {})
        if not isinstance(raw_layers, dict):
            problems.append("'layers' must map layer names to bits")
            raw_layers = {}
        for name, bits in raw_layers.items():
            try:
                layers[name] = check_bits(bits, f"layer {name}")
            except PolicyError as exc:
                problems.append(str(exc))
        round_to = data.get("round_to", 1)
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            problems.append(f"round_to must be a positive integer, got {round_to!r}")
            round_to = 1
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            problems.append("'meta' must be an object")
            meta = {}
        problems.extend(_meta_problems(meta))
        frozen = data.get("frozen", {})
        if not isinstance(frozen, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in frozen.items()
        ):
            problems.append("'frozen' must map unit names to reasons")
            frozen = {}
        steps = data.get("steps", {})
        if not isinstance(steps, dict) or not all(
            isinstance(v, list) and all(type(c) is int and c > 0 for c in v) and v
            for v in steps.values()
        ):
            problems.append("'steps' must map unit names to lists of positive channel counts")
            steps = {}
        if problems:
            raise PolicyError(_join(problems))
        return cls(units, layers, round_to, meta, frozen, steps)


def _unit_dict(u: UnitPolicy) -> dict[str, Any]:
    out = {"keep": u.keep, "bits": u.bits, "act_bits": u.act_bits, "channels": u.channels}
    return out | ({"sparsity": u.sparsity} if u.sparsity else {})


def _parse_units(raw_units: dict[str, Any], problems: list[str]) -> dict[str, UnitPolicy]:
    """Parse the ``data.units`` mapping of a policy file.

    Args:
        raw_units: Unit name to its JSON object.
        problems: Where each bad unit's problem is appended, in file order.

    Returns:
        The valid units, by name.
    """
    units: dict[str, UnitPolicy] = {}
    for name, raw in raw_units.items():
        if not isinstance(raw, dict):
            problems.append(f"unit {name}: expected an object, got {raw!r}")
            continue
        unknown = set(raw) - {"keep", "bits", "act_bits", "channels", "sparsity"}
        if unknown:
            problems.append(f"unit {name}: unknown keys {sorted(unknown)}")
        try:
            channels = raw.get("channels")
            if channels is not None and (
                isinstance(channels, bool) or not isinstance(channels, int) or channels < 1
            ):
                raise PolicyError(f"channels must be a positive integer, got {channels!r}")
            units[name] = UnitPolicy(
                keep=check_keep(raw.get("keep", 1.0), f"unit {name}"),
                bits=check_bits(raw.get("bits", FLOAT_BITS), f"unit {name}"),
                act_bits=check_bits(raw.get("act_bits", FLOAT_BITS), f"unit {name} acts"),
                channels=channels,
                sparsity=check_sparsity(raw.get("sparsity", 0.0), f"unit {name}"),
            )
        except PolicyError as exc:
            problems.append(f"unit {name}: {exc}" if name not in str(exc) else str(exc))
    return units


def _meta_problems(meta: dict[str, Any]) -> list[str]:
    """Problems of the few ``meta`` fields that autoshrink reads back (``budgets``)."""
    budgets = meta.get("budgets")
    if budgets is None:
        return []
    if not isinstance(budgets, dict):
        return [f"'meta.budgets' must be an object, got {type(budgets).__name__}"]
    return [
        f"'meta.budgets.{name}' must be a finite number, got {value!r}"[:120]
        for name, value in budgets.items()
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
    ]


def _join(problems: Iterable[str], most: int = 8) -> str:
    problems = list(problems)
    head = "; ".join(problems[:most])
    more = f"; and {len(problems) - most} more" if len(problems) > most else ""
    return f"{len(problems)} problem(s): {head}{more}"


def validate(policy: Policy, graph: UnitGraph, allow_missing: bool = False) -> None:
    """Check that ``policy`` fits the model behind ``graph``, listing every mismatch.

    Args:
        policy: The policy to check.
        graph: The target model's units.
        allow_missing: Treat units absent from the policy as uncompressed instead of an error.

    Raises:
        PolicyError: On unknown or missing unit names, unknown layer names, or channel
            counts that differ from the policy's record.
    """
    by_name = {u.name: u for u in graph.units}
    layer_names = {layer.name for layer in graph.layers}
    problems: list[str] = []
    unknown = [n for n in policy.units if n not in by_name]
    if unknown:
        problems.append(f"unknown units {unknown[:5]}{'...' if len(unknown) > 5 else ''}")
    if not allow_missing:
        missing = [n for n in by_name if n not in policy.units]
        if missing:
            problems.append(f"missing units {missing[:5]}{'...' if len(missing) > 5 else ''}")
    for name, up in policy.units.items():
        unit = by_name.get(name)
        if unit is not None and up.channels is not None and up.channels != unit.c_out:
            problems.append(f"unit {name} has {unit.c_out} channels, policy expects {up.channels}")
    bad_layers = [n for n in policy.layers if n not in layer_names]
    if bad_layers:
        problems.append(f"unknown layers {bad_layers[:5]}")
    if problems:
        raise PolicyError("policy does not match the model: " + _join(problems))


def layer_bits(policy: Policy, graph: UnitGraph) -> dict[str, int]:
    """Weight bits per conv/linear layer: override, else owning unit's bits, else float.

    Args:
        policy: The policy.
        graph: The model's units and layers.

    Returns:
        A dict with one entry per layer of ``graph``.
    """
    bits = {layer.name: FLOAT_BITS for layer in graph.layers}
    for unit in graph.units:
        up = policy.units.get(unit.name)
        if up is not None:
            for name in unit.layers:
                bits[name] = up.bits
    for name, b in policy.layers.items():
        if name in bits:
            bits[name] = b
    return bits


def act_bits(policy: Policy, graph: UnitGraph) -> dict[str, int]:
    """Input-activation bits per layer for the layers whose unit quantizes activations."""
    out: dict[str, int] = {}
    for unit in graph.units:
        up = policy.units.get(unit.name)
        if up is not None and up.act_bits < FLOAT_BITS:
            for name in unit.layers:
                out[name] = up.act_bits
    return out


def kept_channels(policy: Policy, graph: UnitGraph) -> dict[str, int]:
    """Realised channel count per unit, through the shared rounding rule ``Unit.kept``.

    The policy's hardware-aware :attr:`Policy.steps` apply to ``graph`` first.
    """
    if policy.steps:
        graph = graph.with_steps(policy.steps)
    return {
        u.name: u.kept(policy.units[u.name].keep) if u.name in policy.units else u.c_out
        for u in graph.units
    }


def uniform_policy(
    graph: UnitGraph,
    keep: float = 1.0,
    bits: int = FLOAT_BITS,
    pinned: Mapping[str, int] | None = None,
) -> Policy:
    """The same keep-ratio and bits for every unit, plus per-layer pins."""
    check_keep(keep, "uniform policy")
    check_bits(bits, "uniform policy")
    return Policy(
        units={u.name: UnitPolicy(keep=keep, bits=bits, channels=u.c_out) for u in graph.units},
        layers=dict(pinned or {}),
        frozen=dict(graph.frozen),
        steps=graph.steps,
    )
