"""No command writes over its own input: ``export ART --out ART`` keeps the artifact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autoshrink.scripts.cli import main
from tests.compression.test_export import make_artifact


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("spelling", ["same", "relative", "link"])
def test_export_over_its_own_artifact_is_refused_and_the_artifact_kept(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    spelling: str,
) -> None:
    art = make_artifact(tmp_path / "m.safetensors", name="smallcnn")
    before = art.read_bytes()
    out = {"same": str(art), "relative": "./sub/../m.safetensors", "link": "alias"}[spelling]
    (tmp_path / "sub").mkdir()
    os.symlink(art, tmp_path / "alias")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["export", str(art), "--format", fmt, "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the input" in err[0], err
    assert art.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias", "m.safetensors", "sub"]
