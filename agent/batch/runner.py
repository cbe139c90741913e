"""Run a batch of jobs on a local process pool or on a Ray cluster, resumably.

>>> from autoshrink.agent.batch.runner import BatchOptions, run_batch
>>> from autoshrink.agent.batch.spec import load_spec
>>> report = run_batch(load_spec("spec.toml"), "out", BatchOptions(workers=2))  # doctest: +SKIP

``local`` runs jobs on a ``concurrent.futures.ProcessPoolExecutor`` (spawn context, one
torch thread per job unless a job asks for more ``cpus``), at most ``workers`` at a time.
``ray`` runs one Ray task per job, each asking for ``num_cpus=job.cores`` (its ``cpus``, or
its search's ``workers`` if more), on the cluster at
``address`` (``"auto"``, ``"ray://host:10001"``) or on a local instance started for the
batch; an already initialised Ray is used as it is. With Ray on several machines, ``out``
must be on a filesystem every node sees (each job writes its run folder there); records
always come back to the driver.

The driver alone appends to ``results.jsonl``. Running the same batch again skips every
job with a record (failed ones too, unless ``retry_failed``), so a killed batch loses at
most the jobs in flight and never runs a finished job twice.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

from autoshrink.agent.batch.job import init_worker, run_job
from autoshrink.agent.batch.pareto import plot_pareto
from autoshrink.agent.batch.results import (
    FAILED,
    OK,
    PLOT,
    RESULTS,
    SUMMARY,
    TIMEOUT,
    append_record,
    finished_ids,
    latest_records,
    read_records,
    repair_tail,
    write_summary,
)
from autoshrink.agent.batch.spec import BatchSpec, Job
from autoshrink.agent.ray_connect import import_ray, init_ray
from autoshrink.compression.atomic import write_atomic
from autoshrink.compression.device import (
    DEFAULT_DEVICE,
    check_device,
    default_threads,
    resolve_device,
)
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.locking import hold
from autoshrink.compression.names import MAX_THREADS, MAX_WORKERS

logger = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
#: Seconds past a job's timeout before the Ray driver force-cancels its task.
RAY_CANCEL_GRACE_S = 60.0


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs.

    Args:
        backend: ``local`` (a process pool) or ``ray``.
        workers: Jobs at once; None = the cores (local) or the cluster's CPUs (ray),
            divided by the most CPUs a job asks for.
        address: Ray cluster address (``auto`` or ``ray://...``); None starts a local one.
        job_timeout_s: Seconds a job may run (a job's own ``timeout`` wins); None = no limit.
        retry_failed: Run failed and timed-out jobs again instead of skipping them.
        device: The device of every job whose spec gives none (None: ``EnvConfig``'s).
        threads: Torch threads of every job whose spec gives no ``cpus``; None = the cores
            divided by the local workers, at least 1 (one per job on Ray).
    """

    backend: Literal["local", "ray"] = "local"
    workers: int | None = None
    address: str | None = None
    job_timeout_s: float | None = None
    retry_failed: bool = False
    device: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise AutoshrinkError(f"unknown backend {self.backend!r}: use one of {BACKENDS}")
        for name, most in (("workers", MAX_WORKERS), ("threads", MAX_THREADS)):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and 1 <= value <= most):
                raise AutoshrinkError(f"{name} must be between 1 and {most:,}, got {value!r}")
        timeout = self.job_timeout_s
        if timeout is not None and not (
            isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
        ):
            raise AutoshrinkError(f"the job timeout must be a positive number, got {timeout}")
        if self.address is not None and self.backend != "ray":
            raise AutoshrinkError("an address is for the ray backend (--backend ray)")
        if self.device is not None:
            check_device(self.device)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BatchEvent:
    """What happened to a job: ``skip`` (recorded earlier), ``start`` or ``end``."""

    kind: Literal["skip", "start", "end"]
    job: Job
    record: dict[str, Any] | None = None


@dataclass
class BatchReport:
    """The outcome of :func:`run_batch`: this run's records and the batch files."""

    out_dir: Path
    jobs: int
    skipped: int
    records: list[dict[str, Any]] = field(default_factory=list)
    summary: Path | None = None
    plot: Path | None = None

    @property
    def failed(self) -> int:
        """Jobs of this run that failed or timed out."""
        return sum(r["status"] != OK for r in self.records)


