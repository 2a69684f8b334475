"""Segmentation and detection fronts measured again by their task: ``pareco eval`` reports mIoU / mAP50
per point, ``calibrate`` and ``specialize`` make points ranked by them, ``export --int8 --max-drop``
keeps or refuses programs by the drop of the front's metric."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from pareco_runtime.latency_table import lut_path
from pareco_runtime.manifest import Front, Metric, Variant
from pareco_runtime.pareto import non_dominated
from pareco_runtime.runtime import SlimmableRuntime

from .latency_tables import synthetic_table
from .test_task_detection import rectangles
from .test_task_segmentation import FCN, shapes

# (task, data maker, --arch, --model for the commands: the FCN is the user's own code)
TASKS = {
    "segmentation": (shapes, FCN, ("--model", FCN)),
    "detection": (rectangles, "tiny_detector", ()),
}


@pytest.fixture(scope="module")
def task_fronts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """One tiny front per task, trained once for the module: (its data folder, its manifest) by task."""
    from training.config import TrainConfig
    from training.loop import train

    fronts = {}
    for task, (make, arch, _) in TASKS.items():
        root = tmp_path_factory.mktemp(task)
        cfg = TrainConfig(
            task=task, data=str(make(root / "data")), arch=arch, epochs=2, batch_size=8, candidates=4,
            calib_batches=1, calib_batch_size=8, lr=0.05, threads=1, epoch_eval=0,
        )  # fmt: skip
        fronts[task] = (root / "data", train(cfg, root / "run", show_progress=False))
    return fronts


def _copy(front: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    data, manifest = front
    shutil.copytree(manifest.parent, tmp_path / "run")
    return data, tmp_path / "run" / manifest.name


def _point(front: Front, pid: str) -> Any:
    return next(p for p in front.points if p.id == pid)


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_eval_reports_each_points_metric_as_training_measured_it(task_fronts, task: str, cli) -> None:
    data, manifest = task_fronts[task]
    front = Front.load(manifest)
    report = _json(cli("eval", str(manifest), "--data", str(data), *TASKS[task][2], "--json"))
    assert report["metric"] == front.metric.to_dict() and report["split"]["name"] == "val"
    for row, p in zip(report["points"], front.points):
        assert row["id"] == p.id and row["metrics"] == pytest.approx(p.metrics, rel=1e-9)
    table = cli("eval", str(manifest), "--data", str(data), *TASKS[task][2])
    header = next(line for line in table.stdout.splitlines() if "MFLOPs" in line)
    assert f"{front.metric.rank} (data-val)" in header and "top-1" not in header


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_eval_write_records_every_figure_under_the_split_name(task_fronts, task: str, tmp_path, cli) -> None:
    data, manifest = _copy(task_fronts[task], tmp_path)
    model = TASKS[task][2]
    report = _json(
        cli("eval", str(manifest), "--data", str(data), *model, "--split", "held", "--write", "--json")
    )
    front = Front.load(manifest)
    assert report["written"] and front.dataset.eval_splits == {"held": report["split"]}
    for row, p in zip(report["points"], front.points):
        assert p.eval_metrics == {"held": pytest.approx(row["metrics"], abs=1e-6)}
        assert not p.eval_top1 and not p.eval_loss
    assert json.loads(manifest.read_text())["format_version"] == 7
    # The same name again replaces it; another name is added beside it.
    _json(cli("eval", str(manifest), "--data", str(data), *model, "--split", "held", "--write", "--json"))
    _json(cli("eval", str(manifest), "--data", str(data), *model, "--split", "again", "--write", "--json"))
    assert all(set(p.eval_metrics) == {"held", "again"} for p in Front.load(manifest).points)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_calibrate_adds_a_point_ranked_by_the_tasks_metric(task_fronts, task: str, tmp_path, cli) -> None:
    data, manifest = _copy(task_fronts[task], tmp_path)
    model = TASKS[task][2]
    report = _json(cli("calibrate", str(manifest), "--data", str(data), "--width", "0.4", *model, "--json"))
    front = Front.load(manifest)
    added = next(p for p in front.points if p.id == report["point"]["id"])
    assert added.origin == "calibrated" and added.top1 is None
    assert set(added.metrics) == set(added.selection_metrics) == set(front.metric.names)
    # Measured again on the same images, it scores what it recorded, as the trained points do.
    again = _json(cli("eval", str(manifest), "--data", str(data), *model, "--json"))
    by_id = {row["id"]: row["metrics"] for row in again["points"]}
    assert by_id[added.id] == pytest.approx(added.metrics, rel=1e-9)
    wrong = "detection" if task == "segmentation" else "segmentation"
    r = cli("calibrate", str(manifest), "--data", str(data), "--width", "0.3", "--task", wrong, *model)
    assert r.returncode == 2 and f"trained by --task {task}, not {wrong}" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_specialize_chooses_points_by_the_metric_and_the_tables_latency(
    task_fronts, task: str, tmp_path, cli
) -> None:
    data, manifest = _copy(task_fronts[task], tmp_path)
    model = TASKS[task][2]
    lut = synthetic_table(SlimmableRuntime.load(manifest, **_factory(task)).model, "phone", host="a phone")
    lut.save(lut_path(manifest, "phone"))
    args = ("--profile", "phone", "--data", str(data), "--points", "3", "--evals", "8", *model, "--json")
    report = _json(cli("specialize", str(manifest), *args))
    new = Front.load(Path(report["manifest"]), verify_weights=False)
    metric = Front.load(manifest).metric
    assert new.metric == metric and all(set(p.metrics) == set(metric.names) for p in new.points)
    # Chosen by the figure on held-out images and the predicted latency: none dominates another.
    figures = [(-p.selection_metrics[metric.rank], p.latency_predicted_ms["phone"]) for p in new.points]
    assert len(non_dominated(figures, lambda f: f)) == len(figures)


def _factory(task: str) -> dict[str, Any]:
    from pareco_runtime.sources import import_factory

    model = TASKS[task][2]
    return {"model": import_factory(model[1])} if model else {}


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_int8_programs_are_kept_by_the_metrics_drop_and_recorded(
    task_fronts, task: str, tmp_path, cli
) -> None:
    pytest.importorskip("onnxruntime")
    data, manifest = _copy(task_fronts[task], tmp_path)
    front = Front.load(manifest)
    point = front.points[-1].id
    r = cli("export", str(manifest), "--point", point, "--onnx", "--int8", "--calib", str(data),
            "--calib-batches", "1", "--max-drop", "100", *TASKS[task][2], "--json")  # fmt: skip
    report = _json(r)
    assert report["refused"] == [] and len(report["exports"]) == 1
    [variant] = _point(Front.load(manifest), point).variants
    assert variant.top1 is None and set(variant.metrics) == set(variant.fp32_metrics) == set(
        front.metric.names
    )
    assert variant.fp32_metrics == pytest.approx(_point(front, point).metrics, rel=1e-9)
    shown = cli("show", str(manifest))
    assert f"fp32 {front.metric.rank}" in shown.stdout


@pytest.mark.slow
def test_a_program_worse_by_more_than_max_drop_in_miou_is_refused(task_fronts, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from export.formats import Calibration
    from export.int8 import export_int8_points
    from training.front_data import task_evaluation_set
    from training.tasks import front_task

    data, manifest = _copy(task_fronts["segmentation"], tmp_path)
    rt = SlimmableRuntime.load(manifest, **_factory("segmentation"))
    task = front_task(rt.front)
    images = task_evaluation_set(task, str(data), rt.front)
    xs = torch.cat([x for x, _ in images.batches()])
    # Ranges observed on images 10^4 times too bright: every real input quantizes to zero.
    calib = Calibration([xs * 1e4], "images scaled by 10^4")
    score = task.evaluators(images.data)[0]
    point = rt.points[-1]
    run = export_int8_points(
        rt, [point], ["onnx"], tmp_path / "export", calib, score, images.split, max_drop=1.0
    )  # type: ignore[arg-type]
    assert run.results == [] and len(run.refused) == 1
    assert re.search(
        r"scores miou [\d.]+, [\d.]+ worse than fp32's [\d.]+ \(allowed 1, --max-drop\); not written",
        run.refused[0],
    )
    assert not _point(Front.load(manifest), point.id).variants


def test_a_loss_metrics_drop_is_a_rise_and_a_variant_moves_the_points_figures() -> None:
    from pareco_runtime.budget import Choice
    from pareco_runtime.manifest import FrontPoint

    loss = Metric.declare("loss", False, ["loss"])
    assert loss.worse_by(1.0, 1.5) == 0.5 and loss.worse_by(1.0, 0.5) == -0.5
    miou = Metric.declare("miou", True, ["miou", "loss"])
    assert miou.worse_by(70.0, 68.0) == 2.0
    v = Variant("int8", "onnxruntime", None, None, {"name": "val", "images": 5}, 100,
                metrics={"miou": 68.0, "loss": 0.9}, fp32_metrics={"miou": 70.0, "loss": 0.8})  # fmt: skip
    p = FrontPoint("p0", [1.0], [8], 1.0, 10, metrics={"miou": 71.0, "loss": 0.7}, variants=[v])
    view = Choice(p, v).as_point()
    assert view.metrics == pytest.approx({"miou": 69.0, "loss": 0.8}) and view.top1 is None
    assert miou.variant_scores(v) == (68.0, 70.0) and v.drop is None
