"""``pareco export``: slice chosen front points into files of the export formats (:mod:`export.formats`).

The per-format flags (``--onnx``, ``--executorch``, ...) are made from the format registry: one
``--<name>`` per :class:`~export.formats.base.Format`, with its ``flag_help``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from .loading import MODEL_HELP, ManifestArg, TaskOption, load_runtime, resolve_manifest
from .output import print_json, print_table
from .runtime_cmds import check_fallback, choose_point

if TYPE_CHECKING:
    from export.batch import BatchRange
    from pareco_runtime.manifest import FrontPoint
    from pareco_runtime.runtime import SlimmableRuntime


def export(
    manifest: ManifestArg = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Output folder: <point>.<ext> files, export.json and labels.txt (default: export/ beside "
            "the manifest).",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget",
            metavar="BUDGET",
            help="Export the point chosen under this budget; repeat to AND (e.g. 100MFLOPs, 5ms@PROFILE).",
        ),
    ] = None,
    point: Annotated[
        list[str] | None,
        typer.Option("--point", metavar="ID", help="Export this point id; repeat for several."),
    ] = None,
    all_points: Annotated[bool, typer.Option("--all", help="Export every point of the front.")] = False,
    fallback: Annotated[
        str | None,
        typer.Option(
            "--fallback",
            metavar="cheapest",
            help="'cheapest': with --budget, take the cheapest point if no point meets it.",
        ),
    ] = None,
    allow_predicted: Annotated[
        bool, typer.Option("--allow-predicted", help="With --budget, use predicted latency where unmeasured.")
    ] = False,
    batch: Annotated[
        str,
        typer.Option(
            "--batch",
            metavar="N|dynamic:MAX",
            help="Batch of ExecuTorch files: N (that batch only) or dynamic:MAX (any batch from 1 to "
            "MAX, e.g. dynamic:8); LiteRT files: N only; ONNX, TorchScript, .pt2 and OpenVINO files "
            "take any batch.",
        ),
    ] = "1",
    atol: Annotated[
        float,
        typer.Option("--atol", metavar="X", help="Largest absolute difference to PyTorch a file may show."),
    ] = 1e-4,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Quantized int8 programs (<point>.int8.onnx / .pte), calibrated on the images of "
            "--calib; each is checked by the front's metric (top-1, or its task's mIoU or mAP), measured "
            "in its runtime, and recorded in the manifest.",
        ),
    ] = False,
    calib: Annotated[
        str | None,
        typer.Option(
            "--calib",
            metavar="DATA",
            help="With --int8: the front's data (as `pareco train --task TASK --data`); training images "
            "calibrate, the test/ or val/ folder (a hold-out for digits, synthetic and task folders "
            "without one) measures the front's metric.",
        ),
    ] = None,
    task: TaskOption = None,
    calib_batches: Annotated[
        int,
        typer.Option("--calib-batches", metavar="N", help="With --int8: calibration batches of 32 images."),
    ] = 16,
    max_drop: Annotated[
        float,
        typer.Option(
            "--max-drop",
            metavar="PTS",
            help="With --int8: most a program may lose against fp32 in the front's metric (top-1 points, "
            "mIoU or mAP points; a loss may rise by as much); a program losing more is reported and not "
            "written.",
        ),
    ] = 2.0,
    force: Annotated[
        bool, typer.Option("--force", help="With --int8: write programs over the drop limit too.")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", metavar="pkg.module:factory", help=MODEL_HELP)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    **flags: bool,
) -> None:
    """Export front points; each file is loaded back in its runtime and checked against PyTorch
    (an int8 program by the front's metric against the fp32 point's)."""
    from export.formats import FORMATS

    formats = [name for name in FORMATS if flags.get(name)]
    if not formats:
        names = [f"--{name}" for name in FORMATS]
        raise ValueError(f"choose at least one format: {', '.join(names[:-1])} or {names[-1]}")
    chosen = sum((bool(budget), bool(point), all_points))
    if chosen > 1:
        raise ValueError(
            "give one of --budget B, --point ID or --all to say which points to export, not several"
        )
    if fallback is not None and not budget:
        raise ValueError("--fallback applies to --budget only")
    check_fallback(fallback)
    _check_int8_options(int8, formats, calib, calib_batches, max_drop, force, task)
    manifest = resolve_manifest(manifest)
    if out is None:
        from export.serving import EXPORT_DIR

        out = manifest.parent / EXPORT_DIR
    _check_out(out)

    from export.batch import parse_batch
    from export.exporter import export_points
    from export.formats import require
    from export.metadata import LABELS_NAME

    batches = parse_batch(batch)

    for fmt in formats:
        require(fmt)
    rt = load_runtime(manifest, model)
    if not chosen:
        raise ValueError(_which_points(rt))
    if budget:
        chosen_point, met = choose_point(
            lambda fb: rt.select(list(budget), fallback=fb, allow_predicted=allow_predicted), fallback
        )
        if not met:
            typer.echo(
                f"--budget not met: exporting the cheapest point, {chosen_point.id} (--fallback cheapest)",
                err=True,
            )
        points = [chosen_point]
    elif point:
        points = [rt.point(pid) for pid in dict.fromkeys(point)]
    else:
        points = list(rt.points)
    if int8:
        _export_int8(
            rt, points, formats, out, batches, calib or "", calib_batches, max_drop, force, task, as_json
        )
        return
    total = len(points) * len(formats)
    if all_points:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("exporting"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
        ) as bar:
            job = bar.add_task("", total=total)
            results = export_points(
                rt,
                points,
                formats,
                out,
                batch=batches,
                atol=atol,
                on_done=lambda r: bar.update(job, advance=1, description=r.path.name),
            )
    else:
        results = export_points(rt, points, formats, out, batch=batches, atol=atol)
    if as_json:
        print_json(
            {
                "out": str(out),
                "labels": str(out / LABELS_NAME) if rt.class_names else None,
                "exports": [r.to_entry(rt.front.weights_sha256) for r in results],
            }
        )
        return
    print_table(
        f"{len(results)} file(s) in {out} (records and preprocessing in export.json"
        f"{', class names in ' + LABELS_NAME if rt.class_names else ''})",
        ["point", "format", "file", "batch", "KiB", "max abs diff"],
        [
            (
                r.point,
                r.format,
                r.path.name,
                str(r.batch.record()),
                f"{r.bytes / 1024:.1f}",
                f"{r.max_abs_diff:.2e}",
            )
            for r in results
        ],
    )


def _with_format_flags(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` declaring one ``--<name>`` flag per registered format (after ``--all``, with the
    format's ``flag_help``), which typer passes into its ``**flags``."""
    from export.formats import FORMATS

    params = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    at = [p.name for p in params].index("all_points") + 1
    generated = [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=False,
            annotation=Annotated[bool, typer.Option(f"--{name}", help=spec.flag_help)],
        )
        for name, spec in FORMATS.items()
    ]
    merged = [*params[:at], *generated, *params[at:]]
    command.__signature__ = inspect.Signature(merged, return_annotation=None)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in merged}
    return command


