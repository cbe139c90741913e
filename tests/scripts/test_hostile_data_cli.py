"""Hostile datasets and re-signed artifacts on the CLI: one ``error:`` line, exit 2.

Every case writes nothing (the cache lives in the case's folder, so it is watched too),
prints nothing on stdout, and shows no traceback.
"""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from autoshrink.compression.apply import apply_policy
from autoshrink.compression.artifact import read_header, save_artifact
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy
from autoshrink.compression.units import build_units
from autoshrink.scripts.cli import main
from tests.compression.artifact_files import edit_field, edit_tensors
from tests.compression.test_hostile_data import idx, idx_folder, image_folder, png_header
from tests.scripts.test_hostile_cli import snapshot


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A smallcnn artifact for digits-shaped input with sparse, entropy-coded layers."""
    spec, shape = ModelSpec("smallcnn", 10, 1), (1, 1, 8, 8)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    graph = build_units(model, torch.zeros(shape))
    units = {u.name: UnitPolicy(keep=0.5, bits=4, sparsity=0.9) for u in graph.units}
    policy = Policy(units=units, frozen=dict(graph.frozen))
    small = apply_policy(model, graph, policy)
    path = tmp_path_factory.mktemp("deep") / "m.safetensors"
    save_artifact(path, small, spec, shape, policy)
    assert read_header(path).coded
    return path.read_bytes()


def make_files(tmp: Path, deep: bytes) -> None:
    """Every file the cases name."""
    for name, bad in (("zero", b""), ("garbage", random.Random(0).randbytes(400))):
        (image_folder(tmp / name) / "cat" / "bad.png").write_bytes(bad)
    loop = image_folder(tmp / "loop")
    os.symlink(loop / "dog", loop / "dog" / "again")
    (image_folder(tmp / "bomb") / "cat" / "bomb.png").write_bytes(png_header(10**5, 10**5))
    junk = idx_folder(tmp / "junk", gz=False)
    (junk / "train-images-idx3-ubyte").write_bytes(random.Random(1).randbytes(3000))
    billion = idx_folder(tmp / "billion", gz=False)
    (billion / "train-images-idx3-ubyte").write_bytes(
        idx(np.zeros((5, 28, 28)), dims=(10**9, 28, 28))
    )
    mismatch = idx_folder(tmp / "mismatch", n_train=5)
    (mismatch / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(np.arange(7))))
    (tmp / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    for name in ("bf16", "nan", "superscript", "arabic"):
        (tmp / f"{name}.safetensors").write_bytes(deep)
    key = next(k for k in sorted(read_header(tmp / "bf16.safetensors").coded))

    def to_bf16(t: dict[str, torch.Tensor]) -> None:
        t[key] = t[key].to(torch.bfloat16)

    def nan_scale(t: dict[str, torch.Tensor]) -> None:
        t[next(k for k in sorted(t) if k.endswith("#scale"))][0] = float("nan")

    edit_tensors(tmp / "bf16.safetensors", to_bf16)
    edit_tensors(tmp / "nan.safetensors", nan_scale)
    edit_field(tmp / "superscript.safetensors", "format_version", "¹")
    edit_field(tmp / "arabic.safetensors", "format_version", "١")  # Arabic-Indic one


TRAIN = ["train", "--model", "smallcnn", "--epochs", "1"]
SEARCH = ["search", "--model", "smallcnn", "--out", "{tmp}/run"]
EXPORT_INT8 = ["export", "{tmp}/bf16.safetensors", "--int8", "--out", "{tmp}/x.onnx"]
EVALUATE = ["evaluate", "--dataset", "digits"]
CASES = [
    ([*TRAIN, "--dataset", "imagefolder:{tmp}/zero"], "cannot read image {tmp}/zero/cat/bad.png"),
    ([*TRAIN, "--dataset", "imagefolder:{tmp}/garbage"], "{tmp}/garbage/cat/bad.png"),
    ([*SEARCH, "--dataset", "imagefolder:{tmp}/zero"], "{tmp}/zero/cat/bad.png"),
    ([*SEARCH, "--dataset", "imagefolder:{tmp}/loop"], "symlink loop"),
    ([*EXPORT_INT8, "--dataset", "imagefolder:{tmp}/garbage"], "{tmp}/garbage/cat/bad.png"),
    ([*EXPORT_INT8, "--dataset", "imagefolder:{tmp}/bomb"], "{tmp}/bomb/cat/bomb.png"),
    ([*TRAIN, "--dataset", "fashion-mnist", "--data-dir", "{tmp}/junk"], "not an IDX file"),
    ([*TRAIN, "--dataset", "mnist", "--data-dir", "{tmp}/junk"], "{tmp}/junk/train-images"),
    ([*TRAIN, "--dataset", "mnist", "--data-dir", "{tmp}/billion"], "1,000,000,000 items"),
    ([*SEARCH, "--dataset", "fashion-mnist", "--data-dir", "{tmp}/mismatch"], "7 labels"),
    ([*TRAIN, "--dataset", "fashion-mnist", "--data-dir", "{tmp}/passwd"], "is not a folder"),
    ([*TRAIN, "--dataset", "fashion-mnist", "--data-dir", "/etc/passwd"], "is not a folder"),
    ([*EVALUATE, "{tmp}/bf16.safetensors"], "torch.bfloat16, not torch.uint8"),
    ([*EVALUATE, "{tmp}/nan.safetensors"], "NaN or infinite"),
    ([*EVALUATE, "{tmp}/superscript.safetensors"], "invalid format version"),
    ([*EVALUATE, "{tmp}/arabic.safetensors"], "invalid format version"),
    (["export", "{tmp}/nan.safetensors", "--out", "{tmp}/x.onnx"], "NaN or infinite"),
]


@pytest.mark.parametrize(("argv", "needle"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_hostile_data_case_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path,
    deep: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path / "cache"))
    make_files(tmp_path, deep)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main([a.format(tmp=tmp_path) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle.format(tmp=tmp_path) in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
