"""``pareco eval`` (a front on a test set) and ``pareco calibrate`` (an off-front point), and the BN statistics
files that hold a calibrated point's statistics beside the weight file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

from pareco_runtime.manifest import (
    Front,
    check_manifest_consistency,
    manifest_format,
    manifest_schema,
    save_manifest,
)
from pareco_runtime.runtime import SlimmableRuntime
from pareco_runtime.untrusted import FormatError, sha256_file
from pareco_runtime.weights_file import save_weights

from .manifests import front_files, make_manifest, with_format_2

DATA = "synthetic:256:4"  # the tiny front's own data
ALPHA = "0.5,0.316,0.6,0.4,0.8,0.316"  # no point of the tiny front (its points are uniform widths)


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stderr[-1500:]
    return json.loads(result.stdout)


def _one_line_error(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-1500:]
    return lines[0]


def _validation_images() -> tuple[np.ndarray, list[int]]:
    """The tiny front's validation images as uint8 HWC pixels, with their labels (the normalisation undone)."""
    from training.data import load_data

    data = load_data(DATA, image_size=16, seed=0, device="cpu")
    mean = torch.tensor(data.info.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(data.info.std).view(1, 3, 1, 1) * 255
    xs, ys = zip(*data.val_batches(500))
    pixels = (torch.cat(xs) * std + mean).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy(), torch.cat(ys).tolist()


def _write_tree(root: Path, pixels: np.ndarray, labels: list[int], names: list[str]) -> None:
    for i, (image, label) in enumerate(zip(pixels, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")  # PNG: the pixels come back exactly


CLASSES = [f"class{i}" for i in range(4)]


@pytest.fixture(autouse=True)
def _data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded image folders are cached under the test's own folder, not the user's ~/.cache."""
    monkeypatch.setenv("PARECO_CACHE", str(tmp_path / "cache"))


class TestEval:
    def test_the_front_on_its_own_validation_images_scores_its_manifest_top1(
        self, tiny_front: Path, cli
    ) -> None:
        before = front_files(tiny_front.parent)
        report = _json(cli("eval", str(tiny_front), "--data", DATA, "--json"))
        points = Front.load(tiny_front).points
        assert [r["id"] for r in report["points"]] == [p.id for p in points]
        for row, p in zip(report["points"], points):
            assert round(row["top1"], 4) == p.top1 and round(row["loss"], 6) == p.loss, row
        assert report["split"] == {"name": "val", "images": 51, "data": DATA, "fraction": 0.2, "seed": 0}
        assert report["name"] == "synthetic-val" and report["written"] is False
        assert front_files(tiny_front.parent) == before, "eval without --write changes no file"

    def test_a_test_folder_is_prepared_with_the_manifest_normalisation(
        self, tiny_front: Path, tmp_path: Path, cli
    ) -> None:
        pixels, labels = _validation_images()
        _write_tree(tmp_path / "tree" / "test", pixels, labels, CLASSES)
        # A few training images only: their own mean and std are far from the manifest's.
        _write_tree(tmp_path / "tree" / "train", pixels[:8] // 2, [0, 1, 2, 3] * 2, CLASSES)
        report = _json(cli("eval", str(tiny_front), "--data", str(tmp_path / "tree"), "--json"))
        assert report["split"] == {"name": "test", "images": 51, "data": str(tmp_path / "tree")}
        for row, p in zip(report["points"], Front.load(tiny_front).points):
            assert round(row["top1"], 4) == p.top1 and row["loss"] == pytest.approx(p.loss, abs=2e-6), row

    def test_a_plain_class_tree_is_evaluated_whole_and_says_so(
        self, tiny_front: Path, tmp_path: Path, cli
    ) -> None:
        pixels, labels = _validation_images()
        _write_tree(tmp_path / "mine", pixels[:30], labels[:30], CLASSES)
        result = cli("eval", str(tiny_front), "--data", str(tmp_path / "mine"))
        assert result.returncode == 0, result.stderr
        assert (
            "all: every one of the 30 images of" in result.stdout
            and "no test/ or val/ folder" in result.stdout
        )
        report = _json(cli("eval", str(tiny_front), "--data", str(tmp_path / "mine"), "--json"))
        assert report["split"]["name"] == "all" and report["split"]["images"] == 30
        assert report["name"] == "mine-all"

    def test_data_of_other_classes_is_refused_naming_both(
        self, tiny_front: Path, tmp_path: Path, cli
    ) -> None:
        pixels, labels = _validation_images()
        _write_tree(tmp_path / "pets", pixels[:12], labels[:12], ["cat", "dog", "eel", "fox"])
        line = _one_line_error(cli("eval", str(tiny_front), "--data", str(tmp_path / "pets")))
        assert "its classes (cat, dog, eel, fox) do not match those of" in line
        assert "(class0, class1, class2, class3)" in line
        # The four classes and four more: a long list is cut short, with its count.
        many = [*CLASSES, "extra4", "extra5", "extra6", "extra7"]
        _write_tree(tmp_path / "more", pixels[:16], [i % 8 for i in range(16)], many)
        line = _one_line_error(cli("eval", str(tiny_front), "--data", str(tmp_path / "more")))
        assert (
            "its classes (class0, class1, class2, class3, extra4, extra5, ... 8 in all) do not match" in line
        )

    def test_write_records_a_named_evaluation_and_replaces_one_of_the_same_name(
        self, front_copy: Path, cli
    ) -> None:
        weights_before = (front_copy.parent / "model.safetensors").read_bytes()
        first = _json(
            cli("eval", str(front_copy), "--data", DATA, "--split", "held-out", "--write", "--json")
        )
        assert first["written"] is True
        again = cli("eval", str(front_copy), "--data", DATA, "--split", "held-out", "--write")
        assert again.returncode == 0 and "recorded in" in again.stdout
        manifest = json.loads(front_copy.read_text())
        assert manifest["format_version"] == 2
        assert manifest["dataset"]["eval_splits"] == {"held-out": first["split"]}
        for point, row in zip(manifest["points"], first["points"]):
            assert point["eval_top1"] == {"held-out": round(row["top1"], 4)}
            assert point["eval_loss"] == {"held-out": round(row["loss"], 6)}
        assert (front_copy.parent / "model.safetensors").read_bytes() == weights_before
        assert (
            SlimmableRuntime.load(front_copy).points[0].eval_top1["held-out"]
            == manifest["points"][0]["eval_top1"]["held-out"]
        )


def _streamed_front(root: Path, resize: int) -> Path:
    """An untrained 72-px ResNet20 front whose images stream (a shorter-side resize to ``resize`` and a centre
    crop), and beside it ``data/`` with train/ and val/ folders of 90x120 images; the manifest's path."""
    from benchmarks.untrained_front import write_untrained_front

    manifest = write_untrained_front("resnet20", [0.5, 1.0], root / "front", input_size=72, num_classes=4)
    with Front.update(manifest) as front:
        front.dataset.class_names = list(CLASSES)
        front.dataset.preprocess = {"mode": "shorter_side", "resize": resize, "size": [72, 72]}
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 8)):
        pixels = rng.integers(0, 256, (count, 90, 120, 3), dtype=np.uint8)
        _write_tree(root / "data" / split, pixels, [i % 4 for i in range(count)], CLASSES)
    return manifest


class TestStreamedImages:
    @pytest.mark.slow
    def test_streamed_images_are_normalised_with_the_manifest_mean_and_std(self, tmp_path: Path, cli) -> None:
        manifest = _streamed_front(tmp_path, resize=82)  # 82: int(72 / 0.875), the stream loader's resize
        first = _json(cli("eval", str(manifest), "--data", str(tmp_path / "data"), "--json"))
        assert first["split"] == {"name": "val", "images": 8, "data": str(tmp_path / "data")}
        with Front.update(manifest) as front:
            front.dataset.mean = [0.2, 0.2, 0.2]
        second = _json(cli("eval", str(manifest), "--data", str(tmp_path / "data"), "--json"))
        assert all(a["loss"] != b["loss"] for a, b in zip(first["points"], second["points"]))

    @pytest.mark.slow
    def test_a_resize_the_loader_would_not_make_is_refused(self, tmp_path: Path, cli) -> None:
        manifest = _streamed_front(tmp_path, resize=100)
        line = _one_line_error(cli("eval", str(manifest), "--data", str(tmp_path / "data")))
        assert "its images would be prepared as {'mode': 'shorter_side', 'resize': 82," in line
        assert "but the front's network was evaluated on {'mode': 'shorter_side', 'resize': 100," in line


@pytest.fixture
def calibrated(front_copy: Path, cli) -> tuple[Path, dict[str, Any]]:
    """The tiny front's copy with the off-front point c00 (ALPHA) calibrated into it; (manifest, calibrate's JSON)."""
    return front_copy, _json(cli("calibrate", str(front_copy), "--alpha", ALPHA, "--data", DATA, "--json"))


class TestCalibrate:
    def test_the_point_is_added_off_front_with_a_statistics_file_of_its_own(
        self, tiny_front: Path, calibrated: tuple[Path, dict[str, Any]]
    ) -> None:
        manifest, report = calibrated
        front = Front.load(manifest)
        point = front.points[-1]
        assert len(front.points) == len(Front.load(tiny_front).points) + 1
        assert point.id == "c00" and point.origin == "calibrated" and report["point"] == point.to_dict()
        model = SlimmableRuntime.load(manifest).model
        assert point.mflops == model.macs(point.alpha) / 1e6 and point.params == model.params(point.alpha)
        assert point.top1 is not None and point.selection_top1 is not None and point.loss is not None
        stats = manifest.parent / "model.c00.bn.safetensors"
        assert report["bn_stats_file"] == str(stats)
        assert [e.to_dict() for e in front.stats_files] == [
            {"file": stats.name, "sha256": sha256_file(stats), "points": ["c00"]}
        ]
        weights = manifest.parent / "model.safetensors"
        assert weights.read_bytes() == (tiny_front.parent / "model.safetensors").read_bytes(), (
            "weights not rewritten"
        )
        assert stats.stat().st_size < weights.stat().st_size / 50, "the shared weights are not copied"

    def test_show_marks_it_off_front(self, calibrated: tuple[Path, dict[str, Any]], cli) -> None:
        shown = cli("show", str(calibrated[0]))
        assert shown.returncode == 0, shown.stderr
        assert "off-front (added by pareco calibrate, not chosen by training): c00" in shown.stdout

    def test_a_trained_points_config_recalibrated_gives_its_stored_statistics(self, tiny_front: Path) -> None:
        from training.extend import calibrate_point, calibration_settings, selection_fraction
        from training.tasks import front_task

        rt = SlimmableRuntime.load(tiny_front)
        front = rt.front
        task = front_task(front)
        data = task.front_data(DATA, front, selection_fraction(front))
        evaluate, selection_evaluate = task.evaluators(data)
        batches, batch_size = calibration_settings(front)
        for trained in (front.points[0], front.points[-1]):
            point, stats = calibrate_point(
                rt,
                trained.alpha,
                "again",
                lambda: data.calib_batches(batch_size, batches, front.training.seed),
                evaluate,
                selection_evaluate=selection_evaluate,
            )
            assert (point.top1, point.loss, point.selection_top1) == (
                trained.top1,
                trained.loss,
                trained.selection_top1,
            )
            for (mean, var), name in zip(rt.bn_stats(trained), rt.model.bn_names):
                assert torch.equal(stats[name][0], mean) and torch.equal(stats[name][1], var), name

    def test_it_selects_switches_and_slices_like_a_trained_point(
        self, calibrated: tuple[Path, dict[str, Any]], cli
    ) -> None:
        manifest, _ = calibrated
        # Measured on this host for c00 alone: a latency budget only it can meet.
        bench = cli("bench", str(manifest), "--points", "c00", "--warmup", "1", "--runs", "3", "--update",
                    "--profile", "here")  # fmt: skip
        assert bench.returncode == 0, bench.stderr[-1500:]
        rt = SlimmableRuntime.load(manifest)
        c00 = rt.point("c00")
        assert rt.select("1000ms@here") is c00
        assert rt.switch("1000ms@here") is c00 and rt.active is c00
        x = torch.randn(3, *rt.input_size)
        assert torch.equal(rt(x), rt.standalone(c00)(x))
        assert tuple(rt.standalone(c00).get_submodule("conv1").weight.shape) == (c00.channels[0], 3, 3, 3)
        chosen = _json(cli("select", str(manifest), "--budget", "1000ms@here", "--json"))
        assert chosen["point"]["id"] == "c00" and chosen["met"] is True

    @pytest.mark.slow
    def test_it_exports_to_onnx_from_the_command_line(
        self, calibrated: tuple[Path, dict[str, Any]], tmp_path: Path, cli
    ) -> None:
        manifest, _ = calibrated
        out = tmp_path / "exports"
        result = cli("export", str(manifest), "--point", "c00", "--onnx", "--out", str(out))
        assert result.returncode == 0, result.stderr[-1500:]
        record = json.loads((out / "export.json").read_text())
        assert [(e["point"], e["format"]) for e in record] == [("c00", "onnx")]
        assert (out / "c00.onnx").is_file() and record[0]["max_abs_diff"] <= 1e-4

    def test_evaluation_covers_calibrated_points(self, calibrated: tuple[Path, dict[str, Any]], cli) -> None:
        manifest, report = calibrated
        rows = _json(cli("eval", str(manifest), "--data", DATA, "--json"))["points"]
        row = next(r for r in rows if r["id"] == "c00")
        assert round(row["top1"], 4) == report["point"]["top1"] == row["manifest_top1"]

    def test_a_second_point_gets_the_next_id_and_its_own_file(
        self, calibrated: tuple[Path, dict[str, Any]], cli
    ) -> None:
        manifest, _ = calibrated
        second = _json(cli("calibrate", str(manifest.parent), "--width", "0.6", "--data", DATA, "--json"))
        assert second["point"]["id"] == "c01"
        front = Front.load(manifest)
        assert [e.points for e in front.stats_files] == [["c00"], ["c01"]]
        assert {p.id for p in SlimmableRuntime.load(manifest).points} >= {"c00", "c01"}

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (("--width", "0.316"), "point p00's sub-network"),
            (("--alpha", ALPHA, "--id", "p01"), "--id p01: the front already has a point of that id"),
            (("--alpha", "0.5,0.5"), "--alpha 0.5,0.5: config has 2 width multipliers but this space has 6"),
            (("--width", "0.1"), "--width 0.1: uniform width 0.1 is outside the space [0.316, 1]"),
            (("--width", "0.5", "--alpha", ALPHA), "--alpha / --width: give exactly one of them"),
        ],
    )
    def test_a_refused_config_writes_nothing(
        self, front_copy: Path, cli, args: tuple[str, ...], words: str
    ) -> None:
        before = front_files(front_copy.parent)
        line = _one_line_error(cli("calibrate", str(front_copy), *args, "--data", DATA))
        assert words in line, line
        assert front_files(front_copy.parent) == before

    def test_a_manifest_that_cannot_be_saved_leaves_no_statistics_file(
        self, front_copy: Path, cli, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        before = front_files(front_copy.parent)

        def full_disk(self: Front, path: Any = None) -> Path:
            raise OSError(28, "No space left on device", str(front_copy))

        monkeypatch.setattr(Front, "save", full_disk)
        line = _one_line_error(cli("calibrate", str(front_copy), "--alpha", ALPHA, "--data", DATA))
        assert "no space left" in line
        assert front_files(front_copy.parent) == before, "neither the manifest nor a statistics file changed"


class TestStatisticsFileBinding:
    def test_a_changed_statistics_file_is_refused(self, calibrated: tuple[Path, dict[str, Any]], cli) -> None:
        manifest, _ = calibrated
        stats = manifest.parent / "model.c00.bn.safetensors"
        stats.write_bytes(stats.read_bytes()[:-4] + b"\x00\x00\x80\x3f")
        with pytest.raises(
            FormatError, match=r"model.c00.bn.safetensors: BN statistics file changed or corrupt \(sha256"
        ):
            SlimmableRuntime.load(manifest)
        assert "BN statistics file changed or corrupt" in _one_line_error(
            cli("select", str(manifest), "--budget", "5MFLOPs")
        )

    def test_statistics_of_another_weight_file_are_refused(
        self, calibrated: tuple[Path, dict[str, Any]], cli
    ) -> None:
        manifest, _ = calibrated
        stats = manifest.parent / "model.c00.bn.safetensors"
        pairs = SlimmableRuntime.load(manifest).bn_stats("c00")
        names = SlimmableRuntime.load(manifest).model.bn_names
        # The same statistics, but bound to other weights, and a manifest that lists the file as it is now.
        save_weights(
            stats, {}, {"c00": dict(zip(names, pairs))}, {"weights_sha256": "0" * 64, "points": ["c00"]}
        )
        with Front.update(manifest) as front:
            front.stats_files[0].sha256 = sha256_file(stats)
        line = _one_line_error(cli("export", str(manifest), "--point", "c00", "--onnx"))
        assert (
            "model.c00.bn.safetensors: BN statistics of another weight file (calibrated for sha256 000000000000"
            in line
        )
        assert "restore the weight file it was made for, or calibrate its points again" in line

    def test_a_missing_statistics_file_is_refused(self, calibrated: tuple[Path, dict[str, Any]]) -> None:
        manifest, _ = calibrated
        (manifest.parent / "model.c00.bn.safetensors").unlink()
        with pytest.raises(FormatError, match=r"BN statistics file .*model\.c00\.bn\.safetensors not found"):
            SlimmableRuntime.load(manifest)

    def test_the_manifest_is_canonical_and_in_format_2(
        self, calibrated: tuple[Path, dict[str, Any]], cli
    ) -> None:
        manifest, _ = calibrated
        assert _json(cli("eval", str(manifest), "--data", DATA, "--write", "--json"))["written"]
        text = manifest.read_text()
        front = Front.load(manifest)
        assert front.format_version == 2 and json.loads(text)["format_version"] == 2
        front.save(manifest.with_name("again.front.json"))
        assert manifest.with_name("again.front.json").read_text() == text
        assert all("synthetic-val" in p.eval_top1 for p in front.points)


def _rename_point(m: dict[str, Any]) -> None:
    m["weights"]["bn_stats"][0]["points"] = ["p9"]


def _list_twice(m: dict[str, Any]) -> None:
    m["weights"]["bn_stats"].append(dict(m["weights"]["bn_stats"][0], file="other.bn.safetensors"))


class TestFormat2Rules:
    """The cross-field rules of the manifest's format-2 fields (what a schema cannot say)."""

    def test_a_manifest_using_every_format_2_field_is_valid(self) -> None:
        manifest = with_format_2(make_manifest())
        jsonschema.Draft202012Validator(manifest_schema()).validate(manifest)
        check_manifest_consistency(manifest)
        assert manifest_format(manifest) == 2 and manifest_format(make_manifest()) == 1

    @pytest.mark.parametrize(
        ("change", "words"),
        [
            (lambda m: m["weights"]["bn_stats"][0].update(file="../x.bn.safetensors"), "outside its folder"),
            (lambda m: m["weights"]["bn_stats"][0].update(file="model.safetensors"), "is the weight file"),
            (_rename_point, "lists point 'p9', which points lacks"),
            (_list_twice, "point 'p3': its BN statistics are listed in two weights.bn_stats files"),
            (lambda m: m["points"][0]["eval_top1"].update(other=1.0), "names evaluation 'other'"),
            (
                lambda m: m.update(format_version=1),
                "format_version 1 cannot hold weights.bn_stats (format 2)",
            ),
        ],
    )
    def test_a_broken_rule_is_one_line_naming_it(self, tmp_path: Path, change: Any, words: str) -> None:
        manifest = with_format_2(make_manifest())
        change(manifest)
        with pytest.raises(FormatError, match=re.escape(words)) as caught:
            save_manifest(tmp_path / "m.front.json", manifest)
        assert "\n" not in str(caught.value)
        assert not (tmp_path / "m.front.json").exists()
