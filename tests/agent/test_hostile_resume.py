"""Resumes that would run code, lose data or silently search something else: refused.

A resume either equals the search that was never stopped or is refused in one ``error:``
line, exit 2, with nothing in the folder written or changed. A run folder is data: a
factory named in its ``config.json`` is never imported unless the command line names it.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from autoshrink.agent.search.config import SearchConfig
from autoshrink.agent.search.loop import run_search
from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)
from tests.agent.search.test_search_toy import Interrupt
from tests.agent.test_hostile_run_folder import (
    CKPT,
    data,
    killed,
    one_error_line,
    resume_is_refused,
    snapshot,
)
from tests.compression.artifact_files import TINY_NET

__all__ = ["killed"]  # a fixture, used by name

MARKER = "IMPORTED"


def factory_file(folder: Path, name: str) -> Path:
    """A user factory that leaves a marker beside itself whenever it is imported."""
    path = folder / name
    mark = f"from pathlib import Path\nPath({str(folder / MARKER)!r}).write_text('x')\n"
    path.write_text(mark + TINY_NET)
    return path


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Path:
    """A search of a user factory (``mynet.py:build``) killed after its second episode."""
    root = tmp_path_factory.mktemp("user")
    factory = factory_file(root, "mynet.py")
    out = root / "run"
    settings = {"model": f"{factory}:build", "flops": 0.5, "baseline_epochs": 1}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOSHRINK_CACHE", str(cache_root))
        config = SearchConfig.create(**settings, episodes=6, warmup=1, final_epochs=0)
        with pytest.raises(KeyboardInterrupt):
            run_search(config.make_env(), config.agent, out, callbacks=[Interrupt(3)])
    assert (out / "checkpoint" / "latest.json").is_file()
    (root / MARKER).unlink()
    return out


def copied(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_a_run_folder_of_a_user_factory_is_not_resumed_unless_the_factory_is_named(
    user_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copied(user_run, tmp_path)
    before = snapshot(run)
    capsys.readouterr()
    code = main(["search", "--resume", "--out", str(run)])
    one_error_line(capsys, code, "a resume never runs a file that a run folder names")
    assert not (user_run.parent / MARKER).exists()
    assert snapshot(run) == before


def test_a_run_folder_whose_config_names_another_factory_does_not_import_it(
    user_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copied(user_run, tmp_path)
    evil = factory_file(tmp_path, "evil.py")
    doc = json.loads((run / "config.json").read_text())
    doc["data"]["env"]["data"]["model"] = f"{evil}:build"
    (run / "config.json").write_text(json.dumps(doc))
    before = snapshot(run)
    capsys.readouterr()
    code = main(["search", "--resume", "--out", str(run)])
    one_error_line(capsys, code, "config.json")
    assert not (tmp_path / MARKER).exists() and not (user_run.parent / MARKER).exists()
    assert snapshot(run) == before


def rezip(path: Path) -> None:
    """The same members in another order: another agent.zip, byte for byte."""
    with zipfile.ZipFile(path) as zf:
        items = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(path, "w") as zf:
        for key in reversed(list(items)):
            zf.writestr(key, items[key])


def linked_checkpoint(run: Path) -> None:
    """The checkpoint folder replaced by a link to a copy of it (another run's)."""
    other = run.parent / "other"
    shutil.copytree(run / CKPT, other)
    shutil.rmtree(run / CKPT)
    (run / CKPT).symlink_to(other, target_is_directory=True)


def best_keep(doc: dict) -> None:
    units = doc["data"]["best_policy"]["data"]["units"]
    next(iter(units.values()))["keep"] = 7


AGENT = ("data", "agent", "data")
ENV = ("data", "env", "data")


def config_data(path: tuple[str, ...], **changes: object) -> Callable[[Path], None]:
    def change(doc: dict) -> None:
        for key in path:
            doc = doc[key]
        doc.update(changes)

    return data("config.json", change)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "config-deleted": (lambda r: (r / "config.json").unlink(), "config.json is missing"),
    "rng-deleted": (lambda r: (r / CKPT / "rng.json").unlink(), "rng.json is missing"),
    "agent-replaced": (lambda r: rezip(r / CKPT / "agent.zip"), "agent.zip has changed"),
    "best-keep-7": (data(f"{CKPT}/state.json", best_keep), "state.json has changed"),
    "config-seed": (config_data(ENV, seed=9), "config.json is changed since"),
    "config-episodes-below-done": (config_data(AGENT, episodes=2), "config.json is changed"),
    "checkpoint-linked": (linked_checkpoint, "is a link"),
    "file-added": (lambda r: (r / CKPT / "extra.bin").write_bytes(b"x"), "was not in its"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_resume_from_files_not_as_they_were_saved_is_refused(
    killed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    run = copied(killed, tmp_path)
    change, needle = CASES[case]
    change(run)
    resume_is_refused(run, capsys, needle)


def test_a_resume_asking_for_fewer_episodes_than_done_is_refused(
    killed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copied(killed, tmp_path)
    needle = "holds 3 episodes already, more than the 2 asked"
    resume_is_refused(run, capsys, needle, "--episodes", "2")
