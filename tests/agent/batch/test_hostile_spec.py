"""Batch specs whose jobs name what cannot run: refused whole, before any job runs.

Each spec is valid TOML of known keys, but one of its jobs names an unknown model or
dataset, a missing file or folder, a pickle, a file that is no policy or agent, a seed no
generator takes, or a class by name. ``autoshrink batch`` refuses it in one ``error:``
line naming the job and the key, exits 2, and writes nothing: no batch folder, no record.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from autoshrink.scripts.cli import main

GOOD = '[[jobs]]\nmodel = "smallcnn"\ndataset = "digits"\nepisodes = 2\n'
CASES: dict[str, tuple[str, str]] = {
    "unknown-model": ('[[jobs]]\nmodel = "nosuchnet"\n', "jobs[0] (model): unknown model"),
    "missing-factory": ('[[jobs]]\nmodel = "missing.py:build"\n', "jobs[0] (model)"),
    "unknown-dataset": ('[[jobs]]\nmodel = "smallcnn"\ndataset = "nosuch"\n', "unknown dataset"),
    "missing-imagefolder": (
        '[[jobs]]\nmodel = "smallcnn"\ndataset = "imagefolder:{tmp}/nope"\n',
        "no image folder",
    ),
    "missing-checkpoint": (
        '[[jobs]]\nmodel = "smallcnn"\ncheckpoint = "nope.pt"\n',
        "jobs[0] (checkpoint): checkpoint not found",
    ),
    "pickle-checkpoint": (
        '[[jobs]]\nmodel = "smallcnn"\ncheckpoint = "object.pt"\n',
        "Python object (argparse.Namespace)",
    ),
    "policy-from-passwd": (
        '[[jobs]]\nkind = "apply"\nmodel = "smallcnn"\npolicy_from = "/etc/passwd"\n',
        "jobs[0] (policy_from)",
    ),
    "policy-from-missing-folder": (
        '[[jobs]]\nkind = "apply"\nmodel = "smallcnn"\npolicy_from = "no/run"\n',
        "no policy at",
    ),
    "agent-from-missing": (
        '[[jobs]]\nkind = "apply"\nmodel = "smallcnn"\nagent_from = "no/run"\n',
        "agent not found",
    ),
    "agent-from-pickle": (
        '[[jobs]]\nkind = "apply"\nmodel = "smallcnn"\nagent_from = "object.pt"\n',
        "jobs[0] (agent_from)",
    ),
    "seed-2-64": (
        GOOD + "seed = 18446744073709551616\n",
        "seed must be an integer in [0, 4294967295]",
    ),
    "seed-negative": (GOOD + "seed = -1\n", "seed must be an integer in"),
    "activation-by-name": (
        GOOD + '[jobs.agent_options.policy_kwargs]\nactivation_fn = "os.system"\n',
        "policy_kwargs.activation_fn must be a class",
    ),
    "second-job-bad": (GOOD + '[[jobs]]\nmodel = "nosuchnet"\n', "jobs[1] (model)"),
    "timeout-inf": (GOOD + "timeout = inf\n", "timeout"),
}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_spec_naming_what_cannot_run_is_refused_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    text, needle = CASES[case]
    torch.save({"args": argparse.Namespace(a=1)}, tmp_path / "object.pt")
    spec = tmp_path / "spec.toml"
    spec.write_text(text.format(tmp=tmp_path))
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(["batch", str(spec), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert snapshot(tmp_path) == before  # no batch folder, no record, no run
