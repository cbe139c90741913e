"""``autoshrink search``: find the best per-unit policy under budgets, and ship its model.

With no arguments it searches ResNet-20 on the embedded digits set in joint mode (the env's
default budgets: half the MACs and a tenth of the float bytes), then fine-tunes the best
policy and writes the run folder.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.locking import check_free
from autoshrink.compression.metrics import BUDGET_NAMES
from autoshrink.scripts.console import console, err_console
from autoshrink.scripts.options import (
    DATA_DIR_HELP,
    JSON_HELP,
    add_budget_flags,
    add_device_flags,
    add_runtime_flag,
    bounded_int,
    check_out_folder,
    device_line,
    mode_defaults,
    setup_device,
)
from autoshrink.scripts.search_progress import SearchBars, announce
from autoshrink.scripts.show import print_shipped

#: The one line ``autoshrink --help`` shows.
HELP = "search a per-unit keep-ratio and bit-width policy under budgets"


def add_parser(subparsers: Any) -> None:
    """Register ``search`` and its flags."""
    p = subparsers.add_parser(
        "search",
        help=HELP,
        description=(
            "Search a per-unit channel keep-ratio and weight bit-width for a trained model "
            "under guaranteed budgets, fine-tune the best policy and write a run folder "
            "(policy.json, result.json, episodes.jsonl, the compressed artifact, agent.zip, "
            "TensorBoard events). Budgets are ratios of the original (0.5, 50%) or "
            "absolute amounts with their unit (1.5M MACs, 300KB, 4ms); a bare number above "
            "1 is refused. With no budget, the mode's defaults apply."
        ),
    )
    _add_model_flags(p)
    add_budget_flags(p, mode_defaults())
    add_runtime_flag(p, "latency (the --latency budget's table, its final check, the result)")
    p.add_argument(
        "--hw-rounding",
        action="store_true",
        help="hardware-aware channel counts: each unit keeps only counts that run faster "
        "than every larger one, timed once on this machine and cached (default: off)",
    )
    _add_agent_flags(p)
    _add_final_flags(p)
    add_device_flags(p, workers="--workers", episodes=True)
    p.add_argument(
        "--out",
        default=None,
        help="run folder, refused if it holds another search unless --resume "
        "(default: runs/<model>-<dataset>-<time>)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue (or finish anew) the search in --out (default: off)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(func=run)


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """What is compressed, and how: model, data, weights, mode, per-policy fine-tune."""
    from autoshrink.agent.search.config import DATASET_DEFAULTS
    from autoshrink.env.config import MODES, EnvConfig

    digits = DATASET_DEFAULTS["digits"]
    p.add_argument(
        "--model", default=None, help=f"model name or file.py:factory (default: {EnvConfig.model})"
    )
    p.add_argument(
        "--dataset",
        default=None,
        help=f"dataset name (default: {EnvConfig.dataset}, embedded)",
    )
    p.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="trained weights (default: the cached baseline, trained once if missing)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="what a policy decides per unit: prune (channels), quant (weight bits), "
        "joint (both), deep (channels, fine-grained sparsity and bits, stored sparse and "
        f"entropy coded) or sparse (sparsity and bits) (default: {EnvConfig.mode})",
    )
    p.add_argument(
        "--max-sparsity",
        type=float,
        default=None,
        help="largest share of a layer's weights zeroed in deep and sparse mode "
        f"(default: {EnvConfig.max_sparsity})",
    )
    p.add_argument(
        "--baseline-epochs",
        type=int,
        default=None,
        help="epochs of the baseline, trained once when none is cached (default: the "
        "dataset's, as autoshrink train's)",
    )
    p.add_argument(
        "--finetune-steps",
        type=int,
        default=None,
        help=f"fine-tune steps per evaluated policy (default: {EnvConfig.finetune_steps}; "
        f"{digits['finetune_steps']} on digits)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"seed of agent, env and data (default: {EnvConfig.seed})",
    )


def _add_agent_flags(p: argparse.ArgumentParser) -> None:
    """Which agent searches, and for how long."""
    from autoshrink.agent.config import AGENTS, DEFAULT_EPISODES, DEFAULT_WARMUP, AgentConfig

    p.add_argument(
        "--agent",
        choices=list(AGENTS),
        default=None,
        help="; ".join(f"{name}: {what}" for name, what in AGENTS.items())
        + f" (default: {AgentConfig.algorithm})",
    )
    p.add_argument(
        "--episodes",
        type=int,
        default=None,
        help=f"episodes of the search, warm-up included (default: {DEFAULT_EPISODES})",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="random episodes before a learning agent learns "
        f"(default: a third of --episodes, at most {DEFAULT_WARMUP})",
    )
    _add_worker_flags(p)


def _add_worker_flags(p: argparse.ArgumentParser) -> None:
    """How many episodes are evaluated at once, and where."""
    from autoshrink.compression.names import DEFAULT_BACKEND, DEFAULT_WORKERS, SEARCH_BACKENDS

    p.add_argument(
        "--workers",
        type=bounded_int("MAX_WORKERS"),
        default=None,
        metavar="K",
        help="episodes evaluated at once, each by its own copy of the env in its own process "
        "(GPUs round-robin); best a divisor of --episodes, as every round plays K "
        f"(default: {DEFAULT_WORKERS}, in this process)",
    )
    p.add_argument(
        "--backend",
        choices=SEARCH_BACKENDS,
        default=None,
        help="where the workers run: local processes, or ray actors (pip install "
        f"'autoshrink[ray]') (default: {DEFAULT_BACKEND})",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="the Ray cluster of --backend ray: auto or ray://host:port (default: a local Ray)",
    )


def _add_final_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the final fine-tune and its finalists."""
    from autoshrink.agent.search.config import DATASET_DEFAULTS, FinalConfig

    final, digits = FinalConfig(), DATASET_DEFAULTS["digits"]
    p.add_argument(
        "--final-epochs",
        type=int,
        default=None,
        help=f"fine-tune epochs of the final model (default: {final.epochs})",
    )
    p.add_argument(
        "--distill",
        action="store_true",
        help="distil the final fine-tune from the original model (default: off)",
    )
    p.add_argument(
        "--finalists",
        type=int,
        default=None,
        help=(
            "fine-tune the N best distinct policies of the search the same way, score each "
            f"on the whole val split and ship the best (default: {final.finalists}; "
            f"{digits['final_finalists']} on digits)"
        ),
    )
    p.add_argument(
        "--finalist-spacing",
        type=float,
        default=None,
        help=(
            "least mean keep-ratio difference per unit between two finalists, so that "
            f"near-copies of one policy do not fill the list (default: {final.finalist_spacing})"
        ),
    )


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flat search settings the flags give (those left out take the library's defaults)."""
    given = {
        "model": args.model,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "checkpoint": args.checkpoint,
        "mode": args.mode,
        "max_sparsity": args.max_sparsity,
        **{m: getattr(args, m) for m in BUDGET_NAMES},
        "seed": args.seed,
        "finetune_steps": args.finetune_steps,
        "baseline_epochs": args.baseline_epochs,
        "agent": args.agent,
        "episodes": args.episodes,
        "warmup": args.warmup,
        "workers": args.workers,
        "threads": args.threads,
        "backend": args.backend,
        "address": args.address,
        "final_epochs": args.final_epochs,
        "final_distill": True if args.distill else None,
        "final_finalists": args.finalists,
        "final_finalist_spacing": args.finalist_spacing,
        "device": args.device,
        "runtime": args.runtime,
        "hw_rounding": True if args.hw_rounding else None,
    }
    return {k: v for k, v in given.items() if v is not None}


def _config(args: argparse.Namespace, out: Path) -> Any:
    """The search's config: the saved one on resume, else from the flags."""
    from autoshrink.agent.search.config import SearchConfig
    from autoshrink.agent.search.resume_rules import check_named_model

    saved = out / "config.json"
    if args.resume and saved.exists():  # a resumed search may be extended, or finished anew
        given = _settings(args)
        # the device and the Ray cluster are where it runs, not what it searches: a resume
        # may move. Workers and threads are what it computes with: given, the library
        # refuses them unless they are the search's own (resume_rules).
        again = ("episodes", "device", "backend", "address", "workers", "threads")
        keep = {k: v for k, v in given.items() if k in again or k.startswith("final_")}
        config = SearchConfig.load(saved)  # reads, imports nothing
        check_named_model(out, config.env.model, given.get("model"))
        return config.replace(**keep)
    return SearchConfig.from_settings(_settings(args))


def run(args: argparse.Namespace) -> int:
    """Run the search, the final fine-tune, and print the comparison."""
    from autoshrink.agent.search.run import search
    from autoshrink.compression.device import resolve_device
    from autoshrink.scripts.train import ensure_baseline

    if args.resume and args.out is None:
        raise AutoshrinkError("--resume needs --out, the run folder to continue")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"runs/{args.model or 'resnet20'}-{args.dataset or 'digits'}-{stamp}")
    _check_before_work(args, out)
    config = _config(args, out)
    env_cfg, agent_cfg = config.env, config.agent
    _reach_ray(agent_cfg)
    device = resolve_device(env_cfg.device)  # the saved one on resume, if --device is not given
    resolve_device(agent_cfg.device)
    data = ensure_baseline(env_cfg)  # announced and shown, when it has to be trained
    with err_console.status(f"preparing {env_cfg.model} on {env_cfg.dataset}"):
        env = config.make_env(**({} if data is None else {"data": data}))
    warn_weak_baseline(env)
    budgets = ", ".join(str(b) for b in env_cfg.budgets.values())
    header = (
        f"searching {len(env.units)} units of {env_cfg.model} on {env_cfg.dataset}, "
        f"{env_cfg.mode} mode, {budgets}; agent {agent_cfg.algorithm}, "
        f"{agent_cfg.episodes} episodes{_workers_text(agent_cfg)}, "
        f"{device_line(env_cfg.device, device)} -> {out}"
    )
    bars = SearchBars(config, env)

    def start() -> None:  # once the run folder is checked: a refusal stays one line
        announce(header, env)
        bars.progress.start()

    try:
        report = search(
            config,
            out,
            resume=args.resume,
            env=env,
            progress=bars.episode,
            on_step=bars.step,
            on_start=start,
        )
        bars.done(report["episodes"])
    finally:
        bars.progress.stop()
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        from autoshrink.scripts.comparison import comparison_table

        console.print(comparison_table(report))
        print_shipped(out / report["artifact"], env_cfg.model)
        console.print(f"run folder: {out}", highlight=False)
    return 0


