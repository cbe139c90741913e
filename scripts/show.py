"""``autoshrink show``: what a policy decided, one row per unit, with its cost before and after.

It reads a run folder (the shipped artifact, or ``policy.json`` while the search runs), a
``policy.json`` or an artifact, each through its checked reader, and builds the model's
units to cost them exactly; no weights are loaded and no code is run, unless a user
model's factory is named with ``--model``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoshrink.compression.errors import AutoshrinkError, CheckpointError, PolicyError
from autoshrink.scripts.console import console
from autoshrink.scripts.options import DATA_DIR_HELP, JSON_HELP
from autoshrink.scripts.unit_table import FULL_WIDTH, print_unit_table

if TYPE_CHECKING:
    from autoshrink.compression.breakdown import Breakdown
    from autoshrink.compression.policy import Policy


@dataclass(frozen=True)
class Shown:
    """A breakdown and what it is of."""

    model: str
    input_shape: tuple[int, ...]
    source: str
    table: Breakdown

    @property
    def title(self) -> str:  # noqa: D102
        shape = "x".join(map(str, self.input_shape))
        units = sum(1 for row in self.table.rows if row.kind == "unit")
        return f"{self.model} on {shape}: {units} units ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: model, input shape, source, rows and totals."""
        head = {"model": self.model, "input_shape": list(self.input_shape)}
        return {**head, "source": self.source, **self.table.to_dict()}


#: The one line ``autoshrink --help`` shows.
HELP = "a run's, policy's or artifact's decisions per unit, with costs before and after"


def add_parser(subparsers: Any) -> None:
    """Register ``show`` and its flags."""
    p = subparsers.add_parser(
        "show",
        help=HELP,
        description=(
            "One row per prunable unit: its layers, channels kept of all, keep-ratio and "
            "weight bits (* marks a layer whose bits the policy pins, as the first and last "
            "layers), and its exact MACs, parameters and bytes before and after. A layer "
            "counts in the unit that owns its output channels; layers no unit owns (the "
            "classifier, frozen units) have rows of their own."
        ),
    )
    p.add_argument(
        "source",
        metavar="RUN|POLICY|ARTIFACT",
        help="a run folder, a policy.json or a .safetensors artifact",
    )
    p.add_argument(
        "--model",
        default=None,
        help="the model to build; needed for a file.py:factory model, whose code then runs "
        "(default: the one the file names)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="a policy's dataset, for its input shape (default: the one the policy names)",
    )
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument(
        "--compact", action="store_true", help="after-costs only, to fit 80 columns (default: off)"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON) of ``args.source``."""
    shown = load(Path(args.source), model=args.model, dataset=args.dataset, data_dir=args.data_dir)
    if args.json:
        sys.stdout.write(json.dumps(shown.to_dict()) + "\n")
        return 0
    print_unit_table(shown.table, shown.title, compact=args.compact)
    return 0


def load(
    source: Path,
    model: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> Shown:
    """The breakdown of a run folder, a policy file or an artifact.

    Raises:
        AutoshrinkError: One line: a missing or unreadable source, or a policy that does
            not fit its model.
    """
    if source.is_dir():
        return _from_run(source, model, data_dir)
    if not source.is_file():
        raise AutoshrinkError(f"no run folder, policy or artifact at {source}")
    if source.suffix == ".safetensors":
        return from_artifact(source, model)
    from autoshrink.compression.policy import Policy

    return _from_policy(Policy.load(source), str(source), model, dataset, data_dir)


def _from_run(folder: Path, model: str | None, data_dir: str | None) -> Shown:
    """A finished run's shipped artifact; before that, its best policy so far."""
    from autoshrink.agent.search.report import read_result
    from autoshrink.agent.search.run_folder import RunFolder

    run = RunFolder(folder)
    if run.result.is_file():
        name = read_result(run.result).get("artifact")
        if not isinstance(name, str) or not name:
            raise AutoshrinkError(f"{run.result} names no artifact")
        return from_artifact(folder / Path(name).name, model)
    if not run.policy.is_file():
        raise AutoshrinkError(f"{folder} is no run folder: it has no result.json or policy.json")
    from autoshrink.agent.search.config import SearchConfig
    from autoshrink.compression.policy import Policy

    dataset = None
    if run.config.is_file():
        env = SearchConfig.load(run.config).env
        dataset, data_dir = env.dataset, data_dir or env.data_dir
    policy = Policy.load(run.policy)
    return _from_policy(policy, str(run.policy), model, dataset, data_dir)


