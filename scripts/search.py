"""``autoshrink search``: find the best per-unit policy under budgets, and ship its model.

With no arguments it searches ResNet-20 on the embedded digits set in joint mode (the env's
default budgets: half the MACs and a tenth of the float bytes), then fine-tunes the best
policy and writes the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import TextColumn
from rich.table import Table

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.scripts.console import console, err_console, make_progress
from autoshrink.scripts.options import add_budget_flags

# Defaults of a run with no arguments (ResNet-20 on digits, joint mode). Measured on the
# shared 2-core machine with the baseline cached: 122 s wall at load ~4 (76 s of CPU), of
# which about 30 s is the final fine-tune, test scoring and latency timing.
DEFAULT_EPISODES = 60
DEFAULT_WARMUP = 20
# On the embedded digits set a 5-epoch final fine-tune brings nearly any policy back to
# ~98 %, so per-episode fine-tuning buys no ranking there; BN recalibration alone spreads
# episode accuracies from ~0.1 to ~0.97 and costs a fifth of the time. Elsewhere the env's
# default (chosen from its reward-fidelity benchmark) applies.
DIGITS_FINETUNE_STEPS = 0
DEFAULT_FINAL_EPOCHS = 3
# The 100-step search reward misranks policies whose rewards are within its noise; fine-tuning
# the 5 best distinct ones as the shipped model is, and picking on the whole val split, raised
# the final test accuracy of DDPG and random search on Fashion-MNIST (docs/benchmarks.md).
# On digits nearly every policy recovers to ~98 %, so there the search's best ships as is.
DEFAULT_FINALISTS = 5
DIGITS_FINALISTS = 1


def add_parser(subparsers: Any) -> None:
    """Register ``search`` and its flags."""
    p = subparsers.add_parser(
        "search",
        help="search a per-unit keep-ratio and bit-width policy under budgets",
        description=(
            "Search a per-unit channel keep-ratio and weight bit-width for a trained model "
            "under guaranteed budgets, fine-tune the best policy and write a run folder "
            "(policy.json, result.json, episodes.jsonl, the compressed artifact, agent.zip, "
            "TensorBoard events). Budgets are ratios of the original (0.5, 50%) or "
            "absolute amounts (1.5M MACs, 300KB, 4ms)."
        ),
    )
    from autoshrink.agent.algorithms import ALGORITHMS

    p.add_argument("--model", default=None, help="model name or file.py:factory (resnet20)")
    p.add_argument("--dataset", default=None, help="dataset name (digits, embedded)")
    p.add_argument("--data-dir", default=None, help="where the dataset files are")
    p.add_argument("--checkpoint", default=None, help="trained weights (default: cached)")
    p.add_argument("--mode", choices=("prune", "quant", "joint"), default=None, help="(joint)")
    add_budget_flags(p)
    p.add_argument("--agent", choices=sorted(ALGORITHMS), default=None, help="(ddpg)")
    p.add_argument("--episodes", type=int, default=None, help=f"({DEFAULT_EPISODES})")
    p.add_argument("--warmup", type=int, default=None, help=f"random episodes ({DEFAULT_WARMUP})")
    p.add_argument(
        "--finetune-steps",
        type=int,
        default=None,
        help=(
            "fine-tune steps per evaluated policy (the env's default; "
            f"{DIGITS_FINETUNE_STEPS} on digits)"
        ),
    )
    p.add_argument(
        "--final-epochs",
        type=int,
        default=DEFAULT_FINAL_EPOCHS,
        help=f"fine-tune epochs of the final model ({DEFAULT_FINAL_EPOCHS})",
    )
    p.add_argument("--distill", action="store_true", help="distil the final fine-tune")
    p.add_argument(
        "--finalists",
        type=int,
        default=None,
        help=(
            "fine-tune the N best distinct policies of the search the same way, score each "
            f"on the whole val split and ship the best ({DEFAULT_FINALISTS}; "
            f"{DIGITS_FINALISTS} on digits)"
        ),
    )
    p.add_argument(
        "--finalist-spacing",
        type=float,
        default=None,
        help=(
            "least mean keep-ratio difference per unit between two finalists, so that "
            "near-copies of one policy do not fill the list (0.05)"
        ),
    )
    p.add_argument("--seed", type=int, default=None, help="seed of agent, env and data (0)")
    p.add_argument("--out", default=None, help="run folder (runs/<model>-<dataset>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--json", action="store_true", help="print result.json instead of a table")
    p.set_defaults(func=run)


def _configs(args: argparse.Namespace, out: Path) -> tuple[Any, Any]:
    """The env and agent configs: the saved ones on resume, else from the flags."""
    from autoshrink.agent.config import AgentConfig
    from autoshrink.env.config import EnvConfig

    saved = out / "config.json"
    if args.resume and saved.exists():
        data = json.loads(saved.read_text())
        env_cfg = EnvConfig.from_dict(data["env"])
        agent_cfg = AgentConfig.from_dict(data["agent"])
        if args.episodes is not None:  # a resumed search may be extended
            agent_cfg = AgentConfig.from_dict(
                {
                    **agent_cfg.to_dict(),
                    "data": {**agent_cfg.to_dict()["data"], "episodes": args.episodes},
                }
            )
        return env_cfg, agent_cfg
    given = {
        "model": args.model,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "checkpoint": args.checkpoint,
        "mode": args.mode,
        "flops": args.flops,
        "params": args.params,
        "size": args.size,
        "latency": args.latency,
        "seed": args.seed,
    }
    env_cfg = EnvConfig().replace(**{k: v for k, v in given.items() if v is not None})
    if args.finetune_steps is not None:
        env_cfg = env_cfg.replace(finetune_steps=args.finetune_steps)
    elif env_cfg.dataset == "digits":
        env_cfg = env_cfg.replace(finetune_steps=DIGITS_FINETUNE_STEPS)
    episodes = args.episodes or DEFAULT_EPISODES
    # By default a third of the episodes (at most DEFAULT_WARMUP) are random warm-up.
    warmup = min(DEFAULT_WARMUP, episodes // 3) if args.warmup is None else args.warmup
    agent_cfg = AgentConfig(
        algorithm=args.agent or "ddpg",
        episodes=episodes,
        warmup_episodes=warmup,
        seed=env_cfg.seed,
    )
    return env_cfg, agent_cfg


def run(args: argparse.Namespace) -> int:
    """Run the search, the final fine-tune, and print the comparison."""
    from autoshrink.agent.final import FinalConfig, finish_search
    from autoshrink.agent.search import run_search
    from autoshrink.env.compression_env import CompressionEnv

    if args.resume and args.out is None:
        raise AutoshrinkError("--resume needs --out, the run folder to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{args.model or 'resnet20'}-{args.dataset or 'digits'}-{stamp}")
    env_cfg, agent_cfg = _configs(args, out)
    finalists = args.finalists
    if finalists is None:
        finalists = DIGITS_FINALISTS if env_cfg.dataset == "digits" else DEFAULT_FINALISTS
    final = FinalConfig(
        epochs=args.final_epochs,
        distill=args.distill,
        finalists=finalists,
        **({} if args.finalist_spacing is None else {"finalist_spacing": args.finalist_spacing}),
    )
    with err_console.status(f"preparing {env_cfg.model} on {env_cfg.dataset} (trains once)"):
        env = CompressionEnv(env_cfg)
    budgets = ", ".join(str(b) for b in env_cfg.budgets.values())
    err_console.print(
        f"searching {len(env.units)} units of {env_cfg.model} on {env_cfg.dataset}, "
        f"{env_cfg.mode} mode, {budgets}; agent {agent_cfg.algorithm}, "
        f"{agent_cfg.episodes} episodes -> {out}",
        highlight=False,
    )
    limits = dict(env.limits)
    progress = make_progress(
        TextColumn("best {task.fields[best]}"),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("{task.fields[budget]}"),
    )
    with progress:
        task = progress.add_task("search", total=agent_cfg.episodes, best="-", acc="-", budget="")

        def on_episode(record: Any, state: Any) -> None:
            acc = state.best_metrics.get("accuracy")
            progress.update(
                task,
                completed=state.episodes,
                best=f"{state.best_reward:.4f}",
                acc="-" if acc is None else f"{acc:.2%}",
                budget=_budget_use(state.best_metrics, env.baseline, limits),
            )

        result = run_search(env, agent_cfg, out, resume=args.resume, progress=on_episode)
        progress.update(task, completed=result.episodes)
        what = "final fine-tune"
        if final.finalists > 1:
            what += f" of {final.finalists} finalists"
        ftask = progress.add_task(what, total=None, best="", acc="", budget="")
        report = finish_search(
            env,
            result,
            final,
            seed=agent_cfg.seed,
            on_step=lambda step, loss: progress.update(ftask, completed=step),
        )
        progress.update(ftask, total=1, completed=1)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        console.print(comparison_table(report))
        console.print(f"run folder: {out}", highlight=False)
    return 0


def _budget_use(
    metrics: dict[str, Any], baseline: dict[str, float], limits: dict[str, float]
) -> str:
    keys = {"flops": "macs", "params": "params", "size": "bytes", "latency": "latency"}
    parts = []
    for metric, limit in limits.items():
        value = metrics.get(keys[metric])
        if value is not None and baseline.get(metric):
            parts.append(f"{metric} {value / baseline[metric]:.1%}/{limit / baseline[metric]:.1%}")
    return " ".join(parts)


def comparison_table(report: dict[str, Any]) -> Table:
    """A rich table of baseline against compressed: accuracy, MACs, params, bytes, latency."""
    base, comp = report["baseline"], report["compressed"]
    table = Table(
        title=(
            f"{report['model']} on {report['dataset']}: {report['agent']}, "
            f"{report['episodes']} episodes, budgets met: {report['budgets_met']}"
        )
    )
    table.add_column("metric")
    table.add_column("baseline", justify="right")
    table.add_column("compressed", justify="right")
    table.add_column("ratio", justify="right")
    rows = [
        ("test accuracy", "accuracy", lambda v: f"{v:.2%}"),
        ("MACs", "macs", _count),
        ("params", "params", _count),
        ("bytes", "bytes", _count),
        ("CPU latency (batch 1)", "latency_ms", lambda v: f"{v:.3f} ms"),
    ]
    for label, key, fmt in rows:
        b, c = base.get(key), comp.get(key)
        if b is None or c is None:
            continue
        ratio = f"{c / b:.3f}x" if key != "accuracy" and b else f"{(c - b) * 100:+.2f} pts"
        table.add_row(label, fmt(b), fmt(c), ratio)
    return table


def _count(value: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"
