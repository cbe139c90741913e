"""Hostile run folders, agent zips, batch specs and flags: one line, exit 2, nothing written.

A killed search's folder is copied per case and one of its files is replaced; ``autoshrink
search --resume`` (or ``apply --agent``) must refuse in one ``error:`` line, with no
traceback and without writing or changing a file of the folder (its ``.lock`` aside, which
holds the PID of whoever last worked there). A torn or lost episode log is not refused but
repaired from the checkpoint's copy.
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
from autoshrink.agent.search.report import read_result
from autoshrink.scripts.cli import main
from tests.agent.conftest import smallcnn_checkpoint  # noqa: F401 (a fixture)
from tests.agent.search.test_search_toy import Interrupt

DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "9" * 5000
CKPT = "checkpoint/ckpt-000003"


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, smallcnn_checkpoint: Path) -> Path:  # noqa: F811
    """A DDPG search of 8 episodes killed at its fourth's end (its checkpoint knows 3)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    settings = {"model": "smallcnn", "checkpoint": str(smallcnn_checkpoint), "flops": 0.5}
    config = SearchConfig.create(**settings, episodes=8, warmup=1, final_epochs=0)
    with pytest.raises(KeyboardInterrupt):
        run_search(config.make_env(), config.agent, out, callbacks=[Interrupt(4)])
    assert (out / CKPT / "state.json").is_file()
    return out


def text(name: str, content: str) -> Callable[[Path], None]:
    return lambda run: (run / name).write_text(content)


