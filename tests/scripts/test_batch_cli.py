"""`autoshrink batch`: the example spec, spec errors in one line, a run with failures."""

from __future__ import annotations

import csv
import sys

from autoshrink.agent.batch.spec import parse_spec
from autoshrink.scripts.cli import main


def test_example_prints_a_valid_spec(capsys):
    assert main(["batch", "--example"]) == 0
    text = capsys.readouterr().out
    spec = parse_spec(text)
    assert len(spec.jobs) >= 2 and {j.kind for j in spec.jobs} == {"search"}


def test_a_bad_spec_is_one_error_line_with_its_line_number(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('[defaults]\nepisodes = 2\n\n[[jobs]]\nmodel = "smallcnn"\nfloops = 0.5\n')
    assert main(["batch", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "line 6 (jobs[0].floops)" in err and "did you mean 'flops'" in err
    assert not (tmp_path / "out").exists()  # validated before anything runs
    assert main(["batch", str(spec)]) == 2
    assert "--out" in capsys.readouterr().err


def test_the_ray_backend_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    spec = tmp_path / "spec.toml"
    spec.write_text('[[jobs]]\nmodel = "smallcnn"\n')
    assert main(["batch", str(spec), "--out", str(tmp_path / "o"), "--backend", "ray"]) == 2
    assert "pip install 'autoshrink[ray]'" in capsys.readouterr().err


def test_a_batch_records_failures_and_timeouts_and_skips_them_next_time(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    # an unknown model is refused before any job runs; a factory that raises fails its job
    (tmp_path / "net.py").write_text("def build(**kw):\n    raise RuntimeError('no_such_net')\n")
    spec.write_text(
        "[defaults]\nbaseline_epochs = 2\nfinal_epochs = 0\n"
        '[[jobs]]\nmodel = "net.py:build"\nname = "no_such_net"\ntimeout = 300\n'  # own limit
        '[[jobs]]\nmodel = "smallcnn"\nepisodes = 5000\n'
    )  # the second job would run for an hour
    out = tmp_path / "out"
    argv = ["batch", str(spec), "--out", str(out), "--workers", "2", "--job-timeout", "6"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "0 ok, 2 failed of 2 jobs" in captured.out
    assert "failed no_such_net" in captured.err and "timeout smallcnn" in captured.err
    with open(out / "summary.csv") as fh:
        rows = {row["status"]: row for row in csv.DictReader(fh)}
    bad, slow = rows["failed"], rows["timeout"]
    assert bad["status"] == "failed" and "no_such_net" in bad["error"]
    assert slow["status"] == "timeout" and "6 s" in slow["error"]
    assert main(argv) == 1
    assert "skipped 2 jobs" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text().count("\n") == 2
