"""Batch specs: many searches (or applies) described in one TOML file, checked before any runs.

A spec holds a ``[defaults]`` table, explicit ``[[jobs]]`` and/or grids (``[grid]`` or
``[[grid]]``) expanded as models × datasets × budgets × agents × seeds. A job's settings
are its defaults, then its grid's single settings, then its axis values (or its own table).
Keys are :class:`~autoshrink.env.config.EnvConfig` fields (budgets as ``0.5`` or
``"300KB"``), the agent (``agent``, ``episodes``, ``warmup``, ``workers``, ``backend``,
``address``, ``agent_options``), the final
fine-tune (``final_epochs`` and the other ``final_*`` fields of
:class:`~autoshrink.agent.search.config.FinalConfig`) and the batch's own ``kind``, ``name``,
``cpus`` (its torch threads) and ``timeout``. ``device`` is an EnvConfig field like any
other: where the job trains and scores. A grid's ``budgets`` entry replaces every budget
of the defaults.
Relative paths (``checkpoint``, ``data_dir``, ``agent_from``, ``policy_from``, a
``file.py:fn`` model) are relative to the spec file.

>>> spec = parse_spec(EXAMPLE_SPEC)
>>> len(spec.jobs), spec.jobs[0].kind
(4, 'search')

Errors name the line and the key: ``spec.toml line 7 (jobs[1].episodes): ...``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from autoshrink.agent.batch.grid import (
    BUDGET_KEYS,
    MAX_GRID_JOBS,
    Problem,
    RawJob,
    blame,
    expand_grid,
    key_lines,
)
from autoshrink.compression.documents import parse_document, read_document
from autoshrink.compression.errors import AutoshrinkError

KINDS = ("search", "apply")
BATCH_KEYS = ("kind", "name", "cpus", "timeout")
AGENT_KEYS = ("agent", "episodes", "warmup", "workers", "backend", "address", "agent_options")
#: Apply jobs take one source. ``agent_from``: the trained agent to play once on the job's
#: ``model`` (AMC's transfer), a search's run folder or its agent.zip; as in
#: ``autoshrink apply --agent``, env settings the job does not give come from that search,
#: and budgets given replace all of its budgets. ``policy_from``: a policy.json (or the run
#: folder holding one) applied as ``autoshrink apply --policy`` does, with ``map = "depth"``
#: as ``--map depth``.
APPLY_SOURCES = ("agent_from", "policy_from")
APPLY_KEYS = (*APPLY_SOURCES, "map")
_NEEDS_SOURCE = (
    "an apply job needs agent_from (a search run folder) or policy_from (a policy.json or "
    "its run folder), and model"
)

EXAMPLE_SPEC = """\
# autoshrink batch spec: 4 quick searches of ResNet-20 on the embedded digits set.
# Run: autoshrink batch spec.toml --out batch-out

[defaults]
model = "resnet20"
dataset = "digits"
episodes = 6          # a real search wants 60 or more
warmup = 2
final_epochs = 1
# device = "cuda"     # where each job trains and scores (auto: CUDA when available)

[grid]
budgets = [{ flops = 0.5 }, { flops = 0.3, size = 0.1 }]
agents = ["ddpg", "random"]
seeds = [0]

# Single jobs may be added as well:
# [[jobs]]
# model = "smallcnn"
# size = "40KB"
"""


class SpecError(AutoshrinkError):
    """A batch spec is malformed; the message names every problem's line and key."""


def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def env_keys() -> tuple[str, ...]:
    """The settings that go to the job's EnvConfig (its field names)."""
    from autoshrink.env.config import EnvConfig

    return _field_names(EnvConfig)


def _final_keys() -> tuple[str, ...]:
    from autoshrink.agent.search.config import FINAL_PREFIX, FinalConfig

    return tuple(f"{FINAL_PREFIX}{n}" for n in _field_names(FinalConfig))


def known_keys(kind: str) -> tuple[str, ...]:
    """Every setting a job of ``kind`` accepts."""
    extra = APPLY_KEYS if kind == "apply" else AGENT_KEYS
    return (*BATCH_KEYS, *env_keys(), *extra, *_final_keys())


