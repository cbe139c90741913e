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
from autoshrink.scripts.options import add_budget_flags, add_device_flags, device_line, setup_device


def add_parser(subparsers: Any) -> None:
    """Register ``apply`` and its flags."""
    from autoshrink.compression.policy_map import MAPS

    p = subparsers.add_parser(
        "apply",
        help="apply a saved policy or a trained agent to a model, and ship its model",
        description=(
            "Apply a policy.json (or roll a trained agent.zip out once) on a model, fine-tune "
            "the result and write a run folder as search does (policy.json, result.json, the "
            "artifact). The policy is validated before any work: mismatches are listed in "
            "one error and nothing is written."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", default=None, help="a policy.json to apply")
    source.add_argument("--agent", default=None, help="a trained agent.zip to roll out")
    p.add_argument("--map", choices=MAPS, default=None, help="stretch --policy over depth")
    p.add_argument("--model", required=True, help="model name or file.py:factory")
    p.add_argument("--checkpoint", default=None, help="trained weights (default: cached)")
    p.add_argument("--dataset", default=None, help="dataset (the policy's or agent's)")
    p.add_argument("--data-dir", default=None, help="where the dataset files are")
    add_budget_flags(p)
    from autoshrink.agent.search.config import FinalConfig

    epochs = FinalConfig.epochs
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=epochs,
        help=f"fine-tune epochs of the final model ({epochs})",
    )
    p.add_argument("--distill", action="store_true", help="distil the final fine-tune")
    p.add_argument("--seed", type=int, default=0, help="seed of data and fine-tune (0)")
    add_device_flags(p)
    p.add_argument("--out", required=True, help="run folder to write (must be new or empty)")
    p.add_argument("--json", action="store_true", help="print result.json instead of a table")
    p.set_defaults(func=run)


def _given_budgets(args: argparse.Namespace) -> dict[str, Any]:
    from autoshrink.env.config import parse_budget

    return {
        m: parse_budget(m, getattr(args, m)) for m in BUDGET_NAMES if getattr(args, m) is not None
    }


def _prepare(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every check that needs no training; returns what the run needs. Writes nothing."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AutoshrinkError(f"{out} is not empty: choose a new folder for --out")
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
    )
    return {
        "policy_plan": applied,
        "config": applied.config,
        "data": applied.data,
        "model": applied.model,
        "source": applied.source,
    }


def _prepare_agent(args: argparse.Namespace, budgets: dict[str, Any]) -> dict[str, Any]:
    """The checks of ``--agent``: the agent, its mode, the target's data and checkpoint."""
    from autoshrink.agent.search.transfer_plan import plan_transfer
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.models import ModelSpec, build_model, load_weights

    given = {
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
    from autoshrink.scripts.search import comparison_table, warn_weak_baseline

    out = Path(args.out)
    device = setup_device(args)  # a device this machine lacks is refused before any work
    plan = _prepare(args, out)
    final = FinalConfig(epochs=args.finetune_epochs, distill=args.distill)
    cfg = plan["config"]
    if args.device is not None:
        cfg = cfg.replace(device=args.device)
    where = device_line(cfg.device, device)
    err_console.print(f"applying to {cfg.model} on {cfg.dataset}, {where}", highlight=False)
    with err_console.status(f"preparing {cfg.model} on {cfg.dataset} (trains once)"):
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
        console.print(f"run folder: {out}", highlight=False)
    return 0
