"""``pareco bench``: latency of front points per backend (``pareco bench``), a latency look-up table
(``pareco bench lut``) and latencies measured elsewhere (``pareco bench import``).

``pareco bench`` times points itself and hands over to a subcommand named first
(:class:`BenchCommand`), so that timing keeps its spelling ``pareco bench MANIFEST --backend B``;
the earlier mode flags, ``--build-lut`` and ``--import FILE``, still run the subcommands after
one line naming the new spelling.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from bench.backends import BACKENDS

from .finite import finite_floats
from .loading import MODEL_HELP, ManifestArg, load_runtime, resolve_manifest
from .output import check_output, is_latency_table, print_json, print_table

if TYPE_CHECKING:
    # typer carries its own copy of click (no click dependency); its commands take its classes.
    from typer._click import Command, Context

    from bench.timing import TimingSettings
    from pareco_runtime.manifest import Front, FrontPoint
    from pareco_runtime.models.base import SlimmableNet
    from pareco_runtime.runtime import SlimmableRuntime

# Options more than one of the three commands take.
Threads = Annotated[
    int, typer.Option("--threads", metavar="N", help="Threads per inference (1 stands for one phone core).")
]
Warmup = Annotated[int, typer.Option("--warmup", metavar="N", help="Warm-up rounds before timing.")]
Runs = Annotated[
    int,
    typer.Option("--runs", metavar="N", help="Timed rounds (one call of every candidate per round)."),
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--profile",
        metavar="NAME",
        help="Device profile name (one backend; default <host>-<backend>-t<threads>-b<batch>).",
    ),
]
DefaultMalloc = Annotated[
    bool,
    typer.Option(
        "--default-malloc",
        help="Leave glibc's malloc as it is (by default freed memory is kept, so that "
        "inferences do not page-fault).",
    ),
]
Model = Annotated[str | None, typer.Option("--model", metavar="pkg.module:factory", help=MODEL_HELP)]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _choose_points(rt: SlimmableRuntime, spec: str) -> list[FrontPoint]:
    if spec.strip().lower() == "all":
        return list(rt.points)
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if not ids:
        raise ValueError("--points: give comma-separated point ids or 'all'")
    return [rt.point(pid) for pid in dict.fromkeys(ids)]


def _fmt(v: float | None, spec: str) -> str | None:
    return None if v is None else format(v, spec)


def _timing(threads: int, batch: int | None, warmup: int, runs: int, default_malloc: bool) -> TimingSettings:
    from bench.timing import TimingSettings

    return TimingSettings(threads, batch, warmup, runs, steady_memory=not default_malloc)


def bench(
    manifest: ManifestArg = None,
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            metavar="BACKEND",
            help=f"{' | '.join(BACKENDS)}; repeat to compare (default: torch).",
        ),
    ] = None,
    threads: Threads = 1,
    batch: Annotated[
        int | None,
        typer.Option(
            "--batch",
            metavar="N",
            help="Batch size timed (default: the batch the ExecuTorch files of --exports were "
            "exported for, else 1).",
        ),
    ] = None,
    points: Annotated[
        str, typer.Option("--points", metavar="IDS|all", help="Comma-separated point ids, or 'all'.")
    ] = "all",
    warmup: Warmup = 30,
    runs: Runs = 200,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Write the medians into the manifest as a device profile (and predicted latencies of "
            "unmeasured points, where a look-up table exists).",
        ),
    ] = False,
    through_runtime: Annotated[
        bool,
        typer.Option(
            "--through-runtime",
            help="Time what an app calls: rt(x) of SlimmableRuntime.load(..., backend=B) after "
            "rt.switch(point), instead of the sliced model or exported file alone (profile <host>-<backend>-rt-...).",
        ),
    ] = False,
    profile: Profile = None,
    exports: Annotated[
        Path | None,
        typer.Option(
            "--exports",
            metavar="DIR",
            help="Reuse (and add) exported files of this folder (with --int8, default: export/ beside the "
            "manifest).",
        ),
    ] = None,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also time the int8 programs `pareco export --int8` wrote (on their compiled backends); "
            "with --update their latencies go to the points' int8 variants.",
        ),
    ] = False,
    default_malloc: DefaultMalloc = False,
    model: Model = None,
    as_json: Json = False,
) -> None:
    """Measure latency per front point and backend (interleaved, medians); optionally store it in the manifest."""
    from bench.backends import check_backends

    if exports is not None and exports.exists() and not exports.is_dir():
        raise ValueError(
            f"--exports {exports}: not a folder; pass the folder pareco export wrote, or a new one"
        )
    backends = check_backends(list(backend) if backend else ["torch"])
    timing = _timing(threads, batch, warmup, runs, default_malloc)
    rt = load_runtime(resolve_manifest(manifest), model)
    if int8 and exports is None and rt.front.path is not None:
        from export.serving import EXPORT_DIR

        exports = rt.front.path.parent / EXPORT_DIR
    _measure(
        rt,
        backends,
        timing,
        _choose_points(rt, points),
        update,
        profile,
        exports,
        as_json,
        int8,
        through_runtime,
    )


def bench_lut(
    manifest: ManifestArg = None,
    backend: Annotated[
        str,
        typer.Option("--backend", metavar="BACKEND", help=f"The table's backend: {' | '.join(BACKENDS)}."),
    ] = "torch",
    threads: Threads = 1,
    batch: Annotated[int, typer.Option("--batch", metavar="N", help="Batch size timed.")] = 1,
    warmup: Warmup = 30,
    runs: Runs = 200,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="Write the table's predictions into the manifest (latency_predicted_ms of its profile).",
        ),
    ] = False,
    profile: Profile = None,
    lut_levels: Annotated[
        int, typer.Option("--lut-levels", metavar="N", help="Grid widths per dimension in the look-up table.")
    ] = 3,
    lut_validate: Annotated[
        int,
        typer.Option("--lut-validate", metavar="N", help="Random configs the look-up table is checked on."),
    ] = 20,
    lut_calibrate: Annotated[
        int, typer.Option("--lut-calibrate", metavar="N", help="Configs its correction is fitted on.")
    ] = 5,
    default_malloc: DefaultMalloc = False,
    model: Model = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            metavar="ARCH",
            help="Without a manifest: build the table for the network `pareco train` will build from "
            "the same --arch, --classes, --image-size, --width-factor and --low (for `pareco train "
            "--cost latency@FILE`); saved as --out.",
        ),
    ] = None,
    classes: Annotated[
        int | None,
        typer.Option(
            "--classes", metavar="N", help="With --arch: classes of the training data (default 10)."
        ),
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            "--image-size", metavar="PX", help="With --arch: the training run's input size (CIFAR-10: 32)."
        ),
    ] = None,
    width_factor: Annotated[
        float | None,
        typer.Option("--width-factor", metavar="K", help="With --arch: k of k x ResNet (default 1)."),
    ] = None,
    low: Annotated[
        float | None,
        typer.Option(
            "--low", metavar="W", help="With --arch: smallest width of a converted network (default 0.25)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="With --arch: the table file to write (.json)."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Build and validate the latency look-up table (NAME.lut.<profile>.json beside the manifest, or
    --out FILE for a network not trained yet)."""
    from bench.backends import check_backends

    (chosen,) = check_backends([backend])
    timing = _timing(threads, batch, warmup, runs, default_malloc)
    source: Front | SlimmableNet
    if arch is not None:
        if manifest is not None or update or out is None or image_size is None:
            raise ValueError(
                "--arch builds a latency table for a network not trained yet: give it with "
                "--image-size PX and --out FILE, and without a manifest or --update"
            )
        check_output(out, "--out", ".json", is_latency_table, "name a new .json file for the table")
        source = _untrained_model(arch, classes, image_size, width_factor, low)
    else:
        network = {
            "--classes": classes,
            "--image-size": image_size,
            "--width-factor": width_factor,
            "--low": low,
            "--out": out,
        }
        given = [flag for flag, value in network.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)}: describe the network of --arch (a table for a run not trained "
                "yet); a front's table is built from its manifest and saved beside it"
            )
        source = load_runtime(resolve_manifest(manifest), model).front
    _build_lut(source, out, chosen, timing, update, profile, lut_levels, lut_validate, lut_calibrate, as_json)


