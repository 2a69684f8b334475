"""examples/own_training_loop.py trains with the library's Slim and PareCO in its own loop and writes fronts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_the_example_writes_a_front_per_algorithm(repo_root: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(repo_root / "examples" / "own_training_loop.py"), "--out", str(tmp_path),
         "--epochs", "1", "--images", "256"],
        capture_output=True, text=True, cwd=repo_root, timeout=600,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for algorithm in ("slim", "pareco"):
        manifest = json.loads((tmp_path / algorithm / "model.front.json").read_text())
        assert manifest["training"]["algorithm"] == algorithm and manifest["points"]
        assert (tmp_path / algorithm / "model.safetensors").is_file()
        assert f"{algorithm}: front written to" in r.stdout