def run_batch(
    spec: BatchSpec,
    out_dir: str | Path,
    options: BatchOptions | None = None,
    on_event: Callable[[BatchEvent], None] | None = None,
) -> BatchReport:
    """Run every job of ``spec`` not yet recorded in ``out_dir``, and write the batch files.

    Args:
        spec: The validated batch.
        out_dir: The batch folder: ``results.jsonl``, ``summary.csv``, ``pareto.png``,
            ``spec.toml`` (this run's spec) and ``runs/<job id>/``.
        options: Backend, workers, timeout; defaults when None.
        on_event: Called in the driver for every skip, start and end (progress bars).

    Returns:
        This run's records and the paths written.
    """
    options = options or BatchOptions()
    out = Path(out_dir)
    check_devices(spec, options)
    with hold(out, "batch"):  # a second driver on this folder would record jobs twice
        return _run_batch(spec, out, options, on_event)


def _run_batch(
    spec: BatchSpec,
    out: Path,
    options: BatchOptions,
    on_event: Callable[[BatchEvent], None] | None,
) -> BatchReport:
    """:func:`run_batch` in its locked folder."""
    results = out / RESULTS
    repair_tail(results)
    write_atomic(out / "spec.toml", lambda p: p.write_text(spec.text))
    previous = latest_records(read_records(results))
    done = finished_ids(previous.values(), options.retry_failed)
    emit = on_event or (lambda event: None)
    pending = []
    for job in spec.jobs:
        if job.id in done:
            emit(BatchEvent("skip", job, previous[job.id]))
        else:
            pending.append(job)
    report = BatchReport(out, len(spec.jobs), len(spec.jobs) - len(pending))
    try:
        if pending:
            executor = _executor(options, pending)
            pending = [placed(job, options, executor.workers) for job in pending]
            for event in executor.run(pending, out, options.job_timeout_s):
                if event.kind == "end" and event.record is not None:
                    append_record(results, event.record)
                    report.records.append(event.record)
                    write_summary(read_records(results), out / SUMMARY)
                emit(event)
    finally:
        records = read_records(results)
        report.summary = write_summary(records, out / SUMMARY)
        report.plot = plot_pareto(records, out / PLOT)
    return report


