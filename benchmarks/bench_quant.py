"""Quantization benchmark: artifact sizes, simulated and int8 accuracy, int8 CPU latency.

Reproduce the "Quantization" section of docs/benchmarks.md with::

    .venv/bin/python benchmarks/bench_quant.py

It takes a few minutes on 2 CPU cores (the digits baseline is trained once and cached in
``$AUTOSHRINK_CACHE``). Tables are printed as Markdown; ``--json PATH`` also writes the raw
numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoshrink.compression.artifact import load_artifact, save_artifact
from autoshrink.compression.cost import cost
from autoshrink.compression.int8 import to_int8
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.quantize import first_and_last_layers, quantize_weights_
from autoshrink.compression.units import build_units


def size_policies(layers: list[str], first: str, last: str) -> dict[str, dict[str, int]]:
    """Uniform 32/8/4/2 bits, and a HAQ-like mix: ends 8, 1x1 shortcuts 6, late layers 2-3."""
    mixed = {}
    for name in layers:
        if name in (first, last):
            mixed[name] = 8
        elif "downsample" in name:
            mixed[name] = 6
        elif name.startswith("layer4"):
            mixed[name] = 2
        elif name.startswith("layer3"):
            mixed[name] = 3
        else:
            mixed[name] = 4
    policies = {f"uniform {b}": dict.fromkeys(layers, b) for b in (32, 8, 4, 2)}
    policies["mixed (8 / 6 / 4 / 3 / 2)"] = mixed
    return policies


def bench_sizes(spec: ModelSpec, shape: tuple[int, ...], folder: Path) -> list[dict[str, Any]]:
    """File and payload sizes of each policy's artifact against the float state dict."""
    torch.manual_seed(0)
    model = build_model(spec)
    graph = build_units(model, torch.zeros(shape))
    layers = [layer.name for layer in graph.layers]
    float_pt = folder / "float.pt"
    torch.save(model.state_dict(), float_pt)
    float_bytes = float_pt.stat().st_size
    rows = []
    first, last = first_and_last_layers(graph)
    for label, bits in size_policies(layers, first, last).items():
        info = save_artifact(folder / "a.safetensors", model, spec, shape, bits)
        assert info.payload_bytes == cost(graph, None, bits).bytes
        weights = {n: m.weight.numel() for n, m in model.named_modules() if n in bits}
        avg = sum(bits[n] * w for n, w in weights.items()) / sum(weights.values())
        rows.append(
            {
                "policy": label,
                "avg_weight_bits": avg,
                "payload_bytes": info.payload_bytes,
                "file_bytes": info.file_bytes,
                "overhead_bytes": info.overhead_bytes,
                "overhead_pct": 100 * info.overhead_ratio,
                "vs_float_pt": info.file_bytes / float_bytes,
            }
        )
    rows.insert(0, {"policy": "torch.save(state_dict), float", "file_bytes": float_bytes})
    return rows


def interleaved_times(
    fns: dict[str, Callable[[], Any]], reps: int, block_s: float = 0.05
) -> dict[str, list[float]]:
    """Seconds per call, per rep, alternating the functions so load drifts hit all alike.

    Fast calls are timed in blocks of at least ``block_s`` seconds (a warm-up sizes them).
    """
    inner: dict[str, int] = {}
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for key, fn in fns.items():
            fn()
            start = time.perf_counter()
            fn()
            inner[key] = max(1, math.ceil(block_s / max(time.perf_counter() - start, 1e-6)))
        for i in range(reps):
            for key in list(fns) if i % 2 == 0 else list(reversed(fns)):
                start = time.perf_counter()
                for _ in range(inner[key]):
                    fns[key]()
                times[key].append((time.perf_counter() - start) / inner[key])
    return times


