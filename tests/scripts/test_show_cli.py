"""`autoshrink show` on a run folder, a policy.json and an artifact, and on hostile inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoshrink.agent.search.report import read_result
from autoshrink.compression.policy import Policy
from autoshrink.scripts.cli import main
from tests.compression.artifact_files import TINY_NET, edit_field
from tests.scripts.test_apply_cli import searched, smallcnn_checkpoint  # noqa: F401 (fixtures)


def shown(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    capsys.readouterr()
    assert main(["show", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_show_a_run_policy_and_artifact_agree_with_result_json(searched, capsys):  # noqa: F811
    result = read_result(searched / "result.json")
    run = shown(capsys, str(searched))
    artifact = shown(capsys, str(searched / result["artifact"]))
    policy = shown(capsys, str(searched / "policy.json"))
    assert run == artifact and run["source"].endswith(result["artifact"])
    # the shipped artifact's policy is policy.json's (one finalist on digits)
    assert policy["rows"] == run["rows"] and policy["total"] == run["total"]
    for key in ("macs", "params", "bytes"):
        assert run["total"]["before"][key] == result["baseline"][key], key
        assert run["total"]["after"][key] == result["compressed"][key], key
    units = [r for r in run["rows"] if r["kind"] == "unit"]
    saved = Policy.load(searched / "policy.json")
    assert [r["name"] for r in units] == list(saved.units)
    for row in units:
        assert 1 <= row["kept"] <= row["channels"] == saved.units[row["name"]].channels
        assert row["keep"] == pytest.approx(row["kept"] / row["channels"])
    pinned = {name: b for r in run["rows"] for name, b in r["pinned"].items()}
    assert pinned == saved.layers and pinned  # the first and last layers, at 8 bits


def test_show_prints_a_table_and_a_compact_one_within_80_columns(searched, capsys):  # noqa: F811
    capsys.readouterr()
    assert main(["show", str(searched)]) == 0
    wide = capsys.readouterr().out
    assert "layers" in wide and "→" in wide and "total" in wide
    assert "* pinned by the policy:" in wide
    assert main(["show", str(searched), "--compact"]) == 0
    compact = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in compact[:-1]) <= 80  # the notes line wraps softly
    assert any(line.lstrip().startswith("total") for line in compact)


@pytest.fixture
def hostile(tmp_path: Path, searched: Path) -> Path:  # noqa: F811
    result = read_result(searched / "result.json")
    art = (searched / result["artifact"]).read_bytes()
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage.json").write_bytes(b"\xff\x00{not json")
    (tmp_path / "deep.json").write_text("[" * 10_000 + "]" * 10_000)
    (tmp_path / "truncated.safetensors").write_bytes(art[: len(art) // 2])
    evil = tmp_path / "evil.py"
    evil.write_text(
        f"from pathlib import Path\nPath({str(tmp_path / 'MARKER')!r}).write_text('x')\n"
    )
    policy = Policy.load(searched / "policy.json")
    policy.with_meta(model=f"{evil}:build").save(tmp_path / "evil-policy.json")
    policy.with_meta(model="resnet20").save(tmp_path / "other-model.json")
    (tmp_path / "evil.safetensors").write_bytes(art)
    edit_field(
        tmp_path / "evil.safetensors",
        "spec",
        {"name": f"{evil}:build", "num_classes": 10, "in_channels": 1},
    )
    (tmp_path / "net.py").write_text(TINY_NET)
    return tmp_path


HOSTILE = [
    (["{t}/missing"], "no run folder, policy or artifact at"),
    (["{t}/empty"], "is no run folder"),
    (["{t}/garbage.json"], "garbage.json"),
    (["{t}/deep.json"], "deep.json"),
    (["{t}/truncated.safetensors"], "is truncated"),
    (["{t}/evil-policy.json"], "pass --model FILE.py:FUNCTION"),
    (["{t}/evil.safetensors"], "holds a user model"),
    (["{t}/other-model.json"], "policy does not match the model"),
    (["{t}/other-model.json", "--dataset", "nosuch"], "unknown dataset"),
]


@pytest.mark.parametrize(("argv", "needle"), HOSTILE, ids=[c[1][:24] for c in HOSTILE])
def test_hostile_inputs_are_one_error_line_and_exit_2(hostile, capsys, argv, needle):
    capsys.readouterr()
    assert main(["show", *(a.format(t=hostile) for a in argv)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle in lines[0], lines[0]
    assert captured.out == "" and not (hostile / "MARKER").exists()