export = _with_format_flags(export)


def _check_int8_options(
    int8: bool,
    formats: list[str],
    calib: str | None,
    calib_batches: int,
    max_drop: float,
    force: bool,
    task: str | None,
) -> None:
    """Refuse int8 options that cannot go together, before anything is loaded."""
    if not int8:
        given = [
            flag
            for flag, on in (("--calib", calib is not None), ("--task", task is not None), ("--force", force))
            if on
        ]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to --int8 exports only; add --int8")
        return
    from export.formats import check_int8_formats

    check_int8_formats(formats)
    if calib is None:
        raise ValueError(
            "--int8 needs --calib DATA: the front's data, whose images calibrate and measure its metric"
        )
    if calib_batches < 1:
        raise ValueError(f"--calib-batches {calib_batches}: give at least 1 batch")
    if not math.isfinite(max_drop) or max_drop < 0:
        raise ValueError(f"--max-drop {max_drop:g}: give a non-negative number of top-1 points")


def _export_int8(
    rt: SlimmableRuntime,
    points: list[FrontPoint],
    formats: list[str],
    out: Path,
    batches: BatchRange,
    calib: str,
    calib_batches: int,
    max_drop: float,
    force: bool,
    task: str | None,
    as_json: bool,
) -> None:
    """Export int8 programs of ``points``, print what each scored, and exit 1 when any was refused."""
    from export.formats import Calibration, served_backend
    from export.int8 import CALIB_BATCH, Score, export_int8_points, result_scores, top1_score
    from training.front_data import evaluation_set, task_evaluation_set
    from training.tasks import front_task

    metric = rt.front.metric
    measured_by = front_task(rt.front, task)
    if metric.declared:
        images = task_evaluation_set(measured_by, calib, rt.front)
        # A task's evaluate only calls the model it is given on its batches: a program's forward serves.
        score = cast(Score, measured_by.evaluators(images.data)[0])
    else:
        images = evaluation_set(calib, rt.front)
        score = top1_score(images.batches)
    seed = rt.front.training.seed
    calibration = Calibration(
        [x for x, _ in images.data.calib_batches(CALIB_BATCH, calib_batches, seed)],
        f"{calib_batches} x {CALIB_BATCH} training images of {calib}",
    )
    run = export_int8_points(
        rt,
        points,
        formats,
        out,
        calibration,
        score,
        images.split,
        batch=batches,
        max_drop=max_drop,
        force=force,
        on_done=None if as_json else lambda line: typer.echo(line, err=True),
    )
    if as_json:
        print_json(
            {
                "out": str(out),
                "calibration": {"images": calibration.images, "text": calibration.text},
                "evaluation": images.split,
                "exports": [r.to_entry(rt.front.weights_sha256) for r in run.results],
                "refused": run.refused,
            }
        )
    else:
        label = metric.rank if metric.declared else "top-1 %"
        rows = []
        for r in run.results:
            now, was = result_scores(metric, r.details)
            rows.append(
                (r.point, r.format, r.path.name, f"{r.bytes / 1024:.1f}", f"{now:.2f}", f"{was:.2f}",
                 f"{metric.worse_by(was, now):+.2f}")
            )  # fmt: skip
        print_table(
            f"{len(run.results)} int8 program(s) in {out}, recorded in {rt.front.path} "
            f"(calibrated on {calibration.images} images; {label} on {images.text})",
            ["point", "format", "file", "KiB", label, f"fp32 {label}", "drop"],
            rows,
        )
        if run.results:
            backends = " ".join(
                f"--backend {served_backend(r)}" for r in dict.fromkeys(x.format for x in run.results)
            )
            typer.echo(
                f"time them with: pareco bench {rt.front.path} {backends} --int8 --exports {out} --update"
            )
    if run.refused:
        what = f"{metric.rank}" if metric.declared else "top-1 points"
        typer.echo(
            f"error: {len(run.refused)} int8 program(s) lost more than {max_drop:g} {what} and were not "
            "written (listed above); --force writes them",
            err=True,
        )
        raise typer.Exit(1)


def _which_points(rt: SlimmableRuntime) -> str:
    """The error for an export that names no point: the three ways to name them, with this front's ids
    and a budget its middle point meets (MFLOPs rounded up, so the example selects it)."""
    pts = rt.points
    ids = ", ".join(p.id for p in pts)
    mflops = math.ceil(pts[len(pts) // 2].mflops * 10) / 10
    return (
        f"say which points to export: --budget B (e.g. --budget {mflops:.1f}MFLOPs), --point ID "
        f"(this front's: {ids}) or --all"
    )


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot become a folder (a file on its path) before anything is exported;
    nothing is created here."""
    for place in (out, *out.parents):
        if place.exists():
            if not place.is_dir():
                raise ValueError(f"--out {out}: {place} is a file, not a folder; choose another --out")
            return
