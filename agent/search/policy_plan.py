"""Applying a saved policy: the env settings, the checked policy, and how it is realised.

``autoshrink apply --policy`` and a batch's ``policy_from`` apply job both come here.
:func:`plan_policy` does every check that needs no training (the policy file, the unit names
and channel counts, the checkpoint, the budgets) and returns a :class:`PolicyPlan`; nothing
is written. The plan then gives the env and the one-episode
:class:`~autoshrink.agent.search.SearchResult` that ``finish_search`` finishes:

- as it is (no map): the policy unchanged. Its budgets are the given ones (a policy over
  them is refused) or else those recorded in its meta (MACs, params, bytes; latency limits
  were measured on another machine and are not carried over);
- ``map="depth"`` without budgets: the policy stretched over the target's depth, as it is;
- ``map="depth"`` with budgets: the stretched policy proposed through the env's clamp
  (:func:`~autoshrink.agent.transfer.replay`), so the budgets hold on the new model.

>>> plan = plan_policy("runs/r20/policy.json", "resnet56", map_name="depth",
...                    budgets={"flops": 0.5})  # doctest: +SKIP
>>> env = plan.make_env()  # doctest: +SKIP
>>> report = finish_search(env, plan.search_result(env, "runs/r56"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.compression.errors import AutoshrinkError, PolicyError
from autoshrink.compression.metrics import BUDGET_NAMES, METRICS
from autoshrink.compression.policy import Policy
from autoshrink.env.config import Budget, EnvConfig, parse_budget

if TYPE_CHECKING:
    from torch import nn

    from autoshrink.agent.search.loop import SearchResult
    from autoshrink.compression.data import DataSplits
    from autoshrink.compression.units import UnitGraph

logger = logging.getLogger(__name__)

#: The file a run folder keeps its policy in.
POLICY_FILE = "policy.json"
#: Env settings a policy decides itself (from its bits, pins and rounding).
POLICY_DECIDES: tuple[str, ...] = ("mode", "first_last_bits", "round_to")
#: Env settings :func:`plan_policy` takes as arguments rather than in ``settings``.
_NAMED = ("model", "checkpoint", "dataset", "data_dir", "seed", *BUDGET_NAMES)
#: Policy meta budget keys (result keys) -> budget names; latency is the machine's, not kept.
_META_BUDGETS = {m.key: m.name for m in METRICS if m.name != "latency"}


@dataclass
class PolicyPlan:
    """A checked policy and everything its application needs; nothing written yet.

    Args:
        config: The env settings: the target model, data, the policy's mode, pins and
            rounding, and the budgets.
        policy: The validated policy (stretched, when mapped).
        data: The loaded dataset splits.
        model: The model with the given checkpoint's weights; None when no checkpoint was
            given (the env then loads or trains the cached baseline).
        replay: Whether the policy goes through the env's clamp (a map with budgets)
            rather than being applied as it is.
        algorithm: The name the result records: ``policy`` or ``policy+depth-map``.
        source: Where the policy came from, for ``result.json``: ``{"policy": path}`` and,
            when mapped, ``map`` and ``mapped_from``.
    """

    config: EnvConfig
    policy: Policy
    data: DataSplits
    model: nn.Module | None = None
    replay: bool = False
    algorithm: str = "policy"
    source: dict[str, Any] = field(default_factory=dict)

    def make_env(self) -> Any:
        """The :class:`~autoshrink.env.compression_env.CompressionEnv` of the plan."""
        from autoshrink.env.compression_env import CompressionEnv

        return CompressionEnv(self.config, model=self.model, data=self.data)

    def search_result(self, env: Any, run_dir: str | Path) -> SearchResult:
        """The one-episode result to finish: the policy as it is, or replayed through the clamp.

        Args:
            env: The plan's env (:meth:`make_env`).
            run_dir: The run folder ``finish_search`` writes to.

        Raises:
            AutoshrinkError: If the replay gave no policy.
        """
        from autoshrink.agent.search.loop import SearchResult
        from autoshrink.agent.search.transfer import replay

        if not self.replay:
            return SearchResult(self.policy, None, {}, None, 0, 0.0, self.algorithm, Path(run_dir))
        result = replay(env, self.policy, run_dir, seed=self.config.seed)
        result.algorithm = self.algorithm
        if result.best_policy is None:
            raise AutoshrinkError("no policy came out of the rollout")
        return result


def policy_file(path: str | Path) -> Path:
    """The policy file at ``path``: the file itself, or a run folder's ``policy.json``."""
    path = Path(path)
    return path / POLICY_FILE if path.is_dir() else path


