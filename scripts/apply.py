"""``autoshrink apply``: a saved policy or a trained agent on a model, finished like search.

Three sources, one outcome (a run folder with ``policy.json``, ``result.json`` and the
artifact, as search writes):

- ``--policy P``: the policy as it is, on any model whose unit names and widths match
  (another checkpoint of the same architecture). Its budgets are the given flags (a policy
  over them is refused) or else those recorded in the policy.
- ``--policy P --map depth``: the policy stretched over a network of another depth by the
  relative position of its units (ResNet-20 -> ResNet-56). With budget flags it is proposed
  through the env's clamp, so the budgets hold on the new model.
- ``--agent runs/x/agent.zip``: the agent played once, deterministically, on the new
  model's env (AMC's transfer); the env settings come from the agent's run folder, budget
  flags replace its budgets, and the clamp guarantees them.

Everything that can be checked without training is checked before any work, and before
anything is written: the policy file (JSON, type, version, values), the unit names and
channel counts, the checkpoint, the agent file and its mode, and the budgets. The policy's
checks and plan live in :mod:`autoshrink.agent.search.policy_plan`, which batch apply jobs share.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.metrics import BUDGET_NAMES
from autoshrink.scripts.console import console, err_console, make_progress
from autoshrink.scripts.options import (
    DATA_DIR_HELP,
    JSON_HELP,
    add_budget_flags,
    add_device_flags,
    check_out_folder,
    device_line,
    setup_device,
)
from autoshrink.scripts.show import print_shipped

#: The one line ``autoshrink --help`` shows.
HELP = "apply a saved policy or a trained agent to a model, and ship its model"


def add_parser(subparsers: Any) -> None:
    """Register ``apply`` and its flags."""
    from autoshrink.compression.policy_map import MAPS

    p = subparsers.add_parser(
        "apply",
        help=HELP,
        description=(
            "Apply a policy.json (or roll a trained agent.zip out once) on a model, fine-tune "
            "the result and write a run folder as search does (policy.json, result.json, the "
            "artifact). The policy is validated before any work: mismatches are listed in "
            "one error and nothing is written."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--policy", default=None, help="a policy.json to apply (required: it or --agent)"
    )
    source.add_argument(
        "--agent", default=None, help="a trained agent.zip to roll out (required: it or --policy)"
    )
    p.add_argument(
        "--map",
        choices=MAPS,
        default=None,
        help="stretch --policy over another depth, unit by unit (default: none, as it is)",
    )
    p.add_argument("--model", required=True, help="model name or file.py:factory (required)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="trained weights (default: the cached baseline, trained once if missing)",
    )
    p.add_argument("--dataset", default=None, help="dataset (default: the policy's or the agent's)")
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument(
        "--baseline-epochs",
        type=int,
        default=None,
        help="epochs of the baseline, trained once when there is no --checkpoint and none "
        "is cached (default: the dataset's, as autoshrink train's)",
    )
    given = "the policy's own, or the agent's search's; with --map, none"
    add_budget_flags(p, dict.fromkeys(BUDGET_NAMES, given))
    _add_final_flags(p)
    add_device_flags(p)
    p.add_argument("--out", required=True, help="run folder to write, new or empty (required)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def _add_final_flags(p: argparse.ArgumentParser) -> None:
    """The final fine-tune's flags, defaults from :class:`FinalConfig`."""
    from autoshrink.agent.search.config import FinalConfig

    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=FinalConfig.epochs,
        help="fine-tune epochs of the final model (default: %(default)s)",
    )
    p.add_argument(
        "--distill",
        action="store_true",
        help="distil the final fine-tune from the original model (default: off)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of data and fine-tune (default: %(default)s)"
    )


def _given_budgets(args: argparse.Namespace) -> dict[str, Any]:
    from autoshrink.env.config import parse_budget

    return {
        m: parse_budget(m, getattr(args, m)) for m in BUDGET_NAMES if getattr(args, m) is not None
    }


