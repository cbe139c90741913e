"""CompressionEnv: a trained model, walked one prunable unit at a time."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from torch import nn

from autoshrink.compression.cost import cost_from_channels
from autoshrink.compression.data import DataSplits, load_dataset
from autoshrink.compression.device import resolve_device
from autoshrink.compression.errors import UnsupportedModelError
from autoshrink.compression.evaluate import TrainResult
from autoshrink.compression.metrics import FLOAT_BITS, ratio_key, result_key
from autoshrink.compression.models import ModelSpec, build_model, load_weights
from autoshrink.compression.policy import Policy, UnitPolicy
from autoshrink.compression.quantize import pinned_layers
from autoshrink.compression.units import build_units
from autoshrink.env.budget import BudgetClamp, keep_for
from autoshrink.env.config import EnvConfig
from autoshrink.env.evaluator import Evaluator, PolicyEvaluator
from autoshrink.env.latency import LatencyTable, latency_table
from autoshrink.env.reward import REWARD_FUNCTIONS, Outcome
from autoshrink.env.state import (
    FEATURES,
    Observer,
    bits_action,
    budget_action,
    budget_keep,
    decode_action,
)

logger = logging.getLogger(__name__)

#: What each action entry decides, by mode.
ACTION_DIMS: dict[str, tuple[str, ...]] = {
    "prune": ("keep",),
    "quant": ("bits",),
    "joint": ("keep", "bits"),
}


class CompressionEnv(gym.Env[np.ndarray, np.ndarray]):
    """Choose a keep-ratio and/or a weight bit-width for each prunable unit of a model.

    ## Description
    An AMC/HAQ-style search over a trained model. Each step decides one *unit* (a group of
    layers that must keep the same channels, e.g. a residual stream), in execution order.
    When every unit is decided, the policy is applied for real (channels removed, weights
    quantized), BatchNorm is recalibrated on a few train batches, the model is optionally
    fine-tuned, and its validation accuracy becomes the reward.

    ## Action Space
    ``Box(0, 1, (k,), float32)``: ``k = 1`` in ``prune`` mode (keep-ratio) and ``quant``
    mode (bits), ``k = 2`` in ``joint`` mode (keep-ratio, bits). With ``keep_action=
    "budget"`` (the default) the keep action is centred on the unit's fair share: 0.5
    proposes the largest keep-ratio that this and every later unit could all take within
    the budgets (decided units as realised, the rest at this unit's bits), 0 proposes
    ``min_keep`` and 1 the whole unit, linearly in between. With ``"absolute"`` it is AMC's
    ``min_keep + a * (1 - min_keep)``. Either way the ratio is rounded to channels by the
    unit's rule. The bits use HAQ's equal-width bins over ``bit_choices``. In ``quant`` and
    ``joint`` mode the first and last layers, and those whose channels no unit decides,
    are pinned to ``first_last_bits``. With hard
    budgets (the default) each decision is clamped on realised channels and bits so that
    the final policy meets every budget whatever the actions: see
    :mod:`autoshrink.env.budget`. ``info`` of each step holds the proposed and realised
    values, and whether the clamp changed them.

    ## Observation Space
    ``Box(0, 1, (17,), float32)``: the unit about to be decided. Features 0-9 are static
    and min-max normalised across the model's units (0 where all agree); 10-16 change during
    the episode. "Rest at most" means undecided units whole, at the largest bits allowed
    (float in prune mode); "rest minimal" means at ``min_keep`` and the smallest bits.

    ==  ============  ==================================================================
    #   feature       meaning (every value in [0, 1])
    ==  ============  ==================================================================
    0   index         position of the unit in decision order
    1   kind          0 convolution, 1 linear (the leading layer)
    2   depthwise     1 if the unit holds a depthwise convolution
    3   c_in          input channels of the leading layer
    4   c_out         output channels: what pruning reduces
    5   kernel        kernel side of the leading layer (1 for linear)
    6   stride        stride of the leading layer (1 for linear)
    7   fmap          output positions (H*W) of the leading layer
    8   params        parameters of the layers whose output channels the unit owns
    9   macs          MACs of those layers
    10  macs_done     model MACs, decided units as realised, rest at most / original
    11  macs_rest     MACs owned by the undecided units (this one included) / original
    12  bytes_done    model bytes, decided units as realised, rest at most / original
    13  bytes_rest    float bytes owned by the undecided units / original bytes
    14  budget_slack  tightest budget: (limit - cost, rest minimal) / (cost, rest at most
                      - cost, rest minimal), clipped; 1 without budgets
    15  prev_keep     realised keep-ratio of the previous unit (1 at the first)
    16  prev_bits     realised bits of the previous unit, (b - b_min) / (b_max - b_min);
                      1 for float and at the first unit
    ==  ============  ==================================================================

    After the last step the observation repeats the last unit's static features with the
    final dynamic ones.

    ## Rewards
    0 on every step but the last. The last step's reward is chosen by ``reward``:
    ``accuracy`` (val accuracy in [0, 1]), ``acc_flops`` (``-error * log(MACs)``) or
    ``penalty`` (accuracy minus ``penalty_weight`` times the summed relative budget
    overruns; the soft-budget reward).

    ## Episode End
    The episode terminates after the last unit; it is never truncated. The final ``info``
    holds ``accuracy``, ``macs``, ``params``, ``bytes`` (and ``latency`` with a latency
    budget), their ``*_ratio`` to the original, ``budgets_met``, ``overruns``, ``policy``
    (a :class:`~autoshrink.compression.policy.Policy`), ``policy_dict`` (its JSON form),
    ``eval_cached``, ``eval_seconds`` (forward/backward) and ``prep_seconds``.

    ## Arguments
    ``CompressionEnv(config=None, *, model=None, data=None, evaluator=None, latency=None,
    **overrides)``: ``config`` is an :class:`~autoshrink.env.config.EnvConfig` (default
    settings when None) and ``overrides`` replace its fields, e.g.
    ``gym.make("autoshrink/Compress-v2", model="smallcnn", flops="30%")``. A trained
    ``model`` module, ``data`` (DataSplits), ``evaluator`` (any callable from a Policy to an
    :class:`~autoshrink.env.evaluator.Evaluation`) and ``latency`` (a LatencyTable) replace
    what the config would build (a ``model`` string is the config's model name).
    With no arguments: ResNet-20 on digits, the baseline trained once and then loaded from
    the cache.

    ## Version History
    * v2: keep actions centred on the fair share of the budget (``keep_action``), the
      default; ``keep_action="absolute"`` acts as v1 did.
    * v1: hard budgets are filled at the end of the episode (``fill_budget``).
    * v0: initial version.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's API)

    def __init__(
        self,
        config: EnvConfig | None = None,
        *,
        model: nn.Module | str | None = None,
        data: DataSplits | None = None,
        evaluator: PolicyEvaluator | None = None,
        latency: LatencyTable | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(model, str):  # a model name is a config setting, not a module
            overrides["model"], model = model, None
        cfg = config or EnvConfig()
        self.config = cfg = cfg.replace(**overrides) if overrides else cfg
        self.render_mode = render_mode
        #: Where the baseline trains and policies are scored (the model stays on the CPU).
        self.device = resolve_device(cfg.device)
        data = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir, cfg.seed)
        self.data = data.for_device(self.device)
        #: How the cached baseline trained (None for a given model or checkpoint).
        self.baseline_training: TrainResult | None = None
        self.model = (model if model is not None else self._load_model()).eval()
        self.graph = build_units(self.model, self.data.example_input(1), round_to=cfg.round_to)
        if not self.graph.units:
            raise UnsupportedModelError(f"{cfg.model} has no prunable unit")
        self.units = self.graph.units
        self.pinned: dict[str, int] = {}
        if cfg.mode != "prune" and cfg.first_last_bits is not None:
            self.pinned = dict.fromkeys(pinned_layers(self.graph), cfg.first_last_bits)
        self.baseline = self._baseline_metrics()
        self.latency = latency
        budgets = cfg.budgets
        if "latency" in budgets and self.latency is None:
            self.latency = latency_table(
                self.model,
                self.graph,
                self.data.example_input(cfg.latency_batch),
                self._prune,
                runtime=cfg.runtime,
            )
        if self.latency is not None:
            self.baseline["latency"] = self.latency.base
        self.limits = {m: b.limit(self.baseline[m]) for m, b in budgets.items()}
        self.clamp = BudgetClamp(
            self.graph,
            self.limits,
            self.baseline,
            min_keep=1.0 if cfg.mode == "quant" else cfg.min_keep,
            bit_choices=(FLOAT_BITS,) if cfg.mode == "prune" else cfg.bit_choices,
            pinned=self.pinned,
            latency=self.latency,
        )
        self.observer = Observer(self.graph, self.baseline, self.limits, cfg.bit_choices)
        if evaluator is None:
            evaluator = Evaluator.from_config(self.model, self.graph, self.data, cfg)
        self.evaluator: PolicyEvaluator = evaluator
        self.action_dims: tuple[str, ...] = ACTION_DIMS[cfg.mode]
        self.action_space = gym.spaces.Box(0.0, 1.0, (len(self.action_dims),), np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(FEATURES),), np.float32)
        self._t = 0
        self._channels = list(self.clamp.max_channels)
        self._bits = list(self.clamp.max_bits)

    # --- construction helpers ----------------------------------------------------------
    def _load_model(self) -> nn.Module:
        cfg = self.config
        spec = ModelSpec.for_data(cfg.model, self.data)
        if cfg.checkpoint is not None:
            return load_weights(build_model(spec), cfg.checkpoint)
        from autoshrink.compression.baselines import baseline, read_result

        model, path = baseline(
            spec,
            cfg.dataset,
            cfg.baseline_epochs,
            cfg.seed,
            cfg.data_dir,
            splits=self.data,
            min_accuracy=cfg.min_baseline_accuracy,
            device=self.device,
        )
        self.baseline_training = read_result(path)
        return model

    def _baseline_metrics(self) -> dict[str, float]:
        full = {u.name: u.c_out for u in self.units}
        floats = {layer.name: FLOAT_BITS for layer in self.graph.layers}
        cost = cost_from_channels(self.graph, full, floats)
        return {"flops": float(cost.macs), "params": float(cost.params), "size": float(cost.bytes)}

    def _prune(self, model: nn.Module, graph: Any, kept: Any) -> nn.Module:
        from autoshrink.compression.prune import prune_channels

        # Latency does not depend on which channels go, so the cheapest scorer will do.
        return prune_channels(model, graph, kept, importance="l1")

    # --- the gymnasium API -------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode at the first unit (the env itself uses no randomness)."""
        super().reset(seed=seed)
        self._t = 0
        self._channels = list(self.clamp.max_channels)
        self._bits = list(self.clamp.max_bits)
        return self._observe(), {"unit": self.units[0].name}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Decide the current unit; after the last one, evaluate and reward the policy."""
        t = self._t
        if t >= len(self.units):
            raise RuntimeError("the episode is over: call reset() first")
        cfg = self.config
        keep, bits = self._decode(t, action)
        unit = self.units[t]
        proposal = (unit.kept(keep), bits)
        realised = (
            self.clamp.clamp(t, self._channels, self._bits, proposal) if cfg.hard else proposal
        )
        self._channels[t], self._bits[t] = realised
        self._t = t + 1
        info: dict[str, Any] = {
            "unit": unit.name,
            "channels": realised[0],
            "keep": realised[0] / unit.c_out,
            "bits": realised[1],
            "proposed_keep": keep,
            "proposed_bits": bits,
            "clamped": realised != proposal,
        }
        reward = 0.0
        terminated = self._t == len(self.units)
        if terminated:
            if cfg.hard and cfg.fill_budget and "keep" in self.action_dims:
                before = sum(self._channels)
                self._channels = self.clamp.fill(self._channels, self._bits)
                info["filled_channels"] = sum(self._channels) - before
            reward = self._finish(info)
        return self._observe(), reward, terminated, False, info

    def fair_keep(self, t: int, bits: int) -> float:
        """Unit ``t``'s fair share: the largest keep-ratio units ``t..`` could all take.

        Decided units count as realised, the rest at ``bits``; see
        :meth:`~autoshrink.env.budget.BudgetClamp.fair_keep`.
        """
        return self.clamp.fair_keep(t, self._channels, self._bits, bits)

    def encode(self, channels: Sequence[int], bits: Sequence[int]) -> np.ndarray:
        """The actions, one row per unit, that make the env propose ``channels`` and ``bits``.

        The inverse of the decoding in :meth:`step`. With ``keep_action="budget"`` a keep
        action depends on the units decided before it, so the rows are computed in
        decision order, as if every earlier unit had realised its entry. Counts below a
        unit's fewest go to the fewest; bits go to the largest choice not above them (to
        the largest choice from float), and are ignored where bits are not searched.

        Args:
            channels: Channel count per unit, in decision order.
            bits: Weight bits per unit.

        Raises:
            ValueError: If the lengths do not match the units.
        """
        n = len(self.units)
        if len(channels) != n or len(bits) != n:
            raise ValueError(f"encode needs {n} channel counts and bits, one per unit")
        cfg = self.config
        saved = self._channels, self._bits
        rows = np.zeros((n, len(self.action_dims)), dtype=np.float32)
        try:
            lows = self.clamp.min_channels
            self._channels = [max(int(c), lo) for c, lo in zip(channels, lows, strict=True)]
            choices = self.clamp.bit_choices  # (32,) where bits are not searched
            self._bits = [max([c for c in choices if c <= b], default=choices[0]) for b in bits]
            for t, unit in enumerate(self.units):
                for j, dim in enumerate(self.action_dims):
                    if dim == "bits":
                        rows[t, j] = bits_action(self._bits[t], cfg.bit_choices)
                        continue
                    keep = keep_for(unit, self._channels[t])
                    if cfg.keep_action == "budget":
                        a = budget_action(keep, self.fair_keep(t, self._bits[t]), cfg.min_keep)
                    else:
                        span = 1.0 - cfg.min_keep
                        a = 1.0 if span <= 0 else (keep - cfg.min_keep) / span
                    rows[t, j] = min(max(a, 0.0), 1.0)
        finally:
            self._channels, self._bits = saved
        return rows

    # --- internals ---------------------------------------------------------------------
    def _decode(self, t: int, action: np.ndarray) -> tuple[float, int]:
        """The proposed keep-ratio and bits of unit ``t`` (see ``keep_action``)."""
        cfg = self.config
        keep, bits = decode_action(action, cfg.mode, cfg.min_keep, cfg.bit_choices)
        if cfg.keep_action == "budget" and "keep" in self.action_dims:
            a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
            keep = budget_keep(a, self.fair_keep(t, bits), cfg.min_keep)
        return keep, bits

    def _observe(self) -> np.ndarray:
        t = self._t
        low, high = self.clamp.span(t, self._channels, self._bits)
        if t == 0:
            prev_keep, prev_bits = 1.0, FLOAT_BITS
        else:
            prev_keep = self._channels[t - 1] / self.units[t - 1].c_out
            prev_bits = self._bits[t - 1]
        return self.observer.observe(t, low, high, prev_keep, prev_bits)

    def policy(self) -> Policy:
        """The realised policy of the decisions so far (undecided units whole and float)."""
        cfg = self.config
        units = {}
        for i, u in enumerate(self.units):
            decided = i < self._t
            channels = self._channels[i] if decided else u.c_out
            bits = self._bits[i] if decided else FLOAT_BITS
            units[u.name] = UnitPolicy(keep=keep_for(u, channels), bits=bits, channels=u.c_out)
        meta = {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "mode": cfg.mode,
            "budgets": {result_key(m): limit for m, limit in self.limits.items()},
        }
        return Policy(units=units, layers=dict(self.pinned), round_to=cfg.round_to, meta=meta)

    def _finish(self, info: dict[str, Any]) -> float:
        cfg = self.config
        policy = self.policy()
        values = self.clamp.measure(self._channels, self._bits)
        overruns = self.clamp.overruns(values)
        result = self.evaluator(policy)
        outcome = Outcome(result.accuracy, values["flops"], overruns, cfg.penalty_weight)
        reward = float(REWARD_FUNCTIONS[str(cfg.reward)](outcome))
        info["accuracy"] = result.accuracy
        for metric, value in values.items():
            info[result_key(metric)] = value if metric == "latency" else int(value)
            base = self.baseline[metric]
            info[ratio_key(metric)] = value / base if base else 1.0
        info.update(
            reward=reward,
            budgets_met=not any(overruns.values()),
            overruns=overruns,
            policy=policy,
            policy_dict=policy.to_dict(),
            eval_cached=result.cached,
            eval_seconds=result.compute_seconds,
            prep_seconds=result.other_seconds,
        )
        return reward