def _reach_ray(agent: Any) -> None:
    """Refuse a missing Ray or an unreachable cluster in one line, before any work."""
    if agent.backend == "ray":
        from autoshrink.agent.ray_connect import init_ray

        init_ray(agent.address)


def _workers_text(agent: Any) -> str:
    """`` in 2 local workers`` where episodes run in parallel, else nothing."""
    return "" if agent.workers == 1 else f" {agent.workers} at a time ({agent.backend} workers)"


def _check_before_work(args: argparse.Namespace, out: Path) -> None:
    """Refuse a bad device, a busy or foreign folder, or a damaged resume, in one line."""
    from autoshrink.agent.search.run_folder import RunFolder

    setup_device(args)  # a device this machine lacks is refused before any work
    check_free(out, "search")  # before the env is built, which can take minutes
    # a run folder (config.json is its first file) is continued, or refused in the loop
    check_out_folder(out, reuse=lambda f: RunFolder(f).has_search() or RunFolder(f).config.exists())
    args.on_interrupt = lambda: resume_hint(out)
    if args.resume:
        from autoshrink.agent.search.preflight import check_resume

        check_resume(out)


def resume_hint(out: Path) -> str:
    """What to run to continue the search in ``out``, once it holds one."""
    from autoshrink.agent.search.run_folder import RunFolder

    if not RunFolder(out).has_search():
        return f"no episode was logged in {out}: nothing to resume"
    return f"resume with: autoshrink search --resume --out {shlex.quote(str(out))}"


def warn_weak_baseline(env: Any) -> None:
    """One warning line when the env's cached baseline learned (next to) nothing."""
    from autoshrink.agent.search.report import baseline_training

    trained = baseline_training(env)
    if trained is None or not trained["near_chance"]:
        return
    chance = trained["chance_accuracy"]
    floor = env.config.min_baseline_accuracy
    why = f"chance is {chance:.1%}" if chance is not None else "chance is unknown"
    if floor is not None:
        why += f", the floor given {floor:.1%}"
    err_console.print(
        f"warning: the baseline reaches {trained['test_accuracy']:.1%} test accuracy ({why}); "
        "train it longer (autoshrink train) before compressing it",
        highlight=False,
    )