@dataclass(frozen=True)
class Job:
    """One job of a batch, its settings resolved.

    Args:
        id: Stable identity: a readable slug and a hash of the settings. Resume skips
            jobs whose id has a record; the job's run folder is ``runs/<id>``.
        kind: ``search`` or ``apply``.
        settings: The merged settings (JSON-ready), defaults applied.
        source: Where the job came from in the spec (``jobs[2]``, ``grid[0] #5``).
    """

    id: str
    kind: str
    settings: dict[str, Any]
    source: str

    @property
    def cpus(self) -> int:
        """CPUs (torch threads; Ray ``num_cpus``) the job asks for."""
        return int(self.settings.get("cpus", 1))

    @property
    def cores(self) -> int:
        """Cores the job occupies: its threads, or its search's workers (a core each) if more."""
        return max(self.cpus, int(self.settings.get("workers", 1)))

    @property
    def timeout_s(self) -> float | None:
        """The job's own timeout in seconds, if the spec gives one."""
        value = self.settings.get("timeout")
        return None if value is None else float(value)

    @property
    def label(self) -> str:
        """A short human description: model/dataset, agent, seed and budgets."""
        s = self.settings
        budgets = " ".join(f"{m}<={s[m]}" for m in BUDGET_KEYS if m in s) or "default budgets"
        if self.kind == "search":
            who = s["agent"]
        elif "policy_from" in s:
            path = Path(s["policy_from"])
            name = path.parent.name if path.suffix == ".json" and path.parent.name else path.name
            who = f"apply policy {name}" + (f" {s['map']}-map" if s.get("map") else "")
            budgets = budgets.replace("default", "its")
        else:
            who, budgets = f"apply {Path(s['agent_from']).name}", budgets.replace("default", "its")
        return f"{s['model']}/{s.get('dataset', '-')} {who} s{s['seed']} {budgets}"

    def env_config(self) -> Any:
        """The job's :class:`~autoshrink.env.config.EnvConfig`."""
        from autoshrink.env.config import EnvConfig

        env = {k: v for k, v in self.settings.items() if k in env_keys()}
        if "bit_choices" in env:
            env["bit_choices"] = tuple(env["bit_choices"])
        return EnvConfig(**env)

    def search_config(self) -> Any:
        """The job's :class:`~autoshrink.agent.search.config.SearchConfig` (search jobs).

        Built from the job's settings exactly as ``autoshrink search`` builds it from flags.
        """
        from autoshrink.agent.search.config import SearchConfig

        own = (*BATCH_KEYS, *APPLY_KEYS)
        return SearchConfig.from_settings({k: v for k, v in self.settings.items() if k not in own})

    def agent_config(self) -> Any:
        """The job's :class:`~autoshrink.agent.config.AgentConfig` (search jobs)."""
        return self.search_config().agent

    def final_config(self) -> Any:
        """The job's :class:`~autoshrink.agent.search.config.FinalConfig`.

        An apply job's finish takes the search's defaults and the dataset's, as
        ``autoshrink apply`` does.
        """
        from autoshrink.agent.search.config import DATASET_DEFAULTS, FINAL_PREFIX, FinalConfig

        dataset = str(self.settings.get("dataset", ""))
        given = {**DATASET_DEFAULTS.get(dataset, {}), **self.settings}
        final = {k[len(FINAL_PREFIX) :]: v for k, v in given.items() if k in _final_keys()}
        return FinalConfig(**final)


@dataclass(frozen=True)
class BatchSpec:
    """A validated batch: its jobs in spec order, and the text they came from."""

    jobs: tuple[Job, ...]
    text: str
    name: str = "<spec>"


