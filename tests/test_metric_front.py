"""Fronts ranked by the user's own metric: built by training.build_front, declared in the manifest, ranked
in its direction by select, shown by name, refused by commands that measure top-1."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from pareco_runtime import SlimmableRuntime, build_model
from pareco_runtime.budget import select
from pareco_runtime.manifest import Front, FrontPoint, Metric, load_manifest
from pareco_runtime.manifest.rules import check_manifest_consistency, validate_schema
from pareco_runtime.manifest.versions import FORMAT_VERSION, manifest_format
from pareco_runtime.untrusted import FormatError
from tests.manifests import make_manifest
from training import build_front, evaluate_front

WIDTHS = (0.25, 0.5, 0.75, 1.0)
RECORD = {"algorithm": "slim", "epochs": 0, "seed": 0, "wall_time_s": 0.0}


def _model() -> Any:
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=3, input_size=8)


def _calib() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 3, 8, 8, generator=g), torch.zeros(8, dtype=torch.long)) for _ in range(2)]


def _by_width(table: Mapping[float, Mapping[str, float]]) -> Callable[[Any], dict[str, float]]:
    """An evaluate whose figures are ``table``'s for the width the model runs at (its first group's)."""

    def evaluate(model: Any) -> dict[str, float]:
        assert not model.training  # scored in eval mode, with the candidate's calibrated statistics
        width = min(table, key=lambda w: abs(w - model.alpha[0]))
        return dict(table[width])

    return evaluate


def _build(tmp_path: Path, table: Mapping[float, Mapping[str, float]], metric: str, higher: bool) -> Path:
    model = _model()
    configs = [model.space.uniform(max(w, model.space.low)) for w in WIDTHS]
    built = build_front(
        tmp_path,
        model,
        configs,
        _calib(),
        _by_width(table),
        metric=metric,
        higher_is_better=higher,
        training=RECORD,
    )
    return built.manifest


# A loss, lower is better: width 0.75 costs more than 0.5 and scores worse, so it is dominated.
LOSSES = {0.25: {"loss": 2.0}, 0.5: {"loss": 1.0}, 0.75: {"loss": 1.5}, 1.0: {"loss": 0.5}}
# A custom metric, higher is better, with a second figure reported beside it.
SCORES = {w: {"miou": m, "pixel_acc": 0.9} for w, m in ((0.25, 0.2), (0.5, 0.6), (0.75, 0.4), (1.0, 0.8))}


@pytest.mark.parametrize(
    "table, metric, higher", [(LOSSES, "loss", False), (SCORES, "miou", True)], ids=["loss", "miou"]
)
def test_build_front_keeps_the_points_non_dominated_in_the_metrics_direction(
    tmp_path: Path, table: Mapping[float, Mapping[str, float]], metric: str, higher: bool
) -> None:
    manifest = _build(tmp_path, table, metric, higher)
    raw = json.loads(manifest.read_text())
    assert raw["format_version"] == 4
    assert raw["metric"] == {"rank": metric, "higher_is_better": higher, "names": list(table[1.0])}
    front = Front.load(manifest)
    assert [round(p.alpha[0], 2) for p in front.points] == [0.32, 0.5, 1.0]  # resnet20's low is 0.316
    assert [p.metrics for p in front.points] == [table[0.25], table[0.5], table[1.0]]
    assert all(p.top1 is None and not p.selection_metrics for p in front.points)
    assert front.metric == Metric.declare(metric, higher, list(table[1.0]))
    assert evaluate_front(manifest, _by_width(table)) == {p.id: p.metrics for p in front.points}


@pytest.mark.parametrize(
    "table, metric, higher", [(LOSSES, "loss", False), (SCORES, "miou", True)], ids=["loss", "miou"]
)
def test_select_under_a_mflops_budget_takes_the_best_affordable_point(
    tmp_path: Path, table: Mapping[float, Mapping[str, float]], metric: str, higher: bool
) -> None:
    rt = SlimmableRuntime.load(_build(tmp_path, table, metric, higher))
    cheap, mid, full = rt.points
    assert rt.select(f"{mid.mflops + 0.01}MFLOPs").id == mid.id
    assert rt.select(f"{full.mflops}MFLOPs").id == full.id
    assert rt.switch(f"{cheap.mflops}MFLOPs").id == cheap.id


def test_select_follows_the_direction_not_the_cost() -> None:
    cheap = FrontPoint("a", [0.5], [8], 1.0, 10, metrics={"loss": 0.4})
    costly = FrontPoint("b", [1.0], [16], 2.0, 20, metrics={"loss": 0.9})
    lower = Metric.declare("loss", False, ["loss"])
    higher = Metric.declare("loss", True, ["loss"])
    assert select([cheap, costly], "5MFLOPs", metric=lower).id == "a"
    assert select([cheap, costly], "5MFLOPs", metric=higher).id == "b"
    chosen_on = [
        FrontPoint("a", [0.5], [8], 1.0, 10, metrics={"loss": 0.4}, selection_metrics={"loss": 0.8}),
        FrontPoint("b", [1.0], [16], 2.0, 20, metrics={"loss": 0.9}, selection_metrics={"loss": 0.3}),
    ]
    assert select(chosen_on, "5MFLOPs", metric=lower).id == "b"  # ranked on the split it was chosen on


def test_selection_evaluate_chooses_and_evaluate_reports(tmp_path: Path) -> None:
    model = _model()
    configs = [model.space.uniform(max(w, model.space.low)) for w in WIDTHS]
    reported = {w: {"loss": 10.0 + v["loss"]} for w, v in LOSSES.items()}
    built = build_front(
        tmp_path,
        model,
        configs,
        iter(_calib()),  # a one-shot iterator is listed once and reused for every candidate
        _by_width(reported),
        selection_evaluate=_by_width(LOSSES),
        metric="loss",
        higher_is_better=False,
        training=RECORD,
    )
    points = Front.load(built.manifest).points
    assert [p.selection_metrics for p in points] == [LOSSES[0.25], LOSSES[0.5], LOSSES[1.0]]
    assert [p.metrics for p in points] == [reported[0.25], reported[0.5], reported[1.0]]


def test_show_names_the_metric(tmp_path: Path, cli: Callable[..., Any]) -> None:
    manifest = _build(tmp_path, SCORES, "miou", True)
    r = cli("show", str(manifest))
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "MFLOPs" in line)
    assert "miou" in header and "pixel_acc" in header and "top-1" not in header


def test_commands_that_measure_a_front_ask_for_the_task_of_one_built_in_python(
    tmp_path: Path, cli: Callable[..., Any]
) -> None:
    manifest = _build(tmp_path, LOSSES, "loss", False)
    r = cli("eval", str(manifest), "--data", "synthetic:64:3")
    assert r.returncode != 0
    assert (
        f"{manifest}: the front is ranked by loss and does not record the task that built it; pass "
        "--task segmentation or --task detection where its data is such a folder, or re-measure it in "
        "Python with training.evaluate_front(manifest, evaluate)"
    ) in r.stderr
    r = cli(
        "calibrate", str(manifest), "--data", "synthetic:64:3", "--width", "0.6", "--task", "segmentation"
    )
    assert r.returncode != 0
    assert (
        f"{manifest}: the front is ranked by loss (loss), but --task segmentation measures miou "
        "(miou, pixel_acc, loss); re-measure it in Python"
    ) in r.stderr


def test_build_front_refuses_what_it_cannot_rank(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metric .miou. is not among the figures evaluate returns \(loss\)"):
        _build(tmp_path, LOSSES, "miou", True)
    bad = {w: {"loss": float("nan")} for w in WIDTHS}
    with pytest.raises(ValueError, match=r"evaluate returned loss=nan for config .*; return a finite number"):
        _build(tmp_path, bad, "loss", False)


def test_old_manifests_load_unchanged_and_rank_by_top1(tmp_path: Path) -> None:
    manifest = make_manifest()
    assert "metric" not in manifest and manifest_format(manifest) == 1
    front = Front.from_dict(manifest)
    assert front.metric == Metric() and not front.metric.declared
    assert front.to_dict() == manifest
    assert select(front.points, "100MFLOPs", metric=front.metric).id == "p3"  # the highest top-1


def _declared_manifest() -> dict[str, Any]:
    m = make_manifest()
    m["format_version"] = 4
    m["metric"] = {"rank": "miou", "higher_is_better": True, "names": ["miou", "pixel_acc"]}
    for i, p in enumerate(m["points"]):
        p["metrics"] = {"miou": 0.1 * i, "pixel_acc": 0.5}
    return m


def _valid(m: dict[str, Any]) -> None:
    validate_schema(m, "m.front.json", "fix it")
    check_manifest_consistency(m, "m.front.json")


def test_a_declared_manifest_round_trips() -> None:
    m = _declared_manifest()
    _valid(m)
    front = Front.from_dict(m)
    assert front.to_dict() == m
    assert select(front.points, "100MFLOPs", metric=front.metric).id == "p3"


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda m: m["metric"].update(rank="map"), "metric.rank 'map' is not one of metric.names"),
        (lambda m: m["metric"].update(names=["miou", "miou"]), "metric.names lists a name twice"),
        (lambda m: m["metric"].update(higher_is_better="yes"), "metric.higher_is_better: expected boolean"),
        (lambda m: m["points"][1]["metrics"].pop("pixel_acc"), "point 'p1': metrics.pixel_acc has no value"),
        (
            lambda m: m["points"][2]["metrics"].update(miou=1e999),
            r"point 'p2': metrics.miou has a non-finite",
        ),
        (
            lambda m: m["points"][0].update(selection_metrics={"miou": 0.1}),
            "point 'p0': selection_metrics.pixel_acc has no value",
        ),
        (lambda m: m["points"][0]["metrics"].update(other=1.0), "point 'p0': metrics.other is not one of"),
        (lambda m: m.pop("metric"), "point 'p0': metrics given but the manifest declares no metric"),
        (lambda m: m.update(format_version=3), "format_version 3 cannot hold metric \\(format 4\\)"),
    ],
)
def test_bad_metric_fields_are_refused(change: Callable[[dict[str, Any]], Any], words: str) -> None:
    m = copy.deepcopy(_declared_manifest())
    change(m)
    with pytest.raises(FormatError, match=words):
        _valid(m)


def _evaluated_manifest() -> dict[str, Any]:
    """The declared manifest with an evaluation on a named test set (format 7)."""
    m = _declared_manifest()
    m["format_version"] = 7
    m["dataset"]["eval_splits"] = {"held": {"name": "val", "images": 10, "data": "shapes"}}
    for p in m["points"]:
        p["eval_metrics"] = {"held": {"miou": 0.2, "pixel_acc": 0.6}}
    return m


def test_evaluations_by_a_declared_metric_round_trip_in_format_7() -> None:
    m = _evaluated_manifest()
    _valid(m)
    assert manifest_format(m) == 7 and Front.from_dict(m).to_dict() == m
    with pytest.raises(
        FormatError, match=r"format_version 6 cannot hold points\[\]\.eval_metrics \(format 7\)"
    ):
        _valid({**m, "format_version": 6})


@pytest.mark.parametrize(
    "change, words",
    [
        (
            lambda m: m["dataset"].pop("eval_splits"),
            "point 'p0': eval_metrics names evaluation 'held', which",
        ),
        (
            lambda m: m["points"][1]["eval_metrics"]["held"].pop("miou"),
            "point 'p1': eval_metrics.held.miou has no value",
        ),
        (
            lambda m: m["points"][0].update(eval_top1={"held": 50.0}),
            "point 'p0': eval_top1 given but the manifest ranks by miou; give eval_metrics",
        ),
        (
            lambda m: (m.pop("metric"), [p.pop("metrics") for p in m["points"]]),
            "point 'p0': eval_metrics given but the manifest declares no metric",
        ),
    ],
)
def test_bad_evaluations_are_refused(change: Callable[[dict[str, Any]], Any], words: str) -> None:
    m = _evaluated_manifest()
    change(m)
    with pytest.raises(FormatError, match=words):
        _valid(m)


def test_record_evaluation_writes_the_fronts_own_figures() -> None:
    front = Front.from_dict(_declared_manifest())
    split = {"name": "val", "images": 4, "data": "shapes"}
    front.record_evaluation("held", split, {"p0": {"miou": 0.25, "pixel_acc": 0.75}})
    assert front.points[0].eval_metrics == {"held": {"miou": 0.25, "pixel_acc": 0.75}}
    assert not front.points[1].eval_metrics and front.dataset.eval_splits == {"held": split}
    _valid(front.to_dict())
    with pytest.raises(
        ValueError, match=r"point 'p1' has figures loss, top1; this front records miou, pixel_acc"
    ):
        front.record_evaluation("held", split, {"p1": {"top1": 50.0, "loss": 1.0}})
    plain = Front.from_dict(make_manifest())
    plain.record_evaluation("test", split, {"p0": {"top1": 51.23456, "loss": 0.5}})
    assert plain.points[0].eval_top1 == {"test": 51.2346} and plain.points[0].eval_loss == {"test": 0.5}


def test_a_newer_manifest_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.front.json"
    newer = FORMAT_VERSION + 1
    path.write_text(json.dumps({**_declared_manifest(), "format_version": newer}))
    with pytest.raises(
        FormatError, match=rf"written by a newer pareco \(format {newer} > {FORMAT_VERSION}\); upgrade"
    ):
        load_manifest(path)


def test_build_front_of_a_1d_network_records_its_c_l_input(tmp_path: Path) -> None:
    import warnings

    from pareco_runtime import make_slimmable
    from tests.user_models import kws_net

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pinned classifier
        model = make_slimmable(kws_net(num_classes=3), torch.randn(1, 40, 98), arch="tests.user_models:kws_net",
                               model_kwargs={"num_classes": 3})  # fmt: skip
    configs = [model.space.uniform(w) for w in WIDTHS]
    calib = [(torch.randn(8, 40, 98), torch.zeros(8, dtype=torch.long))]
    built = build_front(tmp_path, model, configs, calib, _by_width(SCORES), metric="miou", training=RECORD)
    assert json.loads(built.manifest.read_text())["dataset"]["input_size"] == [40, 98]
    rt = SlimmableRuntime.load(built.manifest, model=kws_net)
    assert [p.metrics["miou"] for p in rt.points] == [0.2, 0.6, 0.8]
