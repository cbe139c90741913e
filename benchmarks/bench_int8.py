"""int8 against fp32, side by side in one run: the old FX path, torchao PT2E, ONNX Runtime QDQ.

Reproduce the "int8 on torchao" tables of docs/benchmarks.md on a quiet machine with::

    .venv/bin/python benchmarks/bench_int8.py --parts latency accuracy

Latency (``--parts latency``): for each model and batch, every runtime is timed
*interleaved* (:func:`autoshrink.compression.timing.time_interleaved`: rounds, each timing
every runtime once in an order reversed every other round, after a warm-up) at ``--threads``
torch (and onnxruntime) threads. Reported per runtime: the median ms, its spread (IQR over
median of the rounds) and the ratio to fp32 eager (median of per-round ratios, with its
spread). Runtimes:

- ``fp32 eager``, ``fp32 compiled`` (``torch.compile``), ``fp32 onnxruntime``;
- ``int8 FX (old)``: the deprecated ``torch.ao.quantization`` FX path autoshrink used before
  (x86 engine, per-channel weights, 7-bit activations); it lives in this script only;
- ``int8 torchao``: :func:`autoshrink.compression.int8.to_int8` (PT2E, X86InductorQuantizer,
  ``torch.compile`` with freezing);
- ``int8 onnxruntime``: the QDQ ONNX of that int8 graph (``export --int8``).

Goal: ``int8 torchao`` at <= 0.30 of fp32 eager at batch 32 on ResNet-18.

Accuracy (``--parts accuracy``): ResNet-20 on ``--dataset`` (default Fashion-MNIST; its
baseline trains once, ~30 min on 2 cores, then is cached), float against each int8 path on
the test split. Goal: torchao int8 within 0.3 points of float.

Untrained weights serve the latency part (int8 kernels do not care); calibration uses random
batches there. Smoke run: ``--models resnet18 --batches 1 --size 64 --rounds 2 --parts
latency``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoshrink.compression.int8 import to_int8
from autoshrink.compression.onnx_io import export_onnx, onnx_session
from autoshrink.compression.runtime import runner
from autoshrink.compression.timing import relative_spread, time_interleaved

#: Accuracy goal: int8 within this many points of float.
ACCURACY_POINTS = 0.3
RATIO_GOAL = 0.30


def fx_int8(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """The old path: torch.ao FX graph mode on the x86 engine (deprecated upstream)."""
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, PerChannelMinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    qconfig = QConfig(
        activation=HistogramObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=127),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        ),
    )
    mapping = get_default_qconfig_mapping("x86").set_global(qconfig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), mapping, example_inputs=(batches[0],))
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared).eval()


def ort_runner(model: nn.Module, example: torch.Tensor, exporter: str) -> Any:
    """An onnxruntime session of ``model`` as a runner (threads as torch's)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_onnx(model, example, path, exporter)
        session = onnx_session(path, torch.get_num_threads())
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})[0]


def runners(name: str, size: int, batch: int, calib: int) -> dict[str, Any]:
    """Every runtime of one torchvision model at one input shape."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(batch, 3, size, size)
    batches = [torch.randn(max(batch, 2), 3, size, size) for _ in range(calib)]
    int8 = to_int8(model, batches, calib)
    return {
        "fp32 eager": runner(model, x, "eager"),
        "fp32 compiled": runner(model, x, "compiled"),
        "fp32 onnxruntime": ort_runner(model, x, "auto"),
        "int8 FX (old)": fx_int8(model, batches),
        "int8 torchao": int8,
        "int8 onnxruntime": ort_runner(int8.program, x, "dynamo"),
    }


def bench_latency(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Interleaved medians, spreads and ratios to fp32 eager, per model and batch."""
    rows = []
    for name in args.models:
        for batch in args.batches:
            run = runners(name, args.size, batch, args.calib)
            x = torch.randn(batch, 3, args.size, args.size)
            got = time_interleaved(run, x, rounds=args.rounds, warmup=args.warmup)
            ref = got["fp32 eager"]
            for label, samples in got.items():
                ratios = [s / r for s, r in zip(samples, ref, strict=True)]
                rows.append(
                    {
                        "model": name,
                        "batch": batch,
                        "runtime": label,
                        "ms": 1e3 * statistics.median(samples),
                        "spread": relative_spread(list(samples)),
                        "ratio": statistics.median(ratios),
                        "ratio_spread": relative_spread(ratios),
                    }
                )
            print(f"# measured {name} at batch {batch}", flush=True)
    return rows


