"""One batch job, as a worker runs it: in a local pool process or in a Ray task.

:func:`run_job` never raises for a job's own failure: it returns a record with
``status`` ``ok``, ``failed`` (with the error and its traceback) or ``timeout``. The job's
run folder is ``OUT/runs/<job id>``; a search killed in flight resumes there from its last
checkpoint, and a job that finished but was never recorded (the driver died in between) is
not run again: its ``result.json`` is returned. An apply job plays a searched agent once on
its model (:func:`autoshrink.agent.transfer.transfer`), or applies a saved policy
(:mod:`autoshrink.agent.search.policy_plan`, as ``autoshrink apply --policy`` does), and finishes
it like a search.

Two workers never share a run folder (an exclusive lock on ``runs/<id>/.lock``). Workers that
need the same not-yet-trained baseline take turns in ``compression.baselines`` (a file lock
per cached baseline): the first trains it, the others load it.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from autoshrink.agent.batch.results import FAILED, OK, TIMEOUT
from autoshrink.agent.batch.spec import Job
from autoshrink.compression.deadline import deadline
from autoshrink.compression.locking import hold

logger = logging.getLogger(__name__)

RUNS = "runs"


# Not an Exception, so that no `except Exception` inside a job can swallow it.
class JobTimeout(BaseException):
    """A job ran past its timeout; raised inside the job by a SIGALRM handler."""


def init_worker(parent_pid: int, log_level: int = logging.WARNING) -> None:
    """Initialise a local pool process: one torch thread, die with the driver, ignore Ctrl-C.

    Ctrl-C goes to the whole process group; the driver handles it and ends the workers, so a
    job is never recorded as failed because the user interrupted the batch.
    """
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the driver died before the line above
        os._exit(1)
    torch.set_num_threads(1)
    _preload()
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")


def run_job(
    job: Job, out_dir: str, timeout_s: float | None = None, cache: str | None = None
) -> dict[str, Any]:
    """Run ``job`` and return its record for ``results.jsonl``.

    Args:
        job: The job.
        out_dir: The batch folder; the job writes ``runs/<id>`` there.
        timeout_s: Seconds before the job is stopped and recorded as ``timeout``.
        cache: ``AUTOSHRINK_CACHE`` for this process (the driver's, forwarded to Ray).

    Returns:
        The record: job id, status, settings, run folder, error, result and timings.
    """
    if cache:
        os.environ["AUTOSHRINK_CACHE"] = cache
    run_dir = Path(out_dir) / RUNS / job.id
    record: dict[str, Any] = {
        "job": job.id,
        "kind": job.kind,
        "label": job.label,
        "source": job.source,
        "settings": job.settings,
        "run_dir": f"{RUNS}/{job.id}",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": time.time(),
        "error": None,
        "result": None,
    }
    _preload()  # imports are not the job's time: a timeout measures the job's own work
    start = time.perf_counter()
    try:
        with deadline(timeout_s, lambda: JobTimeout(f"timed out after {timeout_s:g} s")):
            record["result"] = _run(job, run_dir)
        record["status"] = OK
    except JobTimeout as exc:
        record |= {"status": TIMEOUT, "error": str(exc)}
    except Exception as exc:
        logger.debug("job %s failed", job.id, exc_info=True)
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        error = f"{type(exc).__name__}: {exc}"
        record |= {"status": FAILED, "error": error, "traceback": "".join(tb[-6:])}
    record["wall_time_s"] = time.perf_counter() - start
    record["finished_at"] = time.time()
    return record


def _preload() -> None:
    import autoshrink.agent.search.run
    import autoshrink.env.compression_env  # noqa: F401


def _run(job: Job, run_dir: Path) -> dict[str, Any]:
    import torch

    from autoshrink.agent.search.report import read_result
    from autoshrink.compression.errors import CheckpointError

    torch.set_num_threads(job.cpus)
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold(run_dir, "batch job"):
        done = run_dir / "result.json"
        if done.is_file():
            try:
                result = read_result(done)
            except CheckpointError as exc:  # run the job again: its search resumes
                logger.warning("job %s: %s; finishing it again", job.id, exc)
            else:
                logger.info("job %s finished before it was recorded; reusing %s", job.id, done)
                return result
        if job.kind == "search":
            return _search(job, run_dir)
        return _apply(job, run_dir)


def _search(job: Job, run_dir: Path) -> dict[str, Any]:
    from autoshrink.agent.search.run import search

    config = job.search_config()
    _seed(config.env.seed)
    env = config.make_env()  # the baseline trains once: compression.baselines locks its cache
    # resume=True: a search killed with the batch continues from its last checkpoint.
    # Its workers share the job's threads (its own process mostly waits on them).
    each = max(1, job.cpus // config.agent.workers)
    agent = replace(config.agent, threads=job.cpus, worker_threads=each)
    return search(replace(config, agent=agent), run_dir, resume=True, env=env)


def _apply(job: Job, run_dir: Path) -> dict[str, Any]:
    """Apply the job's source: a policy (``policy_from``) or a searched agent (``agent_from``)."""
    if "policy_from" in job.settings:
        return _apply_policy(job, run_dir)
    return _apply_agent(job, run_dir)


def _apply_policy(job: Job, run_dir: Path) -> dict[str, Any]:
    """Apply a saved policy to the job's model, as ``autoshrink apply --policy`` does."""
    from autoshrink.agent.batch.spec import env_keys
    from autoshrink.agent.search.finish import finish_search
    from autoshrink.agent.search.policy_plan import plan_policy, policy_file
    from autoshrink.agent.search.report import write_result
    from autoshrink.compression.metrics import BUDGET_NAMES

    given = {k: v for k, v in job.settings.items() if k in env_keys()}
    if "bit_choices" in given:
        given["bit_choices"] = tuple(given["bit_choices"])
    named = {k: given.pop(k, None) for k in ("checkpoint", "dataset", "data_dir")}
    budgets = {m: given.pop(m) for m in BUDGET_NAMES if m in given}
    model, seed = given.pop("model"), given.pop("seed", 0)
    plan = plan_policy(
        policy_file(job.settings["policy_from"]),
        model,
        **named,
        seed=seed,
        budgets=budgets,
        map_name=job.settings.get("map"),
        settings=given,
    )
    _seed(seed)
    env = plan.make_env()
    result = plan.search_result(env, run_dir)
    if result.best_policy is None:
        raise RuntimeError("the policy's replay gave no policy")
    result.best_policy.save(run_dir / "policy.json")
    report = finish_search(env, result, job.final_config(), seed=seed)
    report["source"] = {**plan.source, "map": job.settings.get("map")}
    write_result(run_dir / "result.json", report)
    return report


def _apply_agent(job: Job, run_dir: Path) -> dict[str, Any]:
    """Play a searched agent once on the job's model, as ``autoshrink apply --agent`` does."""
    from autoshrink.agent.batch.spec import env_keys
    from autoshrink.agent.search.finish import finish_search
    from autoshrink.agent.search.report import write_result
    from autoshrink.agent.search.transfer import transfer
    from autoshrink.agent.search.transfer_plan import plan_transfer
    from autoshrink.env.compression_env import CompressionEnv

    given = {k: v for k, v in job.settings.items() if k in env_keys()}
    plan = plan_transfer(job.settings["agent_from"], given)
    cfg = plan.config
    _seed(cfg.seed)
    env = CompressionEnv(cfg)
    played = transfer(plan.agent, env, run_dir, algorithm=plan.algorithm, seed=cfg.seed)
    if played.best_policy is None:
        raise RuntimeError("the agent's rollout gave no policy")
    played.best_policy.save(run_dir / "policy.json")
    report = finish_search(env, played, job.final_config(), seed=cfg.seed)
    report["source"] = plan.source
    write_result(run_dir / "result.json", report)
    return report


def _seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