def _prepare(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every check that needs no training; returns what the run needs. Writes nothing."""
    check_out_folder(out)
    if args.map and args.policy is None:
        raise AutoshrinkError("--map stretches a --policy; an agent transfers without it")
    if args.finetune_epochs < 0:
        raise AutoshrinkError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    budgets = _given_budgets(args)
    if args.policy is None:
        return _prepare_agent(args, budgets)
    from autoshrink.agent.search.policy_plan import plan_policy

    applied = plan_policy(
        args.policy,
        args.model,
        checkpoint=args.checkpoint,
        dataset=args.dataset,
        data_dir=args.data_dir,
        seed=args.seed,
        budgets=budgets,
        map_name=args.map,
        settings=_baseline_setting(args),
    )
    return {
        "policy_plan": applied,
        "config": applied.config,
        "data": applied.data,
        "model": applied.model,
        "source": applied.source,
    }


def _baseline_setting(args: argparse.Namespace) -> dict[str, Any]:
    given = args.baseline_epochs
    return {} if given is None else {"baseline_epochs": given}


def _prepare_agent(args: argparse.Namespace, budgets: dict[str, Any]) -> dict[str, Any]:
    """The checks of ``--agent``: the agent, its mode, the target's data and checkpoint."""
    from autoshrink.agent.search.transfer_plan import plan_transfer
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.models import ModelSpec, build_model, load_weights

    given = {
        **_baseline_setting(args),
        "model": args.model,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "checkpoint": args.checkpoint,
        "seed": args.seed,
        **budgets,
    }
    transfer = plan_transfer(args.agent, given)
    cfg = transfer.config
    data = load_dataset(cfg.dataset, cfg.data_dir, cfg.seed)
    plan: dict[str, Any] = {"transfer": transfer, "config": cfg, "data": data}
    if args.checkpoint is not None:
        model = build_model(ModelSpec.for_data(cfg.model, data))
        plan["model"] = load_weights(model, args.checkpoint)
    plan["source"] = transfer.source
    return plan


def run(args: argparse.Namespace) -> int:
    """Validate, build the env, get the policy, fine-tune, write the run folder."""
    from autoshrink.agent.search.config import FinalConfig
    from autoshrink.agent.search.finish import finish_search
    from autoshrink.agent.search.report import write_result
    from autoshrink.agent.search.run_folder import RunFolder
    from autoshrink.agent.search.transfer import transfer
    from autoshrink.env.compression_env import CompressionEnv
    from autoshrink.scripts.comparison import comparison_table
    from autoshrink.scripts.search import warn_weak_baseline
    from autoshrink.scripts.train import ensure_baseline

    out = Path(args.out)
    device = setup_device(args)  # a device this machine lacks is refused before any work
    plan = _prepare(args, out)
    final = FinalConfig(epochs=args.finetune_epochs, distill=args.distill)
    cfg = plan["config"]
    if args.device is not None:
        cfg = cfg.replace(device=args.device)
    where = device_line(cfg.device, device)
    err_console.print(f"applying to {cfg.model} on {cfg.dataset}, {where}", highlight=False)
    if plan.get("model") is None:  # the cached baseline, trained first if missing: say so
        ensure_baseline(cfg, plan["data"])
    with err_console.status(f"preparing {cfg.model} on {cfg.dataset}"):
        env = CompressionEnv(cfg, model=plan.get("model"), data=plan["data"])
    warn_weak_baseline(env)
    if args.agent is not None:
        played = plan["transfer"]
        result = transfer(played.agent, env, out, algorithm=played.algorithm, seed=args.seed)
    else:
        result = plan["policy_plan"].search_result(env, out)
    if result.best_policy is None:
        raise AutoshrinkError("no policy came out of the rollout")
    folder = RunFolder(out).create()
    result.best_policy.save(folder.policy)
    progress = make_progress()
    with progress:
        task = progress.add_task("final fine-tune", total=None)
        report = finish_search(
            env,
            result,
            final,
            seed=args.seed,
            on_step=lambda step, loss: progress.update(task, completed=step),
        )
        progress.update(task, total=1, completed=1)
    report["source"] = plan["source"]
    write_result(folder.result, report)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        console.print(comparison_table(report))
        print_shipped(out / report["artifact"], args.model)
        console.print(f"run folder: {out}", highlight=False)
    return 0