def bench_accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    """ResNet-20 on ``args.dataset``: float against each int8 path on the test split."""
    from autoshrink.compression.baselines import baseline
    from autoshrink.compression.data import load_dataset
    from autoshrink.compression.evaluate import accuracy
    from autoshrink.compression.models import ModelSpec

    data = load_dataset(args.dataset)
    model, _ = baseline(ModelSpec("resnet20", data.num_classes, data.in_channels), args.dataset)
    model.eval()
    train = data.loader("train", batch_size=64, shuffle=True, seed=0)
    calib = [x for _, (x, _) in zip(range(args.calib), train, strict=False)]
    test = data.loader("test", batch_size=256)
    x = calib[0]
    int8 = to_int8(model, calib, args.calib)
    paths: dict[str, Any] = {
        "float": model,
        "int8 FX (old)": fx_int8(model, calib),
        "int8 torchao": int8,
        "int8 onnxruntime": ort_runner(int8.program, x, "dynamo"),
    }
    rows = []
    base = None
    for label, run in paths.items():
        acc = _accuracy(run, test) if label == "int8 onnxruntime" else accuracy(run, test)
        base = acc if base is None else base
        points = 100 * (acc - base)
        rows.append({"path": label, "accuracy": acc, "points": points})
    return rows


def _accuracy(run: Any, test: Any) -> float:
    correct = total = 0
    for x, y in test:
        correct += int((torch.as_tensor(run(x)).argmax(1) == y).sum())
        total += y.numel()
    return correct / total


def print_tables(latency: list[dict[str, Any]], acc: list[dict[str, Any]], threads: int) -> None:
    """Markdown tables of both parts."""
    if latency:
        print(f"\n### int8 against fp32 ({threads} threads, interleaved rounds)\n")
        print("| model | batch | runtime | median (ms) | spread | ratio to fp32 eager | ± |")
        print("|---|---|---|---|---|---|---|")
        for r in latency:
            print(
                f"| {r['model']} | {r['batch']} | {r['runtime']} | {r['ms']:.2f} | "
                f"{r['spread']:.1%} | **{r['ratio']:.3f}** | {r['ratio_spread']:.1%} |"
            )
        goal = [
            r
            for r in latency
            if r["model"] == "resnet18" and r["batch"] == 32 and r["runtime"] == "int8 torchao"
        ]
        for r in goal:
            verdict = "met" if r["ratio"] <= RATIO_GOAL else "NOT met"
            print(f"\nGoal int8 torchao <= {RATIO_GOAL} of fp32 at batch 32: {verdict}")
    if acc:
        print("\n### int8 accuracy (ResNet-20, test split)\n")
        print("| path | test accuracy | points vs float | within 0.3 |")
        print("|---|---|---|---|")
        for r in acc:
            ok = "yes" if abs(r["points"]) <= ACCURACY_POINTS else "NO"
            print(f"| {r['path']} | {r['accuracy']:.2%} | {r['points']:+.2f} | {ok} |")


def main() -> None:
    """Parse the options, run the parts asked for, print Markdown (and JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["latency"], choices=["latency", "accuracy"])
    p.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calib", type=int, default=8, help="calibration batches")
    p.add_argument("--dataset", default="fashion-mnist", help="of the accuracy part")
    p.add_argument("--json", type=Path, default=None, help="also write the raw numbers here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    latency = bench_latency(args) if "latency" in args.parts else []
    acc = bench_accuracy(args) if "accuracy" in args.parts else []
    print_tables(latency, acc, args.threads)
    if args.json:
        args.json.write_text(json.dumps({"latency": latency, "accuracy": acc}, indent=1))


if __name__ == "__main__":
    main()
