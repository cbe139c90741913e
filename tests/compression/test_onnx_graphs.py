"""The model onnxruntime times in a latency table is the graph a loaded artifact exports.

Issue 35 saw a shipped model's onnxruntime session measured at 4.25x its budget where the
table estimated 0.6, and asked whether the table's in-memory variants and the loaded
artifact are the same graph. They are: the same operators, in the same order, with
initializers of the same shapes. (The 4.25x came with a 90 % spread on a busy machine;
quiet, the two run at 0.459 and 0.467 of the baseline, docs/benchmarks.md.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoshrink.compression.artifact import load_artifact, save_artifact
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.onnx_io import export_onnx
from autoshrink.compression.policy import Policy, UnitPolicy
from autoshrink.compression.prune import prune
from autoshrink.compression.units import build_units
from tests.compression.test_export import needs_onnxruntime


def signature(path: Path) -> tuple[list[str], list[tuple[int, ...]]]:
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = sorted(tuple(t.dims) for t in graph.initializer)
    return [node.op_type for node in graph.node], shapes


@pytest.mark.parametrize("bits", [32, 6])
def test_a_loaded_artifact_exports_the_graph_of_the_tables_variant(
    tmp_path: Path, bits: int
) -> None:
    needs_onnxruntime()
    spec, shape = ModelSpec("resnet20", 10, 1), (1, 1, 8, 8)
    torch.manual_seed(0)
    base = build_model(spec).eval()
    graph = build_units(base, torch.zeros(shape))
    policy = Policy(units={u.name: UnitPolicy(keep=0.5, bits=bits) for u in graph.units})
    variant = prune(base, graph, policy.keep()).eval()  # what the latency table times
    info = save_artifact(tmp_path / "m.safetensors", variant, spec, shape, policy)
    shipped = load_artifact(info.path).eval()  # what the latency check times
    x = torch.zeros(32, 1, 8, 8)
    used = {
        export_onnx(m, x, tmp_path / f"{n}.onnx", "auto")
        for n, m in (("variant", variant), ("shipped", shipped))
    }
    assert len(used) == 1  # one exporter for both
    assert signature(tmp_path / "variant.onnx") == signature(tmp_path / "shipped.onnx")
