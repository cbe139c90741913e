"""CompressionEnv: a trained model, walked one prunable unit at a time."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from torch import nn

from autoshrink.compression.channel_steps import stepped
from autoshrink.compression.cost import cost_from_channels, nonzero_macs
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
    MODE_DIMS,
    Observer,
    budget_keep,
    decode_action,
    decode_sparsity,
)

logger = logging.getLogger(__name__)

#: What each action entry decides, by mode.
ACTION_DIMS = MODE_DIMS


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
    mode (bits), ``k = 2`` in ``joint`` mode (keep-ratio, bits) and ``sparse`` mode
    (sparsity, bits), ``k = 3`` in ``deep`` mode (keep-ratio, sparsity, bits). Sparsity,
    the fraction of each layer's weights zeroed by magnitude, uses equal-width bins over
    0..``max_sparsity`` in steps of 0.01, and is clamped first (the smallest sparsity that
    fits, on the exact stored bytes before entropy coding). With ``keep_action=
    "budget"`` (the default) the keep action is centred on the unit's fair share: 0.5
    proposes the largest keep-ratio that this and every later unit could all take within
    the budgets (decided units as realised, the rest at this unit's bits), 0 proposes
    ``min_keep`` and 1 the whole unit, linearly in between. With ``"absolute"`` it is AMC's
    ``min_keep + a * (1 - min_keep)``. Either way the ratio is rounded to channels by the
    unit's rule. The bits use HAQ's equal-width bins over ``bit_choices``. In ``quant`` and
    ``joint`` mode the first and last layers, and those whose channels no unit decides,
    are pinned to ``first_last_bits``. With hard budgets (the default) each decision is
    clamped on realised channels and bits so that the final policy meets every budget
    whatever the actions: see :mod:`autoshrink.env.budget`. ``info`` of each step holds
    the proposed and realised values, and whether the clamp changed them. ``hw_rounding``
    keeps measured-fast channel counts only (:mod:`autoshrink.compression.channel_steps`).

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
    ``gym.make("autoshrink/Compress-v3", model="smallcnn", flops="30%")``. A trained
    ``model`` module, ``data`` (DataSplits), ``evaluator`` (any callable from a Policy to an
    :class:`~autoshrink.env.evaluator.Evaluation`) and ``latency`` (a LatencyTable) replace
    what the config would build (a ``model`` string is the config's model name).
    With no arguments: ResNet-20 on digits, the baseline trained once and then loaded from
    the cache.

    ## Version History
    * v3: ``deep`` and ``sparse`` modes (fine-grained sparsity, a third decision per unit;
      ``info`` of each step holds ``sparsity`` and ``proposed_sparsity``).
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
        if cfg.hw_rounding:  # measured once and cached: workers read the main process's steps
            self.graph = stepped(self.model, self.graph, cfg.latency_batch)
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
        self.action_dims: tuple[str, ...] = ACTION_DIMS[cfg.mode]
        self.clamp = self._make_clamp()
        self.observer = Observer(self.graph, self.baseline, self.limits, cfg.bit_choices)
        if evaluator is None:
            evaluator = Evaluator.from_config(self.model, self.graph, self.data, cfg)
        self.evaluator: PolicyEvaluator = evaluator
        self.action_space = gym.spaces.Box(0.0, 1.0, (len(self.action_dims),), np.float32)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (len(FEATURES),), np.float32)
        self._t = 0
        self._channels = list(self.clamp.max_channels)
        self._bits = list(self.clamp.max_bits)
        self._sparsity = list(self.clamp.min_sparsity)

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

    def _make_clamp(self) -> BudgetClamp:
        """The clamp over what this mode searches (a dimension not searched stays whole)."""
        cfg, dims = self.config, self.action_dims
        return BudgetClamp(
            self.graph,
            self.limits,
            self.baseline,
            min_keep=cfg.min_keep if "keep" in dims else 1.0,
            bit_choices=cfg.bit_choices if "bits" in dims else (FLOAT_BITS,),
            pinned=self.pinned,
            latency=self.latency,
            sparsity_choices=cfg.sparsity_choices,
        )

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
        self._sparsity = list(self.clamp.min_sparsity)
        return self._observe(), {"unit": self.units[0].name}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Decide the current unit; after the last one, evaluate and reward the policy."""
        t = self._t
        if t >= len(self.units):
            raise RuntimeError("the episode is over: call reset() first")
        cfg = self.config
        keep, bits, sparsity = self._decode(t, action)
        unit = self.units[t]
        proposal = (unit.kept(keep), bits, sparsity)
        realised = self._clamp(t, proposal) if cfg.hard else proposal
        self._channels[t], self._bits[t], self._sparsity[t] = realised
        self._t = t + 1
        info: dict[str, Any] = {
            "unit": unit.name,
            "channels": realised[0],
            "keep": realised[0] / unit.c_out,
            "bits": realised[1],
            "sparsity": realised[2],
            "proposed_keep": keep,
            "proposed_bits": bits,
            "proposed_sparsity": sparsity,
            "clamped": realised != proposal,
        }
        reward = 0.0
        terminated = self._t == len(self.units)
        if terminated:
            if cfg.hard and cfg.fill_budget and "keep" in self.action_dims:
                before = sum(self._channels)
                self._channels = self.clamp.fill(self._channels, self._bits, self._sparsity)
                info["filled_channels"] = sum(self._channels) - before
            reward = self._finish(info)
        return self._observe(), reward, terminated, False, info

    def _clamp(self, t: int, proposal: tuple[int, int, float]) -> tuple[int, int, float]:
        """The clamped decision of unit ``t``: sparsity is a third decision where searched."""
        if "sparsity" in self.action_dims:
            state = (self._channels, self._bits, self._sparsity)
            return self.clamp.clamp_sparse(t, state, proposal)
        channels, bits = self.clamp.clamp(t, self._channels, self._bits, proposal[:2])
        return channels, bits, proposal[2]

    def fair_keep(self, t: int, bits: int, sparsity: float = 0.0) -> float:
        """Unit ``t``'s fair share: the largest keep-ratio units ``t..`` could all take.

        Decided units count as realised, the rest at ``bits`` and ``sparsity``; see
        :meth:`~autoshrink.env.budget.BudgetClamp.fair_keep`.
        """
        return self.clamp.fair_keep(t, self._channels, self._bits, bits, self._sparsity, sparsity)

    def encode(
        self,
        channels: Sequence[int],
        bits: Sequence[int],
        sparsity: Sequence[float] | None = None,
    ) -> np.ndarray:
        """The actions, one row per unit, that make the env propose this policy.

        The inverse of the decoding in :meth:`step`; see
        :func:`~autoshrink.env.encode.encode_actions`.

        Args:
            channels: Channel count per unit, in decision order.
            bits: Weight bits per unit.
            sparsity: Sparsity per unit (None = none).

        Raises:
            ValueError: If the lengths do not match the units.
        """
        from autoshrink.env.encode import encode_actions

        return encode_actions(self, channels, bits, sparsity)

    # --- internals ---------------------------------------------------------------------
    def _decode(self, t: int, action: np.ndarray) -> tuple[float, int, float]:
        """The proposed keep-ratio, bits and sparsity of unit ``t`` (see ``keep_action``)."""
        cfg = self.config
        keep, bits = decode_action(action, cfg.mode, cfg.min_keep, cfg.bit_choices)
        sparsity = decode_sparsity(action, cfg.mode, self.clamp.sparsity_choices)
        if cfg.keep_action == "budget" and "keep" in self.action_dims:
            a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
            keep = budget_keep(a, self.fair_keep(t, bits, sparsity), cfg.min_keep)
        return keep, bits, sparsity

    def _observe(self) -> np.ndarray:
        t = self._t
        low, high = self.clamp.span(t, self._channels, self._bits, self._sparsity)
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
            sparsity = self._sparsity[i] if decided else 0.0
            keep = keep_for(u, channels)
            units[u.name] = UnitPolicy(keep=keep, bits=bits, channels=u.c_out, sparsity=sparsity)
        meta = {
            "model": cfg.model,
            "dataset": cfg.dataset,
            "mode": cfg.mode,
            "budgets": {result_key(m): limit for m, limit in self.limits.items()},
        }
        return Policy(units, dict(self.pinned), cfg.round_to, meta, steps=self.graph.steps)

    def _finish(self, info: dict[str, Any]) -> float:
        cfg = self.config
        policy = self.policy()
        values = self.clamp.measure(self._channels, self._bits, self._sparsity)
        overruns = self.clamp.overruns(values)
        result = self.evaluator(policy)
        outcome = Outcome(result.accuracy, values["flops"], overruns, cfg.penalty_weight)
        reward = float(REWARD_FUNCTIONS[str(cfg.reward)](outcome))
        info["accuracy"] = result.accuracy
        if "sparsity" in self.action_dims:
            kept = dict(zip(self.clamp.names, self._channels, strict=True))
            by_layer = self.clamp.sparsity_by_layer(self._sparsity)
            info["nonzero_macs"] = nonzero_macs(self.graph, kept, by_layer)
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
