"""int8 front points: quantized programs exported, loaded and scored in their runtimes, recorded in the
manifest as variants, timed by bench, and chosen among by budgets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pareco_runtime import Front, SlimmableRuntime
from pareco_runtime.budget import BudgetUnmetError, choose, select
from pareco_runtime.manifest import DeviceProfile, FrontPoint, Variant, load_manifest, save_manifest
from pareco_runtime.untrusted import FormatError

pytest.importorskip("onnxruntime")

SPLIT = {"name": "test", "images": 100}
SYNTHETIC = "synthetic:256:4"  # the tiny front's data: its validation hold-out measures top-1


def _variant(top1: float, fp32: float, ms: dict[str, float], backend: str = "executorch") -> Variant:
    return Variant("int8", backend, top1, fp32, dict(SPLIT), 1000, ms)


def _points() -> list[FrontPoint]:
    """Two fp32 points timed on 'phone'; the wide one's int8 program runs faster than the narrow fp32 one."""
    narrow = FrontPoint("p0", [0.5], [8], 10.0, 100, top1=60.0, latency_ms={"phone": 1.0})
    wide = FrontPoint("p1", [1.0], [16], 40.0, 400, top1=70.0, latency_ms={"phone": 2.0})
    wide.variants = [_variant(69.0, 70.0, {"phone": 0.9}), _variant(68.0, 70.0, {}, "onnxruntime")]
    return [narrow, wide]


class TestChoice:
    def test_a_latency_budget_takes_the_int8_program_that_beats_a_narrower_fp32_one(self) -> None:
        chosen = choose(_points(), "1ms@phone")
        assert (chosen.point.id, chosen.precision, chosen.variant.backend) == ("p1", "int8", "executorch")
        assert chosen.as_point().top1 == 69.0 and chosen.as_point().latency_ms == {"phone": 0.9}
        assert chosen.describe() == "p1 (int8, executorch)"

    def test_precision_restricts_the_choice(self) -> None:
        assert choose(_points(), "1ms@phone", precision="fp32").point.id == "p0"
        assert choose(_points(), "100MFLOPs", precision="int8").variant.backend == "executorch"
        with pytest.raises(ValueError, match="precision must be one of fp32, int8"):
            choose(_points(), "1ms@phone", precision="int4")

    def test_fp32_wins_ties_and_a_budget_without_latency_ignores_nothing(self) -> None:
        points = _points()
        points[1].variants[0].top1 = 70.0  # no drop: as good as fp32
        chosen = choose(points, "100MFLOPs")
        assert chosen.variant is None and chosen.point.id == "p1"

    def test_an_unmet_budget_names_the_cheapest_program(self) -> None:
        with pytest.raises(
            BudgetUnmetError, match=re.escape("the cheapest point is 'p1/int8-executorch' at 0.9 ms")
        ):
            choose(_points(), "0.5ms@phone")

    def test_without_variants_choose_is_select(self) -> None:
        points = _points()
        for p in points:
            p.variants = []
        assert choose(points, "1ms@phone").point is select(points, "1ms@phone")
        with pytest.raises(
            ValueError, match="no point has a int8 variant; export them with `pareco export --int8"
        ):
            choose(points, "1ms@phone", precision="int8")


class TestManifestFormat:
    def test_variants_make_format_3_and_round_trip(self, front_copy: Path) -> None:
        with Front.update(front_copy) as front:
            front.record_profile(DeviceProfile("phone", "executorch", 1, 1, "h", "2026-12-03"), {})
            front.points[0].variants = [_variant(50.0, 51.0, {"phone": 0.5})]
        again = Front.load(front_copy)
        assert again.format_version == 3
        assert again.points[0].variants == [_variant(50.0, 51.0, {"phone": 0.5})]
        assert all(not p.variants for p in again.points[1:])

    @pytest.mark.parametrize(
        ("change", "words"),
        [
            (lambda p: p["variants"].append(dict(p["variants"][0])), "two int8 variants for executorch"),
            (lambda p: p["variants"][0]["latency_ms"].update(nope=1.0), "names device profile 'nope'"),
            (lambda p: p["variants"][0].update(precision="int4"), "precision"),
        ],
    )
    def test_a_broken_variant_is_refused_in_one_line(self, front_copy: Path, change, words: str) -> None:
        manifest = load_manifest(front_copy)
        manifest["format_version"] = 3
        manifest["points"][0]["variants"] = [_variant(50.0, 51.0, {}).to_dict()]
        change(manifest["points"][0])
        target = front_copy.with_name("broken.front.json")
        with pytest.raises(FormatError, match=re.escape(words)) as caught:
            save_manifest(target, manifest)
        assert "\n" not in str(caught.value) and not target.exists()