def bench_import(
    source: Annotated[
        Path,
        typer.Option(
            "--from",
            metavar="FILE",
            help="The latencies measured elsewhere (a phone): FILE.csv of point_id,ms lines or "
            "FILE.json ({id: ms} or a list of records).",
        ),
    ],
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            metavar="NAME",
            help="The device the figures come from (e.g. pixel7); budgets then name it: --budget 5ms@pixel7.",
        ),
    ],
    manifest: ManifestArg = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime", metavar="TEXT", help="What ran the points (e.g. 'executorch 1.5.1 XNNPACK')."
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", metavar="TEXT", help="The device measured on (e.g. 'Pixel 7, Tensor G2')."),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", metavar="N", help="Threads the figures were measured with.")
    ] = 1,
    batch: Annotated[
        int, typer.Option("--batch", metavar="N", help="Batch the figures were measured at.")
    ] = 1,
    as_json: Json = False,
) -> None:
    """Record latencies measured on another device (a phone) as a device profile of the manifest."""
    _import(resolve_manifest(manifest), source, profile, runtime, threads, batch, host, as_json)


def _import(
    manifest: Path,
    file: Path,
    profile: str,
    runtime: str | None,
    threads: int,
    batch: int,
    host: str | None,
    as_json: bool,
) -> None:
    from bench.imported import import_profile

    done = import_profile(
        manifest,
        file,
        profile,
        runtime=runtime,
        threads=threads,
        batch=batch,
        host=host,
    )
    name = done.profile.name
    if as_json:
        print_json({"manifest": str(manifest), **done.to_dict()})
        return
    print_table(
        f"from {file.name}",
        ["point", "ms"],
        [(pid, f"{ms:.3f}") for pid, ms in done.latency_ms.items()],
    )
    typer.echo(f"profile {name}: {done.profile.runtime}; {done.profile.host}")
    unmeasured = [pid for pid in done.missing if pid not in done.kept]
    if unmeasured:
        typer.echo(
            f"not in {file.name}: {', '.join(unmeasured)}; without a latency on {name}, "
            f"a budget @{name} does not pick them"
        )
    if done.kept:
        kept = ", ".join(f"{pid} {ms:.3f} ms" for pid, ms in done.kept.items())
        typer.echo(f"not in {file.name}, kept from an earlier record of {name}: {kept}")
    typer.echo(f"manifest updated: latency_ms[{name}]; select with --budget <ms>ms@{name}")


