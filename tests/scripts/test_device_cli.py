"""--device and --threads on every command that trains or scores: refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autoshrink.scripts.cli import build_parser, main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)

COMMANDS = ("train", "search", "apply", "evaluate", "batch")
SPEC = '[[jobs]]\nmodel = "smallcnn"\nepisodes = 2\n'


def _argv(command: str, tmp_path) -> list[str]:
    """Arguments that would start real work, if the device were good."""
    out = str(tmp_path / "out")
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    return {
        "train": ["train", "--model", "smallcnn", "--epochs", "1", "--out", out + ".pt"],
        "search": ["search", "--model", "smallcnn", "--episodes", "2", "--out", out],
        "apply": ["apply", "--policy", "p.json", "--model", "smallcnn", "--out", out],
        "evaluate": ["evaluate", str(tmp_path / "m.safetensors"), "--dataset", "digits"],
        "batch": ["batch", str(spec), "--out", out],
    }[command]


BAD = ["tpu", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"])


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("device", BAD)
def test_a_bad_device_is_one_error_line_and_exit_2_before_any_work(
    command, device, tmp_path, capsys
):
    assert main([*_argv(command, tmp_path), "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("command", ["train", "search", "apply", "evaluate"])
def test_threads_below_one_are_refused(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # by the parser, before any work
        main([*_argv(command, tmp_path), "--threads", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: argument --threads: must be between 1 and")


def test_a_batch_spec_device_is_checked_before_any_job(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC + 'device = "tpu"\n')
    assert main(["batch", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        spec.write_text(SPEC + 'device = "cuda"\n')
        assert main(["batch", str(spec), "--out", str(tmp_path / "out")]) == 2
        assert "needs CUDA" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_the_device_and_threads_defaults(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]  # type: ignore[union-attr]
    text = " ".join(sub.format_help().split())
    assert "--device DEVICE" in text and "auto, cpu, cuda or cuda:N" in text
    assert "(default: auto, CUDA when available, else the CPU)" in text
    assert "--threads N" in text and "usable cores" in text
    if command == "batch":
        assert "divided by --workers, at least 1" in text


def _search(tmp_path, checkpoint, device: str, capsys) -> tuple[str, str, str]:
    out = tmp_path / device
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(checkpoint), "--seed", "5"]
    argv += ["--episodes", "4", "--warmup", "2", "--final-epochs", "1", "--threads", "1"]
    assert main([*argv, "--device", device, "--out", str(out), "--json"]) == 0
    header = capsys.readouterr().err
    return (out / "policy.json").read_text(), (out / "episodes.jsonl").read_text(), header


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto is the CPU only without CUDA")
def test_cpu_and_auto_give_the_same_search_here(tmp_path, smallcnn_checkpoint, capsys):  # noqa: F811
    policy_cpu, episodes_cpu, header_cpu = _search(tmp_path, smallcnn_checkpoint, "cpu", capsys)
    policy_auto, episodes_auto, header_auto = _search(tmp_path, smallcnn_checkpoint, "auto", capsys)
    assert "device cpu ->" in " ".join(header_cpu.split())
    assert "device cpu (auto) ->" in " ".join(header_auto.split())
    assert policy_cpu == policy_auto
    assert episodes_cpu == episodes_auto and len(episodes_cpu.splitlines()) == 4
    saved = (tmp_path / "auto" / "config.json").read_text()
    assert '"device": "auto"' in saved  # what was asked: the same file reads on a GPU machine


def _say_cuda(config: Path) -> None:
    """Make a run folder's config.json say what a search made on a GPU machine says."""
    doc = json.loads(config.read_text())
    doc["data"]["env"]["data"]["device"] = "cuda"
    config.write_text(json.dumps(doc))


def test_resume_and_apply_run_where_they_are_asked_not_where_the_search_ran(
    tmp_path,
    smallcnn_checkpoint,  # noqa: F811
    capsys,
):
    run = tmp_path / "run"
    ckpt = ["--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv = ["search", *ckpt, "--episodes", "2", "--final-epochs", "0", "--threads", "1"]
    assert main([*argv, "--device", "cpu", "--out", str(run)]) == 0
    _say_cuda(run / "config.json")
    log = (run / "episodes.jsonl").read_text()
    again = ["search", "--resume", "--out", str(run), "--final-epochs", "0", "--threads", "1"]
    capsys.readouterr()
    if not torch.cuda.is_available():  # the saved device is not here: one line, no work
        assert main(again) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "device 'cuda' needs CUDA" in err[0]
    assert main([*again, "--device", "cpu"]) == 0
    assert (run / "episodes.jsonl").read_text() == log
    capsys.readouterr()
    # a transferred agent runs where this command says (here: the default), not on cuda
    played = tmp_path / "played"
    base = ["--finetune-epochs", "0", "--threads", "1", "--json"]
    agent = ["apply", "--agent", str(run / "agent.zip"), *ckpt, *base]
    assert main([*agent, "--out", str(played)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["env"]["device"] == "auto"
    where = "(auto)" if torch.cuda.is_available() else "device cpu (auto)"
    assert where in " ".join(out.err.split())
    policy = ["apply", "--policy", str(run / "policy.json"), *ckpt, *base, "--device", "cpu"]
    assert main([*policy, "--out", str(tmp_path / "applied")]) == 0
    assert json.loads(capsys.readouterr().out)["env"]["device"] == "cpu"


def test_a_batch_says_its_device_and_each_record_what_its_job_ran_with(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    # factories that raise: the jobs run (and fail) rather than being refused up front
    for name in ("bad1", "bad2"):
        (tmp_path / f"{name}.py").write_text("def make(**kw):\n    raise RuntimeError('no')\n")
    one, two = (f"{tmp_path / name}.py:make" for name in ("bad1", "bad2"))
    spec.write_text(f'[[jobs]]\nmodel = "{one}"\n[[jobs]]\nmodel = "{two}"\ncpus = 2\n')
    out = tmp_path / "out"
    assert main(["batch", str(spec), "--out", str(out), "--device", "cpu", "--threads", "1"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "on local, device cpu unless a job sets its own ->" in err
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    ran = {r["settings"]["model"]: r["settings"] for r in records}
    assert ran[one]["device"] == "cpu" and ran[one]["cpus"] == 1
    assert ran[two]["cpus"] == 2  # the spec's own
