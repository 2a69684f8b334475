"""Front plots with matplotlib (written atomically).

:func:`plot_fronts` draws one front or several overlaid (PareCO against Slim, say): top-1 (or the
metric the fronts declare) against MFLOPs in one panel and against measured latency in one panel per
device profile, on a grid with a shared y axis. Each point is a marker annotated with its id; a line joins neighbours only
where they are close enough to stand for a front (:func:`line_runs`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pareco_runtime.atomic import atomic_path
from pareco_runtime.pareto import MAX_MAC_GAP

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from pareco_runtime.manifest import Front, FrontPoint

# A line across a gap wider than MAX_MAC_GAP would promise sub-networks that do not exist.
GAP_RATIO = MAX_MAC_GAP
# The chance line is drawn where it stretches the top-1 axis by at most 3x the fronts' own spread:
# on CIFAR-10 (fronts at 68.8-76.6 %, chance 10 %) drawing it would squeeze PareCO's 0.3-point lead
# over Slim into 1/200 of the panel, so there it is stated in the panel instead.
CHANCE_SPAN = 2.0
_COLUMNS = 3
_PANEL_INCHES = (4.6, 3.8)


def line_runs(xs: Sequence[float], ratio: float = GAP_RATIO) -> list[list[int]]:
    """Indices of ``xs`` (sorted ascending) split where a neighbour is more than ``ratio`` times the
    one before it (an empty gap in the front): each run is joined by a line, gaps are not."""
    runs: list[list[int]] = []
    for i, x in enumerate(xs):
        if runs and x <= ratio * xs[i - 1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def chance_top1(fronts: Sequence[Front]) -> float | None:
    """Top-1 (%) of guessing, 100 / the number of classes, where the fronts are ranked by top-1 and their
    class names are known."""
    classes = fronts[0].dataset.class_names
    return 100.0 / len(classes) if classes and not fronts[0].metric.declared else None


def chance_drawn(chance: float, top1: Sequence[float]) -> bool:
    """Whether the chance line goes into the panels: when it lies at most :data:`CHANCE_SPAN` times the
    fronts' spread of top-1 (1 point at least) below their lowest top-1."""
    spread = max(max(top1) - min(top1), 1.0)
    return chance >= min(top1) - CHANCE_SPAN * spread


def check_comparable(fronts: Sequence[Front]) -> None:
    """ValueError (one line) unless every front was evaluated on the same dataset with the same number of
    classes: top-1 on different test sets on one axis would read as a comparison that is not one."""
    first = fronts[0]
    for other in fronts[1:]:
        if (other.metric.rank, other.metric.higher_is_better) != (
            first.metric.rank,
            first.metric.higher_is_better,
        ):
            raise ValueError(
                f"{other.path}: ranked by {other.metric.rank}, but {first.path} by {first.metric.rank}; "
                "plot each front on its own (pareco show FILE --plot PNG)"
            )
        a, b = first.dataset, other.dataset
        if a.name != b.name or (a.class_names and b.class_names and len(a.class_names) != len(b.class_names)):
            raise ValueError(
                f"{other.path}: top-1 on dataset '{b.name}' ({len(b.class_names)} classes), but "
                f"{first.path} is on '{a.name}' ({len(a.class_names)} classes), and accuracies on different "
                "test sets are not comparable in one plot; plot each front on its own (pareco show FILE --plot PNG)"
            )


def axis_label(front: Front) -> str:
    """The y axis: ``top-1 (%)``, or the name of the metric the front declares and its direction."""
    metric = front.metric
    if not metric.declared:
        return "top-1 (%)"
    return f"{metric.rank} ({'higher' if metric.higher_is_better else 'lower'} is better)"


def front_label(front: Front) -> str:
    """The legend entry of a front: its training algorithm and the folder of its manifest."""
    where = "not saved" if front.path is None else str(front.path.parent)
    return f"{front.training.algorithm} ({where})"


def _measured(front: Front) -> list[tuple[FrontPoint, float]]:
    """The front's points that have a figure of its metric (top-1 where it declares none), each with it;
    ValueError when none has."""
    points = [(p, score) for p in front.points if (score := front.metric.score(p)) is not None]
    if not points:
        raise ValueError(
            f"{front.path or 'front'}: no point has a measured "
            f"{front.metric.rank if front.metric.declared else 'top-1'} to plot; evaluate it first"
        )
    return points


def _profiles(fronts: Sequence[Front], plotted: Sequence[Sequence[tuple[FrontPoint, float]]]) -> list[str]:
    """Device profiles with a measured latency at a plotted point of any front, in order of appearance."""
    names: list[str] = []
    for front, points in zip(fronts, plotted):
        for name in front.profile_names:
            if name not in names and any(name in p.latency_ms for p, _ in points):
                names.append(name)
    return names