def _stage_printer(as_json: bool) -> Callable[[str], None]:
    from rich.console import Console

    console = Console(stderr=True)
    return (lambda _msg: None) if as_json else (lambda msg: console.print(f"[dim]{msg}[/dim]"))


def _measure(
    rt: SlimmableRuntime,
    backends: list[str],
    timing: TimingSettings,
    chosen: list[FrontPoint],
    update: bool,
    profile: str | None,
    exports: Path | None,
    as_json: bool,
    int8: bool,
    through_runtime: bool,
) -> None:
    from bench.run import record_report, run_bench

    report = run_bench(
        rt,
        chosen,
        backends,
        timing,
        profile=profile,
        exports=exports,
        on_stage=_stage_printer(as_json),
        int8=int8,
        through_runtime=through_runtime,
    )
    written = record_report(rt.front, report) if update else []
    if as_json:
        print_json({**report.to_dict(), "updated_profiles": written})
        return
    with_energy = any(m.energy_mj is not None for m in report.measurements)
    with_int8 = any(m.precision != "fp32" for m in report.measurements)
    columns = (
        ["point", "MFLOPs", "backend"]
        + (["precision"] if with_int8 else [])
        + ["median ms", "p90 ms", "IQR ms", "x torch"]
        + (["x fp32"] if with_int8 else [])
        + (["mJ"] if with_energy else [])
    )
    rows = [
        [m.point, f"{m.mflops:.2f}", m.backend]
        + ([m.precision] if with_int8 else [])
        + [f"{m.median_ms:.3f}", f"{m.p90_ms:.3f}", f"{m.iqr_ms:.3f}", _fmt(m.ratio_to_torch, ".2f")]
        + ([_fmt(m.ratio_to_fp32, ".2f")] if with_int8 else [])
        + ([_fmt(m.energy_mj, ".3f")] if with_energy else [])
        for m in report.measurements
    ]
    print_table(
        f"latency at batch {report.timing.batch}, {timing.threads} thread(s), {timing.runs} runs after "
        f"{timing.warmup} warm-up, interleaved"
        + (", rt(x) through SlimmableRuntime" if through_runtime else ""),
        columns,
        rows,
    )
    for prof in report.profiles.values():
        typer.echo(f"profile {prof.name}: {prof.runtime}; {prof.host}")
    for note in [*report.notes, report.energy]:
        typer.echo(note)
    for name in written:
        typer.echo(f"manifest updated: latency_ms[{name}]; select with --budget <ms>ms@{name}")


def _untrained_model(
    arch: str, classes: int | None, image_size: int, width_factor: float | None, low: float | None
) -> SlimmableNet:
    """The slimmable network ``pareco train`` builds for these settings (random weights: timing does
    not depend on them); ValueError naming the flag of a bad one."""
    from training.config import TrainConfig
    from training.loop import build_for_data

    num_classes = 10 if classes is None else classes
    if num_classes < 2 or image_size < 1:
        bad = f"--classes {num_classes}" if num_classes < 2 else f"--image-size {image_size}"
        raise ValueError(f"{bad}: must be at least {2 if num_classes < 2 else 1}")
    defaults = TrainConfig()
    cfg = TrainConfig(
        arch=arch,
        image_size=image_size,
        width_factor=defaults.width_factor if width_factor is None else width_factor,
        low=defaults.low if low is None else low,
    )
    cfg.validate()
    return build_for_data(cfg, num_classes, (3, image_size, image_size))


