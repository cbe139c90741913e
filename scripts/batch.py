"""``autoshrink batch``: run many searches from a TOML spec, locally or on Ray, resumably.

``autoshrink batch --example > spec.toml`` writes a small valid spec to start from.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import TextColumn

from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.locking import check_free, hold
from autoshrink.scripts.console import console, err_console, make_progress
from autoshrink.scripts.options import (
    add_device_flags,
    bounded_int,
    check_out_folder,
    device_line,
    positive_float,
)

#: The one line ``autoshrink --help`` shows.
HELP = "run many searches from a TOML spec on a process pool or a Ray cluster"


def add_parser(subparsers: Any) -> None:
    """Register ``batch`` and its flags."""
    p = subparsers.add_parser(
        "batch",
        help=HELP,
        description=(
            "Run the jobs of a TOML spec (a list of jobs, or a grid of models x datasets x "
            "budgets x agents x seeds) on a local process pool or on Ray. Each job's record "
            "is appended to DIR/results.jsonl as it ends; DIR/summary.csv and "
            "DIR/pareto.png follow. Running the same command again skips finished jobs. "
            "'autoshrink batch --example' prints a spec to start from."
        ),
    )
    p.add_argument("spec", nargs="?", metavar="SPEC", help="the batch spec (TOML)")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="batch folder: results, summary, plot, runs/ (required unless --example)",
    )
    p.add_argument(
        "--workers",
        type=bounded_int("MAX_WORKERS"),
        metavar="N",
        help="jobs at once (default: the cores)",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: a process pool here; ray: a Ray cluster (default: %(default)s)",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster: auto or ray://host:port (default: a local Ray)",
    )
    p.add_argument(
        "--job-timeout",
        type=positive_float("number of seconds"),
        metavar="S",
        help="seconds per job (default: none)",
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="run failed jobs again (default: off)"
    )
    add_device_flags(p, workers="--workers")
    p.add_argument(
        "--example", action="store_true", help="print an example spec and exit (default: off)"
    )
    p.set_defaults(func=run)


#: What marks a batch folder, which a rerun resumes.
OWN = ("spec.toml", "results.jsonl")


def run(args: argparse.Namespace) -> int:
    """Validate the spec, run the batch with a progress bar, and say where the results are."""
    from autoshrink.agent.batch.preflight import check_jobs
    from autoshrink.agent.batch.runner import check_devices
    from autoshrink.agent.batch.spec import EXAMPLE_SPEC, load_spec

    if args.example:
        sys.stdout.write(EXAMPLE_SPEC)
        return 0
    if args.spec is None or args.out is None:
        raise AutoshrinkError("give a spec and --out DIR (or --example for a spec to start from)")
    spec = load_spec(args.spec)
    check_jobs(spec)  # what each job names (models, files) is checked before any job runs
    check_free(Path(args.out), "batch")  # a running batch's folder: refused as in use
    # a batch folder: its spec.toml is written first, results.jsonl as jobs end
    check_out_folder(Path(args.out), reuse=lambda f: any((f / n).exists() for n in OWN))
    again = " ".join(shlex.quote(a) for a in ("autoshrink", "batch", args.spec, "--out", args.out))
    args.on_interrupt = lambda: f"rerun to resume: {again}"
    options = _options(args)
    check_devices(spec, options)  # a device this machine lacks: refused before any work
    with hold(Path(args.out), "batch"):  # refused here, before a line is printed
        return _run(spec, args, options)


def _options(args: argparse.Namespace) -> Any:
    """The batch's options, as the flags give them."""
    from autoshrink.agent.batch.runner import BatchOptions

    return BatchOptions(
        backend=args.backend,
        workers=args.workers,
        address=args.address,
        job_timeout_s=args.job_timeout,
        retry_failed=args.retry_failed,
        device=args.device,
        threads=args.threads,
    )


def _run(spec: Any, args: argparse.Namespace, options: Any) -> int:
    """Run a loaded spec in its locked folder, with the progress bar and the summary."""
    from autoshrink.agent.batch.runner import BatchEvent, run_batch

    counts = {"ok": 0, "failed": 0, "running": 0, "skipped": 0}
    progress = make_progress(
        TextColumn("[green]{task.fields[ok]} ok[/] [red]{task.fields[failed]} failed[/]"),
        TextColumn("{task.fields[running]} running"),
    )
    where = ""
    if args.backend == "local":  # Ray's workers may have other devices than this driver
        from autoshrink.compression.device import DEFAULT_DEVICE, resolve_device

        device = resolve_device(args.device or DEFAULT_DEVICE)
        where = f", {device_line(args.device, device)} unless a job sets its own"
    err_console.print(
        f"{len(spec.jobs)} jobs from {spec.name} on {args.backend}{where} -> {args.out}",
        highlight=False,
    )
    with progress:
        task = progress.add_task("batch", total=len(spec.jobs), ok=0, failed=0, running=0)

        def on_event(event: BatchEvent) -> None:
            record = event.record or {}
            if event.kind == "start":
                counts["running"] += 1
            elif event.kind == "skip":
                counts["skipped"] += 1
                counts["ok" if record.get("status") == "ok" else "failed"] += 1
            else:
                counts["running"] -= 1
                counts["ok" if record.get("status") == "ok" else "failed"] += 1
                progress.console.print(job_line(record), highlight=False, soft_wrap=True)
            done = counts["ok"] + counts["failed"]
            fields = {k: counts[k] for k in ("ok", "failed", "running")}
            progress.update(task, completed=done, **fields)

        report = run_batch(spec, args.out, options, on_event)
    if counts["skipped"]:
        err_console.print(f"skipped {counts['skipped']} jobs recorded by an earlier run")
    console.print(
        f"{counts['ok']} ok, {counts['failed']} failed of {len(spec.jobs)} jobs; "
        f"results: {report.out_dir / 'results.jsonl'}, summary: {report.summary}"
        + (f", plot: {report.plot}" if report.plot else ""),
        highlight=False,
        soft_wrap=True,
    )
    return 1 if counts["failed"] else 0


def job_line(record: dict[str, Any]) -> str:
    """One line for a finished job: accuracy and cost ratios, or the error."""
    job, wall = escape(record["job"]), record.get("wall_time_s")
    took = f"  {wall:.1f} s" if wall is not None else ""
    if record.get("status") != "ok":
        error = escape(str(record.get("error")))
        return f"[red]{record.get('status')}[/] {job}: {error}{took}"
    result = record.get("result") or {}
    base, comp = result.get("baseline", {}), result.get("compressed", {})
    parts = [f"[green]ok[/] {job}"]
    if comp.get("accuracy") is not None:
        parts.append(f"acc {comp['accuracy']:.2%} (base {base.get('accuracy', 0):.2%})")
    for key, label in (("macs", "MACs"), ("bytes", "bytes")):
        if comp.get(key) is not None and base.get(key):
            parts.append(f"{label} {comp[key] / base[key]:.3f}x")
    if "budgets_met" in result:
        parts.append("budgets met" if result["budgets_met"] else "[red]budgets NOT met[/]")
    return "  ".join(parts) + took