@pytest.mark.slow
def test_int8_onnx_programs_are_scored_in_onnxruntime_and_recorded(front_copy: Path, cli) -> None:
    from export import load_runner
    from export.index import read_index, recorded_exports
    from export.int8 import top1
    from training.front_data import evaluation_set

    out = front_copy.parent / "export"
    ids = [p.id for p in Front.load(front_copy).points][:2]
    r = cli("export", str(front_copy), "--point", ids[0], "--point", ids[1], "--onnx", "--int8", "--calib",
            SYNTHETIC, "--calib-batches", "2", "--max-drop", "100")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rt = SlimmableRuntime.load(front_copy)
    images = evaluation_set(SYNTHETIC, rt.front)
    records = {e["point"]: e for e in read_index(out)}
    for pid in ids:
        point = rt.point(pid)
        (variant,) = point.variants
        assert (variant.precision, variant.backend, variant.split) == ("int8", "onnxruntime", images.split)
        program = out / f"{pid}.int8.onnx"
        assert variant.bytes == program.stat().st_size
        # Measured, not copied: the file scored again in onnxruntime, and the sliced model in torch.
        assert variant.top1 == top1(load_runner("onnx", program), images.batches())
        with torch.no_grad():
            assert variant.fp32_top1 == top1(rt.standalone(point), images.batches())
        assert records[pid]["precision"] == "int8" and records[pid]["top1"] == variant.top1
        # An int8 file is never served as the fp32 program of its point.
        assert recorded_exports(out, pid, "onnx", rt.front.weights_sha256) == []
        assert recorded_exports(out, pid, "onnx", rt.front.weights_sha256, precision="int8")[0][0] == program
    assert "int8 program(s)" in r.stdout and "pareco bench" in r.stdout


@pytest.mark.slow
def test_a_badly_calibrated_program_is_refused_and_not_written(front_copy: Path) -> None:
    from export.formats import Calibration
    from export.int8 import export_int8_points, top1_score
    from training.front_data import evaluation_set

    rt = SlimmableRuntime.load(front_copy)
    point = rt.points[-1]
    images = evaluation_set(SYNTHETIC, rt.front)
    xs = torch.cat([x for x, _ in images.batches()])
    with torch.no_grad():
        labels = rt.standalone(point)(xs).argmax(1)  # the fp32 program scores 100 % on these labels
    assert len(set(labels.tolist())) > 1  # so a program with a constant output cannot
    # Ranges observed on images 10^4 times too bright: every real input quantizes to zero.
    calib = Calibration([xs * 1e4], "images scaled by 10^4")
    score = top1_score(lambda: [(xs, labels)])
    run = export_int8_points(rt, [point], ["onnx"], front_copy.parent / "export", calib,
                             score, SPLIT, max_drop=1.0)  # fmt: skip
    assert run.results == [] and len(run.refused) == 1
    assert re.search(r"below fp32's 100\.00 % \(allowed 1, --max-drop\); not written", run.refused[0])
    assert not (front_copy.parent / "export" / f"{point.id}.int8.onnx").exists()
    assert not Front.load(front_copy).points[-1].variants
    forced = export_int8_points(rt, [point], ["onnx"], front_copy.parent / "export", calib,
                                score, SPLIT, max_drop=1.0, force=True)  # fmt: skip
    assert len(forced.results) == 1 and Front.load(front_copy).points[-1].variants[0].top1 < 99.0