def _panel_grid(panels: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``panels`` axes on a grid of at most :data:`_COLUMNS` columns sharing the y axis."""
    from matplotlib.figure import Figure

    cols = min(panels, _COLUMNS)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(_PANEL_INCHES[0] * cols, _PANEL_INCHES[1] * rows), layout="constrained")
    grid = fig.subplots(rows, cols, sharey=True, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for spare in axes[panels:]:
        fig.delaxes(spare)
    return fig, axes[:panels]


_Dot = tuple[float, float, str, bool]  # cost, top-1, point id, whether training chose it (not off-front)


def _draw(ax: Axes, points: Sequence[_Dot], color: str, label: str) -> None:
    """One front in one panel: a marker with its id per point, a line through the points training chose
    within each run of :func:`line_runs`; off-front points (``pareco calibrate``) as hollow markers off
    the line, with their own legend entry."""
    chosen = sorted(d for d in points if d[3])
    xs = [x for x, _, _, _ in chosen]
    ys = [y for _, y, _, _ in chosen]
    ax.plot(xs, ys, "o", color=color, markersize=4, label=label)
    for run in line_runs(xs):
        if len(run) > 1:
            ax.plot([xs[i] for i in run], [ys[i] for i in run], "-", color=color, linewidth=1.2)
    off = [d for d in points if not d[3]]
    if off:
        ax.plot(
            [x for x, _, _, _ in off],
            [y for _, y, _, _ in off],
            "o",
            color=color,
            markerfacecolor="none",
            markersize=5,
            label=f"{label}, off-front (pareco calibrate)",
        )
    for x, y, pid, _ in points:
        ax.annotate(pid, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, color=color)


def _chance(ax: Axes, chance: float | None, drawn: bool) -> None:
    if chance is None:
        return
    if drawn:
        ax.axhline(chance, color="0.5", linestyle=":", linewidth=1, label=f"chance ({chance:.1f} %)")
    else:
        # upper left: a front rises to the right, so that corner is empty (the legend takes the lower right)
        ax.text(
            0.02,
            0.98,
            f"chance {chance:.1f} %, below the axis",
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            color="0.4",
        )


def plot_fronts(
    fronts: Sequence[Front],
    path: Path | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Draw ``fronts`` (one or several, of one dataset: :func:`check_comparable`) and write the PNG to
    ``path`` (atomically) when given; returns the figure.

    Panels: top-1 against MFLOPs, then against measured latency of each device profile any front
    has, on a grid of at most three columns with one shared top-1 axis. Each front has one colour
    and one legend entry (``labels``, default :func:`front_label`; off-front points another), its
    points are annotated with their ids, and lines break at gaps (:func:`line_runs`). The chance line (100 / classes) is
    drawn where :func:`chance_drawn`, else stated in each panel. Points without a top-1 are left
    out; a front without any is a ValueError.
    """
    if not fronts:
        raise ValueError("no front to plot; name one or more manifests")
    check_comparable(fronts)
    names = list(labels) if labels is not None else [front_label(f) for f in fronts]
    plotted = [_measured(f) for f in fronts]
    profiles = _profiles(fronts, plotted)
    fig, axes = _panel_grid(1 + len(profiles))
    chance = chance_top1(fronts)
    drawn = chance is not None and chance_drawn(chance, [t for pts in plotted for _, t in pts])
    for i, (points, name) in enumerate(zip(plotted, names)):
        color = f"C{i % 10}"
        _draw(axes[0], [(p.mflops, t, p.id, p.origin is None) for p, t in points], color, name)
        for ax, prof in zip(axes[1:], profiles):
            timed = [
                (p.latency_ms[prof], t, p.id, p.origin is None) for p, t in points if prof in p.latency_ms
            ]
            if timed:
                _draw(ax, timed, color, name)
    axes[0].set_xlabel("MFLOPs (multiply-accumulates)")
    for ax, prof in zip(axes[1:], profiles):
        ax.set_xlabel(f"latency (ms), {prof}")
    for ax in axes:
        _chance(ax, chance, drawn)
        ax.grid(alpha=0.3)
        ax.margins(x=0.08)  # room for the id of the rightmost point
    for ax in axes[:: min(len(axes), _COLUMNS)]:
        ax.set_ylabel(axis_label(fronts[0]))
    axes[0].legend(fontsize=8, loc="lower right")
    archs = ", ".join(dict.fromkeys(f.architecture.arch for f in fronts))
    fig.suptitle(title or f"{archs} on {fronts[0].dataset.name}")
    if path is not None:
        save_figure(fig, path)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