def bench_latency(
    name: str, model: nn.Module, int8: nn.Module, shape: tuple[int, ...], reps: int
) -> list[dict[str, Any]]:
    """Float vs int8 latency at batch 1 and 32: medians, and the ratio of the minima."""
    rows = []
    for batch in (1, 32):
        x = torch.randn(batch, *shape[1:])
        fns: dict[str, Callable[[], Any]] = {"float": partial(model, x), "int8": partial(int8, x)}
        t = interleaved_times(fns, reps)
        med = {k: statistics.median(v) for k, v in t.items()}
        rows.append(
            {
                "model": name,
                "input": f"{batch}x{'x'.join(map(str, shape[1:]))}",
                "float_ms": 1000 * med["float"],
                "int8_ms": 1000 * med["int8"],
                "ratio": med["int8"] / med["float"],
                "ratio_of_min": min(t["int8"]) / min(t["float"]),
            }
        )
    return rows


def bench_digits(folder: Path) -> tuple[list[dict[str, Any]], nn.Module, nn.Module]:
    """Accuracy of the ResNet-20 digits baseline: float, simulated bits, artifact, int8."""
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.evaluate import accuracy

    spec = ModelSpec("resnet20", 10, 1)
    model, _ = baseline(spec, "digits")
    splits = load_dataset("digits")
    test, calib = splits.loader("test", 256), splits.loader("train", 64, shuffle=True)
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    first, last = first_and_last_layers(model)
    rows = [{"model": "float", "test_acc": accuracy(model, test)}]
    for bits in (8, 6, 4, 3, 2):
        uniform = dict.fromkeys(layers, bits)
        pinned = uniform | {first: 8, last: 8}
        for label, policy in ((f"{bits}-bit weights", uniform), (f"{bits}-bit, ends 8", pinned)):
            if bits == 8 and policy is pinned:
                continue
            simulated = quantize_weights_(copy.deepcopy(model), policy)
            rows.append({"model": label + " (simulated)", "test_acc": accuracy(simulated, test)})
    info = save_artifact(
        folder / "r20.safetensors", model, spec, (1, 1, 8, 8), dict.fromkeys(layers, 8)
    )
    rows.append(
        {"model": "8-bit artifact, loaded", "test_acc": accuracy(load_artifact(info.path), test)}
    )
    int8 = to_int8(model, calib, n_batches=8)
    rows.append({"model": "int8 (torchao PT2E, x86 Inductor)", "test_acc": accuracy(int8, test)})
    return rows, model, int8


def markdown(rows: list[dict[str, Any]]) -> str:
    """Render rows (dicts with shared keys) as a Markdown table."""
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    """Run the selected parts and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=9, help="timed calls per model and batch")
    parser.add_argument("--size", type=int, default=224, help="resnet18 input side for latency")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"threads": args.threads, "torch": torch.__version__}
    spec = ModelSpec("resnet18", 1000, 3)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for part in [p for p in PARTS if p in args.parts]:  # accuracy before latency
            start = time.perf_counter()
            if part == "sizes":
                rows = bench_sizes(spec, (1, 3, 64, 64), folder)
                title = "Artifact sizes, resnet18 (1000 classes)"
            elif part == "accuracy":
                rows, digits_model, digits_int8 = bench_digits(folder)
                title = "Digits test accuracy, resnet20"
            else:
                if "accuracy" not in args.parts:
                    _, digits_model, digits_int8 = bench_digits(folder)
                rows = bench_latency(
                    "resnet20 (digits)", digits_model, digits_int8, (1, 1, 8, 8), args.reps
                )
                torch.manual_seed(0)
                model = build_model(spec)
                shape = (1, 3, args.size, args.size)
                calib = [torch.randn(4, *shape[1:]) for _ in range(2)]
                int8 = to_int8(model, calib, n_batches=len(calib))
                rows += bench_latency("resnet18", model, int8, shape, args.reps)
                title = f"int8 / float CPU latency, {args.threads} threads, interleaved medians"
            results[part] = rows
            took = time.perf_counter() - start
            load = "/".join(f"{v:.1f}" for v in os.getloadavg())
            print(f"## {title}\n\n{markdown(rows)}\n\n({part}: {took:.0f} s, load {load})\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


PARTS = ("sizes", "accuracy", "latency")

if __name__ == "__main__":
    main()
