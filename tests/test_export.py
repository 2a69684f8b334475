"""Export: each format written, loaded back in its own runtime and matched against PyTorch; export.json; CLI."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from export.exporter import export_point
from export.formats import FORMATS, ExportError, MissingDependencyError, load_runner
from export.index import INDEX_NAME, find_export, merge_index, read_index
from export.metadata import Carried
from pareco_runtime import SlimmableRuntime


@pytest.fixture(scope="module")
def rt(tiny_front):
    return SlimmableRuntime.load(tiny_front)


@pytest.mark.parametrize(
    "fmt,ext",
    [
        pytest.param("onnx", ".onnx", marks=pytest.mark.slow),
        ("torchscript", ".pt"),
        pytest.param("pt2", ".pt2", marks=pytest.mark.slow),
        pytest.param("executorch", ".pte", marks=pytest.mark.slow),
    ],
)
def test_format_exports_loads_back_and_matches(rt, tmp_path, fmt, ext):
    pid = rt.points[1].id
    model = rt.standalone(pid)
    # Carrying what `pareco export` stores, the file is the one other tests write through the command
    # line, lowered once per test session (tests/export_memo.py).
    carried = Carried.of(rt, rt.points[1])
    res = export_point(model, rt.input_size, fmt, tmp_path / f"{pid}{ext}", point=pid, carried=carried)
    assert res.max_abs_diff <= 1e-4
    assert res.path.is_file() and res.bytes == res.path.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{pid}{ext}"], "no side files or temporaries left"
    assert res.versions["torch"] == torch.__version__.split("+")[0]
    runner = load_runner(fmt, res.path, threads=1)
    batches = (1,) if fmt == "executorch" else (1, 3)  # .pte files have static shapes
    assert res.batch.record() == (1 if fmt == "executorch" else "dynamic")
    for b in batches:
        x = torch.randn(b, *rt.input_size)
        with torch.no_grad():
            want = model(x).numpy()
        got = runner(x)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4
        assert np.allclose(runner(x.numpy()), got)  # NumPy input too
    assert runner.bind(torch.randn(1, *rt.input_size))() is not None
    if fmt == "executorch":
        with pytest.raises(ExportError, match="exported for batch 1"):
            runner(torch.randn(3, *rt.input_size))
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(res.path), load_external_data=False)
        onnx.checker.check_model(proto)
        assert res.details["opset"] >= 18
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
        assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch


def test_failed_export_leaves_no_partial_file(rt, tmp_path, monkeypatch):
    target = tmp_path / "p00.pt"
    target.write_bytes(b"previous export")

    def crashing_writer(model, example, path, opset, batch, metadata):
        path.write_bytes(b"half a file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setitem(FORMATS, "torchscript", replace(FORMATS["torchscript"], write=crashing_writer))
    with pytest.raises(
        ExportError, match=r"torchscript export failed .*exporter crashed.*nothing was written"
    ):
        export_point(rt.standalone("p00"), rt.input_size, "torchscript", target)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p00.pt"], "staging folder removed"


def test_parity_failure_writes_nothing(rt, tmp_path, monkeypatch):
    real = FORMATS["torchscript"].write

    def wrong_model_writer(model, example, path, opset, batch, metadata):
        other = rt.standalone("p00")
        with torch.no_grad():
            other.fc.bias.add_(1.0)
        return real(other, example, path, opset, batch, metadata)

    monkeypatch.setitem(FORMATS, "torchscript", replace(FORMATS["torchscript"], write=wrong_model_writer))
    with pytest.raises(ExportError, match=r"differs from PyTorch by up to .* nothing was written"):
        export_point(rt.standalone("p00"), rt.input_size, "torchscript", tmp_path / "p00.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fmt,module,message",
    [
        (
            "executorch",
            "executorch.exir",
            "ExecuTorch export needs executorch, the mobile extra: pip install 'pareco[mobile]'",
        ),
        ("onnx", "onnxscript", "ONNX export needs onnx, onnxscript and onnxruntime"),
    ],
)
def test_missing_dependency_is_a_clear_error(rt, tmp_path, monkeypatch, fmt, module, message):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependencyError, match=message.replace("[", r"\[").replace("(", r"\(")):
        export_point(rt.standalone("p00"), rt.input_size, fmt, tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "fmt,ext",
    [
        ("onnx", ".onnx"),
        ("torchscript", ".pt"),
        ("pt2", ".pt2"),
        pytest.param("executorch", ".pte", marks=pytest.mark.slow),
    ],
)
def test_loading_a_broken_file_is_a_clear_error(tmp_path, fmt, ext):
    path = tmp_path / f"broken{ext}"
    path.write_bytes(b"not a model" * 20)
    with pytest.raises(ExportError, match=f"{path.name}: "):
        load_runner(fmt, path)
    with pytest.raises(ExportError, match="no such exported file"):
        load_runner(fmt, tmp_path / f"absent{ext}")


def test_index_merge_and_lookup(tmp_path):
    assert read_index(tmp_path) == []
    x = hashlib.sha256(b"x").hexdigest()  # the files' own hash, as an export records it
    a = {
        "point": "p0",
        "format": "onnx",
        "file": "p0.onnx",
        "batch": "dynamic",
        "weights_sha256": "s",
        "sha256": x,
    }
    b = {
        "point": "p0",
        "format": "executorch",
        "file": "p0.pte",
        "batch": 1,
        "weights_sha256": "s",
        "sha256": x,
    }
    merge_index(tmp_path, [a, b])
    merge_index(tmp_path, [{**a, "bytes": 5}])
    entries = read_index(tmp_path)
    assert [(e["point"], e["format"]) for e in entries] == [("p0", "executorch"), ("p0", "onnx")]
    assert entries[1]["bytes"] == 5
    (tmp_path / "p0.onnx").write_bytes(b"x")
    (tmp_path / "p0.pte").write_bytes(b"x")
    assert find_export(tmp_path, "p0", "onnx", "s", 7) == tmp_path / "p0.onnx"
    assert find_export(tmp_path, "p0", "executorch", "s", 1) == tmp_path / "p0.pte"
    assert find_export(tmp_path, "p0", "executorch", "s", 2) is None  # static batch differs
    assert find_export(tmp_path, "p0", "onnx", "other weights", 1) is None
    merge_index(tmp_path, [{k: v for k, v in a.items() if k != "sha256"}])
    assert find_export(tmp_path, "p0", "onnx", "s", 7) is None  # no hash: nothing to trust it by
    (tmp_path / INDEX_NAME).write_text("{not json")
    with pytest.raises(ExportError, match="not a valid export record"):
        read_index(tmp_path)


@pytest.mark.slow
def test_cli_export_point_writes_files_table_and_index(tiny_front, tmp_path, cli):
    out = tmp_path / "exports"
    code, stdout, err = cli(
        "export", str(tiny_front), "--point", "p01", "--torchscript", "--pt2", "--out", str(out)
    )
    assert code == 0, err
    for col in ("point", "format", "file", "KiB", "max abs diff", "p01.pt2", "torchscript"):
        assert col in stdout
    entries = read_index(out)
    assert [(e["point"], e["format"], e["file"]) for e in entries] == [
        ("p01", "pt2", "p01.pt2"),
        ("p01", "torchscript", "p01.pt"),
    ]
    ids = [p["id"] for p in json.loads(tiny_front.read_text())["points"]]
    sha = json.loads(tiny_front.read_text())["weights"]["sha256"]
    for e in entries:
        assert e["bytes"] == (out / e["file"]).stat().st_size
        assert 0 <= e["max_abs_diff"] <= 1e-4
        assert e["versions"]["torch"] and e["weights_sha256"] == sha
        assert e["batch"] == "dynamic" and e["input_size"] == [3, 16, 16] and e["max_abs_output"] > 0
    # A second run into the same folder merges its records with the first run's.
    code, stdout, err = cli("export", str(tiny_front), "--all", "--torchscript", "--out", str(out), "--json")
    assert code == 0, err
    assert [e["point"] for e in json.loads(stdout)["exports"]] == ids
    assert sorted((e["point"], e["format"]) for e in read_index(out)) == sorted(
        [("p01", "pt2")] + [(pid, "torchscript") for pid in ids]
    )


@pytest.mark.slow
def test_cli_export_budget_picks_one_point(tiny_front, tmp_path, cli):
    code, stdout, err = cli(
        "export", str(tiny_front), "--budget", "1e9MFLOPs", "--pt2", "--out", str(tmp_path), "--json"
    )
    assert code == 0, err
    richest = max(json.loads(tiny_front.read_text())["points"], key=lambda p: p["top1"])["id"]
    assert [e["file"] for e in json.loads(stdout)["exports"]] == [f"{richest}.pt2"]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--point", "p00"],
            "choose at least one format: --onnx, --torchscript, --pt2, --executorch, --litert or --openvino",
        ),
        (["--point", "nope", "--pt2"], "no point 'nope' in this front"),
        (["--budget", "0.001MFLOPs", "--pt2"], "no front point satisfies"),
        (["--pt2"], "say which points to export: --budget B (e.g. --budget "),
        (["--all", "--point", "p00", "--pt2"], "give one of --budget B, --point ID or --all to say which"),
    ],
)
def test_cli_export_errors(tiny_front, tmp_path, cli, args, message):
    code, _, err = cli("export", str(tiny_front), *args, "--out", str(tmp_path / "o"))
    assert code == 2
    assert message in err and err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_cli_export_unmet_budget_with_fallback(tiny_front, tmp_path, cli):
    code, stdout, err = cli(
        "export",
        str(tiny_front),
        "--budget",
        "0.001MFLOPs",
        "--fallback",
        "cheapest",
        "--pt2",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert code == 0, err
    cheapest = min(json.loads(tiny_front.read_text())["points"], key=lambda p: p["mflops"])["id"]
    assert [e["point"] for e in json.loads(stdout)["exports"]] == [cheapest]
