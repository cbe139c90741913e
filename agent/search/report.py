"""``result.json``: what a finished search (or apply) shipped, against the original model.

The document is ``{"type": "autoshrink.SearchRunResult", "version": 2, "data": ...}``. Its
data holds the model, dataset, mode and budgets, a ``baseline`` and a ``compressed`` side
(``accuracy`` on test and ``val_accuracy`` on the whole val split, every budget metric
under its result key, ratios, the measured latency; the compressed side also has
``val_accuracy_search``, the shipped policy's score during the search, before its final
fine-tune; ``bytes`` and ``bound_bytes`` are the stored bytes before entropy coding, the
bound the budget holds, ``artifact_bytes`` and ``file_bytes`` what is on disk, and
``compression_ratio`` the float ``state_dict`` file's bytes (``baseline.file_bytes``, as
safetensors) over ``file_bytes``; with sparsity, ``nonzero_macs_theoretical`` the MACs a
sparse kernel could at best run, beside the dense ``macs`` the MACs budget counts),
``latency`` (both models timed interleaved on the search's runtime: medians,
ratio, ``spread``, a warning when too noisy), ``latency_check`` (with a latency budget:
the table's estimate and the fresh measurement against it,
:mod:`~autoshrink.agent.search.latency_check`), whether every budget was met
(``budgets_met``: by the cost model, and by measurement for latency;
``budgets_met_estimate``: by the cost model and table alone), and how the search and the
finish went.

Version 1 (autoshrink 0.1) was flat, without ``data``, and named the measured latency
``latency_ms`` in milliseconds; :func:`read_result` reads both, as version 2.

>>> upgrade({"type": RESULT_TYPE, "version": 1, "baseline": {"latency_ms": 2.0}})["baseline"]
{'measured_latency_s': 0.002}
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym

from autoshrink.agent.env_view import env_device, search_env
from autoshrink.agent.search.config import FinalConfig
from autoshrink.agent.search.latency_check import latency_check, measure_latency
from autoshrink.agent.search.run_folder import RunFolder
from autoshrink.compression.documents import read_document
from autoshrink.compression.errors import CheckpointError
from autoshrink.compression.json_write import write_document
from autoshrink.compression.metrics import FLOAT_BITS, MEASURED_LATENCY, METRICS, by_result_key
from autoshrink.compression.policy import Policy, kept_channels
from autoshrink.compression.versioned import unwrap

RESULT_TYPE = "autoshrink.SearchRunResult"
#: 2: the versioned envelope, and the measured latency as ``measured_latency_s``.
RESULT_VERSION = 2


@dataclass(frozen=True)
class Shipped:
    """What the finish shipped.

    Args:
        policy: The shipped policy.
        artifact: The saved artifact's info (``path``, ``payload_bytes``, ``file_bytes``).
        episode: The episode whose policy shipped.
        finalists: Each finalist's episode, search reward and val accuracy (empty for one).
        started: ``time.perf_counter()`` when the finish started.
    """

    policy: Policy
    artifact: Any
    episode: int
    finalists: list[dict[str, Any]]
    started: float


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write ``result`` as a ``result.json`` document, atomically."""
    write_document(path, RESULT_TYPE, RESULT_VERSION, result)


def read_result(path: str | Path) -> dict[str, Any]:
    """The data of a ``result.json`` (version 1 or 2).

    Raises:
        CheckpointError: If the file is missing, not JSON or not a search result.
    """
    path = Path(path)
    obj = read_document(path, "search result", allow_nonfinite=True, error=CheckpointError)
    return upgrade(obj, f"search result {path}")


