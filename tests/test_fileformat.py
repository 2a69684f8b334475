"""Weight file and front manifest formats: round trips, atomic writes, every refusal, schema validator."""

from __future__ import annotations

import copy
import json
import os
import pickle
import random
import struct
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from pareco_runtime import build_model, weights_file
from pareco_runtime.manifest import (
    FORMAT_VERSION,
    check_manifest_consistency,
    json_schema,
    load_manifest,
    manifest_schema,
    save_manifest,
    weights_path,
)
from pareco_runtime.space import WidthSpace
from pareco_runtime.untrusted import FormatError, sha256_file
from pareco_runtime.weights_file import WEIGHTS_FORMAT_VERSION, WeightFile, load_weights, save_weights

from .manifests import make_manifest, with_format_2

# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def model() -> Any:
    return build_model("resnet20")


def bn_stats_for(model: Any, point_ids: list[str]) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for pid in point_ids:
        out[pid] = {}
        for name in model.bn_names:
            n = model.get_submodule(name).num_features
            out[pid][name] = (torch.randn(n, generator=gen), torch.rand(n, generator=gen) + 0.5)
    return out


def metadata_for(model: Any) -> dict[str, Any]:
    return {
        "architecture": model.describe(),
        "width_space": model.space.to_dict(),
        "extra": {"nested": [1, 2.5, None, "x"], "flag": True},
    }


@pytest.fixture
def exported(tmp_path: Path, model: Any) -> Path:
    """A weight file and its manifest in tmp_path; returns the manifest path."""
    weights = tmp_path / "model.safetensors"
    save_weights(weights, model.state_dict(), bn_stats_for(model, ["p0", "p1"]), metadata_for(model))
    manifest_path = tmp_path / "model.front.json"
    save_manifest(manifest_path, make_manifest(sha=sha256_file(weights)))
    return manifest_path


def rewrite_manifest(path: Path, change: Any) -> None:
    """Apply ``change(manifest)`` and write the file back without validation."""
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# weight file


def test_weights_round_trip_bit_equal(tmp_path: Path, model: Any) -> None:
    state = model.state_dict()
    stats = bn_stats_for(model, ["p0", "w0.5", "best-1"])
    meta = metadata_for(model)
    path = tmp_path / "w.safetensors"
    save_weights(path, state, stats, meta)
    wf = load_weights(path)
    assert isinstance(wf, WeightFile) and wf.path == path
    assert wf.metadata == json.loads(json.dumps(meta))
    assert set(wf.state) == set(state)  # safetensors stores keys sorted
    for key, tensor in state.items():
        assert wf.state[key].dtype == tensor.dtype and torch.equal(wf.state[key], tensor), key
    assert set(wf.bn_stats) == set(stats)
    for pid, modules in stats.items():
        assert set(wf.bn_stats[pid]) == set(modules)
        for name, (mean, var) in modules.items():
            got_mean, got_var = wf.bn_stats[pid][name]
            assert torch.equal(got_mean, mean) and torch.equal(got_var, var)


def test_weights_file_layout_is_plain_safetensors(tmp_path: Path, model: Any) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, model.state_dict(), bn_stats_for(model, ["p0"]), {"a": 1})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["pareco_format"] == str(WEIGHTS_FORMAT_VERSION)
        keys = set(fh.keys())
    assert "bn/p0/layer1.0.bn1.running_mean" in keys and "bn/p0/layer1.0.bn1.running_var" in keys
    assert set(model.state_dict()) <= keys


def _header(path: Path) -> bytes:
    (size,) = struct.unpack("<Q", path.read_bytes()[:8])
    return path.read_bytes()[8 : 8 + size]


def test_identical_saves_write_identical_bytes(tmp_path: Path, model: Any) -> None:
    """Two identical trainings get one weights_sha256: safetensors alone writes its metadata map in an
    order new with each save (2 distinct files in 20 saves, measured)."""
    state, stats = model.state_dict(), bn_stats_for(model, ["p0", "p1"])
    paths = [tmp_path / f"w{i}.safetensors" for i in range(16)]
    for path in paths:
        save_weights(path, state, stats, metadata_for(model))
    assert len({sha256_file(p) for p in paths}) == 1
    header = json.loads(_header(paths[0]))
    assert list(header["__metadata__"]) == ["pareco_format", "pareco_metadata"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=st.dictionaries(st.text(max_size=12), st.text(max_size=40), max_size=4))
