"""``pareco specialize``: a front re-chosen for one device's latency, served by the same weight file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .loading import MODEL_HELP, ManifestArg, TaskOption, load_runtime, resolve_manifest
from .output import check_output, print_json, print_table

if TYPE_CHECKING:
    from pareco_runtime.latency_table import LatencyLUT
    from pareco_runtime.manifest import DeviceProfile, Front

# Share of the training images to compare configs on when the front records no held-out split (its
# weights trained on them, so the comparison is optimistic for every config alike); as `pareco train`.
HELD_OUT = 0.1


def specialize(
    manifest: ManifestArg = None,
    profile: str = typer.Option(
        ...,
        "--profile",
        metavar="NAME",
        help="The device profile whose latency table (NAME.lut.<profile>.json beside the manifest, from "
        "`pareco bench lut MANIFEST --profile NAME`) is the search's cost.",
    ),
    data: str = typer.Option(
        ...,
        "--data",
        metavar="DATA",
        help="The front's training data (as `pareco train --task TASK --data`): configs are recalibrated on "
        "its training images, compared on images held out of training, the chosen points measured on its "
        "test split, by the front's metric.",
    ),
    task: TaskOption = None,
    points: int = typer.Option(8, "--points", metavar="N", help="Points of the new front (at most)."),
    evals: int = typer.Option(
        40, "--evals", metavar="K", help="Configs calibrated and measured in the search, in all."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        metavar="FILE",
        help="The new manifest, in the weight file's folder (default: <name>.<profile>.front.json beside "
        "the manifest).",
    ),
    calib_batches: int | None = typer.Option(
        None,
        "--calib-batches",
        metavar="N",
        help="Batches of training images the BN statistics average over (default: as the front's training).",
    ),
    seed: int = typer.Option(0, "--seed", metavar="S", help="Seed of the random configs and the BO."),
    measure: bool | None = typer.Option(
        None,
        "--measure/--no-measure",
        help="Time the chosen points here with the table's backend, threads and batch (default: when "
        "the table was built on this host); otherwise they keep the table's predictions.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing manifest at --out."),
    model: str | None = typer.Option(None, "--model", metavar="pkg.module:factory", help=MODEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Search the width space again for one device: the same weights, a front chosen by its metric on
    held-out images (top-1, mIoU, mAP) and the device's latency, served, selected, exported and
    benchmarked like a trained front."""
    from bench.device import host_description
    from pareco_runtime.filelock import locked
    from pareco_runtime.latency_table import LatencyLUT, lut_path
    from pareco_runtime.manifest import check_derived_path, save_derived_front
    from training.extend import calibration_settings, selection_fraction
    from training.progress import Reporter
    from training.search_cost import LatencyCost
    from training.specialize import SpecializeSettings
    from training.specialize import specialize as search
    from training.tasks import front_task

    for flag, value, least in (
        ("--points", points, 2),
        ("--evals", evals, 1),
        ("--calib-batches", calib_batches, 1),
    ):
        if value is not None and value < least:
            raise ValueError(f"{flag} {value}: must be at least {least}")
    manifest = resolve_manifest(manifest)
    table = lut_path(manifest, profile)
    if not (table.exists() or table.is_symlink()):
        raise ValueError(
            f"{manifest}: no latency table for profile '{profile}' ({table.name}); build it on the device's "
            f"backend first: pareco bench lut {manifest} --profile {profile} --backend executorch --threads 1"
        )
    target = out if out is not None else manifest.with_name(f"{_stem(manifest)}.{profile}.front.json")
    rt = load_runtime(manifest, model)
    front = rt.front
    measured_by = front_task(front, task)
    try:
        check_derived_path(front, target)
    except ValueError as exc:
        raise ValueError(f"--out {exc}") from None
    check_output(target, "--out", ".front.json", _derived_from(front), "name a new NAME.front.json there")
    if target.exists() and not force:
        raise ValueError(f"--out {target}: exists; pass --force to replace it, or name another file")
    lut = LatencyLUT.load(table)
    cost = LatencyCost(lut, rt.model, table)
    here = lut.host == host_description(lut.backend)
    if measure and not here:
        raise ValueError(
            f"--measure: {table.name} was timed on {lut.host or 'an unnamed host'}, not here; leave --measure "
            "out and bring measurements back with `pareco bench import`"
        )
    batches, batch_size = calibration_settings(front)
    images = measured_by.front_data(data, front, selection_fraction(front) or HELD_OUT)
    evaluate, selection_evaluate = measured_by.evaluators(images)
    settings = SpecializeSettings(points=points, evals=evals, seed=seed)
    progress = Reporter(evals, enabled=not as_json)
    t0 = time.perf_counter()
    result = search(
        rt.model,
        [p.alpha for p in front.points],
        cost,
        lambda: images.calib_batches(batch_size, calib_batches or batches, seed),
        evaluate,
        settings,
        selection_evaluate=selection_evaluate,
        metric=front.metric,
        on_progress=lambda done, total: progress.update(
            done, "specialize", f"{done}/{total} configs measured", total
        ),
    )
    progress.close()
    seconds = time.perf_counter() - t0
    record = {
        "specialized": {
            "from": manifest.name,
            "profile": lut.profile,
            "latency_table": table.name,
            "evals": len(result.history),
            "seed": seed,
            "seconds": round(seconds, 1),
            "measure_s": round(result.measure_s, 1),
            "bo_s": round(result.bo_s, 1),
        }
    }
    # The search takes minutes; another `pareco specialize --out` the same file may have written it since.
    # Checked again, and written, under the file's lock: one of two such runs is refused, none lost.
    with locked(target):
        if target.exists() and not force:
            raise ValueError(
                f"--out {target}: written by another process while this one searched; pass --force to "
                "replace it, or name another file"
            )
        saved = save_derived_front(
            front, target, result.points, result.bn_stats, [_profile(front, lut)], record
        )
    measured = bool(here if measure is None else measure)
    if measured:
        _measure(saved, model, lut)
    _report(saved, front, lut, seconds, measured, as_json)