def upgrade(obj: object, what: str = "search result") -> dict[str, Any]:
    """The version-2 data of a parsed ``result.json`` of any version."""
    if isinstance(obj, dict) and obj.get("type") == RESULT_TYPE and obj.get("version") == 1:
        data = {k: v for k, v in obj.items() if k not in ("type", "version")}
        for side in ("baseline", "compressed"):
            values = data.get(side)
            if isinstance(values, dict) and "latency_ms" in values:
                values = dict(values)
                ms = values.pop("latency_ms")
                values[MEASURED_LATENCY] = ms / 1e3 if isinstance(ms, int | float) else ms
                data[side] = values
        return data
    return unwrap(obj, RESULT_TYPE, RESULT_VERSION, what, CheckpointError)


def _budgets(cfg: Any, limits: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each budget as given (value, relative) and as the absolute limit it came to."""
    return {
        m: {"value": b.value, "relative": b.relative, "limit": limits.get(m)}
        for m, b in cfg.budgets.items()
    }


def build_result(
    env: gym.Env,
    search: Any,
    shipped: Shipped,
    final: FinalConfig,
    seed: int,
    data: Any,
) -> dict[str, Any]:
    """The data of ``result.json``: test accuracy, costs and timings of both models."""
    from autoshrink.compression.artifact import load_artifact, state_dict_file_bytes

    inner = search_env(env, ("config", "limits", "baseline", "model", "data"))
    cfg = inner.config
    values = realised_costs(env, shipped.policy)
    limits = dict(inner.limits)
    model = load_artifact(shipped.artifact.path, factory=cfg.model)
    timed = measure_latency(
        inner.model,
        model,
        data.example_input(cfg.latency_batch),
        cfg.runtime,
        final.latency_repeats,
    )
    baseline, compressed = _sides(env, model, data, timed, values)
    baseline["file_bytes"] = state_dict_file_bytes(inner.model)
    compressed["val_accuracy_search"] = _search_accuracy(search, shipped.episode)
    compressed.update(_sizes(shipped.artifact, baseline))
    compressed.update(_nonzero_macs(env, shipped.policy))
    met_estimate = all(values[m] <= lim for m, lim in limits.items())
    check = _check(inner, timed, values)
    final_time = time.perf_counter() - shipped.started
    return {
        "model": cfg.model,
        "dataset": cfg.dataset,
        "mode": cfg.mode,
        "budgets": _budgets(cfg, limits),
        "baseline": baseline,
        "baseline_training": baseline_training(env),
        "compressed": compressed,
        # a latency budget the fresh measurement breaks is not met, whatever the table says
        "budgets_met": met_estimate and (check is None or check["met_by_measurement"]),
        "budgets_met_estimate": met_estimate,
        "latency": {"runtime": cfg.runtime, "batch": cfg.latency_batch, **timed.to_dict()},
        "latency_check": check,
        "seed": seed,
        "episodes": search.episodes,
        "agent": search.algorithm,
        "best_episode": search.best_episode,
        "best_reward": search.best_reward,
        "shipped_episode": shipped.episode,
        "finalists": shipped.finalists,
        "search_time_s": search.wall_time_s,
        "final_time_s": final_time,
        "wall_time_s": search.wall_time_s + final_time,
        "final": asdict(final),
        "env": cfg.to_dict()["data"],
        "artifact": Path(shipped.artifact.path).name,
        "policy": RunFolder(Path(search.run_dir)).policy.name,
    }


def _sides(
    env: gym.Env, model: Any, data: Any, timed: Any, values: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The baseline's and the compressed model's accuracies, costs and measured latency."""
    inner = search_env(env, ("model", "baseline"))
    device = env_device(env)
    baseline = {
        **_side(inner.model, data, device),
        MEASURED_LATENCY: timed.reference.median,
        **by_result_key(inner.baseline),
    }
    compressed = {
        **_side(model, data, device),
        MEASURED_LATENCY: timed.candidate.median,
        **by_result_key(values),
    }
    for m in METRICS[:3]:  # the measured latency has no ratio to a table's estimate
        if baseline.get(m.key):
            compressed[m.ratio_key] = compressed[m.key] / baseline[m.key]
    return baseline, compressed


def _check(inner: Any, timed: Any, values: dict[str, float]) -> dict[str, Any] | None:
    """The latency budget's check by the fresh measurement (None without one)."""
    if "latency" not in inner.limits:
        return None
    budget, limit = inner.config.budgets["latency"], inner.limits["latency"]
    return latency_check(timed, budget, limit, values["latency"], inner.baseline["latency"])


def _sizes(artifact: Any, baseline: dict[str, Any]) -> dict[str, Any]:
    """Bytes on disk, the bound they never exceed, and the ratio to the float file."""
    return {
        "artifact_bytes": artifact.payload_bytes,
        "bound_bytes": artifact.bound,
        "file_bytes": artifact.file_bytes,
        "compression_ratio": baseline["file_bytes"] / max(artifact.file_bytes, 1),
    }


def _nonzero_macs(env: gym.Env, policy: Policy) -> dict[str, int]:
    """Theoretical MACs with zeroed weights skipped, where the policy has any sparsity."""
    from autoshrink.compression.cost import nonzero_macs
    from autoshrink.compression.sparsity import layer_sparsity

    inner = search_env(env, ("graph",))
    sparsity = layer_sparsity(policy, inner.graph)
    if not sparsity:
        return {}
    kept = kept_channels(policy, inner.graph)
    return {"nonzero_macs_theoretical": nonzero_macs(inner.graph, kept, sparsity)}


def baseline_training(env: gym.Env) -> dict[str, Any] | None:
    """How the env's cached baseline trained, and whether it is near chance (or too low).

    None when the env was given its model or a checkpoint (nothing is known of them).
    """
    inner = search_env(env, ("config",))
    trained = getattr(inner, "baseline_training", None)
    if trained is None:
        return None
    floor = inner.config.min_baseline_accuracy
    return {
        "val_accuracy": trained.val_accuracy,
        "test_accuracy": trained.test_accuracy,
        "epochs": trained.epochs,
        "chance_accuracy": trained.chance_accuracy,
        "near_chance": trained.near_chance(floor),
    }


def _side(model: Any, data: Any, device: Any) -> dict[str, float]:
    """Test and val accuracy of a CPU model, scored on ``device``.

    The val accuracy (the whole val split) is the one a search and its finalists are judged
    by, the test accuracy the one reported: both are here so that neither is mistaken for
    the other.
    """
    from autoshrink.compression.device import on_device
    from autoshrink.compression.evaluate import accuracy

    test = data.for_device(device).loader("test", batch_size=256)
    return {
        "accuracy": accuracy(on_device(model, device), test),
        "val_accuracy": accuracy(
            on_device(model, device), data.for_device(device).loader("val", batch_size=256)
        ),
    }


def _search_accuracy(search: Any, episode: int) -> float | None:
    """The search's val-subset accuracy of ``episode`` (the best's without a log)."""
    if episode == search.best_episode:
        value = search.best_metrics.get("accuracy")
        return None if value is None else float(value)
    for record in RunFolder(Path(search.run_dir)).read_episodes():
        if record.get("episode") == episode:
            value = record.get("accuracy")
            return None if value is None else float(value)
    return None


def realised_costs(env: gym.Env, policy: Policy) -> dict[str, float]:
    """Every budget metric of ``policy`` on ``env``'s exact cost model (and latency table).

    Keyed by budget name (``flops``, ``size``, ...), as the env's limits are.
    """
    inner = search_env(env, ("graph", "units", "clamp"))
    kept = kept_channels(policy, inner.graph)
    channels = [kept[u.name] for u in inner.units]
    units = [policy.units.get(u.name) for u in inner.units]
    bits = [FLOAT_BITS if up is None else up.bits for up in units]
    sparsity = [0.0 if up is None else up.sparsity for up in units]
    return dict(inner.clamp.measure(channels, bits, sparsity))
