"""Hostile weights in an ``agent.zip``, and hostile episode logs and random states.

A killed search's folder is copied per case and one of its files is replaced. ``search
--resume``, ``apply --agent`` and ``show`` refuse in one ``error:`` line, with no traceback,
and without writing or changing a file of the folder (its ``.lock`` aside). Nothing is
unpickled: a pickle payload is refused by ``torch.load(weights_only=True)``, as one line.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)
from tests.agent.test_hostile_run_folder import (  # noqa: F401 (a fixture)
    CKPT,
    killed,
    one_error_line,
    resume_is_refused,
    snapshot,
)


def saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


PICKLE = saved({"args": argparse.Namespace(a=1)})  # a Python object: refused, not unpickled
GARBAGE = bytes(range(256)) * 8
WRONG_SHAPE = saved({"actor.mu.0.weight": torch.zeros(3, 3), "actor.mu.0.bias": torch.zeros(3)})


def replace_member(name: str, content: bytes | None) -> Callable[[Path], None]:
    """Replace (or, with None, drop) one member of the checkpoint's agent.zip."""

    def apply(run: Path) -> None:
        path = run / CKPT / "agent.zip"
        with zipfile.ZipFile(path) as zf:
            items = {n: zf.read(n) for n in zf.namelist()}
        if content is None:
            items.pop(name)
        else:
            items[name] = content
        with zipfile.ZipFile(path, "w") as zf:
            for key, value in items.items():
                zf.writestr(key, value)

    return apply


def swap_shapes(run: Path) -> None:
    """policy.pth with every weight of its own names, but transposed where it can be."""
    path = run / CKPT / "agent.zip"
    with zipfile.ZipFile(path) as zf:
        state = torch.load(io.BytesIO(zf.read("policy.pth")), weights_only=True)
    bent = {k: v.t().contiguous() if v.dim() == 2 else v[:1] for k, v in state.items()}
    replace_member("policy.pth", saved(bent))(run)


ZIP: dict[str, tuple[Callable[[Path], None], str]] = {
    "policy-pickle": (replace_member("policy.pth", PICKLE), "'policy.pth'"),
    "policy-garbage": (replace_member("policy.pth", GARBAGE), "'policy.pth'"),
    "policy-wrong-names": (replace_member("policy.pth", WRONG_SHAPE), "do not fit this agent"),
    "policy-wrong-shapes": (swap_shapes, "do not fit this agent"),
    "policy-missing": (replace_member("policy.pth", None), "no 'policy.pth'"),
    "policy-a-tensor": (replace_member("policy.pth", saved(torch.zeros(3))), "not named weights"),
    "variables-pickle": (
        replace_member("pytorch_variables.pth", PICKLE),
        "'pytorch_variables.pth'",
    ),
    "variables-garbage": (
        replace_member("pytorch_variables.pth", GARBAGE),
        "'pytorch_variables.pth'",
    ),
    "optimizer-garbage": (
        replace_member("actor.optimizer.pth", GARBAGE),
        "'actor.optimizer.pth'",
    ),
}


def copy_of(killed: Path, tmp_path: Path, change: Callable[[Path], None]) -> Path:  # noqa: F811
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    change(run)
    return run


def reseal(run: Path) -> None:
    """Seal the changed checkpoint anew, as a forger who rewrote latest.json would.

    The seal alone refuses any changed file (tests/agent/test_hostile_resume.py); resealed,
    each file must still be refused by its own checked reader.
    """
    from autoshrink.agent.search.checkpoint_seal import seal
    from autoshrink.agent.search.run_folder import POINTER_TYPE, POINTER_VERSION, RunFolder
    from autoshrink.compression.json_write import write_document

    folder = RunFolder(run)
    found = folder.latest_checkpoint()
    assert found is not None
    ckpt, state = found
    pointer = {"dir": ckpt.name, "episodes": state.episodes, **seal(ckpt, folder.config)}
    write_document(folder.checkpoints / "latest.json", POINTER_TYPE, POINTER_VERSION, pointer)


@pytest.mark.parametrize("case", sorted(ZIP))
def test_hostile_weights_in_a_resumed_agent_zip_are_one_line(
    tmp_path: Path,
    killed: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    change, needle = ZIP[case]
    run = copy_of(killed, tmp_path, change)
    reseal(run)
    resume_is_refused(run, capsys, needle)


@pytest.mark.parametrize("case", sorted(ZIP))
def test_hostile_weights_in_an_applied_agent_zip_are_one_line(
    tmp_path: Path,
    killed: Path,  # noqa: F811
    smallcnn_checkpoint: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    change, needle = ZIP[case]
    run = copy_of(killed, tmp_path, change)
    before = snapshot(run)
    out = tmp_path / "applied"
    argv = ["apply", "--agent", str(run / CKPT / "agent.zip"), "--model", "smallcnn"]
    argv += ["--checkpoint", str(smallcnn_checkpoint), "--finetune-epochs", "0"]
    capsys.readouterr()
    code = main([*argv, "--out", str(out)])
    one_error_line(capsys, code, needle)
    assert snapshot(run) == before and not out.exists()


def bytes_at(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(content)


def folder_at(name: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()
        (run / name / "x").write_text("x")

    return apply


HUGE_INT = "9" * 90


def huge_rng(generator: str) -> Callable[[Path], None]:
    """rng.json with a 90-digit integer as the first word of a generator's key."""

    def apply(run: Path) -> None:
        path = run / CKPT / "rng.json"
        doc = json.loads(path.read_text())
        doc["data"][generator][1][0] = int(HUGE_INT)
        path.write_text(json.dumps(doc))

    return apply


RUN: dict[str, tuple[Callable[[Path], None], str]] = {
    "log-a-folder": (folder_at("episodes.jsonl"), "episodes.jsonl is not a file"),
    "log-copy-invalid-utf8": (
        bytes_at(f"{CKPT}/episodes.jsonl", b"\xff\xfe\x80\n"),
        "does not hold episodes",
    ),
    "log-copy-a-folder": (folder_at(f"{CKPT}/episodes.jsonl"), "episodes.jsonl is not a file"),
    "rng-huge-python": (huge_rng("python"), "random state is malformed"),
    "rng-huge-numpy": (huge_rng("numpy"), "random state is malformed"),
}


@pytest.mark.parametrize("case", sorted(RUN))
def test_a_hostile_log_or_random_state_is_one_line_on_resume(
    tmp_path: Path,
    killed: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    change, needle = RUN[case]
    run = copy_of(killed, tmp_path, change)
    before = snapshot(run)
    capsys.readouterr()
    code = main(["search", "--resume", "--out", str(run)])
    one_error_line(capsys, code, needle)
    assert snapshot(run) == before


@pytest.mark.parametrize("case", sorted(RUN))
def test_show_reads_a_hostile_run_folder_in_one_line_or_shows_it(
    tmp_path: Path,
    killed: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    change, _ = RUN[case]
    run = copy_of(killed, tmp_path, change)
    before = snapshot(run)
    capsys.readouterr()
    code = main(["show", str(run)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code != 0:
        one = captured.err.strip().splitlines()
        assert code == 2 and len(one) == 1 and one[0].startswith("error: "), captured.err
    assert snapshot(run) == before


def test_an_episode_log_of_invalid_utf8_is_repaired_from_the_checkpoint(
    tmp_path: Path,
    killed: Path,  # noqa: F811
) -> None:
    run = copy_of(killed, tmp_path, bytes_at("episodes.jsonl", b'{"episode": 0}\n\xff\xfe\x80\n'))
    assert main(["search", "--resume", "--out", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == list(range(8))
