"""The install layout of the product card: one ``autoshrink`` namespace, no bare packages."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import types

import pytest

from autoshrink.scripts.cli import main


@pytest.mark.parametrize(
    "name", ["agent", "agent.search", "agent.batch", "env", "compression", "scripts"]
)
def test_subpackages_import_under_autoshrink(name: str) -> None:
    module = importlib.import_module(f"autoshrink.{name}")
    assert module.__file__ is not None


@pytest.mark.parametrize("name", ["env", "agent", "compression", "scripts"])
def test_no_bare_top_level_package(name: str) -> None:
    # Run from a neutral folder so the source tree itself is not on sys.path.
    code = f"import importlib.util,sys; sys.exit(importlib.util.find_spec({name!r}) is not None)"
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0


def test_compression_import_stays_light() -> None:
    code = (
        "import sys, autoshrink.compression, autoshrink.compression.policy; "
        "heavy = [m for m in ('stable_baselines3', 'ray', 'tensorboard') if m in sys.modules]; "
        "sys.exit(len(heavy))"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "autoshrink 0." in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "keep-ratio" in capsys.readouterr().out


def test_package_level_names_resolve_to_the_engine() -> None:
    import autoshrink.compression as c
    from autoshrink.compression.apply import apply_policy
    from autoshrink.compression.units import build_units

    assert c.apply_policy is apply_policy
    assert c.build_units is build_units
    for name in c.__all__:
        assert not isinstance(getattr(c, name), types.ModuleType), name


def test_error_lines_keep_square_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", "nosuch[ray]"]) == 2
    assert "nosuch[ray]" in capsys.readouterr().err
