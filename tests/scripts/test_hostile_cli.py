"""Hostile flags and files on ``evaluate``, ``export`` and ``inspect``.

Every case exits 2 with exactly one ``error:`` line on stderr, no traceback, nothing on
stdout, and nothing written or changed in its folder; none runs a file named by an input.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from autoshrink.compression.artifact import save_artifact
from autoshrink.compression.models import ModelSpec, build_model
from autoshrink.compression.policy import Policy, UnitPolicy
from autoshrink.compression.prune import prune
from autoshrink.compression.quantize import calibrate_activations_
from autoshrink.compression.units import build_units
from autoshrink.scripts.cli import main
from tests.compression.artifact_files import TINY_NET, edit_field, edit_meta, join

DEEP = 100_000
HUGE_INT = "7" * 5000


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A smallcnn artifact for digits-shaped input (1x8x8), with an activation quantizer."""
    spec, shape = ModelSpec("smallcnn", 10, 1), (1, 1, 8, 8)
    torch.manual_seed(0)
    base = build_model(spec)
    graph = build_units(base, torch.zeros(shape))
    policy = Policy(units={u.name: UnitPolicy(keep=0.5, bits=4) for u in graph.units})
    model = prune(base, graph, policy.keep())
    calibrate_activations_(model, {"classifier": 6}, [torch.randn(4, 1, 8, 8)], 1)
    path = tmp_path_factory.mktemp("pristine") / "m.safetensors"
    return save_artifact(path, model, spec, shape, policy).path.read_bytes()


