"""The commands as a user types them inside a run folder: the manifest is found, exports land beside it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from pareco_runtime.manifest import Front


def _budget_of_middle_point(manifest: Path) -> tuple[str, str]:
    p = Front.load(manifest).points[1]
    return f"{math.ceil(p.mflops * 100) / 100:.2f}MFLOPs", p.id


@pytest.mark.slow
def test_the_readme_commands_work_as_typed_inside_a_run_folder(front_copy: Path, cli, monkeypatch) -> None:
    run = front_copy.parent
    budget, pid = _budget_of_middle_point(front_copy)
    monkeypatch.chdir(run)

    shown = cli("show")
    assert shown.returncode == 0, shown.stderr
    assert "using model.front.json" in shown.stderr
    assert pid in shown.stdout

    chosen = cli("select", "--budget", budget, "--json")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["point"]["id"] == pid

    exported = cli("export", "--budget", budget, "--onnx")
    assert exported.returncode == 0, exported.stderr
    record = json.loads((run / "export" / "export.json").read_text())
    assert [e["point"] for e in record] == [pid]
    assert (run / "export" / f"{pid}.onnx").is_file()


def test_a_run_folder_named_as_the_argument_is_read_like_its_manifest(
    front_copy: Path, cli, tmp_path
) -> None:
    budget, pid = _budget_of_middle_point(front_copy)
    for given in (front_copy.parent, front_copy):
        got = cli("select", str(given), "--budget", budget, "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["point"]["id"] == pid
        assert ("using" in got.stderr) == (given == front_copy.parent), "only a manifest found is reported"


def test_the_only_front_manifest_of_a_folder_is_taken_whatever_its_name(front_copy: Path, cli) -> None:
    renamed = front_copy.with_name("phone.front.json")
    front_copy.rename(renamed)
    got = cli("show", str(front_copy.parent))
    assert got.returncode == 0, got.stderr
    assert f"using {renamed}" in got.stderr


@pytest.mark.parametrize("manifests", [0, 2])
def test_a_folder_without_one_manifest_is_a_one_line_error(
    front_copy: Path, cli, tmp_path, manifests
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    for name in ("a", "b")[:manifests]:
        shutil.copy(front_copy, folder / f"{name}.front.json")
    got = cli("select", str(folder), "--budget", "10MFLOPs")
    assert got.returncode == 2
    line = got.stderr.strip()
    assert "\n" not in line
    assert ("several manifests (a.front.json, b.front.json)" if manifests else "no front manifest") in line
    assert "name the manifest" in line


def test_an_export_that_names_no_point_says_how_and_writes_nothing(
    front_copy: Path, cli, monkeypatch
) -> None:
    monkeypatch.chdir(front_copy.parent)
    got = cli("export", "--onnx")
    assert got.returncode == 2
    line = got.stderr.strip().splitlines()[-1]
    ids = [p.id for p in Front.load(front_copy).points]
    assert line.startswith("error: say which points to export: --budget B (e.g. --budget ")
    assert f"(this front's: {', '.join(ids)}) or --all" in line
    example = line.split("--budget ")[2].split(")")[0]
    assert cli("select", "--budget", example).returncode == 0, "the example budget is met"
    assert not (front_copy.parent / "export").exists()
