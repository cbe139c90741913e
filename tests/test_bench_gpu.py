"""benchmarks/bench_gpu.py: its no-CUDA line, its sizes, and a docs section of its own."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_one_line_and_writes_nothing(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    assert bench.main(["--docs", str(docs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("bench_gpu: skipped:") and "no CUDA" in out[0]
    assert docs.read_text() == "# Benchmarks\n"


def test_a_dry_run_is_tiny_and_a_cuda_run_full_sized(bench):
    dry, full = bench.parse_args(["--device", "cpu"]), bench.parse_args([])
    assert dry.dry and (dry.episodes, dry.finetune_steps, dry.batch, dry.iters) == (2, 5, 2, 1)
    assert not full.dry and (full.episodes, full.finetune_steps, full.batch) == (8, 100, 64)
    assert full.limit_s < 8 * 60


def test_the_section_replaces_only_itself(bench, tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n## Batch\n\nkept\n")
    bench.write_section(docs, "## GPU against CPU\n\nfirst\n")
    bench.write_section(docs, "## GPU against CPU\n\nsecond\n")
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\n## Batch\n\nkept\n\n")
    assert "second" in text and "first" not in text and text.count(bench.START) == 1
    docs.write_text(text + "\n## Later\n\nalso kept\n")
    bench.write_section(docs, "## GPU against CPU\n\nthird\n")
    text = docs.read_text()
    assert "## Later\n\nalso kept" in text and "third" in text and "second" not in text
