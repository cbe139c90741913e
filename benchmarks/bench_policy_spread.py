r"""Do the shipped policies of a benchmark really differ? Fine-tune each one again.

``bench_agents.py`` ships one policy per search and reports its test accuracy after one
seeded final fine-tune. That number mixes the policy's own quality with the noise of that
one fine-tune, and the shipped policy was picked as the best of its finalists on val, so its
val score is biased upwards. This script takes the ``policy.json`` of finished bench runs,
gives each policy the same final fine-tune again with fresh seeds, and splits the spread:

* **within a policy:** the fine-tune's own noise (pooled variance over seeds);
* **between policies of an agent:** the variance of the per-policy means, less the share
  that the within-policy noise explains (one-way random-effects ANOVA). If that is near 0,
  the agent's searches ship policies that the final fine-tune cannot tell apart;
* **between agents:** the difference of the agents' mean accuracy over all their policies
  and fresh seeds, with its standard error: over policies, or over the fresh seeds for an
  agent with one policy (give a deterministic baseline one run and more seeds).

Usage::

    .venv/bin/python benchmarks/bench_policy_spread.py \
        --runs 'runs/bench-agents-v2/prune-flops0.1/*/seed*' --seeds 100,101,102,103 \
        --out runs/policy-spread [--shard 0/2]

Each (run, seed) result is appended to ``<out>/results.jsonl`` as it finishes, and finished
pairs are skipped, so the script can be stopped, restarted and split over processes with
``--shard i/n``. ``--report`` only reads the file and prints the tables. The env and the
data are built as in ``bench_agents.py`` (same defaults, same cached baseline), and the
fine-tune is :func:`autoshrink.agent.search.finish.compress_and_finetune` with the bench's
``FinalConfig``, so a fresh seed equal to the run's own seed reproduces its test accuracy.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from bench_agents import add_setup_arguments, data_and_baseline, log, parse_budget

from autoshrink.agent.search.config import FinalConfig
from autoshrink.agent.search.finish import compress_and_finetune
from autoshrink.compression.evaluate import accuracy
from autoshrink.compression.policy import Policy
from autoshrink.env.compression_env import CompressionEnv
from autoshrink.env.config import EnvConfig


def run_key(run: Path) -> str:
    """``<agent>/seed<k>``: the last two parts of a bench run folder."""
    return f"{run.parent.name}/{run.name}"


def finished(path: Path) -> list[dict[str, Any]]:
    """The records already in ``results.jsonl`` (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fine_tune_all(args: argparse.Namespace, runs: list[Path], out: Path) -> None:
    """Fine-tune every (run, seed) of this shard that ``results.jsonl`` does not hold yet."""
    torch.set_num_threads(args.threads)
    full, splits, model = data_and_baseline(args)
    mode, given = parse_budget(args.budget)
    env = CompressionEnv(
        EnvConfig(model=args.model, dataset=args.dataset, mode=mode, **given),
        model=model,
        data=splits,
    )
    final = FinalConfig(epochs=args.final_epochs, lr=args.final_lr)
    val, test = full.loader("val", batch_size=256), full.loader("test", batch_size=256)
    results = out / "results.jsonl"
    done = {(r["run"], r["seed"]) for r in finished(results)}
    index, count = (int(x) for x in args.shard.split("/"))
    todo = [
        (run, seed)
        for run in runs
        for seed in (int(s) for s in args.seeds.split(","))
        if (run_key(run), seed) not in done
    ][index::count]
    for i, (run, seed) in enumerate(todo, 1):
        policy = Policy.from_dict(json.loads((run / "policy.json").read_text()))
        cpu0 = time.process_time()
        tuned = compress_and_finetune(env, policy, final, seed=seed, data=full)
        record = {
            "run": run_key(run),
            "seed": seed,
            "val": accuracy(tuned, val),
            "test": accuracy(tuned, test),
            "cpu_s": time.process_time() - cpu0,
        }
        with results.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log(
            f"[{i}/{len(todo)}] {record['run']} seed {seed}: val {record['val']:.4f} "
            f"test {record['test']:.4f} ({record['cpu_s']:.0f} s CPU)"
        )


def variance_split(groups: list[list[float]]) -> tuple[float, float]:
    """Within-policy variance (pooled) and the between-policy variance component.

    One-way random-effects ANOVA with equal group sizes: the between component is the
    variance of the group means less the within variance over the group size (at least 0).
    """
    within = statistics.mean(statistics.variance(g) for g in groups)
    means = [statistics.mean(g) for g in groups]
    between = statistics.variance(means) - within / len(groups[0]) if len(means) > 1 else 0.0
    return within, max(between, 0.0)


def report(runs: list[Path], out: Path) -> None:
    """Print per-agent and agent-against-agent tables from ``results.jsonl``."""
    records = finished(out / "results.jsonl")
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_run.setdefault(r["run"], []).append(r)
    agents = list(dict.fromkeys(run.parent.name for run in runs))
    shipped = {
        run_key(run): json.loads((run / "result.json").read_text())["compressed"] for run in runs
    }
    print(
        "| agent | policies × seeds | test, shipped (1 seed) | test, fresh seeds | "
        "val, shipped | val, fresh seeds | sd within a policy | sd between policies |"
    )
    print("|---|---|---|---|---|---|---|---|")
    means: dict[str, list[float]] = {}
    errors: dict[str, float] = {}
    for agent in agents:
        keys = [run_key(r) for r in runs if r.parent.name == agent and run_key(r) in by_run]
        sizes = {len(by_run[k]) for k in keys}
        if not keys or len(sizes) != 1 or sizes == {1}:
            log(f"{agent}: incomplete ({sorted(sizes)} seeds per policy), skipped")
            continue
        tests = [[r["test"] for r in by_run[k]] for k in keys]
        vals = [[r["val"] for r in by_run[k]] for k in keys]
        within, between = variance_split(tests)
        means[agent] = [statistics.mean(t) for t in tests]
        # the error of the agent's mean: over its policies, or over the fresh seeds of its
        # one policy (a deterministic baseline)
        errors[agent] = (
            statistics.variance(means[agent]) / len(keys)
            if len(keys) > 1
            else within / len(tests[0])
        )
        shipped_test = statistics.mean(shipped[k]["accuracy"] for k in keys)
        shipped_val = [shipped[k].get("val_accuracy") for k in keys]
        val_text = (
            f"{100 * statistics.mean(shipped_val):.2f}"
            if all(v is not None for v in shipped_val)
            else "-"
        )
        print(
            f"| `{agent}` | {len(keys)} × {sizes.pop()} | {100 * shipped_test:.2f} | "
            f"{100 * statistics.mean(means[agent]):.2f} | {val_text} | "
            f"{100 * statistics.mean(statistics.mean(v) for v in vals):.2f} | "
            f"{100 * within**0.5:.2f} | {100 * between**0.5:.2f} |"
        )
    print()
    print("| agents | difference of means, fresh seeds | standard error |")
    print("|---|---|---|")
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            diff = statistics.mean(means[a]) - statistics.mean(means[b])
            se = (errors[a] + errors[b]) ** 0.5
            print(f"| `{a}` − `{b}` | {100 * diff:+.2f} | {100 * se:.2f} |")
    print()
    searched = [a for a in means if sum(r.parent.name == a for r in runs) > 1]
    rank_checks([r for r in runs if r.parent.name in searched], by_run, shipped)


def rank_checks(
    runs: list[Path], by_run: dict[str, list[dict[str, Any]]], shipped: dict[str, Any]
) -> None:
    """How well one measurement ranks the policies by their mean over the fresh seeds.

    Over the distinct policies of ``runs`` (two runs that shipped the same channels and
    bits count once). "One final fine-tune" is each fresh seed's score against the mean
    test accuracy of the other seeds, averaged over seeds: about the most that any single
    fine-tune of this length can rank. The others are the run's own numbers against the
    mean over every fresh seed.
    """
    from scipy.stats import spearmanr

    distinct: dict[str, str] = {}
    for run in runs:
        units = json.loads((run / "policy.json").read_text())["data"]["units"]
        distinct.setdefault(json.dumps(units, sort_keys=True), run_key(run))
    keys = list(distinct.values())
    seeds = sorted({r["seed"] for k in keys for r in by_run[k]})
    score = {k: {r["seed"]: r for r in by_run[k]} for k in keys}

    def rest_mean(k: str, left_out: int) -> float:
        return statistics.mean(score[k][s]["test"] for s in seeds if s != left_out)

    truth = [statistics.mean(score[k][s]["test"] for s in seeds) for k in keys]
    rows = {
        f"one final fine-tune, {metric} (a fresh seed against the others' mean test)": (
            statistics.mean(
                spearmanr(
                    [score[k][s][metric] for k in keys], [rest_mean(k, s) for k in keys]
                ).statistic
                for s in seeds
            )
        )
        for metric in ("test", "val")
    }
    for label, key in (
        ("search reward (val subset, 100 steps)", "val_accuracy_search"),
        ("shipped val (finalist selection)", "val_accuracy"),
        ("shipped test (the benchmark's number)", "accuracy"),
    ):
        values = [shipped[k].get(key) for k in keys]
        if all(v is not None for v in values):
            rows[label] = spearmanr(values, truth).statistic
    print(f"| predictor of the mean test accuracy over fresh seeds ({len(keys)} policies) | ρ |")
    print("|---|---|")
    for label, rho in rows.items():
        print(f"| {label} | {rho:.2f} |")


def main() -> None:
    """Fine-tune the shipped policies again (unless ``--report``), then print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--runs",
        nargs="+",
        default=["runs/bench-agents-v2/prune-flops0.1/*/seed*"],
        help="globs of finished bench_agents.py run folders",
    )
    p.add_argument("--seeds", default="100,101,102,103", help="fresh fine-tune seeds")
    p.add_argument("--budget", default="prune:flops=0.1", help="the runs' budget, mode:metric=v")
    p.add_argument("--final-epochs", type=int, default=2)
    p.add_argument("--final-lr", type=float, default=0.02)
    add_setup_arguments(p)
    p.add_argument("--shard", default="0/1", help="i/n: this process takes every n-th pair")
    p.add_argument("--out", default="runs/policy-spread")
    p.add_argument("--report", action="store_true", help="only print the tables")
    args = p.parse_args()
    runs = sorted(
        {Path(r) for g in args.runs for r in glob.glob(g) if (Path(r) / "result.json").exists()},
        key=lambda r: (r.parent.name, int(r.name.removeprefix("seed"))),
    )
    if not runs:
        raise SystemExit(f"no finished run matches {args.runs!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        fine_tune_all(args, runs, out)
    report(runs, out)


if __name__ == "__main__":
    main()
