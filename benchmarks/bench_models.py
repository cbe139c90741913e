r"""Model coverage: which torchvision and timm models are pruned exactly, and what is frozen.

For every model the script builds it with random weights (timm: ``pretrained=False``),
times :func:`~autoshrink.compression.units.build_units` on one input, and then checks it
the way the issue asks:

* **exact**: the cost model at full width and at 3 seeded random joint policies (a
  keep-ratio per unit, a bit-width per layer) equals the pruned model's
  ``FlopCounterMode`` flops // 2, ``sum(numel)`` of its parameters and its payload bytes;
  the pruned model runs and keeps the output shape;
* **artifact**: the first policy's model saved with
  :func:`~autoshrink.compression.artifact.save_artifact` loads back with outputs within
  1e-5 of the simulated (weight-quantized) model, and a payload equal to the cost model's.

It writes a markdown table (one row per model) and the first frozen reason of each model
below it. Refusals and crashes are rows too, never a stop.

Usage::

    .venv/bin/python benchmarks/bench_models.py [--models resnet18,timm:efficientnet_b0]
        [--size 64] [--out docs/models.md] [--budget-s 300]
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autoshrink.compression.artifact import load_artifact, save_artifact
from autoshrink.compression.cost import Cost, cost
from autoshrink.compression.counting import count_bytes, count_macs, count_params
from autoshrink.compression.errors import AutoshrinkError
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy, layer_bits
from autoshrink.compression.prune import prune
from autoshrink.compression.quantize import quantize_weights_
from autoshrink.compression.timm_models import timm_image_size
from autoshrink.compression.units import UnitGraph, build_units

TORCHVISION = (
    "resnet18 resnet50 resnext50_32x4d wide_resnet50_2 mobilenet_v2 mobilenet_v3_small "
    "mobilenet_v3_large efficientnet_b0 efficientnet_v2_s regnet_x_400mf regnet_y_400mf "
    "densenet121 squeezenet1_0 squeezenet1_1 shufflenet_v2_x0_5 mnasnet0_5 googlenet "
    "inception_v3 convnext_tiny vgg11_bn alexnet vit_b_16 swin_t"
).split()
TIMM = (
    "resnet18 resnet50d seresnet18 efficientnet_b0 mobilenetv3_large_100 regnety_002 "
    "ghostnet_100 lcnet_050 repvgg_a0 convnext_atto deit_tiny_patch16_224"
).split()
MODELS = [*TORCHVISION, *(f"timm:{n}" for n in TIMM)]
#: Models beyond the issue's list, as a newcomer might try them (``--models hidden``).
HIDDEN = [
    f"timm:{n}"
    for n in (
        "cspresnet50 rexnet_100 res2net50_14w_8s resnest14d fastvit_t8 mobilevit_xxs "
        "ghostnetv2_100 hrnet_w18_small dla34 dpn68 xception41 tf_efficientnet_lite0 mixnet_s "
        "poolformer_s12 edgenext_xx_small mobileone_s0 tinynet_a mobilenetv4_conv_small "
        "efficientformer_l1 levit_128s vit_tiny_patch16_224 darknet17 selecsls42b "
        "hardcorenas_a inception_v4 nfnet_l0 regnetx_002 cs3darknet_s gernet_s fbnetc_100 "
        "resnetv2_50 efficientvit_b0 repghostnet_050 vovnet39a starnet_s1 fasternet_t0 "
        "swin_tiny_patch4_window7_224 efficientformerv2_s0 tiny_vit_5m_224 coatnet_nano_rw_224"
    ).split()
]
PRESETS = {"issue": MODELS, "hidden": HIDDEN}
#: Models whose architecture needs a larger input than --size. timm models built for one
#: fixed input size (ViT, DeiT, Swin, LeViT) are built for --size instead, as a search
#: builds them for its dataset (``ModelSpec.image_size``). EfficientFormer fails when built
#: for 64 (its attention biases assume 224's 7x7 grid).
NEEDS_224 = ("vit_b_16", "swin_t", "inception_v3", "timm:efficientformer_l1", "timm:inception_v4")
BITS = (2, 3, 4, 5, 6, 7, 8, 32)
#: What the table cannot say by itself.
NOTES = (
    "## Notes",
    "",
    "- **Attention heads.** In timm's ViT, DeiT, Swin, PiT and other models whose attention "
    "blocks have a fused `qkv` Linear, a `proj` Linear and a `num_heads` their forward reads, "
    "each block's heads are one unit (*heads*): whole heads go, with their `qkv` rows, "
    "`proj` columns and relative-position bias columns, and `num_heads` follows.",
    "- **Not head units.** torchvision's `nn.MultiheadAttention` (vit_b_16) ties its head "
    "width to the embedding width, and torchvision's Swin computes its head width from the "
    "embedding and calls `qkv` as a bare function, so there only the MLP widths are units. "
    "Blocks with separate q/k/v biases (BEiT, EVA) or other attention forms (CaiT's talking "
    "heads, XCiT, SwinV2) keep their heads; their MLPs are units where DepGraph follows them.",
    "- **Attention MACs.** `FlopCounterMode` counts the CPU kernel of "
    "`scaled_dot_product_attention` with the formula it uses for the GPU kernels; every count "
    "here includes attention, and a head unit's MACs include its matmuls.",
    "- **Input size.** timm models built for one fixed input size (ViT, DeiT, Swin, LeViT) "
    "are built for the input here (`ModelSpec.image_size`), as a search builds them for its "
    "dataset.",
    "- **Cached attention biases.** timm's LeViT, EfficientFormer, EfficientFormerV2 and "
    "TinyViT keep their attention biases in a cache on their first eval forward. Every pass "
    "autoshrink runs on a model (tracing, the check on a really pruned copy, `count_macs`, "
    "the channel scores) puts the model back as it was afterwards, cache included, so the "
    "model stays deep-copyable and prunable; these four are exact with the units above.",
    "- **Group bounds.** Torch-Pruning's walk through one group is bounded by what it "
    "collects (5,000 dependencies, 8 million channel indices), never by time, so a model "
    "gets the same units on a busy machine as on a quiet one, and its artifact loads on "
    "either. coatnet_nano_rw_224's largest group passes the index bound (over 35 million "
    "indices at 224x224, past 20 GB, when it was let run); dpn68's largest, which freezes by "
    "itself, collects 25,811 dependencies and is cut off by the bound. A model whose "
    "grouping takes long logs its progress every 10 s.",
)


@dataclass
class Row:
    """What one model showed."""

    model: str
    size: int
    units: int | str = "-"
    heads: int | str = "-"
    frozen: int | str = "-"
    exact: str = "-"
    artifact: str = "-"
    build_s: float | None = None
    note: str = ""
    reasons: list[str] = field(default_factory=list)


def _policy(graph: UnitGraph, seed: int) -> Policy:
    rng = random.Random(seed)
    units = {
        u.name: UnitPolicy(keep=rng.uniform(0.05, 1.0), bits=rng.choice(BITS)) for u in graph.units
    }
    return Policy(units=units, frozen=dict(graph.frozen))


def _exact(model: torch.nn.Module, graph: UnitGraph, x: torch.Tensor) -> tuple[bool, str]:
    full = Cost(count_macs(model, x), count_params(model), count_bytes(model))
    if cost(graph) != full:
        return False, f"full width: cost model {cost(graph)} vs counted {full}"
    with torch.no_grad():
        shape = model(x).shape
    for seed in range(3):
        policy = _policy(graph, seed)
        bits = layer_bits(policy, graph)
        pruned = prune(model, graph, policy.keep(), importance="l1").eval()
        got = Cost(count_macs(pruned, x), count_params(pruned), count_bytes(pruned, bits))
        want = cost(graph, policy.keep(), bits)
        if got != want:
            return False, f"policy {seed}: cost model {want} vs counted {got}"
        with torch.no_grad():
            if pruned(x).shape != shape:
                return False, f"policy {seed}: the output shape changed"
    return True, ""


def _round_trip(model: torch.nn.Module, spec: ModelSpec, graph: UnitGraph, x: torch.Tensor) -> str:
    policy = _policy(graph, 0)
    bits = layer_bits(policy, graph)
    pruned = prune(model, graph, policy.keep(), importance="l1").eval()
    with tempfile.TemporaryDirectory() as tmp:
        path, shape = Path(tmp) / "m.safetensors", tuple(x.shape)
        info = save_artifact(path, pruned, spec, shape, policy, graph=graph)
        loaded = load_artifact(info.path)
    simulated = quantize_weights_(copy.deepcopy(pruned), bits)
    with torch.no_grad():
        delta = float((loaded(x) - simulated(x)).abs().max())
    payload_ok = info.payload_bytes == cost(graph, policy.keep(), bits).bytes
    return "yes" if delta <= 1e-5 and payload_ok else f"no (max delta {delta:.1e})"


def check(name: str, size: int) -> Row:
    """Build, time, check and round-trip one model."""
    size = 224 if name in NEEDS_224 else size
    row = Row(name, size)
    torch.manual_seed(0)
    spec = ModelSpec(name, num_classes=10, image_size=timm_image_size(name, size))
    try:
        model = build_model(spec)
        x = torch.randn(1, 3, size, size)
        start = time.perf_counter()
        graph = build_units(model, x)
        row.build_s = time.perf_counter() - start
    except AutoshrinkError as exc:
        row.note = f"refused: {exc}"
        return row
    except Exception as exc:  # a crash is a finding: record it
        row.note = f"crash in build_units: {type(exc).__name__}: {exc}"
        return row
    row.units, row.frozen = len(graph.units), len(graph.frozen)
    row.heads = sum(u.is_heads for u in graph.units)
    row.reasons = [f"{k}: {v}" for k, v in graph.frozen.items()]
    try:
        ok, why = _exact(model, graph, x)
        row.exact = "yes" if ok else "no"
        row.note = why
        row.artifact = _round_trip(model, spec, graph, x)
    except Exception as exc:  # a crash is a finding: record it
        row.note = f"crash: {type(exc).__name__}: {exc}"
    return row


def _table(rows: list[Row], budget_note: str) -> str:
    lines = [
        "# Model coverage",
        "",
        "Generated by `benchmarks/bench_models.py` (random weights, one thread). *units*: "
        "prunable units; *heads*: those of them that are an attention block's heads; "
        "*frozen*: groups kept at full width although they are not the classifier; *exact*: "
        "cost model equals FlopCounterMode//2 (attention counted on the CPU as on a GPU), "
        "`sum(numel)` and payload bytes at full width and at 3 seeded random joint "
        "policies; *artifact*: saved and "
        "loaded back within 1e-5 of the simulated model, payload equal to the cost model's; "
        "*build_units*: seconds, including the check on one really pruned model.",
        "",
        budget_note,
        "",
        "| model | input | units | heads | frozen | exact | artifact | build_units (s) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = "-" if r.build_s is None else f"{r.build_s:.2f}"
        note = r.note.replace("|", "/").replace("\n", " ")[:160]
        lines.append(
            f"| {r.model} | {r.size} | {r.units} | {r.heads} | {r.frozen} | {r.exact} "
            f"| {r.artifact} | {t} | {note} |"
        )
    lines += ["", *NOTES, "", "## Frozen units (first reason per model)", ""]
    for r in rows:
        if r.reasons:
            lines.append(f"- **{r.model}** ({len(r.reasons)}): {r.reasons[0]}")
    return "\n".join(lines) + "\n"


#: The largest models of the issue's list, timed alone by ``--timing``.
LARGEST = ("vit_b_16", "swin_t", "inception_v3", "densenet121", "wide_resnet50_2")


def timing(rounds: int = 2) -> None:
    """Time ``build_units`` (with its check) on :data:`LARGEST`, interleaved rounds."""
    built = {}
    for name in LARGEST:
        torch.manual_seed(0)
        size = 224 if name in NEEDS_224 else 64
        built[name] = (build_model(ModelSpec(name, num_classes=10)), torch.randn(1, 3, size, size))
    times: dict[str, list[float]] = {name: [] for name in LARGEST}
    for _ in range(rounds):
        for name, (model, x) in built.items():
            start = time.perf_counter()
            build_units(model, x)
            times[name].append(time.perf_counter() - start)
    print("| model | input | build_units (s), best | worst |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        side = built[name][1].shape[-1]
        print(f"| {name} | {side} | {min(ts):.2f} | {max(ts):.2f} |")


def main() -> None:
    """Run the models given (default: the issue's list) and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default="issue", help="comma-separated names, or a preset: issue, hidden"
    )
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", default="docs/models.md")
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop starting models")
    parser.add_argument(
        "--timing", action="store_true", help="only time build_units on the largest models"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.timing:
        timing()
        return
    names = [n for part in args.models.split(",") for n in PRESETS.get(part, [part])]
    rows, start = [], time.perf_counter()
    for name in names:
        if time.perf_counter() - start > args.budget_s:
            rows.append(Row(name, args.size, note="not run: over the time budget"))
            continue
        rows.append(check(name, args.size))
        r = rows[-1]
        print(r.model, r.units, r.frozen, r.exact, r.artifact, r.build_s, r.note[:120], flush=True)
    spent = time.perf_counter() - start
    note = f"Run of {len(names)} models in {spent:.0f} s on this machine (2 CPU cores)."
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(_table(rows, note))


if __name__ == "__main__":
    main()
