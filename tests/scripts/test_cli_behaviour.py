"""The CLI's small promises (issue 21, item 4), one test each."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.scripts.cli import main


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    ("command", "flag", "value", "meant"),
    [
        ("search", "--flops", "1.5", "1.5%"),
        ("search", "--flops", "50", "50%"),
        ("search", "--size", "300000", "300KB"),
        ("apply", "--params", "20", "20%"),
    ],
)
def test_a_bare_budget_above_1_asks_what_was_meant(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command, flag, value, meant
):
    out = tmp_path / "out"
    argv = [command, flag, value, "--out", str(out)]
    if command == "apply":
        argv += ["--policy", str(tmp_path / "policy.json"), "--model", "resnet20"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert f"did you mean {meant}?" in line and "absolute value like" in line, line
    assert not out.exists()
