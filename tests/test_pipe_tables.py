"""Tables read on a pipe: piped into a log, no cell, header or title is cut short, each row is one line, so
a log grepped for an id (``p06/int8``) or a header finds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

ID = "a-calibrated-point-with-a-long-id.p06"
COLUMNS = [
    "id",
    "backend",
    "threads",
    "batch",
    "chosen-on %",
    "median ms",
    "p90 ms",
    "top-1 % (cifar10-test)",
]
ROWS = [["p06/int8", "onnxruntime-int8", 1, 1, "45.00", "1.234", "1.456", "91.20"], [ID, "executorch", 1, 1]]


def test_a_wide_table_on_a_pipe_keeps_every_cell_whole():
    code = f"from pareco_cli.output import print_table; print_table('[bold]title', {COLUMNS!r}, {ROWS!r})"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "80"}  # what a CI log or `| tee` gives rich
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "…" not in done.stdout
    assert lines[0] == "[bold]title"  # text as it is, not rich markup
    header = next(line for line in lines if "backend" in line)
    assert all(c in header for c in COLUMNS)
    assert any("p06/int8" in line and "onnxruntime-int8" in line and "91.20" in line for line in lines)
    assert any(ID in line for line in lines)


@pytest.mark.slow
def test_show_piped_into_a_log(front_copy: Path, cli, cli_process):
    added = cli("calibrate", str(front_copy), "--width", "0.6", "--data", "synthetic:256:4", "--id", ID)
    assert added.returncode == 0, added.stderr
    shown = cli_process("show", str(front_copy))
    assert shown.returncode == 0, shown.stderr
    assert "…" not in shown.stdout
    assert any(line.startswith(f"│ {ID} ") for line in shown.stdout.splitlines()), shown.stdout
    assert str(front_copy) in shown.stdout.splitlines()[0]  # the title names the manifest on one line
