"""The project's habits, checked where CI runs them: ruff's pinned rules, its formatter, mypy on every package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the dev extra: pip install -e '.[dev]'")
    return found


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff(args):
    r = subprocess.run([_tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_covers_every_installed_package():
    import tomllib  # Python 3.11+, like the tests that read pyproject.toml

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    installed = {name.rstrip("*") for name in config["setuptools"]["packages"]["find"]["include"]}
    assert set(config["mypy"]["files"]) == installed


@pytest.mark.slow
def test_mypy_on_every_package():
    # No arguments: mypy checks the files [tool.mypy] names, with its settings.
    r = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
