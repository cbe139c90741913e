"""SearchConfig: one search's settings and defaults, in one place.

A search is an env (:class:`~autoshrink.env.config.EnvConfig`: model, data, budgets,
per-episode evaluation), an agent (:class:`~autoshrink.agent.config.AgentConfig`) and a
finish (:class:`FinalConfig`: the final fine-tune and its finalists). ``autoshrink
search``, a batch job and the Python API all build it with :meth:`SearchConfig.create`
from the same flat settings, so that the same settings give the same search:

>>> cfg = SearchConfig.create(flops=0.5, size=0.1, episodes=12)
>>> cfg.env.finetune_steps, cfg.agent.warmup_episodes, cfg.final.finalists  # digits
(0, 4, 1)
>>> SearchConfig.from_json(cfg.to_json()) == cfg
True

Where a setting is not given, the defaults are the dataclasses' own, then the dataset's
(:data:`DATASET_DEFAULTS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from autoshrink.agent.config import AgentConfig
from autoshrink.compression.documents import read_document
from autoshrink.compression.errors import AutoshrinkError, CheckpointError
from autoshrink.compression.versioned import JsonFile, unwrap, wrap
from autoshrink.env.config import SPARSE_MODES, EnvConfig

SEARCH_TYPE = "autoshrink.SearchConfig"
SEARCH_VERSION = 1
FINAL_TYPE = "autoshrink.FinalConfig"
FINAL_VERSION = 1
#: The 100-step search reward misranks policies whose rewards lie within its noise;
#: fine-tuning the 5 best distinct ones and picking on the whole val split raised the final
#: test accuracy of DDPG and random search on Fashion-MNIST (docs/benchmarks.md).
DEFAULT_FINALISTS = 5
#: Per-dataset defaults, for settings the user leaves out. On the embedded digits set a
#: 5-epoch final fine-tune brings nearly any policy back to ~98 %, so per-episode
#: fine-tuning buys no ranking there (BN recalibration alone spreads episode accuracies from
#: ~0.1 to ~0.97 at a fifth of the cost), and the search's best ships without finalists.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"finetune_steps": 0, "final_finalists": 1},
}
#: Settings of the agent, as flags and batch specs name them -> AgentConfig fields.
AGENT_SETTINGS: dict[str, str] = {
    "agent": "algorithm",
    "episodes": "episodes",
    "warmup": "warmup_episodes",
    "workers": "workers",
    "backend": "backend",
    "address": "address",
    "threads": "threads",
}
FINAL_PREFIX = "final_"


@dataclass(frozen=True)
class FinalConfig(JsonFile):
    """How the best policy's model is finished.

    Args:
        epochs: Fine-tune epochs over the train split (0 = BN recalibration only).
        lr: Peak learning rate of that fine-tune (cosine to 0).
        distill: Distil from the uncompressed model while fine-tuning.
        batch_size: Fine-tune batch size.
        bn_batches: Train batches for BatchNorm recalibration before the fine-tune.
        latency_repeats: Interleaved rounds timing the baseline against the shipped model
            (the measured latency columns and a latency budget's fresh check).
        finalists: How many of the search's best distinct policies (by search reward) are
            fine-tuned and scored on the whole val split; the best on val ships. 1 ships
            the search's best without scoring it on val.
        finalist_spacing: Least distance between two finalists
            (:func:`~autoshrink.agent.search.finalists.record_distance`: mean keep-ratio
            difference per unit, plus bits over 8), so that near-copies of one policy do not
            fill the list; the best of the rest fill it when too few are that far apart.
    """

    json_what: ClassVar[str] = "final fine-tune config"

    epochs: int = 3
    lr: float = 0.01
    distill: bool = False
    batch_size: int = 128
    bn_batches: int = 8
    latency_repeats: int = 30
    finalists: int = DEFAULT_FINALISTS
    finalist_spacing: float = 0.05

    def __post_init__(self) -> None:
        lowest = {"epochs": 0, "bn_batches": 0, "batch_size": 1, "finalists": 1}
        lowest["latency_repeats"] = 1
        problems = [
            f"{k} must be an integer" if not _is_int(v) else f"{k} must be >= {lo}"
            for k, lo in lowest.items()
            if not _is_int(v := getattr(self, k)) or v < lo
        ]
        if not _is_num(self.lr) or not self.lr > 0:
            problems.append("lr must be > 0")
        if not _is_num(self.finalist_spacing) or not 0 <= self.finalist_spacing <= 1:
            problems.append("finalist_spacing must be in [0, 1]")
        if not isinstance(self.distill, bool):
            problems.append("distill must be true or false")
        if problems:
            raise AutoshrinkError(f"bad final fine-tune settings: {'; '.join(problems)}")

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form."""
        return wrap(FINAL_TYPE, FINAL_VERSION, asdict(self))

    @classmethod
    def from_dict(cls, obj: object) -> FinalConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        data = unwrap(obj, FINAL_TYPE, FINAL_VERSION, cls.json_what)
        return cls(**_known(cls, data, cls.json_what))


@dataclass(frozen=True)
class SearchConfig(JsonFile):
    """Everything one search is: its env, its agent and its finish.

    Args:
        env: The env's settings (model, data, budgets, per-episode evaluation).
        agent: The agent and its episodes.
        final: The final fine-tune and its finalists.
    """

    json_what: ClassVar[str] = "search config"

    env: EnvConfig = field(default_factory=EnvConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    final: FinalConfig = field(default_factory=FinalConfig)

    def __post_init__(self) -> None:
        if self.agent.algorithm == "deep-compression" and self.env.mode not in SPARSE_MODES:
            raise AutoshrinkError(
                f"agent deep-compression searches sparsity: it needs mode deep or sparse, "
                f"not {self.env.mode}"
            )

    @classmethod
    def create(cls, **settings: Any) -> SearchConfig:
        """A config from flat settings, the search's defaults filling the rest.

        See :meth:`from_settings` for the keys.
        """
        return cls.from_settings(settings)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SearchConfig:
        """A config from flat settings, as a batch spec's job or the CLI's flags give them.

        Keys are :class:`EnvConfig` fields (budgets as ``0.5`` or ``"300KB"``), ``agent``
        (the alias), ``episodes``, ``warmup``, ``agent_options`` (other AgentConfig
        fields) and ``final_<field>`` for :class:`FinalConfig`. ``seed`` seeds the env, the
        agent and the finish alike. The dataset's defaults apply to keys not given.

        Raises:
            AutoshrinkError: On an unknown key or a bad value, naming it.
        """
        given = dict(settings)
        dataset = given.get("dataset", EnvConfig.dataset)
        for key, value in DATASET_DEFAULTS.get(str(dataset), {}).items():
            given.setdefault(key, value)
        env_names = {f.name for f in fields(EnvConfig)}
        final_names = {f.name for f in fields(FinalConfig)}
        agent_kw = dict(given.pop("agent_options", None) or {})
        final_kw: dict[str, Any] = {}
        for key in list(given):
            if key in AGENT_SETTINGS:
                agent_kw[AGENT_SETTINGS[key]] = given.pop(key)
            elif key.startswith(FINAL_PREFIX) and key[len(FINAL_PREFIX) :] in final_names:
                final_kw[key[len(FINAL_PREFIX) :]] = given.pop(key)
        unknown = sorted(set(given) - env_names)
        if unknown:
            raise AutoshrinkError(f"unknown search setting(s): {unknown}")
        if "bit_choices" in given:
            given["bit_choices"] = tuple(given["bit_choices"])
        env = EnvConfig(**given)
        agent_kw.setdefault("seed", env.seed)
        return cls(env, AgentConfig(**agent_kw), FinalConfig(**final_kw))

    def settings(self) -> dict[str, Any]:
        """The flat settings :meth:`from_settings` reads back into this config."""
        agent = self.agent.to_dict()["data"]
        out: dict[str, Any] = {f.name: getattr(self.env, f.name) for f in fields(EnvConfig)}
        for key, name in AGENT_SETTINGS.items():
            out[key] = agent.pop(name)
        out["agent_options"] = agent
        out.update({f"{FINAL_PREFIX}{k}": v for k, v in asdict(self.final).items()})
        return out

    def replace(self, **changes: Any) -> SearchConfig:
        """A copy with flat ``changes`` applied (keys as :meth:`from_settings` reads them)."""
        return self.from_settings({**self.settings(), **changes})

    def make_env(self, **objects: Any) -> Any:
        """The :class:`~autoshrink.env.compression_env.CompressionEnv` of this search.

        Args:
            objects: ``model``, ``data``, ``evaluator`` or ``latency`` to use instead of
                building them (see the env's arguments).
        """
        from autoshrink.env.compression_env import CompressionEnv

        return CompressionEnv(self.env, **objects)

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON-ready form."""
        parts = {"env": self.env.to_dict(), "agent": self.agent.to_dict()}
        return wrap(SEARCH_TYPE, SEARCH_VERSION, {**parts, "final": self.final.to_dict()})

    @classmethod
    def from_dict(cls, obj: object) -> SearchConfig:
        """Inverse of :meth:`to_dict`; also reads a run folder's ``config.json`` of v0.1.

        v0.1 wrote ``{"agent": ..., "env": ...}`` without an envelope or the finish.
        """
        if isinstance(obj, dict) and "type" not in obj and {"agent", "env"} <= set(obj):
            data: dict[str, Any] = dict(obj)
        else:
            data = unwrap(obj, SEARCH_TYPE, SEARCH_VERSION, cls.json_what)
        _known(cls, data, cls.json_what)
        env = EnvConfig.from_dict(data.get("env"))
        final = data.get("final")
        if final is None:  # v0.1 kept no finish: the dataset's default one
            defaults = DATASET_DEFAULTS.get(env.dataset, {})
            own = {
                k[len(FINAL_PREFIX) :]: v for k, v in defaults.items() if k.startswith(FINAL_PREFIX)
            }
            final = FinalConfig(**own).to_dict()
        return cls(env, AgentConfig.from_dict(data.get("agent")), FinalConfig.from_dict(final))


def saved_agent(path: str | Path) -> AgentConfig:
    """The agent settings of a run folder's ``config.json`` (any version, any env)."""
    path = Path(path)
    what = f"search config {path}"
    obj = read_document(path, "search config", error=CheckpointError)
    if isinstance(obj, dict) and "type" not in obj:  # v0.1: {"agent": ..., "env": ...}
        data: Mapping[str, Any] = obj
    else:
        data = unwrap(obj, SEARCH_TYPE, SEARCH_VERSION, what, CheckpointError)
    try:
        return AgentConfig.from_dict(data.get("agent"))
    except AutoshrinkError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _known(cls: Any, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise AutoshrinkError(f"{what} has unknown keys {unknown}")
    return dict(data)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