def data(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        doc = json.loads((run / name).read_text())
        change(doc)
        (run / name).write_text(json.dumps(doc))

    return apply


def member(name: str, content: str | bytes) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = run / CKPT / "agent.zip"
        with zipfile.ZipFile(path) as zf:
            items = {n: zf.read(n) for n in zf.namelist()}
        items[name] = content.encode() if isinstance(content, str) else content
        with zipfile.ZipFile(path, "w") as zf:
            for key, value in items.items():
                zf.writestr(key, value)

    return apply


def agent_data(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        with zipfile.ZipFile(run / CKPT / "agent.zip") as zf:
            doc = json.loads(zf.read("data"))
        change(doc)
        member("data", json.dumps(doc))(run)

    return apply


RESUME: dict[str, tuple[Callable[[Path], None], str]] = {
    "config-junk": (text("config.json", "{not json"), "config"),
    "config-empty": (text("config.json", ""), "config"),
    "config-binary": (lambda r: (r / "config.json").write_bytes(b"\xff\xfe\x00"), "config"),
    "config-deep": (text("config.json", DEEP), "nested"),
    "config-huge-int": (text("config.json", f'{{"a": {HUGE}}}'), "digits"),
    "config-list": (text("config.json", "[1, 2]"), "config"),
    "config-foreign": (data("config.json", lambda d: d.update(type="x.Other")), "config"),
    "config-future": (data("config.json", lambda d: d.update(version=99)), "newer"),
    "config-extra-key": (data("config.json", lambda d: d["data"].update(extra=1)), "unknown"),
    "config-episodes-str": (
        data("config.json", lambda d: d["data"]["agent"]["data"].update(episodes="ten")),
        "episodes",
    ),
    "config-env-extra": (
        data("config.json", lambda d: d["data"]["env"]["data"].update(nosuch=1)),
        "nosuch",
    ),
    "config-model-int": (
        data("config.json", lambda d: d["data"]["env"]["data"].update(model=5)),
        "model",
    ),
    "latest-junk": (text("checkpoint/latest.json", "{{"), "checkpoint pointer"),
    "latest-escape": (
        data("checkpoint/latest.json", lambda d: d["data"].update(dir="../../other/ckpt-000012")),
        "ckpt-NNNNNN",
    ),
    "latest-missing-dir": (
        data("checkpoint/latest.json", lambda d: d["data"].update(dir="ckpt-000099")),
        "ckpt-000099",
    ),
    "latest-dir-int": (
        data("checkpoint/latest.json", lambda d: d["data"].update(dir=5)),
        "ckpt-NNNNNN",
    ),
    "latest-no-dir": (data("checkpoint/latest.json", lambda d: d["data"].pop("dir")), "'dir'"),
    "latest-deep": (text("checkpoint/latest.json", DEEP), "nested"),
    "latest-future": (data("checkpoint/latest.json", lambda d: d.update(version=7)), "newer"),
    "state-junk": (text(f"{CKPT}/state.json", "]"), "search state"),
    "state-episodes-str": (
        data(f"{CKPT}/state.json", lambda d: d["data"].update(episodes="3")),
        "wrong type",
    ),
    "state-extra-key": (
        data(f"{CKPT}/state.json", lambda d: d["data"].update(bonus=1)),
        "unknown key",
    ),
    "state-negative": (
        data(f"{CKPT}/state.json", lambda d: d["data"].update(episodes=-1)),
        ">= 0",
    ),
    "state-policy-list": (
        data(f"{CKPT}/state.json", lambda d: d["data"].update(best_policy=[1])),
        "wrong type",
    ),
    "state-huge-int": (text(f"{CKPT}/state.json", f'{{"type": {HUGE}}}'), "digits"),
    "rng-junk": (text(f"{CKPT}/rng.json", "{"), "random state"),
    "rng-wrong": (
        data(f"{CKPT}/rng.json", lambda d: d["data"].update(numpy="x")),
        "random state is malformed",
    ),
    "replay-junk": (text(f"{CKPT}/replay_buffer.json", "nope"), "replay buffer"),
    "replay-other-size": (
        data(f"{CKPT}/replay_buffer.json", lambda d: d["data"].update(buffer_size=3)),
        "replay",
    ),
    "log-copy-garbled": (text(f"{CKPT}/episodes.jsonl", "x\ny\nz\n"), "does not hold"),
    "zip-not-a-zip": (text(f"{CKPT}/agent.zip", "PK? no"), "not a saved agent"),
    "zip-data-junk": (member("data", "{"), "agent.zip: data"),
    "zip-data-list": (member("data", "[]"), "not an object"),
    "zip-data-deep": (member("data", DEEP), "nested"),
    "zip-data-binary": (member("data", b"\x00\xff"), "agent.zip: data"),
    "zip-timesteps-str": (agent_data(lambda d: d.update(num_timesteps="x")), "wrong type"),
    "zip-gamma-list": (agent_data(lambda d: d.update(gamma=[1])), "wrong type"),
    "zip-odd-weights": (member("../evil.pth", b"x"), "unexpected weight files"),
    "zip-no-data": (agent_data(lambda d: d.clear()), "has no 'observation_space'"),
}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def one_error_line(capsys: pytest.CaptureFixture[str], code: int, needle: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", sorted(RESUME))
def test_a_hostile_run_folder_file_is_refused_in_one_line_and_nothing_is_written(
    tmp_path: Path, killed: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    change, needle = RESUME[case]
    change(run)
    resume_is_refused(run, capsys, needle)


def resume_is_refused(
    run: Path, capsys: pytest.CaptureFixture[str], needle: str, *flags: str
) -> None:
    """``search --resume`` of ``run`` is one error line naming ``needle``; nothing changes."""
    before = snapshot(run)
    capsys.readouterr()
    code = main(["search", "--resume", "--out", str(run), *flags])
    one_error_line(capsys, code, needle)
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "damage",
    [
        lambda log: log.unlink(),
        lambda log: log.write_text(log.read_text()[:-7]),  # a torn last line
        lambda log: log.write_text("garbage\n" + log.read_text()),  # a garbled first line
        lambda log: log.write_text("".join(log.read_text().splitlines(True)[1:])),  # a gap
    ],
    ids=["deleted", "torn", "garbled", "gap"],
)
def test_a_damaged_episode_log_is_repaired_from_the_checkpoint(
    tmp_path: Path, killed: Path, damage: Callable[[Path], None]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(killed, run)
    damage(run / "episodes.jsonl")
    assert main(["search", "--resume", "--out", str(run)]) == 0
    rows = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode"] for r in rows] == list(range(8))
    assert read_result(run / "result.json")["episodes"] == len(rows)


def test_resuming_a_folder_without_a_search_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    code = main(["search", "--resume", "--out", str(tmp_path / "empty")])
    one_error_line(capsys, code, "holds no search to resume")
    assert list((tmp_path / "empty").iterdir()) == []
