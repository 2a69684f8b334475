"""Preprocessing and labels travel with exports: inside each file, in export.json and in labels.txt."""

from __future__ import annotations

import json

import pytest
import torch

from export.exporter import export_points
from export.formats import ExportError, constant_method, quiet_torchscript
from export.index import INDEX_NAME, read_index
from export.metadata import LABELS_NAME, Carried, write_labels
from pareco_runtime import SlimmableRuntime

KEYS = ("pareco.preprocess", "pareco.labels", "pareco.point", "pareco.weights_sha256")


@pytest.fixture(scope="module")
def rt(tiny_front):
    return SlimmableRuntime.load(tiny_front)


def _read_onnx(path):
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    seen = session.get_modelmeta().custom_metadata_map
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert props == seen, "onnx and onnxruntime read the same metadata"
    return seen


def _read_torchscript(path):
    files = dict.fromkeys(KEYS, "")
    with quiet_torchscript():
        torch.jit.load(str(path), _extra_files=files)
    return {key: value.decode() for key, value in files.items()}  # extra files come back as bytes


def _read_pt2(path):
    files = dict.fromkeys(KEYS, "")
    torch.export.load(str(path), extra_files=files)
    return files


def _read_executorch(path):
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(path)
    return {key: program.load_method(constant_method(key)).execute(())[0] for key in KEYS}


READERS = {
    "onnx": _read_onnx,
    "torchscript": _read_torchscript,
    "pt2": _read_pt2,
    "executorch": _read_executorch,
}


@pytest.mark.parametrize(
    "fmt",
    [
        pytest.param("onnx", marks=pytest.mark.slow),
        "torchscript",
        pytest.param("pt2", marks=pytest.mark.slow),
        pytest.param("executorch", marks=pytest.mark.slow),
    ],
)
def test_each_file_carries_its_preprocessing_labels_and_provenance(rt, tmp_path, fmt):
    point = rt.points[0]
    (res,) = export_points(rt, [point], [fmt], tmp_path)
    meta = READERS[fmt](res.path)
    record = json.loads(meta["pareco.preprocess"])
    dataset = rt.front.dataset
    assert record["input_size"] == list(rt.input_size)
    assert (record["layout"], record["channels"], record["dtype"]) == ("NCHW", "RGB", "float32")
    assert record["mean"] == dataset.mean and record["std"] == dataset.std
    assert record["resize"]["size"] == list(rt.input_size[1:]) and record["crop"] is None  # exact mode
    assert json.loads(meta["pareco.labels"]) == rt.class_names == ["class0", "class1", "class2", "class3"]
    assert meta["pareco.point"] == point.id
    assert meta["pareco.weights_sha256"] == rt.front.weights_sha256
    assert (tmp_path / LABELS_NAME).read_text().splitlines() == rt.class_names
    (entry,) = read_index(tmp_path)
    assert entry["preprocess"] == record and entry["labels"] == LABELS_NAME


def test_an_older_export_json_is_still_read_and_kept(rt, tmp_path):
    old = {"point": "p00", "format": "onnx", "file": "p00.onnx", "bytes": 3, "weights_sha256": "s"}
    (tmp_path / INDEX_NAME).write_text(json.dumps([old]))
    export_points(rt, [rt.points[1]], ["torchscript"], tmp_path)
    entries = {(e["point"], e["format"]): e for e in read_index(tmp_path)}
    assert entries[("p00", "onnx")] == old, "a record without preprocess survives the merge as it was"
    assert entries[(rt.points[1].id, "torchscript")]["preprocess"]["layout"] == "NCHW"


def test_labels_of_other_classes_in_the_folder_stop_the_export_before_any_file(rt, tmp_path):
    (tmp_path / LABELS_NAME).write_text("cat\ndog\n")
    with pytest.raises(ExportError, match=r"labels.txt: holds 2 other class names .* another --out"):
        export_points(rt, [rt.points[0]], ["torchscript"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LABELS_NAME]
    assert (tmp_path / LABELS_NAME).read_text() == "cat\ndog\n"


def test_labels_file_rules(tmp_path):
    assert write_labels(tmp_path, []) is None and not (tmp_path / LABELS_NAME).exists()
    path = write_labels(tmp_path, ["a b", "c"])
    assert path is not None and path.read_text() == "a b\nc\n"
    assert write_labels(tmp_path, ["a b", "c"]) == path, "the same names again: kept"
    with pytest.raises(ExportError, match=r"class name 'x\\ny' holds a line break"):
        write_labels(tmp_path / "other", ["x\ny", "z"])
    unnamed = Carried("p00", "sha", {"layout": "NCHW"}, (), (4, 8))
    assert unnamed.index_fields() == {"preprocess": {"layout": "NCHW"}, "labels": None, "channels": [4, 8]}
    assert json.loads(unnamed.file_metadata()["pareco.labels"]) == []


@pytest.mark.slow
def test_cli_export_says_where_labels_and_preprocessing_are(tiny_front, tmp_path, cli):
    out = tmp_path / "exports"
    code, stdout, err = cli("export", str(tiny_front), "--point", "p00", "--torchscript", "--out", str(out))
    assert code == 0, err
    title = " ".join(stdout.split())  # the table's title wraps
    assert "preprocessing in export.json" in title and "class names in labels.txt" in title
    code, stdout, err = cli(
        "export", str(tiny_front), "--point", "p00", "--torchscript", "--out", str(out), "--json"
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["labels"] == str(out / LABELS_NAME)
    assert report["exports"][0]["preprocess"]["input_size"] == [3, 16, 16]
