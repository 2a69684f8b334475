"""``pareco export``: slice chosen front points into files of the export formats (:mod:`export.formats`).

The per-format flags (``--onnx``, ``--executorch``, ...) are made from the format registry: one
``--<name>`` per :class:`~export.formats.base.Format`, with its ``flag_help``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .loading import MODEL_HELP, ManifestArg, load_runtime, resolve_manifest
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
            "--calib; each is checked by its top-1, measured in its runtime, and recorded in the manifest.",
        ),
    ] = False,
    calib: Annotated[
        str | None,
        typer.Option(
            "--calib",
            metavar="DATA",
            help="With --int8: the front's data (as `pareco train --data`); training images calibrate, "
            "the test/ or val/ folder (a hold-out for digits and synthetic) measures top-1.",
        ),
    ] = None,
    calib_batches: Annotated[
        int,
        typer.Option("--calib-batches", metavar="N", help="With --int8: calibration batches of 32 images."),
    ] = 16,
    max_drop: Annotated[
        float,
        typer.Option(
            "--max-drop",
            metavar="PTS",
            help="With --int8: most top-1 points a program may lose against fp32; a program losing more "
            "is reported and not written.",
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
    (an int8 program by its top-1 against the fp32 point's)."""
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
    _check_int8_options(int8, formats, calib, calib_batches, max_drop, force)
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
        _export_int8(rt, points, formats, out, batches, calib or "", calib_batches, max_drop, force, as_json)
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
            task = bar.add_task("", total=total)
            results = export_points(
                rt,
                points,
                formats,
                out,
                batch=batches,
                atol=atol,
                on_done=lambda r: bar.update(task, advance=1, description=r.path.name),
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
    int8: bool, formats: list[str], calib: str | None, calib_batches: int, max_drop: float, force: bool
) -> None:
    """Refuse int8 options that cannot go together, before anything is loaded."""
    if not int8:
        given = [flag for flag, on in (("--calib", calib is not None), ("--force", force)) if on]
        if given:
            raise ValueError(f"{' and '.join(given)} apply to --int8 exports only; add --int8")
        return
    from export.formats import check_int8_formats

    check_int8_formats(formats)
    if calib is None:
        raise ValueError(
            "--int8 needs --calib DATA: the front's data, whose images calibrate and measure top-1"
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
    as_json: bool,
) -> None:
    """Export int8 programs of ``points``, print what each scored, and exit 1 when any was refused."""
    from export.formats import Calibration, served_backend
    from export.int8 import CALIB_BATCH, export_int8_points
    from training.front_data import evaluation_set

    images = evaluation_set(calib, rt.front)
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
        images.batches,
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
        print_table(
            f"{len(run.results)} int8 program(s) in {out}, recorded in {rt.front.path} "
            f"(calibrated on {calibration.images} images; top-1 on {images.text})",
            ["point", "format", "file", "KiB", "top-1 %", "fp32 top-1 %", "drop"],
            [
                (
                    r.point,
                    r.format,
                    r.path.name,
                    f"{r.bytes / 1024:.1f}",
                    f"{r.details['top1']:.2f}",
                    f"{r.details['fp32_top1']:.2f}",
                    f"{r.details['fp32_top1'] - r.details['top1']:+.2f}",
                )
                for r in run.results
            ],
        )
        if run.results:
            backends = " ".join(
                f"--backend {served_backend(r)}" for r in dict.fromkeys(x.format for x in run.results)
            )
            typer.echo(
                f"time them with: pareco bench {rt.front.path} {backends} --int8 --exports {out} --update"
            )
    if run.refused:
        typer.echo(
            f"error: {len(run.refused)} int8 program(s) lost more than {max_drop:g} top-1 points and were not "
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