def _build_lut(
    source: Front | SlimmableNet,
    out: Path | None,
    backend: str,
    timing: TimingSettings,
    update: bool,
    profile: str | None,
    levels: int,
    validate: int,
    calibrate: int,
    as_json: bool,
) -> None:
    from bench.lut import build_saved_lut

    table = build_saved_lut(
        source,
        backend,
        out=out,
        timing=timing,
        profile=profile,
        levels=levels,
        calibrate=calibrate,
        validate=validate,
        update=update,
        on_stage=_stage_printer(as_json),
    )
    path, prof, predicted, rep = table.path, table.profile, table.predicted_ms, table.lut.report
    if as_json:
        print_json(
            {
                "lut": str(path),
                "profile": prof.to_dict(),
                "predicted_ms": predicted,
                "updated": update,
                **{k: v for k, v in rep.items() if k != "rows"},
            }
        )
        return
    val, cal = rep["validation"], rep["calibration"]
    print_table(
        f"latency look-up table {path.name}: {rep['units']} blocks timed in {rep['grid_configs']} configs, "
        f"{val['configs']} validation configs",
        ["name", "median |err| %", "max |err| %", "within ±10 %"],
        [
            (
                "sum of blocks",
                f"{100 * val['raw']['median_abs_rel_error']:.1f}",
                f"{100 * val['raw']['max_abs_rel_error']:.1f}",
                f"{100 * val['raw']['within_10pct']:.0f} %",
            ),
            (
                "calibrated",
                f"{100 * val['median_abs_rel_error']:.1f}",
                f"{100 * val['max_abs_rel_error']:.1f}",
                f"{100 * val['within_10pct']:.0f} %",
            ),
        ],
    )
    typer.echo(
        f"correction (fitted on {cal['configs']} configs): predicted = {cal['offset_ms']:.4f} ms + "
        f"{cal['scale']:.4f} x sum of blocks"
    )
    if predicted:
        typer.echo("predicted ms per point: " + ", ".join(f"{k} {v:.3f}" for k, v in predicted.items()))
    else:
        typer.echo(
            f"train on it: pareco train --arch {table.lut.arch} ... --algorithm pareco --cost latency@{path}"
        )
    if update:
        typer.echo(
            f"manifest updated: latency_predicted_ms[{prof.name}] for points without a measurement; "
            f"select with --budget <ms>ms@{prof.name} --allow-predicted"
        )


# ---------------------------------------------------------------------------------------------- subcommands


def _click_command(function: Callable[..., None]) -> Command:
    single = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    single.command()(function)
    return typer.main.get_command(single)


# Their float options refuse nan and ±inf, as every command's do (pareco_cli.finite).
SUBCOMMANDS = {
    "lut": _click_command(finite_floats(bench_lut)),
    "import": _click_command(finite_floats(bench_import)),
}

EPILOG = (
    "Also: pareco bench lut [MANIFEST] ... builds a latency look-up table; pareco bench import "
    "[MANIFEST] --from FILE --profile NAME records latencies measured elsewhere (see their --help)."
)


def _new_spelling(args: list[str]) -> tuple[str | None, list[str]]:
    """The subcommand ``args`` ask for and its arguments: named first, or by an earlier mode flag
    (``--build-lut``, ``--import FILE``), which gets one line on stderr naming the new spelling."""
    if args and args[0] in SUBCOMMANDS:
        return args[0], args[1:]
    if "--build-lut" in args:
        typer.echo("note: `pareco bench --build-lut` is now `pareco bench lut`", err=True)
        return "lut", [a for a in args if a != "--build-lut"]
    for i, arg in enumerate(args):
        if arg == "--import" or arg.startswith("--import="):
            typer.echo(
                "note: `pareco bench --import FILE` is now `pareco bench import --from FILE`", err=True
            )
            value = [arg.partition("=")[2]] if "=" in arg else args[i + 1 : i + 2]
            return "import", [*args[:i], "--from", *value, *args[i + 1 + (0 if "=" in arg else 1) :]]
    return None, args


class BenchCommand(TyperCommand):
    """``pareco bench``: times points itself; a subcommand named first (or asked for by its old flag)
    gets the arguments instead, with its own options and help (``pareco bench lut --help``)."""

    subcommands = SUBCOMMANDS

    def make_context(
        self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any
    ) -> Context:
        name, rest = _new_spelling(list(args))
        if name is None:
            return super().make_context(info_name, args, parent=parent, **extra)
        # The group runs the returned context's own command, so the subcommand's callback runs.
        return SUBCOMMANDS[name].make_context(f"{info_name} {name}", rest, parent=parent, **extra)
