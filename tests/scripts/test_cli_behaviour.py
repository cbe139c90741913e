"""The CLI's small promises (issue 21, item 4), one test each."""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from autoshrink.scripts.cli import build_parser, main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)


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


def test_interrupted_prints_the_resume_command_that_works(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    smallcnn_checkpoint: Path,  # noqa: F811
):
    from autoshrink.agent.search import callbacks

    logged = callbacks.EpisodeLogCallback._on_episode

    def kill_after_one(self, record):  # Ctrl-C once the first episode is logged
        logged(self, record)
        raise KeyboardInterrupt

    out = tmp_path / "my run"  # a space: the command must quote it
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--episodes", "3", "--final-epochs", "1", "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(callbacks.EpisodeLogCallback, "_on_episode", kill_after_one)
        assert main(argv) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    prefix = "interrupted; resume with: "
    assert last.startswith(prefix), last
    command = shlex.split(last[len(prefix) :])
    assert command == ["autoshrink", "search", "--resume", "--out", str(out)]
    assert main(command[1:]) == 0  # the printed command resumes and finishes the search
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 3


def tiny_artifact(path: Path, meta: dict) -> Path:
    """A smallcnn artifact for 1x8x8 input whose policy records ``meta``."""
    import torch

    from autoshrink.compression.artifact import save_artifact
    from autoshrink.compression.models import ModelSpec, build_model
    from autoshrink.compression.policy import uniform_policy
    from autoshrink.compression.prune import prune
    from autoshrink.compression.units import build_units

    spec, shape = ModelSpec("smallcnn", 10, 1), (1, 1, 8, 8)
    base = build_model(spec)
    graph = build_units(base, torch.zeros(shape))
    policy = uniform_policy(graph, keep=0.5).with_meta(**meta)
    return save_artifact(path, prune(base, graph, policy.keep()), spec, shape, policy).path


