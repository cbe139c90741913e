"""Hostile factories, flags and names on ``train``, ``search``, ``apply``, ``evaluate``, ``batch``.

Every case exits 2 with exactly one ``error:`` line on stderr (argparse's refusals too), no
traceback, no warning and no progress line before it, nothing on stdout, and nothing
written in its folder. Naming a factory runs it; whatever it raises or exits with is one
line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.scripts.cli import main

FACTORIES = """\
import sys
import warnings
from torch import nn

class Custom(BaseException):
    pass

class FeatureMap(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(1, num_classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x)

class Failing(FeatureMap):
    def forward(self, x):
        raise ValueError("forward fails")

def raises(num_classes=10, in_channels=1):
    raise RuntimeError("boom\\nsecond line")

def oom(num_classes=10, in_channels=1):
    raise MemoryError()

def base(num_classes=10, in_channels=1):
    raise Custom("its own BaseException")

def recurse(num_classes=10, in_channels=1):
    return recurse(num_classes, in_channels)

def exits(num_classes=10, in_channels=1):
    sys.exit(0)

def feature_map(num_classes=10, in_channels=1):
    return FeatureMap(num_classes)

def failing(num_classes=10, in_channels=1):
    return Failing(num_classes)

def warns(num_classes=10, in_channels=1):
    warnings.warn("a warning before the refusal", UserWarning)
    return FeatureMap(num_classes)
"""

CASES = [
    # a user factory that fails, whatever it raises or exits with
    ("train", ["--model", "{mynet}:raises"], "your factory {mynet}:raises raised RuntimeError"),
    ("train", ["--model", "{mynet}:raises"], "boom\\nsecond line"),  # escaped, one line
    ("train", ["--model", "{mynet}:oom"], "raised MemoryError"),
    ("train", ["--model", "{mynet}:base"], "raised Custom: its own BaseException"),
    ("train", ["--model", "{mynet}:recurse"], "raised RecursionError"),
    ("train", ["--model", "{mynet}:exits"], "called sys.exit(0)"),
    ("train", ["--model", "{tmp}/exiting.py:build"], "called sys.exit(0)"),  # on import
    ("search", ["--model", "{mynet}:raises", "--out", "{tmp}/run"], "raised RuntimeError"),
    # a model that cannot classify the data is refused before training
    ("train", ["--model", "{mynet}:feature_map"], "returns a 2x10x8x8 tensor"),
    ("train", ["--model", "{mynet}:warns"], "returns a 2x10x8x8 tensor"),  # no warning line
    ("search", ["--model", "{mynet}:feature_map", "--out", "{tmp}/run"], "2x10x8x8"),
    ("search", ["--model", "{mynet}:failing", "--out", "{tmp}/run"], "ValueError: forward fails"),
    ("train", ["--model", "{mynet}:failing"], "ValueError: forward fails"),
    # vit_b_16 stands for vit_h_14 (the same 224-pixel assertion, 7x less to build)
    ("search", ["--model", "vit_b_16", "--out", "{tmp}/run"], "Wrong image height"),
    # an unknown model is refused before "training it first" is printed
    ("search", ["--model", "nosuchnet", "--out", "{tmp}/run"], "unknown model 'nosuchnet'"),
    # --threads and --workers are bounded as they are parsed
    ("train", ["--threads", "100000000"], "--threads: must be between 1 and 1,024"),
    ("train", ["--threads", "0"], "--threads: must be between 1 and"),
    ("search", ["--threads", "100000000", "--out", "{tmp}/run"], "--threads: must be between"),
    ("apply", ["p.json", "--threads", "5000", "--out", "{tmp}/a"], "--threads: must be between"),
    ("evaluate", ["{tmp}/m.safetensors", "--threads", "-1"], "--threads: must be between"),
    ("batch", ["s.toml", "--out", "{tmp}/b", "--threads", "2000"], "--threads: must be between"),
    ("search", ["--workers", "100000", "--out", "{tmp}/run"], "--workers: must be between 1"),
    ("search", ["--workers", "0", "--out", "{tmp}/run"], "--workers: must be between 1"),
    ("batch", ["s.toml", "--out", "{tmp}/b", "--workers", "100000"], "--workers: must be"),
    ("batch", ["s.toml", "--out", "{tmp}/b", "--job-timeout", "nan"], "--job-timeout"),
    ("batch", ["s.toml", "--out", "{tmp}/b", "--job-timeout", "-3"], "--job-timeout"),
    # an --out no file can be made in is refused before training
    ("train", ["--model", "smallcnn", "--out", "/proc/nope/x.pt"], "cannot be written"),
    # argparse's own refusals: one "error:" line, not "autoshrink train: error:"
    ("train", ["--epochs", "zero"], "argument --epochs"),
    ("train", ["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ("search", ["--agent", "nosuch"], "argument --agent"),
    # a control character in a name is escaped, not echoed
    ("evaluate", ["{tmp}/two\nlines.safetensors", "--dataset", "digits"], "two\\nlines"),
    ("evaluate", ["{tmp}/bell\x07\x1b[2J.safetensors"], "bell\\x07\\x1b[2J"),
    ("train", ["--no\nsuch"], "unrecognized arguments: --no\\nsuch"),
]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def run_cli(argv: list[str]) -> int:
    """``main(argv)``, with argparse's exit turned into the status it exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def files(tmp: Path) -> dict[str, str]:
    (tmp / "mynet.py").write_text(FACTORIES)
    (tmp / "exiting.py").write_text("import sys\nsys.exit(0)\n")
    return {"tmp": str(tmp), "mynet": str(tmp / "mynet.py")}


@pytest.mark.parametrize(
    ("command", "argv", "needle"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_hostile_case_is_one_error_line_exit_2_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    argv: list[str],
    needle: str,
) -> None:
    values = files(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = run_cli([command, *(a.format(**values) for a in argv)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle.format(**values) in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert snapshot(tmp_path) == before  # nothing written: no run folder, no --out


def test_verbose_shows_the_factory_traceback_and_the_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = files(tmp_path)
    assert run_cli(["train", "-v", "--model", f"{values['mynet']}:raises"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise RuntimeError("boom' in err
    assert err.strip().splitlines()[-1].startswith("error: your factory")
    assert run_cli(["train", "-v", "--model", f"{values['mynet']}:warns"]) == 2
    err = capsys.readouterr().err
    assert "warning: UserWarning: a warning before the refusal" in err
