"""``pareco eval`` and ``pareco calibrate``: measure a trained front on a test set, add an off-front point.

Both measure a front by the task that built it (:func:`training.tasks.front_task`): top-1 and loss for
a classification front, a segmentation or detection front's declared figures (mIoU, mAP, ...) on its
folder's images.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import typer

from .flops import parse_alpha
from .loading import MODEL_HELP, ManifestArg, TaskOption, load_runtime, resolve_manifest
from .output import print_json, print_table

if TYPE_CHECKING:
    from pareco_runtime.manifest import Front, FrontPoint
    from pareco_runtime.runtime import SlimmableRuntime
    from pareco_runtime.space import WidthSpace
    from training.tasks import Task

_DATA_FORMS = "an ImageFolder tree, a .tar/.tar.gz of one, 'digits' or 'synthetic[:N:C]'"


def eval_front(
    manifest: ManifestArg = None,
    data: str = typer.Option(
        ...,
        "--data",
        metavar="DATA",
        help=f"The test images ({_DATA_FORMS}): a tree's test/ or val/ folder, every image of a plain "
        "<class>/* tree, the validation hold-out of digits or synthetic data; for a segmentation or "
        "detection front, its folder's val/ (or test/) images, else those training held out.",
    ),
    task: TaskOption = None,
    split: str | None = typer.Option(
        None,
        "--split",
        metavar="NAME",
        help="The name the evaluation goes by, in the table and with --write in the manifest "
        "(default: <data name>-<split>, e.g. cifar10-test).",
    ),
    write: bool = typer.Option(
        False,
        "--write",
        help="Record each point's figures in the manifest under --split: top-1 and loss (eval_top1, "
        "eval_loss), or every figure of the front's own metric (eval_metrics).",
    ),
    model: str | None = typer.Option(None, "--model", metavar="pkg.module:factory", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The front's figures (top-1 and loss, or its task's: mIoU, mAP, ...) of every point on a test set,
    each with its calibrated BN statistics."""
    from training.extend import evaluate_points
    from training.front_data import evaluation_set
    from training.tasks import front_task

    if split is not None and not split.strip():
        raise ValueError("--split: the evaluation needs a name, e.g. --split cifar10-test")
    manifest = resolve_manifest(manifest)
    rt = load_runtime(manifest, model)
    measured_by = front_task(rt.front, task)
    if rt.front.metric.declared:
        _eval_metric(manifest, rt, measured_by, data, split, write, as_json)
        return
    images = evaluation_set(data, rt.front)
    name = images.name if split is None else split.strip()
    results = evaluate_points(rt, images.batches())
    if write:
        figures = {pid: {"top1": ev.top1, "loss": ev.loss} for pid, ev in results.items()}
        _record(manifest, rt.front.weights_sha256, name, images.split, figures)
    rows: list[dict[str, Any]] = [
        {
            "id": p.id,
            "mflops": p.mflops,
            "manifest_top1": p.top1,
            "top1": results[p.id].top1,
            "loss": results[p.id].loss,
        }
        for p in rt.points
    ]
    if as_json:
        print_json(
            {"manifest": str(manifest), "name": name, "split": images.split, "written": write, "points": rows}
        )
        return
    print_table(
        f"{manifest.name} on {name}",
        ["id", "MFLOPs", f"manifest top-1 % ({_top1_split(rt.front)})", f"top-1 % ({name})", "loss"],
        [
            [
                r["id"],
                f"{r['mflops']:.2f}",
                _percent(r["manifest_top1"]),
                _percent(r["top1"]),
                f"{r['loss']:.4f}",
            ]
            for r in rows
        ],
    )
    typer.echo(f"images: {images.text}")
    if write:
        typer.echo(f"recorded in {manifest} as evaluation '{name}' (dataset.eval_splits, points' eval_top1)")