def test_the_sorted_header_reads_back_as_written(tmp_path: Path, meta: dict[str, str]) -> None:
    path = tmp_path / "w.safetensors"
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3, dtype=torch.int64)}
    save_weights(path, tensors, {}, meta)
    wf = load_weights(path)
    assert wf.metadata == meta and torch.equal(wf.state["a"], tensors["a"])
    assert torch.equal(wf.state["b"], tensors["b"])
    assert _header(path).rstrip(b" ").endswith(b"}")


def test_weights_shared_noncontiguous_and_empty_tensors(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    buffer = torch.arange(10, dtype=torch.float64)
    state = {
        "tied.a": base,
        "tied.b": base,  # same tensor twice
        "transposed": base.t(),  # non-contiguous view
        "slice": base[1:3],  # contiguous view of part of a storage
        "grad": torch.ones(3, requires_grad=True),
        "empty": torch.zeros(0),
        "empty2": torch.zeros(0, 5),
        "scalar": torch.tensor(7, dtype=torch.int64),
    }
    stats = {"p0": {"bn": (buffer[:4], buffer[4:8])}, "p1": {"bn": (buffer[:4], buffer[4:8])}}
    path = tmp_path / "w.safetensors"
    save_weights(path, state, stats, {})
    wf = load_weights(path)
    for key, tensor in state.items():
        assert torch.equal(wf.state[key], tensor.detach()) and wf.state[key].shape == tensor.shape, key
    assert torch.equal(wf.bn_stats["p1"]["bn"][1], buffer[4:8])
    assert base.is_contiguous() and not state["transposed"].is_contiguous()  # inputs untouched


@pytest.mark.parametrize(
    "state, stats, metadata, words",
    [
        ({}, {}, {"x": float("nan")}, "not JSON"),
        ({}, {}, {"x": object()}, "not JSON"),
        ({}, {}, [1, 2], "must be a dict"),
        ({"bn/p0/x.running_mean": torch.zeros(1)}, {}, {}, "reserved"),
        ({}, {"a/b": {"bn": (torch.zeros(1), torch.ones(1))}}, {}, "file-name safe"),
        ({}, {"..": {"bn": (torch.zeros(1), torch.ones(1))}}, {}, "file-name safe"),
        ({}, {"p0\n": {"bn": (torch.zeros(1), torch.ones(1))}}, {}, "file-name safe"),
        ({}, {"p0": {"a/bn": (torch.zeros(1), torch.ones(1))}}, {}, "contains '/'"),
        ({}, {"p0": {"bn": (torch.zeros(1),)}}, {}, "pair"),
        ({"w": [1.0, 2.0]}, {}, {}, "not a tensor"),
    ],
)
def test_save_weights_refuses_bad_input(
    tmp_path: Path, state: Any, stats: Any, metadata: Any, words: str
) -> None:
    path = tmp_path / "w.safetensors"
    with pytest.raises(FormatError, match=words):
        save_weights(path, state, stats, metadata)
    assert listing(tmp_path) == []


def test_save_weights_atomic_when_writer_fails(
    tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, {"a": torch.ones(3)}, {}, {"v": 1})
    before = path.read_bytes()

    def half_then_crash(tensors: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
        raise OSError("disk full")

    monkeypatch.setattr(weights_file, "save_file", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_weights(path, model.state_dict(), {}, {"v": 2})
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["w.safetensors"]
    assert load_weights(path).metadata == {"v": 1}


def test_save_weights_atomic_when_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(path, {"a": torch.ones(3)}, {}, {"v": 1})
    before = path.read_bytes()

    def no_rename(src: Any, dst: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="power cut"):
        save_weights(path, {"a": torch.zeros(5)}, {}, {"v": 2})
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["w.safetensors"]


def _good_weights(tmp_path: Path) -> bytes:
    path = tmp_path / "good.safetensors"
    stats = {"p0": {"bn": (torch.zeros(2), torch.ones(2))}}
    save_weights(path, {"a": torch.arange(16, dtype=torch.float32)}, stats, {"k": "v"})
    return path.read_bytes()


def _with_metadata(
    tmp_path: Path, metadata: dict[str, str] | None, tensors: dict[str, torch.Tensor] | None = None
) -> bytes:
    path = tmp_path / "raw.safetensors"
    save_file(tensors or {"a": torch.ones(2)}, str(path), metadata=metadata)
    return path.read_bytes()


@pytest.mark.parametrize(
    "case, words",
    [
        ("empty", "empty file"),
        ("truncated_tail", "corrupt or truncated"),
        ("truncated_header", "truncated"),
        ("four_bytes", "truncated"),
        ("garbled_header", "corrupt or truncated"),
        ("garbage", "not a safetensors file"),
        ("absurd_header", "absurd header length"),
        ("pickle", "pickle.*never unpickles"),
        ("zip", "zip archive.*never unpickles"),
        ("pickle_protocol0", "not a safetensors file"),
        ("json", "JSON file"),
        ("plain_safetensors", "not a pareco weight file"),
        ("newer", r"written by a newer pareco \(format 2 > 1\); upgrade pareco"),
        ("bad_version", "corrupt pareco metadata"),
        ("bad_metadata_json", "corrupt pareco metadata"),
        ("bad_bn_key", "malformed BN statistics key"),
        ("bn_missing_var", "lack running_var"),
    ],
)
def test_load_weights_refusals(tmp_path: Path, case: str, words: str) -> None:
    good = _good_weights(tmp_path)
    (header_len,) = struct.unpack("<Q", good[:8])
    pareco_meta = {"pareco_format": "1", "pareco_metadata": "{}"}
    data = {
        "empty": b"",
        "truncated_tail": good[:-7],
        "truncated_header": good[:40],
        "four_bytes": good[:4],
        "garbled_header": good[:8] + b"{" + b"\x00" * (header_len - 1) + good[8 + header_len :],
        "garbage": struct.pack("<Q", 10) + b"hello, this is not JSON",
        "absurd_header": struct.pack("<Q", 2**62) + b"{}" + b"\x00" * 100,
        "pickle": pickle.dumps({"a": torch.ones(2).numpy().tolist()}, protocol=4),
        "pickle_protocol0": pickle.dumps({"weights": [1, 2, 3]}, protocol=0),
        "json": b'{"format_version": 1}',
        "plain_safetensors": _with_metadata(tmp_path, None),
        "newer": _with_metadata(tmp_path, {"pareco_format": "2", "pareco_metadata": "{}"}),
        "bad_version": _with_metadata(tmp_path, {"pareco_format": "one", "pareco_metadata": "{}"}),
        "bad_metadata_json": _with_metadata(tmp_path, {"pareco_format": "1", "pareco_metadata": "{oops"}),
        "bad_bn_key": _with_metadata(tmp_path, pareco_meta, {"bn/p0": torch.ones(1)}),
        "bn_missing_var": _with_metadata(tmp_path, pareco_meta, {"bn/p0/m.running_mean": torch.ones(1)}),
    }
    path = tmp_path / "w.safetensors"
    if case == "zip":
        torch.save({"a": torch.ones(2)}, path)
    else:
        path.write_bytes(data[case])
    with pytest.raises(FormatError, match=words) as info:
        load_weights(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "; " in message and "\n" not in message


def test_load_weights_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such weight file; check the path"):
        load_weights(tmp_path / "nope.safetensors")
    with pytest.raises(FormatError, match="is a folder"):
        load_weights(tmp_path)


@pytest.mark.parametrize("header_len", [0x180, 0x4B50])
def test_header_length_that_looks_like_a_magic_number_still_loads(tmp_path: Path, header_len: int) -> None:
    """A safetensors header length can begin with 0x80 (pickle) or 'PK' (zip): not misread as those."""
    path = tmp_path / "w.safetensors"
    pad = 0
    for _ in range(64):
        save_weights(path, {"a": torch.ones(2)}, {}, {"pad": "x" * pad})
        (got,) = struct.unpack("<Q", path.read_bytes()[:8])
        if got == header_len:
            break
        pad = max(0, pad + (header_len - got if abs(header_len - got) > 8 else 1))
    else:
        pytest.fail("could not build a header of the wanted length")
    assert path.read_bytes()[:2] in (b"\x80\x01", b"PK")
    assert load_weights(path).metadata["pad"] == "x" * pad


class _CreateFile:
    """Unpickling this runs ``open(marker, "w")``: a harmless stand-in for code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_pickle_payload_as_weight_file_is_never_run(tmp_path: Path, exported: Path, writer: str) -> None:
    # The payload is live: unpickling it really creates a file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_CreateFile(probe))).close()
    assert probe.exists()

    marker = tmp_path / "pwned"
    weights = tmp_path / "model.safetensors"
    if writer == "pickle":
        weights.write_bytes(pickle.dumps(_CreateFile(marker)))
    else:
        torch.save(_CreateFile(marker), weights)
    rewrite_manifest(exported, lambda m: m["weights"].update(sha256=sha256_file(weights)))
    manifest = load_manifest(exported)  # the hash matches: only the weight file itself is refused
    with pytest.raises(FormatError, match="never unpickles"):
        load_weights(weights_path(exported, manifest))
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# manifest


def test_manifest_round_trip(exported: Path) -> None:
    manifest = load_manifest(exported)
    assert manifest == make_manifest(sha=manifest["weights"]["sha256"])
    text = exported.read_text()
    assert text.startswith('{\n  "') and text.endswith("\n")
    assert weights_path(exported, manifest) == Path(os.path.abspath(exported)).parent / "model.safetensors"


def test_save_manifest_normalises_tuples(tmp_path: Path) -> None:
    manifest = make_manifest()
    manifest["dataset"]["input_size"] = (3, 32, 32)
    save_manifest(tmp_path / "m.front.json", manifest)
    loaded = load_manifest(tmp_path / "m.front.json", verify_weights=False)
    assert loaded["dataset"]["input_size"] == [3, 32, 32]


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m.pop("points"), "missing required field 'points'"),
        (lambda m: m["points"][0].update(top1=float("nan")), "not JSON"),
        (lambda m: m["points"][0].update(alpha=[1.0]), "alpha has 1 values"),
        (
            lambda m: m["weights"].update(file="../model.safetensors"),
            "refuses to read weights outside its folder",
        ),
        (
            lambda m: m.update(format_version=FORMAT_VERSION + 1),
            rf"format_version: expected one of {', '.join(map(str, range(1, FORMAT_VERSION + 1)))}; got",
        ),
        (lambda m: m["points"][0].update(origin="calibrated"), "format_version 1 cannot hold points"),
    ],
)
def test_save_manifest_refuses_and_writes_nothing(tmp_path: Path, change: Any, words: str) -> None:
    manifest = make_manifest()
    change(manifest)
    with pytest.raises(FormatError, match=words):
        save_manifest(tmp_path / "m.front.json", manifest)
    assert listing(tmp_path) == []


def test_save_manifest_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.front.json"
    save_manifest(path, make_manifest())
    before = path.read_bytes()

    def no_rename(src: Any, dst: Any) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="power cut"):
        save_manifest(path, make_manifest(n_points=2))
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["m.front.json"]


def test_load_manifest_file_level_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.front.json"
    with pytest.raises(FormatError, match="no such manifest file"):
        load_manifest(path)
    with pytest.raises(FormatError, match="is a folder"):
        load_manifest(tmp_path)
    path.write_text('{\n  "format_version": 1,\n}\n')
    with pytest.raises(FormatError, match=r"not valid JSON \(line 3, column 1"):
        load_manifest(path)
    path.write_bytes(b"\x88\x00\x00\x00\xff\xfe")
    with pytest.raises(FormatError, match="not UTF-8"):
        load_manifest(path)
    path.write_text('{"a": 1, "a": 2}')
    with pytest.raises(FormatError, match="duplicate key 'a'"):
        load_manifest(path)
    path.write_text('{"a": NaN}')
    with pytest.raises(FormatError, match="NaN is not a JSON value"):
        load_manifest(path)
    path.write_text("[1, 2]")
    with pytest.raises(FormatError, match="top level is a JSON array, expected an object"):
        load_manifest(path)


def test_newer_manifest_asks_for_upgrade_before_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.front.json"
    newer = FORMAT_VERSION + 1
    path.write_text(json.dumps({"format_version": newer, "points": "whatever", "new_field": {}}))
    with pytest.raises(
        FormatError, match=rf"written by a newer pareco \(format {newer} > {FORMAT_VERSION}\); upgrade"
    ):
        load_manifest(path)


def _set_alpha_string(m: dict[str, Any]) -> None:
    m["points"][3]["alpha"][2] = "0.5"


@pytest.mark.parametrize(
    "change, words",
    [
        (_set_alpha_string, r"invalid manifest: points\[3\]\.alpha\[2\]: expected number, got string"),
        (lambda m: m["points"][1].pop("mflops"), r"points\[1\]: missing required field 'mflops'"),
        (lambda m: m["points"][0].update(colour="red"), r"points\[0\]: unexpected field\(s\) 'colour'"),
        (lambda m: m.update(extra=1), r"\(top level\): unexpected field\(s\) 'extra'"),
        (lambda m: m["points"][0].update(top1=101), r"points\[0\]\.top1: must be <= 100, got 101"),
        (lambda m: m["points"][0].update(channels=[0] * 6), r"points\[0\]\.channels\[0\]: must be >= 1"),
        (
            lambda m: m["points"][0]["latency_ms"].update({"cpu 1": "fast"}),
            r'points\[0\]\.latency_ms\["cpu 1"\]: expected number, got string',
        ),
        (lambda m: m.update(points=[]), r"points: needs at least 1 item"),
        (lambda m: m["training"].update(algorithm="magic"), r"training\.algorithm: expected one of"),
        (lambda m: m["weights"].update(sha256="ABC"), r"weights\.sha256: .* does not match the pattern"),
        (
            lambda m: m["device_profiles"][0].update(energy_source="battery"),
            r"device_profiles\[0\]\.energy_source: expected one of",
        ),
        (
            lambda m: m["width_space"].update(divisor="8"),
            r"width_space\.divisor: expected integer or null, got string",
        ),
        (lambda m: m.update(created="yesterday"), r"created: .* does not match"),
        (lambda m: m["points"][0].update(id="a/b"), r"points\[0\]\.id: .* does not match"),
    ],
)
def test_schema_errors_name_the_field(exported: Path, change: Any, words: str) -> None:
    rewrite_manifest(exported, change)
    with pytest.raises(FormatError, match=words) as info:
        load_manifest(exported)
    assert str(info.value).startswith(f"{exported}: ")


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda m: m["points"][2].update(alpha=[0.5] * 5),
            r"point 'p2': alpha has 5 values but width_space has 6",
        ),
        (lambda m: m["points"][1]["alpha"].__setitem__(4, 0.2), r"point 'p1': alpha\[4\] = 0\.2 .* outside"),
        (
            lambda m: m["points"][1]["alpha"].__setitem__(4, 1.01),
            r"point 'p1': alpha\[4\] = 1\.01 .* outside",
        ),
        (lambda m: m["points"][3].update(channels=[16] * 7), r"point 'p3': channels has 7 values"),
        (lambda m: m["points"][3]["channels"].__setitem__(0, 17), r"point 'p3': channels\[0\] = 17 exceeds"),
        (lambda m: m["points"][2].update(id="p1"), r"point 'p1': id is used by more than one point"),
        (lambda m: m["points"][2].update(id="p2\n"), r"point id 'p2\\n' is not file-name safe"),
        (
            lambda m: m["points"][0]["latency_ms"].update(gpu=1.0),
            r"point 'p0': latency_ms names device profile 'gpu'",
        ),
        (
            lambda m: m["points"][0]["energy_mj"].update(phone=1.0),
            r"point 'p0': energy_mj names device profile 'phone'",
        ),
        (
            lambda m: m["points"][0]["latency_predicted_ms"].update(x=1.0),
            r"point 'p0': latency_predicted_ms names",
        ),
        (
            lambda m: m["device_profiles"].append(dict(m["device_profiles"][0])),
            r"profile name 'cpu1' is used twice",
        ),
        (lambda m: m["width_space"].update(full=[16]), r"width_space\.full has 1 values"),
        (lambda m: m["width_space"].update(low=0.9, high=0.5), r"width_space needs 0 < low <= high"),
        (
            lambda m: m["width_space"].update(steps=[1, 2]),
            r"width_space\.steps has 2 values but .*names has 6",
        ),
        (
            lambda m: m["width_space"].update(steps=[3, 1, 1, 1, 1, 1]),
            r"width_space\.steps\[0\] = 3 does not divide full\[0\] = 16",
        ),
        (
            lambda m: m["width_space"].update(steps=[1, 2, 1, 1, 1, 1]),
            r"format_version 1 cannot hold width_space\.steps \(format 5\)",
        ),
        (
            lambda m: m["dataset"].update(mean=[0.5]),
            r"dataset\.mean has 1 values but input_size has 3 channels",
        ),
        (
            lambda m: m["dataset"].update(class_names=["a", "b"]),
            r"class_names has 2 names but .*num_classes is 10",
        ),
    ],
)
def test_consistency_errors(exported: Path, change: Any, words: str) -> None:
    rewrite_manifest(exported, change)
    with pytest.raises(FormatError, match=words):
        load_manifest(exported)
    manifest = json.loads(exported.read_text())
    with pytest.raises(FormatError, match=words):
        check_manifest_consistency(manifest)


def test_alpha_tolerance(tmp_path: Path) -> None:
    manifest = make_manifest()
    manifest["points"][0]["alpha"][0] = manifest["width_space"]["low"] - 5e-7
    check_manifest_consistency(manifest)


@pytest.mark.parametrize(
    "file",
    [
        "/etc/passwd",
        "../model.safetensors",
        "sub/../../model.safetensors",
        "..",
        ".",
        "./",
        "C:model.safetensors",
        "C:\\x\\model.safetensors",
        "..\\model.safetensors",
        "\\\\server\\share\\m.safetensors",
        "//server/share/m",
    ],
)
def test_weights_outside_folder_refused(exported: Path, file: str) -> None:
    rewrite_manifest(exported, lambda m: m["weights"].update(file=file))
    with pytest.raises(FormatError, match="refuses to read weights outside its folder"):
        load_manifest(exported, verify_weights=False)
    with pytest.raises(FormatError, match="refuses to read weights outside its folder"):
        weights_path(exported, json.loads(exported.read_text()))


def test_weights_in_subfolder_allowed(exported: Path) -> None:
    sub = exported.parent / "sub"
    sub.mkdir()
    (exported.parent / "model.safetensors").rename(sub / "model.safetensors")
    rewrite_manifest(exported, lambda m: m["weights"].update(file="sub/./x/../model.safetensors"))
    manifest = load_manifest(exported)
    assert weights_path(exported, manifest) == Path(os.path.abspath(sub)) / "model.safetensors"


def test_weight_file_missing_or_changed(exported: Path) -> None:
    weights = exported.parent / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    mismatch = r"weight file changed or corrupt \(sha256 mismatch\); re-export or re-train"
    with pytest.raises(FormatError, match=mismatch):
        load_manifest(exported)
    assert load_manifest(exported, verify_weights=False)["points"][0]["id"] == "p0"
    weights.unlink()
    with pytest.raises(FormatError, match="not found"):
        load_manifest(exported)
    load_manifest(exported, verify_weights=False)


def test_manifest_schema_is_a_valid_copy() -> None:
    schema = manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    schema["properties"].clear()
    assert manifest_schema()["properties"]
    assert manifest_schema()["$defs"]["point"]["properties"]["id"]["pattern"] == weights_file.POINT_ID_PATTERN


def test_manifest_fields_match_front_dataclasses() -> None:
    from pareco_runtime.manifest import DeviceProfile, FrontPoint, Variant

    schema = manifest_schema()
    point = FrontPoint(
        id="p",
        alpha=[0.5],
        channels=[8],
        mflops=1.0,
        params=10,
        selection_top1=50.0,
        origin="calibrated",
        eval_top1={"test": 50.0},
        eval_loss={"test": 1.0},
        variants=[
            Variant("int8", "executorch", 49.0, 50.0, {"name": "test", "images": 10}, 1000, {"d": 1.0})
        ],
        metrics={"miou": 0.5},
        selection_metrics={"miou": 0.4},
        eval_metrics={"test": {"miou": 0.45}},
    )
    profile = DeviceProfile(name="d", runtime="torch", threads=1, batch=1, host="h", date="2026-01-01")
    assert set(point.to_dict()) == set(schema["$defs"]["point"]["properties"])
    # A variant records top1 / fp32_top1, or on a front ranked by its own metric metrics / fp32_metrics.
    of_metric = Variant("int8", "executorch", None, None, {"name": "test", "images": 10}, 1000, {"d": 1.0},
                        metrics={"miou": 0.4}, fp32_metrics={"miou": 0.5})  # fmt: skip
    forms = set(point.variants[0].to_dict()) | set(of_metric.to_dict())
    assert forms == set(schema["$defs"]["variant"]["properties"])
    assert not {"metrics", "fp32_metrics"} & set(point.variants[0].to_dict())
    assert not {"top1", "fp32_top1"} & set(of_metric.to_dict())
    assert set(profile.to_dict()) == set(schema["$defs"]["device_profile"]["properties"])


# ---------------------------------------------------------------------------------------------
# json_schema


def test_format_path() -> None:
    assert json_schema.format_path(["points", 3, "alpha", 2]) == "points[3].alpha[2]"
    assert json_schema.format_path([]) == "(top level)"
    assert json_schema.format_path(["latency_ms", "cpu 1t"]) == 'latency_ms["cpu 1t"]'
    assert json_schema.format_path([0, "a"]) == "[0].a"


def test_json_schema_basics() -> None:
    schema = {"type": "object", "properties": {"x": {"type": ["integer", "null"], "minimum": 0}}}
    assert list(json_schema.iter_errors({"x": None}, schema)) == []
    assert list(json_schema.iter_errors({"x": 2.0}, schema)) == []
    with pytest.raises(json_schema.ValidationError, match=r"x: expected integer or null, got boolean"):
        json_schema.validate({"x": True}, schema)
    assert [e.keyword for e in json_schema.iter_errors({"x": -1}, schema)] == ["minimum"]
    assert list(json_schema.iter_errors(1, True)) == []
    assert [e.keyword for e in json_schema.iter_errors(1, False)] == ["false"]
    assert list(json_schema.iter_errors(True, {"enum": [1]}))  # booleans never equal numbers
    assert not list(json_schema.iter_errors(1.0, {"const": 1}))


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"anyOf": [{"type": "string"}]}, "unsupported keyword"),
        ({"properties": {"a": {"format": "date-time"}}}, "unsupported keyword"),
        ({"type": "float"}, "unknown type"),
        ({"$ref": "#/$defs/missing"}, "points nowhere"),
        ({"$ref": "other.json#/x"}, "same-document"),
        ({"items": 3}, "not a schema"),
    ],
)
def test_check_schema_refuses_what_it_cannot_check(schema: dict[str, Any], words: str) -> None:
    with pytest.raises((ValueError, TypeError), match=words):
        json_schema.check_schema(schema)


# hypothesis: valid manifests, then random mutations; json_schema must agree with jsonschema.

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, width=64)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)

# Values at the edges of the schema's bounds, patterns and types.
_EDGE_VALUES = [
    -1,
    0,
    0.5,
    1,
    1.0,
    2,
    100,
    100.5,
    10**20,
    True,
    False,
    None,
    "",
    "1",
    "a/b",
    "p.1",
    ".p",
    [],
    {},
    "0" * 64,
    "F" * 64,
    "2026-01-01T00:00:00Z",
    "2026-01-01",
    [1, 2, 3],
    [3, 32, 32, 1],
    ["x"],
]

_DELETE, _ADD_FIELD = object(), object()


@st.composite
def valid_manifests(draw: st.DrawFn) -> dict[str, Any]:
    dims = draw(st.integers(1, 4))
    low = draw(st.floats(0.05, 1.0))
    high = draw(st.floats(low, 1.0))
    full = draw(st.lists(st.integers(1, 64), min_size=dims, max_size=dims))
    space = WidthSpace(
        tuple(f"g{i}" for i in range(dims)), tuple(full), low, high, draw(st.none() | st.integers(1, 8))
    )
    profiles = draw(st.lists(st.sampled_from(["cpu1", "cpu4", "cuda", "phone 1"]), max_size=3, unique=True))
    manifest = make_manifest(space, n_points=draw(st.integers(1, 4)))
    manifest["device_profiles"] = [dict(manifest["device_profiles"][0], name=p) for p in profiles]
    for point in manifest["points"]:
        alpha = [draw(st.floats(low, high)) for _ in range(dims)]
        point.update(
            alpha=alpha,
            channels=space.channels(alpha),
            top1=draw(st.none() | st.floats(0, 100)),
            loss=draw(st.none() | st.floats(0, 10)),
        )
        for key in ("latency_ms", "energy_mj", "latency_predicted_ms"):
            point[key] = {p: draw(st.floats(0, 1e3)) for p in profiles if draw(st.booleans())}
            if draw(st.booleans()):
                del point[key]
    for key in ("history_size", "extra"):
        if draw(st.booleans()):
            del manifest["training"][key]
    return manifest


def _locations(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _locations(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _locations(value, (*path, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated_manifests(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(valid_manifests()))
    # A seeded Random spreads picks evenly over the document (hypothesis' own draws favour index 0).
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 4))):
        path = rng.choice(_locations(doc)[1:])  # never the root: the mutated doc stays an object
        op = rng.choice(["replace", "edge", "edge", "delete", "add", "append", "truncate"])
        parent = _get(doc, path[:-1])
        target = _get(doc, path)
        if op == "replace":
            parent[path[-1]] = draw(_JSON)
        elif op == "edge":
            # A copy: an edge list or object placed as it is would be shared, and a later "append" or
            # "edge" into it grows the constant or puts it inside itself (hypothesis found such a cycle).
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(_EDGE_VALUES)))
        elif op == "delete":
            del parent[path[-1]]
        elif op == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(["id", "alpha", "extra", "name", "zz", "kwargs"]))] = draw(_JSON)
        elif op == "append" and isinstance(target, list):
            target.append(draw(_JSON))
        elif op == "truncate" and isinstance(target, list):
            del target[draw(st.integers(0, len(target))) :]
    return doc


def _both_verdicts(doc: Any) -> tuple[list[tuple[tuple[Any, ...], str]], list[tuple[tuple[Any, ...], str]]]:
    schema = manifest_schema()
    ours = sorted((e.path, e.keyword) for e in json_schema.iter_errors(doc, schema))
    theirs = sorted(
        (tuple(e.absolute_path), e.validator)
        for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)
    )
    return ours, theirs


@pytest.mark.slow
def test_json_schema_agrees_with_jsonschema_on_every_edge_value_everywhere() -> None:
    """Each location of a small manifest deleted, set to each edge value, or (objects) given an unknown
    field: both validators agree, and every keyword of the schema fails somewhere."""
    base = with_format_2(make_manifest(WidthSpace(("a", "b"), (8, 16), 0.5, 1.0, None), n_points=1))
    seen_keywords: set[str] = set()
    for path in _locations(base):
        for value in [_DELETE, _ADD_FIELD, *_EDGE_VALUES]:
            doc = copy.deepcopy(base)
            target = _get(doc, path)
            if value is _ADD_FIELD:
                if not isinstance(target, dict):
                    continue
                target["zz"] = 1
            elif not path:
                continue
            elif value is _DELETE:
                del _get(doc, path[:-1])[path[-1]]
            else:
                _get(doc, path[:-1])[path[-1]] = copy.deepcopy(value)
            ours, theirs = _both_verdicts(doc)
            assert ours == theirs, (path, value)
            seen_keywords.update(keyword for _, keyword in ours)
    assert seen_keywords == {
        "type",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "minLength",
        "pattern",
    }


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_manifests())
def test_valid_manifests_pass_both_validators_and_round_trip(manifest: dict[str, Any]) -> None:
    ours, theirs = _both_verdicts(manifest)
    assert ours == theirs == []
    check_manifest_consistency(manifest)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.front.json"
        save_manifest(path, manifest)
        assert load_manifest(path, verify_weights=False) == manifest


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_manifests())
def test_json_schema_agrees_with_jsonschema_on_mutations(doc: dict[str, Any]) -> None:
    ours, theirs = _both_verdicts(doc)
    assert ours == theirs
