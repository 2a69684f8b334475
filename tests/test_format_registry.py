"""The export formats are a registry (export/formats/): each declares every fact the rest of pareco
asks of a format, the packaging agrees with it, and no module outside it names a format."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import tomllib

from export.formats import FORMATS, SERVED, check_int8_formats, module_extras, served_backend
from export.formats.base import ExportError, Format
from pareco_runtime import SlimmableRuntime

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
# Where formats may be named: the registry itself, and the CLI's one flag per format.
REGISTRY = ROOT / "export" / "formats"
SCANNED = ("pareco_runtime", "training", "export", "bench", "pareco_cli", "benchmarks")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_declares_every_fact(fmt):
    spec: Format = FORMATS[fmt]
    assert spec.name == fmt and spec.title and spec.ext.startswith(".")
    assert spec.packages[0] == "torch" and callable(spec.write) and callable(spec.load)
    # A format needing packages beyond torch names their extra, and says what to install.
    assert (spec.extra is None) == (not spec.export_modules)
    if spec.extra is not None:
        assert spec.extra in EXTRAS
        assert f"pip install 'pareco[{spec.extra}]'" in spec.export_hint
        assert f"pip install 'pareco[{spec.extra}]'" in spec.run_hint
        assert set(spec.run_modules) <= set(spec.export_modules)
    if spec.serving is not None:
        assert spec.serving.runtime.count("{version}") == 1 and spec.serving.package in spec.packages
        assert set(spec.serving.extras) <= set(EXTRAS) and spec.extra in spec.serving.extras
    if spec.int8 is not None:
        assert spec.int8.quantizer and callable(spec.int8.write)
        assert spec.serving is not None, "an int8 program is timed on its format's backend"


def test_the_entry_points_serve_exactly_the_registered_backends():
    entries = PYPROJECT["project"]["entry-points"]["pareco.backends"]
    assert entries == dict.fromkeys(SERVED, "export.serving:load_program")


def test_the_manifest_accepts_int8_variants_of_every_served_backend():
    schema = json.loads((ROOT / "pareco_runtime" / "manifest" / "schema.json").read_text())
    found = [
        node["enum"]
        for node in _walk(schema)
        if isinstance(node, dict) and "enum" in node and "onnxruntime" in node["enum"]
    ]
    assert found == [list(SERVED)]


def test_every_format_has_its_export_flag(cli):
    r = cli("export", "--help")
    for spec in FORMATS.values():
        assert f"--{spec.name}" in r.stdout and spec.flag_help.split()[0] in r.stdout


def _walk(node: object) -> list[object]:
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [node, *(n for child in children for n in _walk(child))]


def test_module_extras_come_from_the_formats():
    assert module_extras() == {
        "onnx": "export",
        "onnxscript": "export",
        "onnxruntime": "export",
        "executorch": "mobile",
        "litert_torch": "litert",
        "ai_edge_litert": "litert",
        "openvino": "openvino",
        "nncf": "openvino",
    }


def test_int8_formats_and_their_backends():
    assert {served_backend(f) for f in ("onnx", "executorch")} == {"onnxruntime", "executorch"}
    with pytest.raises(
        ExportError, match=r"^--int8 makes ONNX, ExecuTorch, LiteRT and OpenVINO programs, not pt2; "
    ):
        check_int8_formats(["onnx", "pt2"])
    with pytest.raises(
        ExportError,
        match=r"no backend runs torchscript files; choose one of onnx, executorch, litert, openvino",
    ):
        served_backend("torchscript")


def _backend_format_pairs(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, key, value) of every dict literal entry from a format or backend name to another."""
    names = set(FORMATS) | set(SERVED)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if (
                    isinstance(key, ast.Constant)
                    and isinstance(value, ast.Constant)
                    and key.value in names
                    and value.value in names
                ):
                    found.append((node.lineno, key.value, value.value))
    return found


@pytest.mark.slow
def test_no_module_outside_the_registry_maps_backends_to_formats():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} maps {key!r} to {value!r}"
        for package in SCANNED
        for path in sorted((ROOT / package).rglob("*.py"))
        if REGISTRY not in path.parents
        for line, key, value in _backend_format_pairs(ast.parse(path.read_text()))
    ]
    assert not wrong, (
        "\n".join(wrong) + "\nask export.formats (SERVED, served_format, served_backend) instead"
    )


def test_the_scan_finds_a_backend_to_format_map():
    assert _backend_format_pairs(ast.parse('X = {"onnxruntime": "onnx", "a": 1}')) == [
        (1, "onnxruntime", "onnx")
    ]


def test_a_backend_without_its_packages_names_the_pip_install(front_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "executorch.exir", None)  # makes the import fail
    with pytest.raises(
        ValueError,
        match=r"^backend 'executorch' needs executorch, which is not installed here; "
        r"run: pip install 'pareco\[export,mobile\]'$",
    ):
        SlimmableRuntime.load(front_copy, backend="executorch")


def test_a_missing_format_package_names_its_extra():
    from pareco_cli.main import missing_extra_message

    exc = ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime")
    assert missing_extra_message(exc) == (
        "this command needs onnxruntime, which comes with pareco's 'export' extra; "
        "run: pip install 'pareco[export]'"
    )