def _eval_metric(
    manifest: Path, rt: SlimmableRuntime, task: Task, data: str, split: str | None, write: bool, as_json: bool
) -> None:
    """``pareco eval`` of a front ranked by its task's metric: every declared figure of every point,
    recorded in the manifest's ``eval_metrics`` with ``write``."""
    from training.extend import evaluate_front
    from training.front_data import task_evaluation_set

    images = task_evaluation_set(task, data, rt.front)
    name = images.name if split is None else split.strip()
    results = evaluate_front(rt, task.evaluators(images.data)[0])
    if write:
        _record(manifest, rt.front.weights_sha256, name, images.split, results)
    metric = rt.front.metric
    rows: list[dict[str, Any]] = [
        {"id": p.id, "mflops": p.mflops, "manifest": dict(p.metrics), "metrics": results[p.id]}
        for p in rt.points
    ]
    if as_json:
        print_json(
            {
                "manifest": str(manifest),
                "name": name,
                "split": images.split,
                "metric": metric.to_dict(),
                "written": write,
                "points": rows,
            }
        )
        return
    print_table(
        f"{manifest.name} on {name}",
        ["id", "MFLOPs", f"manifest {metric.rank} ({_top1_split(rt.front)})"]
        + [f"{figure} ({name})" for figure in metric.names],
        [
            [r["id"], f"{r['mflops']:.2f}", _figure(r["manifest"].get(metric.rank))]
            + [_figure(r["metrics"].get(figure)) for figure in metric.names]
            for r in rows
        ],
    )
    typer.echo(f"images: {images.text}")
    if write:
        typer.echo(
            f"recorded in {manifest} as evaluation '{name}' (dataset.eval_splits, points' eval_metrics)"
        )


def _figure(value: float | None) -> str | None:
    return None if value is None else f"{value:.4g}"


