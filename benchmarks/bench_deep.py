r"""Deep Compression mode: agents against ``deep-compression`` at file-size budgets, and coders.

Two parts.

**Agents** (the default): the setup of ``bench_agents.py`` (ResNet-20 on Fashion-MNIST, the
same 10k-image training subset and cached baseline, the 2048-image val subset the env
scores on, the same episodes, finalists and final fine-tune for every agent) in ``deep``
mode, at size budgets given as ratios of the float model's bytes. Each run goes to
``<out>/<budget>/<agent>/seed<k>``; a finished run is read back, an interrupted one
resumes. A budget the model cannot reach (the fp32 BatchNorm and scales alone can exceed
1 %) is reported with the smallest reachable size instead of a row. The table gives test
accuracy (mean ± std over seeds), bytes on disk (the whole file, header included) and the
ratio of the float ``state_dict`` file to it; ``--joint-runs`` adds the joint-mode rows of
an earlier ``bench_agents.py`` run (its ``joint-size0.05`` folder).

**Coders** (``--coders``): every sparse layer's two streams (positions and packed
survivors) of every artifact under ``--out`` (or, with ``--coder-demo``, of artifacts made
here without fine-tuning from the cached ResNet-20 digits baseline at a few uniform deep
policies) are entropy coded with zstd (level 19) and with constriction's ANS (order-0 byte
model, counts stored), interleaved, ``--repeats`` times; the table gives the bytes and the
median encode and decode times, one torch/numpy thread.

Usage::

    # the quiet measurement (see docs/benchmarks.md, "Deep Compression mode")
    B="--episodes 80 --warmup 20 --finetune-steps 100 --final-epochs 2 --finalists 5"
    .venv/bin/python benchmarks/bench_deep.py --agents ddpg --seeds 5,6,7 $B
    .venv/bin/python benchmarks/bench_deep.py --coders --repeats 20

    # smoke test at toy scale (digits, smallcnn, seconds)
    .venv/bin/python benchmarks/bench_deep.py --dataset digits --model smallcnn \
        --train-subset 0 --baseline-epochs 2 --episodes 3 --warmup 1 --seeds 0 \
        --budgets deep:size=0.1 --final-epochs 1 --out /tmp/bench-deep-smoke
    .venv/bin/python benchmarks/bench_deep.py --coders --coder-demo --repeats 3 \
        --out /tmp/bench-deep-smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from bench_agents import _run_budget as run_agents
from bench_agents import add_setup_arguments, data_and_baseline, log, mean_std

from autoshrink.agent.search.config import FinalConfig
from autoshrink.compression.errors import BudgetInfeasibleError

DEFAULT_BUDGETS = "deep:size=0.05,deep:size=0.02,deep:size=0.01"
DEFAULT_AGENTS = "ddpg,random,uniform,deep-compression"
CODERS = ("zstd", "ans")


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", default=DEFAULT_AGENTS)
    p.add_argument("--seeds", default="5,6,7")
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="mode:size=ratio,...")
    p.add_argument("--episodes", type=int, default=80)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--finetune-steps", type=int, default=None, help="env default when unset")
    p.add_argument("--final-epochs", type=int, default=2)
    p.add_argument("--final-lr", type=float, default=0.02)
    p.add_argument("--finalists", type=int, default=5)
    p.add_argument("--finalist-spacing", type=float, default=FinalConfig.finalist_spacing)
    p.add_argument("--max-sparsity", type=float, default=0.99)
    add_setup_arguments(p)
    p.add_argument("--out", default="runs/bench-deep")
    p.add_argument("--joint-runs", default="runs/bench-agents-v2")
    p.add_argument("--json", default=None)
    p.add_argument("--coders", action="store_true", help="compare entropy coders, then stop")
    p.add_argument("--coder-demo", action="store_true", help="make artifacts to compare on")
    p.add_argument("--repeats", type=int, default=10)
    return p.parse_args()


# --- agents ------------------------------------------------------------------------------
def run_budget(budget: str, args: argparse.Namespace, model: Any, splits: Any, full: Any) -> list:
    """Every (agent, seed) of one budget on one shared env; a note when it cannot be met."""
    agents, seeds = args.agents.split(","), [int(s) for s in args.seeds.split(",")]
    extra = {"max_sparsity": args.max_sparsity}
    try:
        return run_agents(budget, args, agents, seeds, model, splits, full, extra)
    except BudgetInfeasibleError as exc:
        log(f"{budget}: not reachable: {exc}")
        return [{"budget": budget, "infeasible": str(exc)}]


def joint_rows(folder: Path, budget: str = "joint-size0.05") -> list[dict[str, Any]]:
    """The finished joint-mode runs of ``bench_agents.py`` under ``folder``, if any."""
    rows = []
    for path in sorted((folder / budget).glob("*/seed*/result.json")):
        report = json.loads(path.read_text())
        comp = report["compressed"]
        comp.setdefault("compression_ratio", None)  # runs older than result.json's ratio
        rows.append({"budget": "joint:size=0.05", "agent": path.parent.parent.name, **report})
    return rows


def _cell(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "-"
    acc = mean_std([r["compressed"]["accuracy"] for r in rows])
    size = statistics.mean(r["compressed"]["file_bytes"] for r in rows)
    ratios = [r["compressed"].get("compression_ratio") for r in rows]
    ratio = f"{statistics.mean(ratios):.0f}x" if all(ratios) else "?"
    return f"{acc} ({size / 1000:.1f} kB, {ratio})"


def print_table(rows: list[dict[str, Any]], agents: list[str]) -> None:
    """Markdown: one row per budget; per agent test accuracy, file kB and ratio."""
    print(f"| budget | baseline test | {' | '.join(agents)} |")
    print(f"|---|---|{'---|' * len(agents)}")
    for budget in dict.fromkeys(r["budget"] for r in rows):
        mine = [r for r in rows if r["budget"] == budget]
        if "infeasible" in mine[0]:
            print(f"| {budget} | - | {mine[0]['infeasible']} |")
            continue
        base = mine[0]["baseline"]["accuracy"]
        cells = [_cell([r for r in mine if r["agent"] == a]) for a in agents]
        print(f"| {budget} | {100 * base:.2f} | {' | '.join(cells)} |")


# --- coders ------------------------------------------------------------------------------
def sparse_streams(path: Path) -> list[bytes]:
    """Every sparse layer's raw position and survivor streams in an artifact."""
    from safetensors.torch import load_file

    from autoshrink.compression.artifact import read_header
    from autoshrink.compression.artifact_payload import POSITIONS_SUFFIX, entropy_decode

    head = read_header(path)
    sizes = {k: int(size) for k, (_, size) in head.coded.items()}  # our own files: trusted
    tensors = entropy_decode(load_file(str(path)), head.coded, sizes)
    keys = [f"{n}.weight{s}" for n in head.sparse for s in ("", POSITIONS_SUFFIX)]
    return [tensors[k].numpy().tobytes() for k in keys]