def _from_policy(
    policy: Policy, source: str, model: str | None, dataset: str | None, data_dir: str | None
) -> Shown:
    """Build the policy's model on its dataset's input shape and cost the policy on it."""
    import torch

    from autoshrink.compression.breakdown import breakdown
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.models import ModelSpec, build_model, is_factory_ref
    from autoshrink.compression.policy import kept_channels, layer_bits, validate
    from autoshrink.compression.sparsity import layer_sparsity
    from autoshrink.compression.units import build_units

    name = model or policy.meta.get("model")
    if not isinstance(name, str) or not name:
        raise AutoshrinkError(f"{source} names no model; pass --model")
    if model is None and is_factory_ref(name):
        raise AutoshrinkError(
            f"{source} is a policy for the user model {name!r}; building it runs that file, "
            "so name it: pass --model FILE.py:FUNCTION"
        )
    data_name = dataset or policy.meta.get("dataset")
    if not isinstance(data_name, str) or not data_name:
        raise AutoshrinkError(f"{source} names no dataset; pass --dataset")
    data = load_dataset(data_name, data_dir)
    net = build_model(ModelSpec.for_data(name, data))
    example = torch.zeros(tuple(data.example_input(1).shape))
    graph = build_units(net, example, round_to=policy.round_to, ignored_layers=list(policy.frozen))
    validate(policy, graph, allow_missing=True)
    kept, spars = kept_channels(policy, graph), layer_sparsity(policy, graph)
    table = breakdown(graph, kept, layer_bits(policy, graph), policy.layers, spars)
    return Shown(name, tuple(example.shape), source, table)


def from_artifact(path: Path, model: str | None = None) -> Shown:
    """The artifact's realised channels and bits, on its base model's units.

    Raises:
        AutoshrinkError: On a bad artifact (one line from its checked reader), a user
            model without ``model``, or a header that does not fit the base model.
    """
    import torch

    from autoshrink.compression.artifact import read_header
    from autoshrink.compression.artifact_header import base_spec
    from autoshrink.compression.breakdown import breakdown
    from autoshrink.compression.models import build_model
    from autoshrink.compression.policy import Policy
    from autoshrink.compression.sparsity import layer_sparsity
    from autoshrink.compression.units import build_units

    head = read_header(path)
    spec = base_spec(path, head, model, allow_changed=False)
    example = torch.zeros(head.input_shape)
    graph = build_units(build_model(spec), example, ignored_layers=list(head.frozen))
    pinned = head.policy.layers if isinstance(head.policy, Policy) else {}
    spars = layer_sparsity(head.policy, graph) if isinstance(head.policy, Policy) else {}
    try:
        table = breakdown(graph, head.kept, head.weight_bits, pinned, spars)
    except PolicyError as exc:
        raise CheckpointError(f"{path} does not fit its base model {spec.name!r}: {exc}") from None
    return Shown(spec.name, head.input_shape, str(path), table)


def print_shipped(artifact: Path, model: str | None = None) -> None:
    """The table of a shipped artifact (end of ``search`` and ``apply``).

    Compact on a console narrower than :data:`~autoshrink.scripts.unit_table.FULL_WIDTH`.
    """
    shown = from_artifact(artifact, model)
    print_unit_table(shown.table, shown.title, compact=console.width < FULL_WIDTH)
