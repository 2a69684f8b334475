"""Front: the typed manifest. Round trips, creation, profile merging, and every writer's output validating."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pareco_runtime import Front, FrontPoint, SlimmableRuntime, build_model
from pareco_runtime.manifest import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    DatasetSpec,
    DeviceProfile,
    TrainingRecord,
    load_manifest,
    save_manifest,
    write_front,
)
from pareco_runtime.untrusted import FormatError, sha256_file

from .manifests import make_manifest


def _profile(name: str, threads: int = 1) -> DeviceProfile:
    return DeviceProfile(name=name, runtime="torch", threads=threads, batch=1, host="box", date="2026-01-01")


def _assert_canonical(path: Path, scratch: Path) -> None:
    """The file validates, and loading then saving it (to ``scratch``) gives the same bytes."""
    load_manifest(path, verify_weights=False)
    again = scratch / "again.front.json"
    Front.load(path, verify_weights=False).save(again)
    assert again.read_bytes() == path.read_bytes()


def test_load_save_round_trip_is_byte_identical(tmp_path: Path) -> None:
    path = tmp_path / "m.front.json"
    save_manifest(path, make_manifest())
    front = Front.load(path, verify_weights=False)
    assert front.path == path and front.to_dict() == json.loads(path.read_text())
    _assert_canonical(path, tmp_path)


def test_typed_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.front.json"
    save_manifest(path, make_manifest())
    front = Front.load(path, verify_weights=False)
    assert front.architecture.arch == "resnet20" and front.architecture.kwargs == {
        "width": 1,
        "num_classes": 10,
    }
    assert front.width_space == build_model("resnet20").space
    assert front.dataset.input_size == (3, 32, 32) and front.dataset.class_names[0] == "c0"
    assert front.training.algorithm == "pareco" and front.training.history_size == 32
    assert front.profile_names == ["cpu1"] and isinstance(front.device_profiles[0], DeviceProfile)
    assert all(isinstance(p, FrontPoint) for p in front.points) and front.points[0].latency_ms == {
        "cpu1": 1.5
    }
    assert front.weights_file == "model.safetensors" and front.weights_sha256 == "0" * 64
    assert front.weights_path == tmp_path / "model.safetensors"


def test_old_manifest_without_optional_fields_loads(tmp_path: Path) -> None:
    manifest = make_manifest()
    del manifest["training"]["history_size"], manifest["training"]["extra"]
    for key in ("versions", "energy_source"):
        del manifest["device_profiles"][0][key]
    for key in ("top1", "loss", "energy_mj", "latency_predicted_ms"):
        del manifest["points"][1][key]
    path = tmp_path / "m.front.json"
    save_manifest(path, manifest)
    front = Front.load(path, verify_weights=False)
    assert front.training.history_size is None and front.training.extra == {}
    assert front.points[1].top1 is None and front.device_profiles[0].energy_source is None
    front.save(tmp_path / "saved.front.json")  # written in full, still valid
    load_manifest(tmp_path / "saved.front.json", verify_weights=False)


def test_record_profile_merges_without_losing_other_profiles(tmp_path: Path) -> None:
    path = tmp_path / "m.front.json"
    save_manifest(path, make_manifest())
    front = Front.load(path, verify_weights=False)
    ids = [p.id for p in front.points]
    front.record_profile(
        _profile("dev"), {ids[0]: 2.0, ids[1]: 3.0}, {ids[0]: 0.5}, predicted_ms=dict.fromkeys(ids, 9.0)
    )
    front.record_profile(_profile("dev", threads=4), {ids[0]: 1.5})
    front.save()
    again = Front.load(path, verify_weights=False)
    assert [(p.name, p.threads) for p in again.device_profiles] == [("cpu1", 1), ("dev", 4)]
    pts = {p.id: p for p in again.points}
    assert pts[ids[0]].latency_ms == {"cpu1": 1.5, "dev": 1.5} and pts[ids[1]].latency_ms["dev"] == 3.0
    assert pts[ids[0]].energy_mj == {"cpu1": 3.0, "dev": 0.5}
    assert "dev" not in pts[ids[0]].latency_predicted_ms  # measured points get no prediction
    assert pts[ids[2]].latency_predicted_ms == {"dev": 9.0} and pts[ids[2]].latency_ms == {"cpu1": 3.5}
    with pytest.raises(ValueError, match="no point 'nope'"):
        front.record_profile(_profile("dev"), {"nope": 1.0})


def test_save_refuses_an_invalid_front_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.front.json"
    save_manifest(path, make_manifest())
    front = Front.load(path, verify_weights=False)
    front.points[0].latency_ms["unlisted"] = 1.0
    with pytest.raises(FormatError, match="unlisted"):
        front.save(tmp_path / "bad.front.json")
    assert not (tmp_path / "bad.front.json").exists()
    with pytest.raises(ValueError, match="never loaded or saved"):
        Front.from_dict(make_manifest()).save()


def test_write_front_creates_both_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", input_size=16, num_classes=4)
    alpha = model.space.uniform(1.0)
    points = [
        FrontPoint(
            id="p00",
            alpha=alpha,
            channels=model.channels(alpha),
            mflops=model.macs(alpha) / 1e6,
            params=model.params(alpha),
        )
    ]
    stats = {
        "p00": {
            name: (model.get_submodule(name).running_mean, model.get_submodule(name).running_var)
            for name in model.bn_names
        }
    }
    dataset = DatasetSpec(
        name="random", input_size=(3, 16, 16), mean=[0.0] * 3, std=[1.0] * 3, class_names=["a", "b", "c", "d"]
    )
    training = TrainingRecord(algorithm="slim", epochs=1, seed=3, wall_time_s=1.5)
    path = write_front(tmp_path / "out", model, points, stats, dataset, training)
    assert path == tmp_path / "out" / MANIFEST_NAME
    front = Front.load(path)
    assert front.format_version == 1 and front.pareco_version  # a front without format 2's fields
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", front.created)
    assert front.weights_file == WEIGHTS_NAME and front.weights_sha256 == sha256_file(
        path.with_name(WEIGHTS_NAME)
    )
    assert front.architecture.to_dict() == model.describe() and front.dataset == dataset
    assert front.training == training and front.device_profiles == []
    _assert_canonical(path, tmp_path)
    rt = SlimmableRuntime.load(path)
    assert rt.front == front and rt.manifest == front.to_dict() and rt.manifest_path == path
    assert rt.input_size == (3, 16, 16) and rt.class_names == ["a", "b", "c", "d"]
    rt.front.record_profile(_profile("dev"), {"p00": 2.0})
    assert rt.select("3ms@dev").id == "p00"


def test_every_writer_writes_a_canonical_valid_manifest(tiny_front: Path, tmp_path: Path) -> None:
    from bench.device import write_profile
    from benchmarks.untrained_front import write_untrained_front

    _assert_canonical(tiny_front, tmp_path)  # training.front_builder.write_outputs
    untrained = write_untrained_front(
        "resnet20", [0.5, 1.0], tmp_path / "untrained", input_size=16, num_classes=4
    )
    _assert_canonical(untrained, tmp_path)
    write_profile(untrained, _profile("dev"), {"p00": 1.0}, {"p01": 2.0}, {"p01": 3.0})
    _assert_canonical(untrained, tmp_path)
    assert Front.load(untrained).points[1].latency_predicted_ms == {"dev": 3.0}