def plan_policy(
    policy: Policy | str | Path,
    model: str,
    *,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    budgets: Mapping[str, Any] | None = None,
    map_name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> PolicyPlan:
    """Check a policy against ``model`` and plan its application; no training, no writing.

    Args:
        policy: The policy, or the path of its ``policy.json`` (named in ``source``).
        model: The target model's name or ``file.py:factory``.
        checkpoint: Its trained weights; the cached baseline when None.
        dataset: The dataset; the policy's, else ``digits``, when None.
        data_dir: Where the dataset's files are.
        seed: Seed of the data split, the env and the replay.
        budgets: Budgets by metric (``Budget`` objects or values as the CLI takes them).
            Without a map the policy must meet them; with one they drive the clamp.
        map_name: ``"depth"`` to stretch the policy over the target's depth.
        settings: Other :class:`~autoshrink.env.config.EnvConfig` settings
            (``baseline_epochs``, ``finetune_steps``, ...), not those the policy decides.

    Returns:
        The plan.

    Raises:
        PolicyError: If the policy is invalid, does not match the model's units and widths,
            holds layer bits apply cannot reproduce, or exceeds the budgets.
        AutoshrinkError: On a bad setting, model, dataset or checkpoint.
    """
    from autoshrink.compression.policy import validate
    from autoshrink.compression.policy_map import MAPS, map_depth

    extra = dict(settings or {})
    if clash := sorted(set(extra) & {*POLICY_DECIDES, *_NAMED}):
        raise AutoshrinkError(f"settings {clash} are set by the policy or given as arguments")
    if map_name is not None and map_name not in MAPS:
        raise AutoshrinkError(f"unknown map {map_name!r}: use one of {MAPS}")
    given = {m: parse_budget(m, v) for m, v in (budgets or {}).items()}
    source: dict[str, Any] = {"policy": None if isinstance(policy, Policy) else str(policy)}
    policy = policy if isinstance(policy, Policy) else Policy.load(policy)
    named = {"model": model, "dataset": dataset, "data_dir": data_dir, "checkpoint": checkpoint}
    cfg = _target_config(policy, named, seed, extra)
    data, loaded, graph = _target(cfg, policy.round_to)
    if map_name:
        source.update(map=map_name, mapped_from=policy.meta.get("model"))
        policy = map_depth(policy, graph)
    name = f"policy+{map_name}-map" if map_name else "policy"
    validate(policy, graph)
    settings = _policy_settings(cfg, policy, graph)
    active = _budgets(policy, graph, given, mapped=bool(map_name))
    cfg = cfg.replace(**settings)
    cfg = cfg.replace(**(active or {"flops": Budget("flops", 1.0)}))
    logger.info("applying %s on %s (%s)", source["policy"], model, name)
    return PolicyPlan(cfg, policy, data, loaded, bool(map_name and given), name, source)


def _target(cfg: EnvConfig, round_to: int) -> tuple[Any, nn.Module | None, UnitGraph]:
    """The target's data, its checkpoint's weights (None: the cached baseline) and units."""
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.models import ModelSpec, build_model, load_weights
    from autoshrink.compression.units import build_units

    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.seed)
    net = build_model(ModelSpec.for_data(cfg.model, data))
    loaded = load_weights(net, cfg.checkpoint) if cfg.checkpoint is not None else None
    graph = build_units(net, data.example_input(1), round_to=round_to)
    return data, loaded, graph


def _policy_settings(cfg: EnvConfig, policy: Policy, graph: UnitGraph) -> dict[str, Any]:
    """The env settings the policy decides: mode, pins, rounding, largest sparsity.

    The largest sparsity is the env's, raised to the policy's (on the 0.01 grid).
    """
    mode, pinned = policy_mode(policy, graph)
    most = max((u.sparsity for u in policy.units.values()), default=0.0)
    sparsest = max(cfg.max_sparsity, math.ceil(round(most * 100, 6)) / 100)
    return {
        "mode": mode,
        "first_last_bits": pinned,
        "round_to": policy.round_to,
        "max_sparsity": sparsest,
    }


