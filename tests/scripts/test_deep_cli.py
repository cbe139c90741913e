"""Deep mode through the CLI: search, apply the policy, export dense; bad input is one line."""

from __future__ import annotations

import json

import pytest

from autoshrink.agent.search.report import read_result
from autoshrink.compression.artifact import read_header
from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)
from tests.compression.test_export import needs_onnxruntime


def test_deep_search_apply_and_dense_export(tmp_path, smallcnn_checkpoint, capsys) -> None:  # noqa: F811
    out = tmp_path / "run"
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--mode", "deep", "--agent", "deep-compression", "--size", "0.08"]
    argv += ["--episodes", "2", "--final-epochs", "1", "--max-sparsity", "0.9"]
    assert main([*argv, "--out", str(out)]) == 0
    result = read_result(out / "result.json")
    comp = result["compressed"]
    assert result["mode"] == "deep" and result["budgets_met"]
    assert comp["artifact_bytes"] <= comp["bound_bytes"] == comp["bytes"]
    assert comp["compression_ratio"] > 1 and "nonzero_macs_theoretical" in comp
    artifact = out / result["artifact"]
    assert read_header(artifact).sparse
    capsys.readouterr()
    # the shipped policy applies as it is, in the mode it needs (deep-compression keeps
    # every channel: sparsity and bits)
    applied = tmp_path / "applied"
    argv = ["apply", "--policy", str(out / "policy.json"), "--model", "smallcnn"]
    argv += ["--checkpoint", str(smallcnn_checkpoint), "--finetune-epochs", "1"]
    assert main([*argv, "--out", str(applied)]) == 0
    again = read_result(applied / "result.json")
    assert again["mode"] == "sparse" and again["compressed"]["bytes"] == comp["bytes"]
    capsys.readouterr()
    needs_onnxruntime()
    onnx = tmp_path / "m.onnx"
    argv = ["export", str(artifact), "--exporter", "legacy", "--out", str(onnx), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["dense_from_sparse"] is True
    notes = [line for line in captured.err.splitlines() if "dense" in line]
    assert len(notes) == 1 and "sparse" in notes[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--agent", "deep-compression", "--mode", "joint"], "mode deep or sparse"),
        (["--mode", "deep", "--max-sparsity", "1.5"], "max_sparsity"),
    ],
)
def test_bad_deep_settings_are_one_line(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "run"
    try:
        code = main(["search", *args, "--out", str(out)])
    except SystemExit as exc:  # argparse's own checks exit; the library's return
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()
