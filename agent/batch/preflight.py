"""Every job of a batch checked against this machine before any job runs.

:func:`~autoshrink.agent.batch.spec.parse_spec` checks a spec's shape and settings; this
checks what they name, as ``autoshrink search`` checks its flags before any work: each
model is one autoshrink can build (a ``file.py:fn`` factory's file exists; it is not run
here), each dataset is known, each ``checkpoint`` is a state dict of tensors, each
``policy_from`` a policy and each ``agent_from`` a saved agent, read without unpickling.
A spec that names a missing folder or a pickle is refused in one line naming the job and
the key, before a job has run, instead of failing job by job.

>>> check_jobs(load_spec("spec.toml"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoshrink.agent.batch.spec import BatchSpec, Job, SpecError
from autoshrink.compression.errors import AutoshrinkError

#: How many problems the one line names before it says how many more there are.
MOST_SHOWN = 3


def check_jobs(spec: BatchSpec) -> None:
    """Check every file, model and dataset the jobs of ``spec`` name.

    Raises:
        SpecError: One line naming each bad job's source and key (the first few of them).
    """
    problems: dict[str, None] = {}  # ordered, without a grid's repeats
    for job in spec.jobs:
        for key, check in _CHECKS.items():
            value = job.settings.get(key)
            if value is None:
                continue
            try:
                check(value, job)
            except AutoshrinkError as exc:
                problems[f"{job.source} ({key}): {exc}"] = None
    if problems:
        listed = list(problems)
        more = len(listed) - MOST_SHOWN
        tail = f"; and {more} more" if more > 0 else ""
        raise SpecError(
            f"{spec.name}: {len(listed)} job problem(s), nothing was run: "
            + "; ".join(listed[:MOST_SHOWN])
            + tail
        )


def _model(name: Any, job: Job) -> None:
    from autoshrink.compression.models import factory_source, is_factory_ref, torchvision_models
    from autoshrink.compression.names import ZOO_MODELS
    from autoshrink.compression.timm_models import TIMM_PREFIX

    if not isinstance(name, str):
        raise SpecError(f"must be a model name, got {name!r}")
    if is_factory_ref(name):
        factory_source(name)  # its file exists and reads; it is run by the job only
    elif name not in ZOO_MODELS and not name.startswith(TIMM_PREFIX):
        if name not in torchvision_models():
            raise SpecError(
                f"unknown model {name!r}: use one of {', '.join(ZOO_MODELS)}, a torchvision "
                "classification model name, timm:NAME, or path/to/file.py:factory"
            )


def _dataset(name: Any, job: Job) -> None:
    from autoshrink.compression.names import default_epochs

    if not isinstance(name, str):
        raise SpecError(f"must be a dataset name, got {name!r}")
    default_epochs(name)  # refuses an unknown name
    if name.lower().startswith("imagefolder:") and not Path(name.split(":", 1)[1]).is_dir():
        raise SpecError(f"no image folder at {name.split(':', 1)[1]}")


def _checkpoint(path: Any, job: Job) -> None:
    import torch

    from autoshrink.compression.models import load_problem

    path = Path(str(path))
    if not path.is_file():
        raise SpecError(f"checkpoint not found: {path}")
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's refusal of a pickle, garbage, ...
        raise SpecError(f"cannot read checkpoint {path}: {load_problem(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError(f"{path} does not hold a state dict (names to tensors)")


def _policy_from(path: Any, job: Job) -> None:
    from autoshrink.agent.search.policy_plan import policy_file
    from autoshrink.compression.policy import Policy

    file = policy_file(str(path))
    if not file.is_file():
        raise SpecError(f"no policy at {file}")
    Policy.load(file)  # JSON only: a file that is not a policy is refused here


def _agent_from(path: Any, job: Job) -> None:
    from autoshrink.agent.agent_file import read_agent_zip
    from autoshrink.agent.search.transfer import agent_algorithm
    from autoshrink.agent.search.transfer_plan import agent_file

    file = agent_file(str(path))
    agent_algorithm(file)  # a missing or foreign file, or a baseline's, read as JSON only
    read_agent_zip(file)  # its weights, read with weights_only


#: The check of each setting that names something outside the spec.
_CHECKS: dict[str, Callable[[Any, Job], None]] = {
    "model": _model,
    "dataset": _dataset,
    "checkpoint": _checkpoint,
    "policy_from": _policy_from,
    "agent_from": _agent_from,
}
