"""A command never writes over what it does not own: an output named as the weight file, a statistics file,
a checkpoint, a run record or another front's file is refused in one line, with or without --force, and
every file is left as it was."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pareco_runtime.latency_table import lut_path
from pareco_runtime.runtime import SlimmableRuntime
from pareco_runtime.untrusted import sha256_file

from .latency_tables import synthetic_table

PROFILE = "phone"
SPECIALIZE = ("--profile", PROFILE, "--data", "synthetic:256:4", "--points", "2", "--evals", "2")


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _refused(result: Any, pattern: str) -> None:
    assert result.returncode == 2, result.stderr[-1500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-1500:]
    assert "Traceback" not in result.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def with_table(front_copy: Path) -> Path:
    """The front copy with a latency table for PROFILE beside it (what specialize needs to get going)."""
    synthetic_table(SlimmableRuntime.load(front_copy).model, PROFILE).save(lut_path(front_copy, PROFILE))
    return front_copy


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("model.safetensors", r"not a \.front\.json file"),
        ("checkpoint.pt", r"not a \.front\.json file"),
        ("run.json", r"not a \.front\.json file"),
        (f"model.lut.{PROFILE}.json", r"not a \.front\.json file"),
        ("trained.front.json", r"not a \.front\.json this command wrote"),  # another (trained) front
    ],
)
def test_specialize_never_writes_over_a_file_it_did_not_write(with_table: Path, cli, name: str, why: str):
    shutil.copy(with_table, with_table.with_name("trained.front.json"))
    before = _snapshot(with_table.parent)
    for force in ((), ("--force",)):
        target = with_table.with_name(name)
        _refused(
            cli("specialize", str(with_table), *SPECIALIZE, "--out", str(target), *force), f"--out .*{why}"
        )
        assert _snapshot(with_table.parent) == before


@pytest.mark.slow
def test_the_weight_file_is_refused_in_a_real_process(with_table: Path, cli_process):
    before = _snapshot(with_table.parent)
    weights = with_table.with_name("model.safetensors")
    result = cli_process("specialize", str(with_table), *SPECIALIZE, "--out", str(weights), "--force")
    _refused(result, r"^error: --out .*model\.safetensors: not a \.front\.json file")
    assert _snapshot(with_table.parent) == before
    SlimmableRuntime.load(with_table)  # the front still loads


@pytest.mark.parametrize("name", ["model.safetensors", "model.front.json", "run.json", "plot.png"])
def test_show_plots_only_over_a_plot(front_copy: Path, cli, name: str):
    target = front_copy.with_name(name)
    if name == "plot.png":
        target.write_bytes(b"not a picture")  # a .png name is not enough: a stranger's file is kept
    before = _snapshot(front_copy.parent)
    _refused(cli("show", str(front_copy), "--plot", str(target)), rf"^error: --plot .*{re.escape(name)}: ")
    assert _snapshot(front_copy.parent) == before


@pytest.mark.slow
def test_show_redraws_its_own_plot(front_copy: Path, cli):
    png = front_copy.with_name("front.png")
    assert cli("show", str(front_copy), "--plot", str(png)).returncode == 0
    assert cli("show", str(front_copy), "--plot", str(png)).returncode == 0


@pytest.mark.parametrize("name", ["model.safetensors", "model.front.json", "checkpoint.pt"])
def test_a_table_for_an_untrained_network_is_not_saved_over_a_front(front_copy: Path, cli, name: str):
    before = _snapshot(front_copy.parent)
    result = cli(
        "bench",
        "lut",
        "--arch",
        "resnet20",
        "--image-size",
        "16",
        "--out",
        str(front_copy.with_name(name)),
    )
    _refused(result, rf"^error: --out .*{re.escape(name)}: ")
    assert _snapshot(front_copy.parent) == before


def test_calibrate_never_writes_over_another_fronts_statistics(front_copy: Path, cli):
    # 'model.x.c00.bn.safetensors' is both model.front.json's point 'x.c00' and model.x.front.json's 'c00'.
    theirs = front_copy.with_name("model.x.c00.bn.safetensors")
    theirs.write_bytes(b"another front's statistics")
    before = _snapshot(front_copy.parent)
    result = cli("calibrate", str(front_copy), "--width", "0.6", "--data", "synthetic:256:4", "--id", "x.c00")
    _refused(
        result, r"model\.x\.c00\.bn\.safetensors: exists and is not this front's; give the point another --id"
    )
    assert _snapshot(front_copy.parent) == before