def load_spec(path: str | Path) -> BatchSpec:
    """Read and validate a spec file.

    Raises:
        SpecError: If the file cannot be read, is not TOML, or any job is invalid.
    """
    path = Path(path)
    read_document(path, "batch spec", kind="toml", error=SpecError)  # caps, UTF-8, syntax
    try:
        text = path.read_bytes().decode()
    except OSError as exc:
        raise SpecError(f"cannot read batch spec {path}: {exc.strerror}") from exc
    return parse_spec(text, path.name, base_dir=path.parent)


def parse_spec(text: str, name: str = "<spec>", base_dir: str | Path | None = None) -> BatchSpec:
    """Parse and validate a spec; every problem is reported at once, with its line.

    Args:
        text: The TOML text.
        name: The spec's name in messages (its file name).
        base_dir: Where relative ``agent_from`` paths start; left relative when None.
    """
    data: Any = parse_document(text, name, kind="toml", error=SpecError)
    lines = key_lines(text)
    problems: dict[str, None] = {}  # ordered, without the repeats of a grid's jobs

    def problem(path: str, message: str) -> None:
        line = lines.get(path) or lines.get(path.rsplit(".", 1)[0])
        problems[f"line {line} ({path}): {message}" if line else f"{path}: {message}"] = None

    for key in sorted(set(data) - {"defaults", "jobs", "grid"}):
        problem(key, "unknown top-level key; use [defaults], [[jobs]] or [grid]")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        problem("defaults", "must be a table")
        defaults = {}
    base = RawJob("", dict(defaults), dict.fromkeys(defaults, "defaults"))
    raw: list[RawJob] = []
    jobs = data.get("jobs", [])
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        problem("jobs", "must be an array of tables: [[jobs]]")
        jobs = []
    for i, table in enumerate(jobs):
        raw.append(base.merge(f"jobs[{i}]", table, f"jobs[{i}]"))
    grids = data.get("grid", [])
    single = isinstance(grids, dict)
    for i, grid in enumerate([grids] if single else grids if isinstance(grids, list) else []):
        raw += expand_grid(grid, base, "grid" if single else f"grid[{i}]", problem)
    if len(raw) > MAX_GRID_JOBS:
        problem("jobs", f"the spec holds {len(raw)} jobs; at most {MAX_GRID_JOBS}")
        raw = []
    if not raw and not problems:
        problem("jobs", "the spec holds no job: add [[jobs]] or a [grid]")
    built = [job for r in raw if (job := _build_job(r, problem, base_dir)) is not None]
    seen: dict[str, str] = {}
    for job in built:
        if job.id in seen:
            problem(
                job.source.split(" ")[0], f"{job.source} has the same settings as {seen[job.id]}"
            )
        seen.setdefault(job.id, job.source)
    if problems:
        raise SpecError(f"{name}: {len(problems)} problem(s): " + "; ".join(problems))
    return BatchSpec(tuple(built), text, name)


def _build_job(raw: RawJob, problem: Problem, base_dir: str | Path | None) -> Job | None:
    settings, source = raw.settings, raw.source
    kind = settings.get("kind", "search")
    if kind not in KINDS:
        problem(blame(raw, "kind"), f"must be one of {KINDS}, got {kind!r}")
        return None
    allowed = known_keys(kind)
    unknown = [k for k in settings if k not in allowed]
    for key in unknown:
        close = difflib.get_close_matches(key, allowed, n=2)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        problem(blame(raw, key), f"unknown key {key!r} for a {kind} job{hint}")
    if unknown:
        return None
    s = {"kind": kind, "seed": 0, **settings}
    if kind == "search":  # an apply job takes what it does not set from the agent's search
        _search_defaults(s)
    elif not _check_apply(raw, s, problem):
        return None
    if base_dir is not None:  # workers (Ray's above all) may run in another folder
        _resolve_paths(s, Path(base_dir))
    checks = [
        ("cpus", lambda v: _is_int(v) and v >= 1, "a positive integer"),
        ("timeout", lambda v: _is_num(v) and v > 0, "a positive number of seconds"),
        ("name", lambda v: isinstance(v, str) and v.strip(), "a non-empty string"),
        ("agent_options", lambda v: isinstance(v, dict), "a table"),
    ]
    for key, ok, want in checks:
        if key in s and not ok(s[key]):
            problem(blame(raw, key), f"must be {want}, got {s[key]!r}")
            return None
    job = Job(_job_id(s), kind, s, source)
    builders = [("env", job.env_config), ("final", job.final_config)]
    if kind == "search":
        builders = [("search", job.search_config)]
    for what, build in builders:
        try:
            build()
        except (AutoshrinkError, TypeError, ValueError) as exc:
            where = blame(raw, message=str(exc))
            who = f"{source}: " if where == raw.table() and source != where else ""
            problem(where, f"{who}bad {what} settings: {exc}")
            return None
    return job


