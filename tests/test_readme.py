"""The README's Python API snippet runs verbatim (slow: it trains two digits baselines)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def snippet() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## The Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]


def test_the_snippet_is_where_the_readme_says() -> None:
    code = snippet()
    assert "SearchConfig.create" in code and "search(config" in code
    compile(code, "README.md", "exec")


@pytest.mark.slow
def test_the_python_api_snippet_runs_verbatim(tmp_path: Path, cache_root: Path) -> None:
    env = {**os.environ, "AUTOSHRINK_CACHE": str(cache_root)}
    done = subprocess.run(
        [sys.executable, "-c", snippet()], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "runs" / "api" / "result.json").is_file()
    assert (tmp_path / "model.onnx").is_file()
