"""docs/ON_DEVICE.md stays true: every JSON field it shows is one pareco writes, and its latency import runs as
printed there, after which the budget it names selects."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "ON_DEVICE.md"
_BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(DOC.read_text()) if lang == kind]


# Objects keyed by data, not by field name: a device profile's name, a package, a free-form setting.
_MAPS = {"latency_ms", "energy_mj", "latency_predicted_ms", "versions", "kwargs", "extra"}


def _unknown_fields(shown: Any, real: Any, where: str = "") -> list[str]:
    """Key paths of ``shown`` that ``real`` lacks (list items are compared with the first real item; the
    keys of :data:`_MAPS` objects are data, not fields)."""
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return [where]
        missing = []
        for key, value in shown.items():
            path = f"{where}.{key}" if where else key
            if key not in real:
                missing.append(path)
            elif key not in _MAPS:
                missing += _unknown_fields(value, real[key], path)
        return missing
    if isinstance(shown, list) and shown and isinstance(shown[0], dict):
        if not isinstance(real, list) or not real:
            return [where]
        return [miss for item in shown for miss in _unknown_fields(item, real[0], f"{where}[]")]
    return []


def _doc_import(front_dir: Path, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The doc's ``pareco bench import`` and ``pareco select`` lines, pointed at ``front_dir`` and its CSV
    (written to ``tmp_path``)."""
    csv = next(b for b in _blocks("") if b.startswith("point_id,ms"))
    # The tiny front's point count follows the CPU's float rounding (2 points, no p02, on an AVX-512
    # Xeon): keep the doc's lines for the points it has; a point left out is allowed, as the doc says.
    ids = {p["id"] for p in json.loads(next(front_dir.glob("*.front.json")).read_text())["points"]}
    header, *rows = csv.strip().splitlines()
    kept = [r for r in rows if r.split(",")[0] in ids]
    assert len(kept) >= 2, f"the doc's CSV names none of the front's points {sorted(ids)}"
    (tmp_path / "pixel7.csv").write_text("\n".join([header, *kept]) + "\n")
    script = next(b for b in _blocks("bash") if "bench import" in b).replace("\\\n", " ")
    commands = []
    for line in script.strip().splitlines():
        words = [w.replace("runs/mine", str(front_dir)) for w in shlex.split(line)]
        commands.append([str(tmp_path / w) if w == "pixel7.csv" else w for w in words[1:]])
    bench, select = commands
    return bench, select


def test_the_manifest_fields_shown_are_written_and_the_import_runs_as_printed(
    front_copy: Path, tmp_path: Path, cli
) -> None:
    bench, select = _doc_import(front_copy.parent, tmp_path)
    done = cli(*bench)
    assert done.returncode == 0, done.stderr
    chosen = cli(*select, "--json")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["point"]["latency_ms"]["pixel7"] <= 5.0
    manifest = json.loads(front_copy.read_text())
    assert manifest["device_profiles"][-1]["versions"] == {"imported_from": "pixel7.csv"}
    shown = [e for e in map(json.loads, _blocks("json")) if isinstance(e, dict) and "preprocess" not in e]
    assert len(shown) == 1, "the fields a budget reads"
    assert _unknown_fields(shown[0], manifest) == []


def _export_records(front: Path, tmp_path: Path, cli, flag: str) -> list[dict[str, Any]]:
    out = tmp_path / "export"
    r = cli("export", str(front), "--point", "p00", flag, "--out", str(out))
    assert r.returncode == 0, r.stderr
    return json.loads((out / "export.json").read_text())


def _shown_record(fmt: str) -> dict[str, Any]:
    records = next(e for e in map(json.loads, _blocks("json")) if isinstance(e, list))
    return next(r for r in records if r["format"] == fmt)


@pytest.mark.slow
def test_the_onnx_record_and_preprocessing_shown_have_the_fields_export_writes(
    tiny_front: Path, tmp_path: Path, cli
) -> None:
    (real,) = _export_records(tiny_front, tmp_path, cli, "--onnx")
    assert _unknown_fields(_shown_record("onnx"), real) == []
    (preprocess,) = [e for e in map(json.loads, _blocks("json")) if isinstance(e, dict) and "preprocess" in e]
    assert _unknown_fields(preprocess, real) == []
    assert (tmp_path / "export" / real["labels"]).is_file()


@pytest.mark.slow
def test_the_executorch_record_shown_has_the_fields_export_writes(
    tiny_front: Path, tmp_path: Path, cli
) -> None:
    (real,) = _export_records(tiny_front, tmp_path, cli, "--executorch")
    assert _unknown_fields(_shown_record("executorch"), real) == []


def test_a_field_the_code_does_not_write_is_caught() -> None:
    real = {"points": [{"id": "p0", "latency_ms": {"cpu": 1.0}}]}
    shown = {"points": [{"id": "p0", "latency": 1, "latency_ms": {"pixel7": 2.0}}], "dataset": {}}
    assert _unknown_fields(shown, real) == ["points[].latency", "dataset"]
