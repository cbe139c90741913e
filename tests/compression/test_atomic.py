"""write_atomic: the target is the old file or the whole new one, and no temporary is left."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshrink.compression.atomic import write_atomic


def test_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    write_atomic(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def half_then_fail(p: Path) -> None:
        p.write_text("ha")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_temporary_names_are_per_process_and_per_call(tmp_path: Path) -> None:
    import os

    from autoshrink.compression.atomic import temporary_path

    target = tmp_path / "policy.json"
    names = {temporary_path(target) for _ in range(50)}
    assert len(names) == 50  # a random suffix: two writers never share a temporary
    for name in names:
        assert name.parent == tmp_path and str(os.getpid()) in name.name


def test_policy_and_artifact_saves_go_through_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from autoshrink.compression.policy import Policy, UnitPolicy

    renamed: list[tuple[str, str]] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append((str(a), str(b))), real(a, b)))
    target = tmp_path / "p.json"
    Policy(units={"conv1": UnitPolicy(keep=0.5)}).save(target)
    assert len(renamed) == 1 and renamed[0][1] == str(target)
    assert f".p.json.{os.getpid()}." in renamed[0][0]
    assert Policy.load(target).units["conv1"].keep == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]