def test_evaluate_defaults_to_the_artifacts_dataset(tmp_path: Path, capsys):
    import json

    art = tiny_artifact(tmp_path / "m.safetensors", {"model": "smallcnn", "dataset": "digits"})
    assert main(["evaluate", str(art), "--repeats", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == "digits"
    bare = tiny_artifact(tmp_path / "bare.safetensors", {})
    assert main(["evaluate", str(bare), "--repeats", "1"]) == 2
    assert "does not say which dataset it was made on; pass --dataset" in one_error_line(capsys)


@pytest.fixture
def restore_log_levels():
    names = ("", "autoshrink", "matplotlib", "filelock", "PIL")
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (["-v", "inspect"], logging.INFO),
        (["inspect", "-v"], logging.INFO),
        (["-v", "inspect", "-v"], logging.DEBUG),
        (["inspect", "-vv"], logging.DEBUG),
        (["-q", "inspect"], logging.ERROR),
        (["inspect", "--quiet"], logging.ERROR),
        (["inspect"], logging.WARNING),
    ],
)
def test_v_and_q_work_before_and_after_the_subcommand(capsys, restore_log_levels, where, expected):
    assert main([*where, "--model", "smallcnn", "--input-shape", "1,1,8,8", "--json"]) == 0
    assert logging.getLogger("autoshrink.compression.units").getEffectiveLevel() == expected
    # third-party debug output (matplotlib's font cache, filelock's lock lines) stays off
    for name in ("matplotlib.font_manager", "filelock", "PIL.PngImagePlugin"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name


def every_flag() -> list[tuple[str, argparse.Action]]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    flags = [("autoshrink", a) for a in parser._actions]
    flags += [(name, a) for name, p in sub.choices.items() for a in p._actions]
    return [(c, a) for c, a in flags if a.option_strings and a.dest not in ("help", "version")]


def test_help_describes_every_flag_and_its_default_the_same_way():
    problems = []
    for command, action in every_flag():
        text = (action.help or "") % {**vars(action), "prog": command}
        flag = f"{command} {action.option_strings[-1]}"
        if text.startswith("(") or len(text) < 12:
            problems.append(f"{flag}: no description ({text!r})")
        if not re.search(r"\((default: [^()]+|required[^()]*)\)$", text):
            problems.append(f"{flag}: does not end with '(default: ...)' ({text!r})")
    assert not problems, "\n".join(problems)


def test_search_help_states_the_default_budgets(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--flops FLOPS MACs budget" in text
    assert "(default: 0.5 in prune and joint mode, if no budget is given)" in text
    assert (
        "(default: 0.15 in quant mode, 0.1 in joint mode, 0.05 in deep and sparse mode, "
        "if no budget is given)"
    ) in text
    assert "--params PARAMS parameter budget, e.g. 0.3 or 100K (default: none)" in text


# every command's: their flags' choices and defaults live in compression.names, not torch's
LIGHT_HELP = ["train", "inspect", "show", "search", "apply", "evaluate", "export", "batch"]


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in LIGHT_HELP)])
def test_help_imports_neither_torch_nor_sb3(argv):
    code = (
        "import sys\nfrom autoshrink.scripts.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'stable_baselines3') if m in sys.modules]\n"
        "print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-300:]


def test_piped_progress_is_one_readable_line_per_episode(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    smallcnn_checkpoint: Path,  # noqa: F811
):
    argv = ["search", "--model", "smallcnn", "--checkpoint", str(smallcnn_checkpoint)]
    argv += ["--episodes", "3", "--final-epochs", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == 0  # under capsys stderr is no terminal, as in a pipe or a CI log
    err = capsys.readouterr().err.splitlines()
    assert "…" not in "\n".join(err)  # no field cut short, no bare ellipsis
    episodes = [line for line in err if line.startswith("search ")]
    assert [line.split()[1] for line in episodes] == ["1/3", "2/3", "3/3"]
    for line in episodes:
        assert re.search(r" best -?\d+\.\d{4} val acc \d+\.\d\d% flops \d", line), line
    assert "final fine-tune: started" in err
    assert any(line.startswith("final fine-tune: done (") for line in err)
    assert err[0].startswith("searching ") and err[0].endswith(str(tmp_path / "run"))


def test_line_progress_leaves_out_empty_columns(capsys: pytest.CaptureFixture[str]):
    from rich.console import Console
    from rich.progress import TextColumn

    from autoshrink.scripts.console import LineProgress

    out = Console(file=sys.stderr, width=40)
    progress = LineProgress((TextColumn("best {task.fields[best]}"),), out)
    task = progress.add_task("fine-tune", total=4, best="")
    progress.update(task, completed=1)
    progress.update(task, completed=1)  # nothing moved: no line
    progress.update(task, completed=2, best="0.5")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["fine-tune 1/4", "fine-tune 2/4 best 0.5"]
    assert all(re.search(r" \(\d+s, about \d+s left\)$", line) for line in lines), lines


@pytest.mark.parametrize("command", ["search", "apply", "batch"])
def test_out_has_one_rule_a_folder_of_other_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my own file")
    argv = {
        "search": ["search", "--episodes", "2"],
        "apply": ["apply", "--policy", str(tmp_path / "p.json"), "--model", "resnet20"],
        "batch": ["batch", str(tmp_path / "spec.toml")],
    }[command]
    (tmp_path / "spec.toml").write_text(
        '[defaults]\nmodel = "smallcnn"\nepisodes = 2\n\n[[jobs]]\nagent = "random"\n'
    )
    assert main([*argv, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert f"--out {out} is not empty (notes.txt): choose a new or empty folder" in line, line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written there


def test_training_a_missing_baseline_is_announced_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AUTOSHRINK_CACHE", str(tmp_path / "cache"))  # nothing cached
    argv = ["search", "--model", "smallcnn", "--baseline-epochs", "1", "--episodes", "2"]
    argv += ["--final-epochs", "0"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(
        "no cached smallcnn baseline on digits: training it first, 1 epochs over "
    ), err[0]
    assert any(line.startswith("training the smallcnn baseline 1/1 val acc ") for line in err)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0  # cached now: no word of it
    again = capsys.readouterr().err
    assert "no cached" not in again and "training the" not in again


def test_training_progress_counts_batches_on_a_terminal_and_epochs_in_a_pipe(capsys):
    import io

    from rich.console import Console
    from rich.progress import Progress

    from autoshrink.scripts.console import LineProgress
    from autoshrink.scripts.train import trainer_progress

    bar = Progress(console=Console(file=io.StringIO(), force_terminal=True))
    shown = trainer_progress(bar, "training", epochs=2, steps_per_epoch=5)
    shown["on_step"](3, 10)
    (task,) = bar.tasks
    assert (task.completed, task.total) == (3, 10)  # batches: its time left moves mid-epoch
    shown["on_epoch"](1, 0.5)
    assert task.completed == 5 and task.fields["val"] == "50.00%"

    piped = LineProgress((), Console(file=sys.stderr))
    shown = trainer_progress(piped, "training", epochs=2, steps_per_epoch=5)
    for step in range(1, 6):
        shown["on_step"](step, 10)  # no line per batch in a log
    shown["on_epoch"](1, 0.5)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["training 1/2"]


def test_a_bar_shows_no_bare_label_for_empty_fields():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from autoshrink.scripts.console import FieldColumn

    column = FieldColumn("best {task.fields[best]}")
    bar = Progress(column, console=Console(file=io.StringIO(), force_terminal=True))
    empty = bar.add_task("final fine-tune", total=None, best="")
    full = bar.add_task("search", total=3, best="0.6806")
    assert column.render(bar.tasks[empty]).plain == ""
    assert column.render(bar.tasks[full]).plain == "best 0.6806"


@pytest.mark.parametrize("episodes", ["0", "-3"])
def test_episodes_below_1_are_refused(tmp_path: Path, capsys, episodes: str):
    out = tmp_path / "run"
    assert main(["search", "--episodes", episodes, "--out", str(out)]) == 2
    assert f"episodes must be a positive integer, got {episodes}" in one_error_line(capsys)
    assert not out.exists()


def test_the_comparison_tables_title_is_one_line_at_80_columns():
    import io

    from rich.console import Console

    from autoshrink.scripts.comparison import comparison_table

    side = {"accuracy": 0.9, "val_accuracy": 0.9, "macs": 1e6}
    report = {"model": "resnet56", "dataset": "digits", "agent": "policy+depth-map"}
    report |= {"episodes": 1, "budgets_met": True, "baseline": side, "compressed": side}
    out = io.StringIO()
    Console(file=out, width=80).print(comparison_table(report))
    first = out.getvalue().splitlines()[0]
    assert first.strip() == "resnet56 on digits: policy+depth-map, 1 episodes, budgets met: True"
