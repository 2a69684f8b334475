"""``pareco export``: slice chosen front points into ONNX, TorchScript, ``.pt2`` or ExecuTorch files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .loading import MODEL_HELP, ManifestArg, load_runtime, resolve_manifest
from .output import print_json, print_table
from .runtime_cmds import check_fallback, choose_point

if TYPE_CHECKING:
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
    onnx: Annotated[
        bool, typer.Option("--onnx", help="ONNX (dynamic batch, opset >= 18), checked in onnxruntime.")
    ] = False,
    torchscript: Annotated[bool, typer.Option("--torchscript", help="TorchScript (traced), .pt.")] = False,
    pt2: Annotated[bool, typer.Option("--pt2", help="torch.export program, .pt2 (dynamic batch).")] = False,
    executorch: Annotated[
        bool,
        typer.Option("--executorch", help="ExecuTorch .pte lowered to XNNPACK (the batch of --batch)."),
    ] = False,
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
            "MAX, e.g. dynamic:8); ONNX, TorchScript and .pt2 files take any batch.",
        ),
    ] = "1",
    atol: Annotated[
        float,
        typer.Option("--atol", metavar="X", help="Largest absolute difference to PyTorch a file may show."),
    ] = 1e-4,
    model: Annotated[
        str | None, typer.Option("--model", metavar="pkg.module:factory", help=MODEL_HELP)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Export front points; each file is loaded back in its runtime and checked against PyTorch."""
    formats = [
        name
        for name, on in (
            ("onnx", onnx),
            ("torchscript", torchscript),
            ("pt2", pt2),
            ("executorch", executorch),
        )
        if on
    ]
    if not formats:
        raise ValueError("choose at least one format: --onnx, --torchscript, --pt2 or --executorch")
    chosen = sum((bool(budget), bool(point), all_points))
    if chosen > 1:
        raise ValueError(
            "give one of --budget B, --point ID or --all to say which points to export, not several"
        )
    if fallback is not None and not budget:
        raise ValueError("--fallback applies to --budget only")
    check_fallback(fallback)
    manifest = resolve_manifest(manifest)
    if out is None:
        out = manifest.parent / "export"
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