def default_workers(jobs: Sequence[Job], cpus: int | None = None) -> int:
    """Jobs at once on ``cpus`` cores (this machine's usable cores when None)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_job = max((job.cores for job in jobs), default=1)
    return max(1, (cpus or 1) // per_job)


def check_devices(spec: BatchSpec, options: BatchOptions) -> None:
    """Refuse a job's device that this machine lacks, before any job runs (local backend).

    Ray's workers may have devices that its driver lacks: there, only the spelling is
    checked (when the spec is read).

    Raises:
        DeviceError: Naming the first device that is not here.
    """
    if options.backend != "local":
        return
    for job in spec.jobs:
        resolve_device(job.settings.get("device") or options.device or DEFAULT_DEVICE)


def placed(job: Job, options: BatchOptions, workers: int | None) -> Job:
    """``job`` with the batch's device and threads where its spec gives none.

    Its id stays the spec's, so a batch rerun on another machine or with other
    ``--threads`` skips the jobs it finished. The record shows what the job ran with.
    """
    settings = dict(job.settings)
    if options.device is not None:
        settings.setdefault("device", options.device)
    local = options.backend == "local"  # Ray: one CPU a job unless asked, as before
    settings.setdefault("cpus", options.threads or (default_threads(workers or 1) if local else 1))
    return replace(job, settings=settings)


def _executor(options: BatchOptions, jobs: Sequence[Job]) -> LocalExecutor | RayExecutor:
    if options.backend == "ray":
        return RayExecutor(options.workers, options.address)
    return LocalExecutor(options.workers or default_workers(jobs))


def _timeout(job: Job, default: float | None) -> float | None:
    return job.timeout_s if job.timeout_s is not None else default


def crash_record(job: Job, status: str, error: str) -> dict[str, Any]:
    """The record of a job whose worker died or was cancelled (no result came back)."""
    return {
        "job": job.id,
        "kind": job.kind,
        "label": job.label,
        "source": job.source,
        "settings": job.settings,
        "run_dir": f"runs/{job.id}",
        "status": status,
        "error": error,
        "result": None,
        "finished_at": time.time(),
    }


class LocalExecutor:
    """Jobs on a spawn-context process pool, at most ``workers`` in flight, one process a job.

    A worker that dies (killed, out of memory) breaks the pool: its jobs in flight go back
    to the queue once on a new pool, and are recorded as failed the second time.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, jobs: Sequence[Job], out: Path, timeout_s: float | None) -> Iterator[BatchEvent]:
        """Yield a ``start`` event per job as it is submitted and an ``end`` as it ends."""
        queue, attempts = deque(jobs), dict.fromkeys((j.id for j in jobs), 0)
        cache = os.environ.get("AUTOSHRINK_CACHE")
        while queue:
            pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context("spawn"),
                # A fresh process per job: a job stopped by its timeout may leave the
                # interpreter half-way through an import, which would break the next job.
                max_tasks_per_child=1,
                initializer=init_worker,
                initargs=(os.getpid(), logging.getLogger("autoshrink").getEffectiveLevel()),
            )
            running: dict[Future[dict[str, Any]], Job] = {}
            try:
                while queue or running:
                    while queue and len(running) < self.workers:
                        job = queue.popleft()
                        attempts[job.id] += 1
                        args = (job, str(out), _timeout(job, timeout_s), cache)
                        running[pool.submit(run_job, *args)] = job
                        if attempts[job.id] == 1:
                            yield BatchEvent("start", job)
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    broken = []
                    for future in finished:
                        job = running.pop(future)
                        try:
                            record = future.result()
                        except BrokenProcessPool:
                            broken.append(job)
                            continue
                        yield BatchEvent("end", job, record)
                    if broken:
                        broken += list(running.values())
                        running.clear()
                        for job in broken:
                            if attempts[job.id] < 2:
                                queue.appendleft(job)
                            else:
                                error = "its worker process died (killed or out of memory)"
                                yield BatchEvent("end", job, crash_record(job, FAILED, error))
                        break  # a new pool for what is left
            finally:
                _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting for jobs in flight (Ctrl-C, errors, the end)."""
    processes = dict(getattr(pool, "_processes", None) or {})  # no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        if process.is_alive():
            process.kill()
    for process in processes.values():
        process.join(timeout=5)


class RayExecutor:
    """One Ray task per job, each asking for ``num_cpus=job.cores``; no retries by Ray.

    Timeouts are raised inside the task; as a backstop, a task still running
    :data:`RAY_CANCEL_GRACE_S` past its timeout is force-cancelled from the driver.
    """

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        self.workers = workers
        self.address = address

    def run(self, jobs: Sequence[Job], out: Path, timeout_s: float | None) -> Iterator[BatchEvent]:
        """Yield a ``start`` event per job as it is submitted and an ``end`` as it ends."""
        own = init_ray(self.address)
        ray = import_ray()
        task = ray.remote(run_job)
        cache = os.environ.get("AUTOSHRINK_CACHE")
        limit = self.workers or default_workers(jobs, int(ray.cluster_resources().get("CPU", 1)))
        queue = deque(jobs)
        running: dict[Any, tuple[Job, float]] = {}
        try:
            while queue or running:
                while queue and len(running) < limit:
                    job = queue.popleft()
                    options = {"num_cpus": job.cores, "max_retries": 0, "name": job.id}
                    args = (job, str(out.resolve()), _timeout(job, timeout_s), cache)
                    running[task.options(**options).remote(*args)] = (job, time.monotonic())
                    yield BatchEvent("start", job)
                ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
                for ref in ready:
                    job, _ = running.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception as exc:  # the task's worker died or Ray failed
                        record = crash_record(job, FAILED, f"{type(exc).__name__}: {exc}")
                    yield BatchEvent("end", job, record)
                now = time.monotonic()
                for ref, (job, started) in list(running.items()):
                    limit_s = _timeout(job, timeout_s)
                    if limit_s is not None and now - started > limit_s + RAY_CANCEL_GRACE_S:
                        ray.cancel(ref, force=True)
                        del running[ref]
                        error = f"timed out after {limit_s:g} s (cancelled by the driver)"
                        yield BatchEvent("end", job, crash_record(job, TIMEOUT, error))
        finally:
            for ref in running:
                ray.cancel(ref, force=True)
            if own:
                ray.shutdown()