def _search_defaults(s: dict[str, Any]) -> None:
    """Write the library's search defaults into a search job's settings.

    They are :class:`~autoshrink.agent.search.config.SearchConfig`'s own; writing them into
    the settings keeps job ids stable when a default changes (a resumed batch re-runs
    nothing it has already run under the old default).
    """
    from autoshrink.agent.config import DEFAULT_EPISODES, default_warmup
    from autoshrink.agent.search.config import DATASET_DEFAULTS
    from autoshrink.env.config import EnvConfig

    s.setdefault("model", EnvConfig.model)
    s.setdefault("dataset", EnvConfig.dataset)
    dataset = DATASET_DEFAULTS.get(str(s["dataset"]), {})
    if "finetune_steps" in dataset:
        s.setdefault("finetune_steps", dataset["finetune_steps"])
    s.setdefault("agent", "ddpg")
    s.setdefault("episodes", DEFAULT_EPISODES)
    if _is_int(s["episodes"]) and s["episodes"] >= 0:
        s.setdefault("warmup", default_warmup(s["episodes"]))


def _check_apply(raw: RawJob, s: dict[str, Any], problem: Problem) -> bool:
    """Whether an apply job names its model and exactly one source, and ``map`` fits it."""
    from autoshrink.agent.search.policy_plan import POLICY_DECIDES
    from autoshrink.compression.policy_map import MAPS

    given = [k for k in APPLY_SOURCES if k in s]
    if len(given) > 1:
        problem(blame(raw, "policy_from"), "give agent_from or policy_from, not both")
        return False
    if not given or not isinstance(s[given[0]], str) or not isinstance(s.get("model"), str):
        problem(raw.table(), _NEEDS_SOURCE)
        return False
    ok = True
    if "map" in s and "policy_from" not in s:
        problem(blame(raw, "map"), "map stretches a policy_from; an agent transfers without it")
        ok = False
    elif "map" in s and s["map"] not in MAPS:
        problem(blame(raw, "map"), f"must be one of {MAPS}, got {s['map']!r}")
        ok = False
    for key in POLICY_DECIDES if "policy_from" in s else ():
        if key in s:
            problem(blame(raw, key), f"{key} is set by the policy of a policy_from job")
            ok = False
    return ok


def _resolve_paths(settings: dict[str, Any], base: Path) -> None:
    """Make file settings absolute, relative to the spec's folder (``base``)."""
    for key in ("agent_from", "policy_from", "checkpoint", "data_dir"):
        if isinstance(settings.get(key), str):
            settings[key] = str((base / settings[key]).expanduser().resolve())
    model = settings.get("model")
    if isinstance(model, str) and (m := re.fullmatch(r"(.+\.py):(\w+)", model)):
        settings["model"] = f"{(base / m.group(1)).expanduser().resolve()}:{m.group(2)}"


def _job_id(settings: dict[str, Any]) -> str:
    canonical = json.dumps(settings, sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    s = settings
    if "name" in s:
        slug = str(s["name"])
    else:
        who = s.get("agent", "apply") if s["kind"] == "search" else "apply"
        budgets = "-".join(f"{m}{s[m]}" for m in BUDGET_KEYS if m in s)
        parts = (s["model"], s.get("dataset"), who, f"s{s['seed']}", budgets)
        slug = "-".join(str(x) for x in parts if x)
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", slug).strip("_.")[:60]
    return f"{slug}-{digest}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