def make_files(tmp: Path, pristine: bytes) -> dict[str, str]:
    """Every file the cases name, written once per case; returns the template values."""
    art = tmp / "m.safetensors"
    art.write_bytes(pristine)

    def copy(name: str) -> Path:
        path = tmp / name
        path.write_bytes(pristine)
        return path

    (tmp / "garbage.safetensors").write_bytes(random.Random(0).randbytes(20_000))
    (tmp / "empty.safetensors").write_bytes(b"")
    (tmp / "truncated.safetensors").write_bytes(pristine[: len(pristine) // 2])
    join(tmp / "deep.safetensors", b"[" * DEEP + b"]" * DEEP, b"")
    (tmp / "huge.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")
    evil = tmp / "evil.py"
    evil.write_text(f"from pathlib import Path\nPath({str(tmp / 'MARKER')!r}).write_text('x')\n")
    spec = {"name": f"{evil}:build", "num_classes": 10, "in_channels": 1}
    edit_field(copy("evil.safetensors"), "spec", spec)
    edit_field(copy("int.safetensors"), "input_shape", f"[1, 1, {HUGE_INT}, 8]")
    edit_field(copy("kept-list.safetensors"), "kept", [1, 2])
    edit_field(copy("act.safetensors"), "act_quant", {"features.9": [6, 0.0, 1.0]})
    edit_meta(
        copy("bits.safetensors"),
        lambda m: m.update(weight_bits=m["weight_bits"][:-1] + ', "ghost": 4}'),
    )
    (tmp / "policy.json").write_text(Policy(units={"a": UnitPolicy(keep=0.5)}).to_json())
    factory = tmp / "mynet.py"
    factory.write_text(TINY_NET)
    user = ModelSpec(f"{factory}:build", 10, 1)
    save_artifact(tmp / "user.safetensors", build_model(user), user, (1, 1, 8, 8), {})
    (tmp / "changed.py").write_text(TINY_NET + "# edited after the artifact was saved\n")
    (tmp / "m.onnx").mkdir()  # export's default output path is a folder
    torch.save({"args": __import__("argparse").Namespace(a=1)}, tmp / "object.pt")
    return {
        "tmp": str(tmp),
        "art": str(art),
        "factory": f"{factory}:build",
        "user_art": str(tmp / "user.safetensors"),
        "huge": HUGE_INT,
    }


EVALUATE = [
    (["{art}", "--dataset", "digits", "--batch-size", "0"], "--batch-size must be between"),
    (["{art}", "--dataset", "digits", "--batch-size", "-5"], "--batch-size must be between"),
    (
        ["{art}", "--dataset", "digits", "--batch-size", "1000000000"],
        "--batch-size must be between",
    ),
    (["{art}", "--dataset", "digits", "--repeats", "0"], "--repeats must"),
    (["{art}", "--dataset", "digits", "--repeats", "-1"], "--repeats must"),
    (["{art}", "--dataset", "digits", "--latency-batch", "0"], "--latency-batch must"),
    (["{art}", "--dataset", "digits", "--latency-batch", "100000"], "--latency-batch must"),
    (["{art}", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["{art}", "--dataset", "digits", "--model", "resnet20"], "--model must be FILE.py"),
    (
        ["{art}", "--dataset", "digits", "--model", "{tmp}/missing.py:build"],
        "--model file not found",
    ),
    (["{tmp}/missing.safetensors", "--dataset", "digits"], "no artifact at"),
    (["{tmp}", "--dataset", "digits"], "no artifact at"),
    (["{tmp}/garbage.safetensors", "--dataset", "digits"], "header length"),
    (["{tmp}/empty.safetensors", "--dataset", "digits"], "truncated or not"),
    (["{tmp}/truncated.safetensors", "--dataset", "digits"], "is truncated"),
    (["{tmp}/deep.safetensors", "--dataset", "digits"], "no JSON header"),
    (["{tmp}/huge.safetensors", "--dataset", "digits"], "header length"),
    (["{tmp}/evil.safetensors", "--dataset", "digits"], "holds a user model"),
    (["{tmp}/int.safetensors", "--dataset", "digits"], "5,000 digits"),
    (["{tmp}/kept-list.safetensors", "--dataset", "digits"], "'kept' must be an object"),
    (["{tmp}/act.safetensors", "--dataset", "digits"], "act_quant layer 'features.9'"),
    (["{tmp}/bits.safetensors", "--dataset", "digits"], "weight_bits layer 'ghost'"),
    (["{tmp}/policy.json", "--dataset", "digits"], "not an autoshrink artifact"),
    (["{user_art}", "--dataset", "digits"], "holds a user model"),
    (
        ["{user_art}", "--dataset", "digits", "--model", "{tmp}/changed.py:build"],
        "allow-changed-model",
    ),
    (["{art}", "--dataset", "digits", "--model", "{factory}"], "only for artifacts of user models"),
]
EXPORT = [
    (["{art}", "--out", "{tmp}/no/such/folder/m.onnx"], "does not exist"),
    (["{art}", "--out", "{tmp}"], "is a folder"),
    (["{art}"], "is a folder"),  # the default output, m.onnx, is a folder
    (["{art}", "--calib-batches", "0", "--out", "{tmp}/x.onnx"], "at least 1"),
    (["{art}", "--calib-batches", "1000000000", "--out", "{tmp}/x.onnx"], "between 1 and 10,000"),
    (["{art}", "--int8", "--out", "{tmp}/x.onnx"], "--int8 needs --dataset"),
    (["{art}", "--int8", "--dataset", "nosuch", "--out", "{tmp}/x.onnx"], "unknown dataset"),
    (["{art}", "--model", "nets.txt:build", "--out", "{tmp}/x.onnx"], "--model must be FILE.py"),
    (["{tmp}/missing.safetensors", "--out", "{tmp}/x.onnx"], "no artifact at"),
    (["{tmp}/garbage.safetensors", "--out", "{tmp}/x.onnx"], "header length"),
    (["{tmp}/deep.safetensors", "--out", "{tmp}/x.onnx"], "no JSON header"),
    (["{tmp}/evil.safetensors", "--out", "{tmp}/x.onnx"], "holds a user model"),
    (["{tmp}/int.safetensors", "--out", "{tmp}/x.onnx"], "5,000 digits"),
    (
        ["{tmp}/act.safetensors", "--out", "{tmp}/x.pt", "--format", "torchscript"],
        "act_quant layer",
    ),
    (["{user_art}", "--out", "{tmp}/x.onnx"], "holds a user model"),
    (
        ["{user_art}", "--model", "{tmp}/changed.py:build", "--out", "{tmp}/x.onnx"],
        "allow-changed-model",
    ),
]
INSPECT = [
    (["--input-shape", "1,1,100000000,100000000"], "67,108,864 elements"),
    (["--input-shape", "1,2,3,4,5,6,7,8,9"], "malformed --input-shape"),
    (["--input-shape", "1,3,{huge}"], "malformed --input-shape"),
    (["--input-shape=-1,3,8,8"], "malformed --input-shape"),
    (["--input-shape", ""], "malformed --input-shape"),
    (["--num-classes", "0", "--input-shape", "1,1,8,8"], "--num-classes must"),
    (["--num-classes", "-3"], "--num-classes must"),
    (["--round-to", "0"], "--round-to must"),
    (["--round-to", "100000"], "--round-to must"),
    (["--keep", "2"], "(0, 1], got 2.0"),
    (["--checkpoint", "{tmp}/missing.pt"], "checkpoint not found"),
    (["--checkpoint", "{tmp}/garbage.safetensors"], "cannot read checkpoint"),
    (["--checkpoint", "{tmp}/object.pt"], "Python object (argparse.Namespace)"),
    (["--checkpoint", "{tmp}/policy.json"], "not a PyTorch state dict"),
    (["--model", "{tmp}/evil.py"], "unknown model"),
]
CASES = (
    [("evaluate", *case) for case in EVALUATE]
    + [("export", *case) for case in EXPORT]
    + [("inspect", *case) for case in INSPECT]
)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    ("command", "argv", "needle"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_hostile_cli_case_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path,
    pristine: bytes,
    capsys: pytest.CaptureFixture[str],
    command: str,
    argv: list[str],
    needle: str,
) -> None:
    values = make_files(tmp_path, pristine)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main([command, *(a.format(**values) for a in argv)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert snapshot(tmp_path) == before  # nothing written, nothing changed
    assert not (tmp_path / "MARKER").exists()  # no file named by an input ran