def _percent(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def _top1_split(front: Front) -> str:
    """The name of the split the manifest's top-1 is from ('val' where it does not record one)."""
    return str((front.dataset.splits or {}).get("top1", {}).get("name", "val"))


def _record(
    manifest: Path,
    weights_sha256: str,
    name: str,
    split: dict[str, Any],
    results: dict[str, dict[str, float]],
) -> None:
    """Write the evaluation ({point id: figures}) into the manifest, under its lock, unless its weights
    changed meanwhile."""
    from pareco_runtime.manifest import Front

    with Front.update(manifest) as front:
        if front.weights_sha256 != weights_sha256:
            raise ValueError(
                f"{manifest}: its weight file changed during the evaluation; evaluate again before --write"
            )
        front.record_evaluation(name, split, results)


def calibrate(
    manifest: ManifestArg = None,
    alpha: str | None = typer.Option(
        None,
        "--alpha",
        metavar="A1,..,AK",
        help="Per-group widths a1,...,aK, one per width dimension of the front (pareco show --json: "
        "width_space.names).",
    ),
    width: float | None = typer.Option(None, "--width", metavar="W", help="One width for every group."),
    data: str = typer.Option(
        ...,
        "--data",
        metavar="DATA",
        help=f"The front's training data ({_DATA_FORMS}; a segmentation or detection folder for a task "
        "front): BN statistics are recalibrated on its training images, the front's metric is measured on "
        "its validation split.",
    ),
    task: TaskOption = None,
    calib_batches: int | None = typer.Option(
        None,
        "--calib-batches",
        metavar="N",
        help="Batches of training images the BN statistics average over (default: as the front's training).",
    ),
    point_id: str | None = typer.Option(
        None, "--id", metavar="ID", help="Id of the new point (default: the first unused of c00, c01, ...)."
    ),
    model: str | None = typer.Option(None, "--model", metavar="pkg.module:factory", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Add an off-front point of any config: BN statistics calibrated for it, then selected, switched to,
    sliced and exported like the front's own points."""
    from pareco_runtime.filelock import locked
    from pareco_runtime.manifest import POINT_ID_PATTERN, Front, add_points
    from training.extend import calibrate_point, calibration_settings, new_point_id, selection_fraction
    from training.tasks import front_task

    if (alpha is None) == (width is None):
        raise ValueError(
            "--alpha / --width: give exactly one of them, the config to calibrate; e.g. --width 0.5"
        )
    if calib_batches is not None and calib_batches < 1:
        raise ValueError(f"--calib-batches {calib_batches}: must be at least 1")
    if point_id is not None and not re.fullmatch(POINT_ID_PATTERN, point_id):
        raise ValueError(
            f"--id {point_id!r}: not usable as a point id; use letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'"
        )
    manifest = resolve_manifest(manifest)
    rt = load_runtime(manifest, model)
    front = rt.front
    measured_by = front_task(front, task)
    config = _config(front.width_space, alpha, width)
    _check_new(
        front, front.width_space.channels(config), point_id, "--alpha" if alpha is not None else "--width"
    )
    # Without --id this id is provisional: the one the point gets is chosen under the lock below.
    pid = point_id or new_point_id(front)
    if point_id is not None:
        _free_stats_file(manifest, pid)  # refused now rather than after calibrating
    batches, batch_size = calibration_settings(front)
    images = measured_by.front_data(data, front, selection_fraction(front))
    evaluate, selection_evaluate = measured_by.evaluators(images)
    point, stats = calibrate_point(
        rt,
        config,
        pid,
        lambda: images.calib_batches(batch_size, calib_batches or batches, front.training.seed),
        evaluate,
        selection_evaluate=selection_evaluate,
    )
    # Calibrating takes seconds to minutes; another `pareco calibrate` may have added a point since.
    # The id is chosen again, the config checked again and the point added under one lock.
    with locked(manifest):
        now = Front.load(manifest, verify_weights=False)
        if point_id is None:
            pid = new_point_id(now)
            point = dataclasses.replace(point, id=pid)
        _check_new(now, point.channels, point_id, "--alpha" if alpha is not None else "--width")
        file = _free_stats_file(manifest, pid)
        stats_file = add_points(manifest, [point], {pid: stats}, front.weights_sha256, file)
    if as_json:
        print_json({"manifest": str(manifest), "point": point.to_dict(), "bn_stats_file": str(stats_file)})
        return
    _print_point(manifest.name, point, front)
    typer.echo(
        f"added to {manifest}; its BN statistics are in {stats_file.name}, bound to "
        f"{front.weights_file} by its SHA-256 (the shared weights are not copied)"
    )


def _free_stats_file(manifest: Path, pid: str) -> str:
    """The statistics file name of point ``pid`` of ``manifest``, if no file has it yet; ValueError otherwise."""
    from pareco_runtime.manifest import stats_file_name

    file = stats_file_name(manifest, pid)
    if (manifest.parent / file).exists() or (manifest.parent / file).is_symlink():
        # Another front's statistics (ids may hold '.': a.front.json's 'b.c00' is a.b.front.json's 'c00') or
        # a stranger's file: never written over.
        raise ValueError(
            f"{manifest.parent / file}: exists and is not this front's; give the point another --id"
        )
    return file


def _config(space: WidthSpace, alpha: str | None, width: float | None) -> list[float]:
    """The config ``--alpha`` or ``--width`` names (exactly one of them is given), checked against the
    front's width space; a ValueError naming the flag otherwise."""
    config = parse_alpha(alpha) if alpha is not None else None  # its errors name --alpha
    flag = f"--alpha {alpha}" if alpha is not None else f"--width {width:g}"
    try:
        config = config if config is not None else space.uniform(cast(float, width))
        space.validate(config)
    except ValueError as exc:
        raise ValueError(
            f"{flag}: {exc}; give widths within the front's width space (pareco show --json: width_space)"
        ) from None
    return config


def _check_new(front: Front, channels: list[int], point_id: str | None, flag: str) -> None:
    """Refuse a config that is a point of the front already, or an id that is taken."""
    from training.extend import same_network

    twin = same_network(front, channels)
    if twin is not None:
        raise ValueError(
            f"{flag}: that config is point {twin.id}'s sub-network (channels {channels}), already on the "
            "front; choose another config"
        )
    if point_id is not None and any(p.id == point_id for p in front.points):
        raise ValueError(f"--id {point_id}: the front already has a point of that id; choose another")


def _print_point(title: str, p: FrontPoint, front: Front) -> None:
    """The new point as a one-row table (its figures as the front ranks them), with its widths and channels."""
    metric, split = front.metric, _top1_split(front)
    row: list[Any] = [p.id, f"{p.mflops:.2f}", f"{p.params / 1e6:.3f}"]
    if metric.declared:
        chosen = [f"chosen-on {metric.rank}"] if p.selection_metrics else []
        columns = [f"{name} ({split})" for name in metric.names] + chosen
        row += [f"{p.metrics[name]:.4g}" for name in metric.names]
        row += [f"{p.selection_metrics[metric.rank]:.4g}"] if chosen else []
    else:
        chosen = ["chosen-on %"] if p.selection_top1 is not None else []
        columns = [f"top-1 % ({split})", *chosen, "loss"]
        row += [_percent(p.top1)] + ([_percent(p.selection_top1)] if chosen else [])
        row.append(None if p.loss is None else f"{p.loss:.4f}")
    print_table(f"{title}: off-front point {p.id} (calibrated)", ["id", "MFLOPs", "Mparams", *columns], [row])
    typer.echo("widths: " + ", ".join(f"{a:.3f}" for a in p.alpha))
    typer.echo("channels: " + ", ".join(str(c) for c in p.channels))