@pytest.mark.slow
def test_bench_times_the_int8_programs_and_select_chooses_among_them(front_copy: Path, cli) -> None:
    pid = Front.load(front_copy).points[-1].id
    r = cli("export", str(front_copy), "--point", pid, "--onnx", "--int8", "--calib", SYNTHETIC,
            "--calib-batches", "1", "--max-drop", "100")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("bench", str(front_copy), "--backend", "onnxruntime", "--points", pid, "--int8", "--update",
            "--profile", "box", "--warmup", "2", "--runs", "5", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(r.stdout)["measurements"]
    assert {m["precision"] for m in rows} == {"fp32", "int8"}
    (int8_row,) = [m for m in rows if m["precision"] == "int8"]
    assert int8_row["ratio_to_fp32"] > 0
    front = Front.load(front_copy)
    point = next(p for p in front.points if p.id == pid)
    assert point.variants[0].latency_ms == {"box": round(int8_row["median_ms"], 6)}
    budget = f"{point.variants[0].latency_ms['box'] * 1.0001:.6f}ms@box"
    r = cli("select", str(front_copy), "--budget", budget, "--precision", "int8", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    chosen = json.loads(r.stdout)
    assert (chosen["precision"], chosen["point"]["id"], chosen["variant"]["backend"]) == (
        "int8",
        pid,
        "onnxruntime",
    )
    r = cli("select", str(front_copy), "--budget", "1000MFLOPs", "--precision", "fp32", "--json")
    assert json.loads(r.stdout)["precision"] == "fp32"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ("--torchscript", "--int8", "--calib", SYNTHETIC),
            "--int8 makes ONNX, ExecuTorch, LiteRT and OpenVINO programs, not torchscript",
        ),
        (("--onnx", "--int8"), "--int8 needs --calib DATA"),
        (("--onnx", "--calib", SYNTHETIC), "--calib apply to --int8 exports only"),
    ],
)
def test_int8_options_that_cannot_go_together_are_one_line(
    tiny_front: Path, tmp_path: Path, cli, args, words
) -> None:
    r = cli("export", str(tiny_front), "--all", "--out", str(tmp_path / "e"), *args)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and words in r.stderr, r.stderr
    assert not (tmp_path / "e").exists()


def test_a_calibration_folder_without_images_is_one_line(tiny_front: Path, tmp_path: Path, cli) -> None:
    empty = tmp_path / "calib"
    (empty / "a").mkdir(parents=True)
    r = cli(
        "export",
        str(tiny_front),
        "--all",
        "--onnx",
        "--int8",
        "--calib",
        str(empty),
        "--out",
        str(tmp_path / "e"),
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert str(empty) in r.stderr and "image" in r.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_int8_executorch_program_runs_in_executorch_and_is_scored(front_copy: Path, cli) -> None:
    pytest.importorskip("executorch")
    from export import load_runner
    from export.int8 import program_forward, top1
    from training.front_data import evaluation_set

    pid = Front.load(front_copy).points[0].id
    r = cli("export", str(front_copy), "--point", pid, "--executorch", "--int8", "--calib", SYNTHETIC,
            "--calib-batches", "2", "--max-drop", "100", "--batch", "dynamic:4")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rt = SlimmableRuntime.load(front_copy)
    (variant,) = rt.point(pid).variants
    runner = load_runner("executorch", front_copy.parent / "export" / f"{pid}.int8.pte")
    assert variant.backend == "executorch"
    assert variant.top1 == top1(program_forward(runner), evaluation_set(SYNTHETIC, rt.front).batches())


@pytest.mark.slow
def test_a_program_of_several_outputs_is_scored_in_the_models_structure(tmp_path: Path) -> None:
    # A segmenter with torchvision's auxiliary head returns {"out", "aux"}; its int8 file returns two
    # arrays, which the score reads by name again.
    from export.formats import Calibration
    from export.int8 import export_int8_points
    from pareco_runtime import make_slimmable
    from tests.user_models import user_fcn_aux
    from training import build_front

    torch.manual_seed(0)
    model = make_slimmable(user_fcn_aux(), torch.randn(1, 3, 16, 16), arch="tests.user_models:user_fcn_aux")
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    built = build_front(tmp_path / "front", model, [model.space.uniform(0.5), model.space.uniform(1.0)],
                        [(images,)], lambda m: {"agree": 50.0 * float(m.alpha[0])}, metric="agree",
                        training={"algorithm": "slim", "epochs": 0, "seed": 0, "wall_time_s": 0.0})  # fmt: skip
    rt = SlimmableRuntime.load(built.manifest, model=user_fcn_aux)

    def agreement(forward: object) -> dict[str, float]:
        out = forward(images)  # type: ignore[operator]
        return {"agree": 100.0 * float((out["out"].argmax(1) == out["aux"].argmax(1)).float().mean())}

    point = rt.points[-1]
    run = export_int8_points(rt, [point], ["onnx"], tmp_path / "export", Calibration([images], "8 images"),
                             agreement, SPLIT, max_drop=100.0)  # fmt: skip
    assert run.refused == [] and len(run.results) == 1
    [variant] = Front.load(built.manifest).points[-1].variants
    with torch.no_grad():
        assert variant.fp32_metrics == agreement(rt.standalone(point))
    assert abs(variant.metrics["agree"] - variant.fp32_metrics["agree"]) < 25.0
