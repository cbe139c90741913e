"""One short search and a ResNet-18 at 224x224, on a CUDA device against this machine's CPU.

Usage::

    .venv/bin/python benchmarks/bench_gpu.py              # CUDA vs CPU -> docs/benchmarks.md
    .venv/bin/python benchmarks/bench_gpu.py --device cpu # dry run: the code, tiny sizes

Two measurements, each on the device and then on the CPU, in one run:

1. **A short search**: ResNet-20 on the built-in ``fake`` set (32x32 RGB, offline), joint
   mode, default budgets, DDPG, ``--episodes`` episodes of ``--finetune-steps`` fine-tune
   steps each, then a 1-epoch final fine-tune. The same seed and settings on both devices;
   the baseline is trained once (on the device, ``--baseline-epochs``) in a temporary
   cache, unless ``AUTOSHRINK_CACHE`` is set, and shared.
2. **ResNet-18 at 224x224** on fake data, 1000 classes: images per second of a forward
   pass (eval, no autograd) and of an SGD fine-tune step (forward, backward, update), at
   ``--batch`` images a batch, medians of ``--iters`` timed iterations after warm-up.

Where CUDA is not available it prints one line and exits 0 without measuring or writing.
With ``--device cpu`` (a dry run) it runs everything with the CPU in CUDA's place, at tiny
sizes, prints the table and writes nothing. Only a CUDA run writes its tables to
``docs/benchmarks.md``, between its markers in "GPU against CPU" (every other section is
left as it is). Sized to finish in about 5 minutes on a 16-core H100 machine (an estimate:
not yet run on one); a SIGALRM limit (``--limit-s``, 450 s) stops it with one line past
that, writing nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
START = "<!-- bench_gpu: start -->"
END = "<!-- bench_gpu: end -->"
TITLE = "#### Measured: CUDA against the CPU"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run")
    p.add_argument("--episodes", type=int, default=None, help="search episodes (8; dry 2)")
    p.add_argument("--finetune-steps", type=int, default=None, help="per episode (100; dry 5)")
    p.add_argument("--baseline-epochs", type=int, default=None, help="on the device (30; dry 1)")
    p.add_argument("--batch", type=int, default=None, help="ResNet-18 batch (64; dry 2)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (20; dry 1)")
    p.add_argument("--cpu-iters", type=int, default=None, help="on the CPU (3; dry 1)")
    p.add_argument("--limit-s", type=float, default=450.0, help="stop past this (450)")
    p.add_argument("--docs", type=Path, default=DOCS, help="where the table goes")
    args = p.parse_args(argv)
    dry = args.device == "cpu"
    sizes = {"episodes": (8, 2), "finetune_steps": (100, 5), "batch": (64, 2)}
    sizes["baseline_epochs"] = (30, 1)
    sizes |= {"iters": (20, 1), "cpu_iters": (3, 1)}
    for name, (full, tiny) in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if dry else full)
    args.dry = dry
    return args


def search_row(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """One seeded short search on ``device``: its times, best reward and test accuracy."""
    from autoshrink.agent.search import SearchConfig, search

    config = SearchConfig.create(
        model="resnet20",
        dataset="fake",
        episodes=args.episodes,
        finetune_steps=args.finetune_steps,
        baseline_epochs=args.baseline_epochs,
        final_epochs=1,
        final_finalists=1,
        seed=0,
        device=device,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_gpu-") as out:
        report = search(config, Path(out) / "run")
        policy = (Path(out) / "run" / "policy.json").read_text()
    per_episode = report["search_time_s"] / max(1, report["episodes"])
    return {
        "device": device,
        "episodes": report["episodes"],
        "s_per_episode": per_episode,
        "episodes_per_hour": 3600.0 / per_episode if per_episode else float("nan"),
        "search_s": report["search_time_s"],
        "final_s": report["final_time_s"],
        "wall_s": time.perf_counter() - start,
        "best_reward": report["best_reward"],
        "test_accuracy": report["compressed"]["accuracy"],
        "policy": policy,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Any, device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds of ``step()`` over ``iters`` runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def resnet18_row(device_name: str, batch: int, iters: int) -> dict[str, Any]:
    """Images per second of ResNet-18 at 224x224: a forward pass and a fine-tune step."""
    import torch.nn.functional as F
    from torchvision.models import resnet18

    from autoshrink.compression.device import resolve_device

    device = resolve_device(device_name)
    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=1000).to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    warmup = 3 if device.type == "cuda" else 1
    model.eval()
    forward_s = _timed(forward, device, warmup, iters)
    model.train()
    train_s = _timed(train_step, device, warmup, iters)
    return {
        "device": str(device),
        "batch": batch,
        "forward_img_s": batch / forward_s,
        "train_img_s": batch / train_s,
        "forward_ms": 1e3 * forward_s,
        "train_ms": 1e3 * train_s,
    }


def machine_line(device: str) -> str:
    """The device, the CPU threads and the versions, in one line."""
    from autoshrink.compression.device import describe_device, resolve_device

    name = describe_device(resolve_device(device))
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    return (
        f"{name} against the CPU at {torch.get_num_threads()} torch threads "
        f"({os.cpu_count()} logical cores); torch {torch.__version__}{cuda}"
    )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b else "-"


def table(args: argparse.Namespace, searches: list[dict], nets: list[dict], took: float) -> str:
    """The markdown section: the machine, both tables, and how to reproduce it."""
    dev, cpu = searches
    lines = [
        TITLE,
        "",
        f"Measured by `benchmarks/bench_gpu.py` on {time.strftime('%Y-%m-%d')} in "
        f"{took:.0f} s: {machine_line(args.device)}.",
        "",
        f"**Search**: ResNet-20 on `fake` (32x32 RGB), joint mode, default budgets, DDPG, "
        f"{args.episodes} episodes of {args.finetune_steps} fine-tune steps, then 1 final epoch; "
        f"its baseline trained once, {args.baseline_epochs} epochs on {args.device}.",
        "",
        "| device | s / episode | episodes / hour | search s | final s | best reward "
        "| test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in searches:
        lines.append(
            f"| {row['device']} | {row['s_per_episode']:.2f} | {row['episodes_per_hour']:.0f} "
            f"| {row['search_s']:.1f} | {row['final_s']:.1f} | {row['best_reward']:.4f} "
            f"| {row['test_accuracy']:.2%} |"
        )
    same = "the same policy" if dev["policy"] == cpu["policy"] else "different policies"
    lines += [
        "",
        f"Speed-up per episode: {_ratio(cpu['s_per_episode'], dev['s_per_episode'])}; "
        f"the two searches shipped {same}.",
        "",
        f"**ResNet-18 at 224x224**, 1000 classes, fake data, batch {args.batch}, medians "
        f"of {args.iters} timed iterations on the device and {args.cpu_iters} on the CPU:",
        "",
        "| device | forward img/s | forward ms | fine-tune step img/s | fine-tune step ms |",
        "|---|---|---|---|---|",
    ]
    for row in nets:
        lines.append(
            f"| {row['device']} | {row['forward_img_s']:.1f} | {row['forward_ms']:.1f} "
            f"| {row['train_img_s']:.1f} | {row['train_ms']:.1f} |"
        )
    gpu, host = nets
    lines += [
        "",
        f"Speed-up: forward {_ratio(gpu['forward_img_s'], host['forward_img_s'])}, "
        f"fine-tune step {_ratio(gpu['train_img_s'], host['train_img_s'])}.",
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, start: str = START, end: str = END) -> None:
    """Put ``section`` between the markers in ``path`` (appended, with them, if absent)."""
    text = path.read_text(encoding="utf-8")
    block = f"{start}\n{section}{end}\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text, encoding="utf-8")


def measure(args: argparse.Namespace) -> str:
    """Run both measurements on the device and the CPU; the section's markdown."""
    from autoshrink.compression.device import set_threads

    start = time.perf_counter()
    set_threads(None)  # the CPU side gets every usable core, as `autoshrink search` does
    searches = [search_row(args, device) for device in (args.device, "cpu")]
    nets = [
        resnet18_row(args.device, args.batch, args.iters),
        resnet18_row("cpu", args.batch, args.cpu_iters),
    ]
    return table(args, searches, nets, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the section, and write it to the docs on a CUDA run."""
    args = parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        print(
            f"bench_gpu: skipped: torch {torch.__version__} sees no CUDA device here; "
            "nothing measured, docs untouched (run it where CUDA is, or --device cpu to dry-run)"
        )
        return 0
    from autoshrink.compression.deadline import deadline
    from autoshrink.compression.errors import AutoshrinkError

    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench_gpu-cache-") as cache,
            deadline(args.limit_s, lambda: TimeoutError(f"past {args.limit_s:g} s")),
        ):
            os.environ.setdefault("AUTOSHRINK_CACHE", cache)  # a baseline of its own, once
            section = measure(args)
    except (TimeoutError, AutoshrinkError) as exc:
        print(f"bench_gpu: stopped: {exc}; nothing written", file=sys.stderr)
        return 1
    print(section, end="")
    if args.dry:
        print(f"bench_gpu: dry run on the CPU: {args.docs} untouched")
    else:
        write_section(args.docs, section)
        print(f"bench_gpu: wrote its section of {args.docs} (between its markers)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
