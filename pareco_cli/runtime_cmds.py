"""``pareco select`` and ``pareco show``: read a front, pick a point, draw the front."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from .loading import ManifestArg, ManifestsArg, resolve_manifest
from .output import check_output, is_png, print_json, print_table

if TYPE_CHECKING:
    pass

Chosen = TypeVar("Chosen")


def check_fallback(fallback: str | None) -> None:
    """``--fallback`` is absent or 'cheapest' (the runtime's only fallback); ValueError naming the flag."""
    if fallback not in (None, "cheapest"):
        raise ValueError(
            f"--fallback {fallback}: the only fallback is 'cheapest'; pass --fallback cheapest or leave it out"
        )


def choose_point(choose: Callable[[str | None], Chosen], fallback: str | None) -> tuple[Chosen, bool]:
    """The point (or :class:`~pareco_runtime.budget.Choice`) ``choose(fallback)`` picks under the command's ``--budget``, and whether it meets the
    budget (False: ``--fallback cheapest`` took the cheapest point). Unmet without ``--fallback``: a
    one-line ValueError naming the flags."""
    from pareco_runtime.budget import BudgetUnmetError

    check_fallback(fallback)
    try:
        return choose(None), True
    except BudgetUnmetError as exc:
        if fallback is None:
            raise ValueError(
                f"--budget: {exc.reason}; loosen the budget or pass --fallback cheapest"
            ) from None
    return choose(fallback), False


def _chosen_on_holdout(front) -> bool:
    """Whether the front's points were chosen on a selection split (so they carry its figure)."""
    return "selection" in (front.dataset.splits or {}) or any(
        front.metric.selection_score(p) is not None for p in front.points
    )


def _columns(front, profiles: list[str]) -> list[str]:
    """The table's header: the front's metric named by its split (top-1 where it declares none), the
    figure the points were chosen on where the front has one, then the loss or its other figures."""
    metric = front.metric
    splits = front.dataset.splits or {}
    ranked = f"{metric.label} ({splits['top1']['name']})" if "top1" in splits else metric.label
    chosen = [f"chosen-on {'%' if not metric.declared else metric.rank}"] if _chosen_on_holdout(front) else []
    others = [n for n in metric.names if n != metric.rank] if metric.declared else ["loss"]
    return ["id", "MFLOPs", "Mparams", ranked, *chosen, *others] + [f"{n} ms" for n in profiles]


def _splits_line(front) -> str | None:
    """Which images the metric's figures are from, or None where the manifest does not record it."""
    splits = front.dataset.splits
    if not splits:
        return None
    top1 = splits["top1"]
    name = "top-1" if not front.metric.declared else front.metric.rank
    line = f"{name}: {top1['images']} {top1['name']} images"
    sel = splits.get("selection")
    if sel is None:
        return line + f"; the points were chosen on these same images, so their {name} is optimistic"
    return (
        line
        + f"; chosen-on: {sel['images']} training images held out of training, the points were chosen on them"
    )


def _point_row(p, profiles: list[str], selected: bool, metric) -> list:
    """A point's row under :func:`_columns`: its figures by the front's ``metric``."""
    score, chosen = metric.score(p), metric.selection_score(p)
    row = [p.id, f"{p.mflops:.2f}", f"{p.params / 1e6:.3f}", None if score is None else f"{score:.2f}"]
    if selected:
        row.append(None if chosen is None else f"{chosen:.2f}")
    if metric.declared:
        row += [f"{p.metrics[n]:.4g}" if n in p.metrics else None for n in metric.names if n != metric.rank]
    else:
        row.append(None if p.loss is None else f"{p.loss:.4f}")
    for name in profiles:
        if name in p.latency_ms:
            row.append(f"{p.latency_ms[name]:.3f}")
        elif name in p.latency_predicted_ms:
            row.append(f"~{p.latency_predicted_ms[name]:.3f}")
        else:
            row.append(None)
    return row


def select(
    manifest: ManifestArg = None,
    budget: list[str] = typer.Option(
        ...,
        "--budget",
        metavar="BUDGET",
        help="e.g. 100MFLOPs, 5ms@PROFILE, 2mJ, battery=30%; repeat to AND.",
    ),
    fallback: str | None = typer.Option(
        None, "--fallback", metavar="cheapest", help="'cheapest': take the cheapest point if unmet."
    ),
    allow_predicted: bool = typer.Option(
        False, "--allow-predicted", help="Use predicted latency where unmeasured."
    ),
    precision: str | None = typer.Option(
        None,
        "--precision",
        metavar="fp32|int8",
        help="Choose among the fp32 points only, or their int8 variants only (default: both).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the best front point by its metric (fp32, or an int8 variant of one) that meets every budget."""
    from pareco_runtime.budget import as_budget, budget_parts, choose
    from pareco_runtime.manifest import PRECISIONS, Front

    check_fallback(fallback)
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: choose {' or '.join(PRECISIONS)}")
    manifest = resolve_manifest(manifest)
    front = Front.load(manifest)
    profiles = front.profile_names
    b = as_budget(list(budget))
    chosen, met = choose_point(
        lambda fb: choose(
            front.points,
            b,
            profiles=profiles,
            fallback=fb,
            allow_predicted=allow_predicted,
            precision=precision,
            metric=front.metric,
        ),
        fallback,
    )
    p, variant = chosen.point, chosen.variant
    if as_json:
        print_json(
            {
                "budget": {"text": b.describe(), "parts": budget_parts(b)},
                "met": met,
                "fallback": None if met else fallback,
                "point": p.to_dict(),
                "precision": chosen.precision,
                "variant": None if variant is None else variant.to_dict(),
            }
        )
        return
    print_table(
        f"{manifest.name} under {b.describe()}",
        _columns(front, profiles),
        [_point_row(chosen.as_point(), profiles, _chosen_on_holdout(front), front.metric)],
    )
    typer.echo("widths: " + ", ".join(f"{a:.3f}" for a in p.alpha))
    typer.echo("channels: " + ", ".join(str(c) for c in p.channels))
    if variant is None:
        typer.echo("precision: fp32" + (" (int8 variants were considered)" if _has_variants(front) else ""))
    else:
        typer.echo(f"precision: {chosen.describe()}: {_variant_text(variant, front.metric)}")
    if not met:
        typer.echo("budget not met: no point satisfies it; this is the cheapest point (--fallback cheapest)")


def show(
    manifests: ManifestsArg = None,
    plot: Path | None = typer.Option(
        None,
        "--plot",
        metavar="PNG",
        help="Write a PNG: top-1 against MFLOPs and against latency per device profile, the fronts overlaid.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Machine-readable output (a list for several fronts)."
    ),
) -> None:
    """Print each front as a table (and draw them in one plot, e.g. PareCO against Slim)."""
    from pareco_runtime.manifest import Front

    if plot is not None:
        check_output(plot, "--plot", ".png", is_png, "name a new .png file, or an earlier plot")
    given: list[Path | None] = [*manifests] if manifests else [None]
    fronts = [Front.load(resolve_manifest(m)) for m in given]
    figure = None
    if plot is not None:
        from bench.plots import plot_fronts

        figure = plot_fronts(fronts, plot)  # before any output: fronts that cannot share a plot are refused
    if as_json:
        shown = [{"manifest": str(f.path), **f.to_dict()} for f in fronts]
        print_json(shown if manifests and len(manifests) > 1 else shown[0])
    else:
        for front in fronts:
            _print_front(front)
    if figure is not None:
        typer.echo(f"plot written to {plot} ({len(figure.axes)} panels)", err=as_json)


def _print_front(front) -> None:
    """One front's table, titled with its manifest and algorithm; which images its top-1 is from, and its
    off-front points."""
    profiles = front.profile_names
    tr = front.training
    print_table(
        f"{front.path}: {front.architecture.arch} front, {len(front.points)} points ({tr.algorithm}, "
        f"{tr.epochs} epochs, {front.dataset.name}); ~ = predicted",
        _columns(front, profiles),
        [_point_row(p, profiles, _chosen_on_holdout(front), front.metric) for p in front.points],
    )
    splits = _splits_line(front)
    if splits:
        typer.echo(splits)
    calibrated = [p.id for p in front.points if p.origin == "calibrated"]
    if calibrated:
        typer.echo(f"off-front (added by pareco calibrate, not chosen by training): {', '.join(calibrated)}")
    if _has_variants(front):
        label = front.metric.label
        print_table(
            "int8 variants (pareco export --int8; select among them with --precision or any budget)",
            ["id", "backend", label, f"fp32 {label}", "drop", "KiB"] + [f"{n} ms" for n in profiles],
            [
                [p.id, v.backend, *_variant_cells(front.metric, v), f"{v.bytes / 1024:.0f}"]
                + [None if n not in v.latency_ms else f"{v.latency_ms[n]:.3f}" for n in profiles]
                for p in front.points
                for v in p.variants
            ],
        )


def _has_variants(front) -> bool:
    return any(p.variants for p in front.points)


def _variant_cells(metric, v) -> list[str]:
    """A variant's ranking figure, fp32's and the drop between them (in the metric's direction)."""
    now, was = metric.variant_scores(v)
    return [f"{now:.2f}", f"{was:.2f}", f"{metric.worse_by(was, now):+.2f}"]


def _variant_text(v, metric) -> str:
    """A variant's figures in one line: its metric against fp32's on the same images, size, latencies."""
    split = v.split
    times = ", ".join(f"{ms:.3f} ms@{name}" for name, ms in sorted(v.latency_ms.items()))
    now, was = metric.variant_scores(v)
    figures = (
        f"top-1 {now:.2f} % (fp32 {was:.2f} %"
        if not metric.declared
        else f"{metric.rank} {now:.4g} (fp32 {was:.4g}"
    )
    return (
        f"{figures} on the same {split['images']} {split['name']} images: a drop of "
        f"{metric.worse_by(was, now):+.2f}{' points' if not metric.declared else ''}), {v.bytes / 1024:.0f} KiB"
        + (f", {times}" if times else "")
    )