def _budgets(
    policy: Policy, graph: UnitGraph, given: dict[str, Budget], mapped: bool
) -> dict[str, Budget]:
    """The budgets the plan holds: the given ones, else the policy's own.

    An unmapped policy must meet them as it is; a mapped one is replayed through the
    clamp, which makes it meet them.
    """
    if mapped:
        return dict(given)
    active = dict(given) or meta_budgets(policy)
    check_budgets(policy, graph, active)
    return active


def _target_config(
    policy: Policy, named: Mapping[str, Any], seed: int, extra: Mapping[str, Any]
) -> EnvConfig:
    """The target env's settings before the policy's mode and budgets are known.

    The dataset is the given one, else the policy's. The env only replays and scores once,
    so it fine-tunes nothing per episode.
    """
    cfg = EnvConfig(dataset=policy.meta.get("dataset", "digits"), finetune_steps=0)
    paths = {k: None if named[k] is None else str(named[k]) for k in ("data_dir", "checkpoint")}
    return cfg.replace(
        model=named["model"], dataset=named["dataset"] or cfg.dataset, seed=seed, **paths, **extra
    )


def meta_budgets(policy: Policy) -> dict[str, Budget]:
    """The absolute budgets recorded in ``policy.meta["budgets"]`` (latency left out)."""
    limits = policy.meta.get("budgets") or {}
    return {
        _META_BUDGETS[k]: Budget(_META_BUDGETS[k], float(v), relative=False)
        for k, v in limits.items()
        if k in _META_BUDGETS
    }


def policy_mode(policy: Policy, graph: UnitGraph) -> tuple[str, int | None]:
    """The env mode and the pinned bits that reproduce ``policy``'s layer bits.

    Raises:
        PolicyError: If the per-layer overrides are not one bit-width on exactly the layers
            the env pins (:func:`~autoshrink.compression.quantize.pinned_layers`).
    """
    from autoshrink.compression.metrics import FLOAT_BITS
    from autoshrink.compression.quantize import pinned_layers

    pruned = any(u.keep < 1.0 for u in policy.units.values())
    quantized = bool(policy.layers) or any(u.bits < FLOAT_BITS for u in policy.units.values())
    mode = "joint" if pruned and quantized else "quant" if quantized else "prune"
    if any(u.sparsity > 0 for u in policy.units.values()):
        mode = "deep" if pruned else "sparse"
    if not policy.layers:
        return mode, None
    pins = set(pinned_layers(graph))
    values = set(policy.layers.values())
    if set(policy.layers) != pins or len(values) != 1:
        raise PolicyError(
            f"per-layer bit overrides {sorted(policy.layers)} are not supported by apply: "
            f"only one bit-width pinned on the layers {sorted(pins)}"
        )
    return mode, values.pop()


def check_budgets(policy: Policy, graph: UnitGraph, budgets: Mapping[str, Budget]) -> None:
    """Refuse a policy whose exact MACs, params or bytes exceed ``budgets``.

    Raises:
        PolicyError: Naming every budget exceeded, its value and its limit.
    """
    from autoshrink.compression.cost import cost_from_channels
    from autoshrink.compression.metrics import FLOAT_BITS
    from autoshrink.compression.policy import kept_channels, layer_bits
    from autoshrink.compression.sparsity import layer_sparsity

    full = cost_from_channels(
        graph,
        {u.name: u.c_out for u in graph.units},
        {layer.name: FLOAT_BITS for layer in graph.layers},
    )
    kept, sparsity = kept_channels(policy, graph), layer_sparsity(policy, graph)
    mine = cost_from_channels(graph, kept, layer_bits(policy, graph), sparsity)
    pairs = {"flops": (mine.macs, full.macs), "params": (mine.params, full.params)}
    pairs["size"] = (mine.bytes, full.bytes)
    over = [
        f"{m} {pairs[m][0]:,} > {b.limit(pairs[m][1]):,.0f}"
        for m, b in budgets.items()
        if m in pairs and pairs[m][0] > b.limit(pairs[m][1])
    ]
    if over:
        raise PolicyError(
            "the policy does not meet the budgets: " + "; ".join(over) + " (give no budgets "
            "to apply it as it is, or map it by depth to fit it through the budget clamp: "
            '--map depth, or map = "depth" in a batch spec)'
        )