def _stem(manifest: Path) -> str:
    name = manifest.name
    return name[: -len(".front.json")] if name.endswith(".front.json") else manifest.stem


def _derived_from(front: Front) -> Callable[[Path], bool]:
    """Whether a file is a manifest that ``pareco specialize`` derived from ``front``'s weight file: the only
    file ``--out --force`` replaces (never the trained front, another front's files or a stranger's)."""
    from pareco_runtime.manifest import Front

    def ours(path: Path) -> bool:
        try:
            other = Front.load(path, verify_weights=False)
        except (OSError, ValueError):
            return False
        return "specialized" in other.training.extra and other.weights_file == front.weights_file

    return ours


def _profile(front: Front, lut: LatencyLUT) -> DeviceProfile:
    """The device profile the table belongs to: the front's own entry of that name, else the table's."""
    known = next((p for p in front.device_profiles if p.name == lut.profile), None)
    return known if known is not None else lut.device_profile()


def _measure(manifest: Path, model: str | None, lut: LatencyLUT) -> None:
    """Time the new front's points here on the table's backend, threads and batch; record them as measured."""
    from bench.run import record_report, run_bench
    from bench.timing import TimingSettings

    rt = load_runtime(manifest, model)
    report = run_bench(
        rt,
        rt.points,
        [lut.backend],
        TimingSettings(threads=lut.threads, batch=lut.batch),
        profile=lut.profile,
    )
    record_report(rt.front, report)


def _report(saved: Path, old: Front, lut: LatencyLUT, seconds: float, measured: bool, as_json: bool) -> None:
    from pareco_runtime.manifest import Front

    new = Front.load(saved, verify_weights=False)
    if as_json:
        print_json(
            {"manifest": str(saved), "measured": measured, "seconds": round(seconds, 1), **new.to_dict()}
        )
        return
    prof, metric = lut.profile, new.metric
    rows: list[list[Any]] = []
    for p in new.points:
        ms = p.latency_ms.get(prof)
        score, chosen_on = metric.score(p), metric.selection_score(p)
        rows.append(
            [
                p.id,
                f"{p.mflops:.2f}",
                None if score is None else f"{score:.2f}",
                None if chosen_on is None else f"{chosen_on:.2f}",
                f"{p.latency_predicted_ms[prof]:.3f}",
                None if ms is None else f"{ms:.3f}",
            ]
        )
    print_table(
        f"{saved.name}: front for {prof}",
        [
            "id",
            "MFLOPs",
            metric.label,
            f"chosen-on {metric.rank}" if metric.declared else "chosen-on %",
            "predicted ms",
            "measured ms",
        ],
        rows,
    )
    how = "measured here" if measured else "predicted by the table (pass --allow-predicted to select on them)"
    typer.echo(
        f"{len(new.points)} points in {seconds:.0f} s, latency {how}; served by {old.weights_file} "
        f"(not copied), BN statistics in {new.stats_files[0].file}"
    )
    middle = new.points[len(new.points) // 2]
    ms = middle.latency_ms.get(prof) or middle.latency_predicted_ms[prof]
    flag = "" if measured else " --allow-predicted"
    typer.echo(f"next:\n  pareco show {saved}\n  pareco select {saved} --budget {ms:.3f}ms@{prof}{flag}")