def compare_coders(streams: list[bytes], repeats: int) -> dict[str, dict[str, float]]:
    """Coded bytes and median encode/decode seconds per coder, runs interleaved."""
    from autoshrink.compression.entropy import compress, decompress

    times: dict[str, dict[str, list[float]]] = {c: {"enc": [], "dec": []} for c in CODERS}
    sizes = dict.fromkeys(CODERS, 0)
    for r in range(repeats):
        for codec in CODERS if r % 2 == 0 else CODERS[::-1]:
            enc = dec = 0.0
            total = 0
            for data in streams:
                t0 = time.perf_counter()
                blob = compress(data, codec)
                t1 = time.perf_counter()
                assert decompress(blob, codec, len(data)) == data
                enc, dec = enc + t1 - t0, dec + time.perf_counter() - t1
                total += min(len(blob), len(data))  # the artifact keeps the smaller
            times[codec]["enc"].append(enc)
            times[codec]["dec"].append(dec)
            sizes[codec] = total
    raw = sum(len(s) for s in streams)
    return {
        c: {
            "raw_bytes": raw,
            "bytes": sizes[c],
            "encode_s": statistics.median(times[c]["enc"]),
            "decode_s": statistics.median(times[c]["dec"]),
        }
        for c in CODERS
    }


def demo_artifacts(folder: Path) -> list[Path]:
    """Artifacts of the cached ResNet-20 digits baseline at uniform deep policies."""
    from autoshrink.compression.apply import apply_policy
    from autoshrink.compression.artifact import save_artifact
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.models import ModelSpec
    from autoshrink.compression.policy import Policy, UnitPolicy
    from autoshrink.compression.quantize import pinned_layers
    from autoshrink.compression.units import build_units

    spec = ModelSpec("resnet20", 10, 1)
    model, _ = baseline(spec, "digits", epochs=20, seed=0)
    graph = build_units(model, torch.zeros(1, 1, 8, 8))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sparsity in (0.8, 0.9, 0.95):
        for bits in (2, 3, 4):
            units = {u.name: UnitPolicy(bits=bits, sparsity=sparsity) for u in graph.units}
            pins = dict.fromkeys(pinned_layers(graph), 8)
            policy = Policy(units=units, layers=pins, frozen=dict(graph.frozen))
            small = apply_policy(model, graph, policy)
            path = folder / f"s{sparsity}-b{bits}.safetensors"
            paths.append(save_artifact(path, small, spec, (1, 1, 8, 8), policy).path)
    return paths


def run_coders(args: argparse.Namespace) -> None:
    """The coder table over every sparse artifact under ``--out``."""
    out = Path(args.out)
    paths = demo_artifacts(out / "coder-demo") if args.coder_demo else []
    paths = paths or sorted(out.rglob("*.safetensors"))
    streams = [s for p in paths for s in sparse_streams(p)]
    if not streams:
        raise SystemExit(f"no sparse artifact under {out}")
    result = compare_coders(streams, args.repeats)
    log(f"{len(paths)} artifacts, {len(streams)} streams")
    print("| coder | raw bytes | coded bytes | coded / raw | encode ms | decode ms |")
    print("|---|---|---|---|---|---|")
    for codec, r in result.items():
        print(
            f"| {codec} | {r['raw_bytes']:,} | {r['bytes']:,} | {r['bytes'] / r['raw_bytes']:.3f}"
            f" | {1000 * r['encode_s']:.1f} | {1000 * r['decode_s']:.1f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    """Agents at each budget (or, with ``--coders``, the coder comparison)."""
    args = _parse_args()
    torch.set_num_threads(args.threads)
    if args.coders:
        run_coders(args)
        return
    full, splits, model = data_and_baseline(args)
    rows = [r for b in args.budgets.split(",") for r in run_budget(b, args, model, splits, full)]
    rows += joint_rows(Path(args.joint_runs))
    print_table(rows, args.agents.split(","))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
