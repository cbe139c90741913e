"""EnvConfig: everything that defines a compression environment, as one small dataclass.

Budgets are :class:`Budget` values: a ratio of the uncompressed model (``0.5`` = half) or an
absolute amount (``1.5M`` MACs, ``300KB``, ``4ms``), read by :func:`parse_budget`
(:mod:`autoshrink.env.budget_text`, whose names this module re-exports).

The config round-trips through versioned JSON, like a policy:

>>> EnvConfig.from_dict(EnvConfig(flops=0.5).to_dict()) == EnvConfig(flops=0.5)
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Literal, TypeAlias

from autoshrink.compression.device import DEFAULT_DEVICE, device_problem
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.metrics import BUDGET_NAMES
from autoshrink.compression.names import DEFAULT_RUNTIME, MAX_SEED, RUNTIMES
from autoshrink.compression.policy import MAX_SPARSITY
from autoshrink.compression.versioned import JsonFile, unwrap, wrap
from autoshrink.env.budget_text import Budget, format_amount, parse_budget

__all__ = ["Budget", "BudgetLike", "EnvConfig", "format_amount", "parse_budget"]

CONFIG_TYPE = "autoshrink.EnvConfig"
#: 2: ``keep_action`` (version-1 configs acted with what is now ``keep_action="absolute"``).
#: 3: ``deep`` and ``sparse`` modes, ``max_sparsity``, ``runtime`` (a version-2 config without
#:    it reads as ``eager``).
CONFIG_VERSION = 3
MODES: tuple[str, ...] = ("prune", "quant", "joint", "deep", "sparse")
REWARDS: tuple[str, ...] = ("accuracy", "acc_flops", "penalty")
#: How a keep action maps to a keep-ratio (``EnvConfig.keep_action``).
KEEP_ACTIONS: tuple[str, ...] = ("budget", "absolute")
Mode = Literal["prune", "quant", "joint", "deep", "sparse"]
#: The modes that search fine-grained sparsity.
SPARSE_MODES: tuple[str, ...] = ("deep", "sparse")
#: Step of the sparsity grid (``EnvConfig.sparsity_choices``).
SPARSITY_STEP = 0.01
#: The budgets of each mode when none is given (ratios of the uncompressed model).
DEFAULT_BUDGETS: dict[str, dict[str, float]] = {
    "prune": {"flops": 0.5},
    "quant": {"size": 0.15},
    "joint": {"flops": 0.5, "size": 0.1},
    "deep": {"size": 0.05},
    "sparse": {"size": 0.05},
}

BudgetLike: TypeAlias = Budget | float | str | None


@dataclass(frozen=True)
class EnvConfig(JsonFile):
    """The settings of a :class:`~autoshrink.env.compression_env.CompressionEnv`.

    Args:
        model: Model name (see ``autoshrink.compression.models``).
        dataset: Dataset name; ``digits`` is embedded and offline.
        data_dir: Where datasets live, for those that are not embedded.
        checkpoint: Trained weights; None trains (or loads from cache) the baseline.
        baseline_epochs: Epochs for that baseline; None = the zoo default.
        min_baseline_accuracy: Warn when that baseline's test accuracy is under this (it is
            always reported when within 2 points of chance).
        mode: ``prune`` (keep-ratio per unit), ``quant`` (bits per unit), ``joint`` (both),
            ``deep`` (keep-ratio, fine-grained sparsity and bits: Deep Compression with
            channels) or ``sparse`` (sparsity and bits).
        flops: Budget on MACs; a Budget, a ratio, or a string for :func:`parse_budget`.
        params: Budget on parameters.
        size: Budget on bytes of the compressed payload.
        latency: Budget on latency, on the measured per-unit lookup table's estimate.
        hard: Clamp every action so the episode's policy always meets every budget (True),
            or let actions through and penalise overruns in the reward (False).
        fill_budget: With hard budgets, grow the episode's channels by one common factor
            until a budget binds (:meth:`~autoshrink.env.budget.BudgetClamp.fill`), so
            that every policy spends its budget and the agent only chooses how to share it
            between units. False keeps the policy as the clamped actions left it (AMC).
        min_keep: Smallest keep-ratio an action can choose, as AMC's 0.2.
        keep_action: How a keep action becomes a keep-ratio. ``budget`` (the default)
            centres it on the unit's fair share of the budget left: 0.5 proposes the
            largest ratio every undecided unit could take at once, 0 ``min_keep`` and 1
            the whole unit (:func:`~autoshrink.env.state.budget_keep`). ``absolute`` is
            AMC's ``min_keep + a * (1 - min_keep)``, the same for every unit and budget.
        bit_choices: Weight bit-widths an action can choose, from 2..8.
        first_last_bits: Bits pinned on the first and last layers, and on every layer whose
            channels no unit decides, in quant/joint mode (HAQ pins 8); None leaves them to
            their units (the last layer and frozen groups' layers then stay float).
        reward: ``accuracy``, ``acc_flops`` (-error*log(MACs)) or ``penalty`` (accuracy minus
            budget overruns); None picks ``accuracy`` when hard, ``penalty`` when soft.
        penalty_weight: Weight of the summed relative overruns in the ``penalty`` reward.
        recalibrate_bn: Re-estimate BatchNorm statistics after compression.
        bn_batches: Train batches used for that recalibration.
        finetune_steps: Fine-tune steps per evaluation (0 = none). The default, 100, is
            the measured choice (docs/benchmarks.md, "Reward fidelity"): on Fashion-MNIST
            its reward ranks policies as a 2-epoch fine-tune does with Spearman 0.92,
            against 0.72 at 20 steps and 0.56 with BN recalibration alone.
        finetune_lr: Learning rate of that fine-tune.
        distill: Distil from the uncompressed model while fine-tuning.
        eval_batches: Validation batches scored per episode; None = the whole val split.
        batch_size: Batch size of every loader the evaluator uses.
        importance: Channel importance criterion for pruning.
        round_to: Channel granularity of every unit.
        hw_rounding: Hardware-aware rounding: each unit keeps only channel counts that run
            faster than every larger one, timed on this machine at ``latency_batch``
            (:mod:`autoshrink.compression.channel_steps`; cached). Costs stay exact.
        latency_batch: Batch size at which the latency table is measured.
        runtime: Where latency is measured (the table, and the final check of a latency
            budget): ``eager``, ``compiled`` (``torch.compile``) or ``onnxruntime``.
        seed: Seed of data order, fine-tuning and the baseline.
        device: Where the baseline trains and every evaluation runs: ``auto`` (CUDA when
            available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. Files never depend on it.
    """

    json_what: ClassVar[str] = "environment config"

    model: str = "resnet20"
    dataset: str = "digits"
    data_dir: str | None = None
    checkpoint: str | None = None
    baseline_epochs: int | None = None
    min_baseline_accuracy: float | None = None
    mode: Mode = "joint"
    flops: BudgetLike = None
    params: BudgetLike = None
    size: BudgetLike = None
    latency: BudgetLike = None
    hard: bool = True
    fill_budget: bool = True
    min_keep: float = 0.2
    keep_action: str = "budget"
    max_sparsity: float = 0.95
    bit_choices: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    first_last_bits: int | None = 8
    reward: str | None = None
    penalty_weight: float = 1.0
    recalibrate_bn: bool = True
    bn_batches: int = 4
    finetune_steps: int = 100
    finetune_lr: float = 0.01
    distill: bool = False
    eval_batches: int | None = None
    batch_size: int = 64
    importance: str = "l1"
    round_to: int = 1
    hw_rounding: bool = False
    latency_batch: int = 1
    runtime: str = DEFAULT_RUNTIME
    seed: int = 0
    device: str = DEFAULT_DEVICE

    def __post_init__(self) -> None:
        for metric in BUDGET_NAMES:
            raw: BudgetLike = getattr(self, metric)
            if raw is not None:
                object.__setattr__(self, metric, parse_budget(metric, raw))
        object.__setattr__(self, "bit_choices", tuple(sorted(set(self.bit_choices))))
        if self.reward is None:
            object.__setattr__(self, "reward", _default_reward(self))
        _validate(self)

    @property
    def budgets(self) -> dict[str, Budget]:
        """The active budgets by metric; the mode's defaults when none is given.

        Defaults (:data:`DEFAULT_BUDGETS`): prune ``flops<=0.5``; quant ``size<=0.15``;
        joint ``flops<=0.5`` and ``size<=0.1``. Give a ratio of 1 to search without a
        constraint.
        """
        given = {m: b for m in BUDGET_NAMES if (b := getattr(self, m)) is not None}
        if given:
            return given
        return {m: Budget(m, v) for m, v in DEFAULT_BUDGETS[self.mode].items()}

    @property
    def sparsity_choices(self) -> tuple[float, ...]:
        """Sparsities an action can choose: ``(0.0,)`` where the mode searches none."""
        if self.mode not in SPARSE_MODES:
            return (0.0,)
        steps = round(self.max_sparsity / SPARSITY_STEP)
        return tuple(round(i * SPARSITY_STEP, 2) for i in range(steps + 1))

    def replace(self, **changes: Any) -> EnvConfig:
        """Return a validated copy with ``changes`` applied (budgets may be strings)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise AutoshrinkError(f"unknown environment setting(s): {sorted(unknown)}")
        if "hard" in changes and "reward" not in changes and self.reward == _default_reward(self):
            changes["reward"] = None  # the reward was derived from `hard`: derive it again
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form ``{"type", "version", "data"}``."""
        data = asdict(self)
        data["bit_choices"] = list(self.bit_choices)
        return wrap(CONFIG_TYPE, CONFIG_VERSION, data)

    @classmethod
    def from_dict(cls, obj: object) -> EnvConfig:
        """Build a config from :meth:`to_dict` output, checking type, version and keys."""
        data = dict(unwrap(obj, CONFIG_TYPE, CONFIG_VERSION, "environment config"))
        if isinstance(obj, dict) and obj.get("version") == 1:
            data.setdefault("keep_action", "absolute")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise AutoshrinkError(f"unknown environment setting(s): {sorted(unknown)}")
        for metric in BUDGET_NAMES:
            if isinstance(data.get(metric), dict):
                data[metric] = Budget(**data[metric])
        if "bit_choices" in data:
            data["bit_choices"] = tuple(data["bit_choices"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise AutoshrinkError(f"bad environment config: {exc}") from exc


def _default_reward(cfg: EnvConfig) -> str:
    return "accuracy" if cfg.hard else "penalty"


def _validate(cfg: EnvConfig) -> None:
    problems = [*_choice_problems(cfg), *_number_problems(cfg)]
    if problems:
        raise AutoshrinkError("invalid environment config: " + "; ".join(problems))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _choice_problems(cfg: EnvConfig) -> list[str]:
    """What is wrong with the settings that name or choose something."""
    from autoshrink.compression.importance import IMPORTANCES

    checks = [
        (cfg.mode in MODES, f"mode must be one of {MODES}, got {cfg.mode!r}"),
        (cfg.reward in REWARDS, f"reward must be one of {REWARDS}, got {cfg.reward!r}"),
        (
            cfg.hard or cfg.reward == "penalty",
            f"soft budgets (hard=False) need reward='penalty', got {cfg.reward!r}",
        ),
        (isinstance(cfg.hard, bool), f"hard must be true or false, got {cfg.hard!r}"),
        (
            isinstance(cfg.hw_rounding, bool),
            f"hw_rounding must be true or false, got {cfg.hw_rounding!r}",
        ),
        (
            isinstance(cfg.fill_budget, bool),
            f"fill_budget must be true or false, got {cfg.fill_budget!r}",
        ),
        (
            cfg.keep_action in KEEP_ACTIONS,
            f"keep_action must be one of {KEEP_ACTIONS}, got {cfg.keep_action!r}",
        ),
        (
            bool(cfg.bit_choices) and all(_is_int(b) and 2 <= b <= 8 for b in cfg.bit_choices),
            f"bit_choices must be a non-empty set of 2..8, got {cfg.bit_choices!r}",
        ),
        (
            cfg.first_last_bits is None or cfg.first_last_bits in (2, 3, 4, 5, 6, 7, 8, 32),
            f"first_last_bits must be 2..8, 32 or None, got {cfg.first_last_bits!r}",
        ),
        (
            cfg.runtime in RUNTIMES,
            f"runtime must be one of {RUNTIMES}, got {cfg.runtime!r}",
        ),
        (
            cfg.importance in IMPORTANCES,
            f"importance must be one of {IMPORTANCES}, got {cfg.importance!r}",
        ),
        (device_problem(cfg.device) is None, str(device_problem(cfg.device))),
    ]
    for name in ("model", "dataset", "data_dir", "checkpoint"):
        value, path = getattr(cfg, name), name in ("data_dir", "checkpoint")
        ok = value is None or isinstance(value, str) if path else isinstance(value, str) and value
        checks.append((bool(ok), f"{name} must be {'a path' if path else 'a name'}, got {value!r}"))
    return [message for ok, message in checks if not ok]


def _number_problems(cfg: EnvConfig) -> list[str]:
    """What is wrong with the settings that count or measure something."""
    out: list[str] = []
    lows = {"bn_batches": 0, "finetune_steps": 0, "batch_size": 1, "round_to": 1}
    for name, low in {**lows, "latency_batch": 1}.items():
        value = getattr(cfg, name)
        if not (_is_int(value) and value >= low):
            out.append(f"{name} must be an integer >= {low}, got {value!r}")
    for name in ("eval_batches", "baseline_epochs"):
        value = getattr(cfg, name)
        if not (value is None or (_is_int(value) and value >= 1)):
            out.append(f"{name} must be None or >= 1")
    if not (_is_num(cfg.min_keep) and 0 < cfg.min_keep <= 1):
        out.append(f"min_keep must lie in (0, 1], got {cfg.min_keep!r}")
    if not (_is_num(cfg.max_sparsity) and 0 <= cfg.max_sparsity <= MAX_SPARSITY):
        out.append(f"max_sparsity must lie in [0, {MAX_SPARSITY}], got {cfg.max_sparsity!r}")
    if not (_is_num(cfg.finetune_lr) and cfg.finetune_lr > 0):
        out.append(f"finetune_lr must be positive, got {cfg.finetune_lr!r}")
    if not (_is_num(cfg.penalty_weight) and cfg.penalty_weight >= 0):
        out.append(f"penalty_weight must be >= 0, got {cfg.penalty_weight!r}")
    floor = cfg.min_baseline_accuracy
    if not (floor is None or (_is_num(floor) and 0 <= floor <= 1)):
        out.append(f"min_baseline_accuracy must be None or in [0, 1], got {floor!r}")
    if not (_is_int(cfg.seed) and 0 <= cfg.seed <= MAX_SEED):
        out.append(f"seed must be an integer in [0, {MAX_SEED}], got {cfg.seed!r}")
    return out
