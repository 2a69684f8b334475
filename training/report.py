"""What the end of a training run tells the user: a summary with the next commands to type, the BO
schedule it ran, and fronts that need more work."""

from __future__ import annotations

import itertools
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pareco_runtime.manifest import Front, Metric
from pareco_runtime.pareto import MAX_MAC_GAP

from .progress import format_duration

# A point this close to guessing learned nothing.
CHANCE_MARGIN = 1.25


def front_warnings(points: Sequence[Any], num_classes: int) -> list[str]:
    """One line per problem of a front (``points`` with ``macs`` and ``top1`` in %, sorted by MACs), with
    what to do: points at chance level, and MAC gaps wider than 3x between neighbours."""
    out = []
    chance = 100.0 / num_classes
    weak = [p for p in points if p.top1 < CHANCE_MARGIN * chance]
    if weak:
        out.append(
            f"{len(weak)} of {len(points)} front points are at chance level (top-1 <= "
            f"{max(p.top1 for p in weak):.1f}%, chance {chance:.1f}%); train more epochs (--epochs) "
            f"or check the data and --lr"
        )
    return out + gap_warnings(points)


def gap_warnings(points: Sequence[Any]) -> list[str]:
    """One line per MAC gap wider than 3x between neighbours of a front (``points`` with ``macs``,
    sorted by MACs), with what to do."""
    out = []
    for a, b in itertools.pairwise(points):
        if a.macs > 0 and b.macs / a.macs > MAX_MAC_GAP:
            out.append(
                f"the front has no point between {a.macs / 1e6:.2f} and {b.macs / 1e6:.2f} MFLOPs "
                f"({b.macs / a.macs:.1f}x); evaluate more candidates (--candidates) or train longer"
            )
    return out


def bo_line(record: Mapping[str, Any], history_size: int | None) -> str | None:
    """How often PareCO's BO ran and its share of the time (None for algorithms without a BO loop)."""
    interval = record.get("bo_interval_steps")
    if interval is None:
        return None
    how = (
        "set by --history-size" if history_size else "from the run's length; set --history-size to change it"
    )
    return (
        f"BO every {interval} step(s), |H| {record['history_size']} ({how}), "
        f"{record['bo_time_share']:.0%} of the training time"
    )


def suggested_budget(costs: Sequence[float], unit: str = "MFLOPs") -> str:
    """A budget that the middle point of a front (``costs`` ascending, in ``unit``: ``MFLOPs`` or
    ``ms@PROFILE``) meets, as ``pareco select`` reads it; rounded up so that the point is not left just
    outside it."""
    middle = costs[len(costs) // 2]
    return f"{math.ceil(middle * 100) / 100:.2f}{unit}"


def next_commands(manifest: Path, budget: str, flags: str = "") -> list[str]:
    """The commands that look at, choose from and export the front in ``manifest`` (``flags`` added to
    those that take the budget)."""
    m = shlex.quote(str(manifest))
    export_dir = shlex.quote(str(manifest.parent / "export"))
    return [
        f"pareco show {m}",
        f"pareco select {m} --budget {budget}{flags}",
        f"pareco export {m} --budget {budget}{flags} --onnx --out {export_dir}",
    ]


def run_summary(manifest: Path, files: Sequence[Path], command_s: float) -> dict[str, Any]:
    """What a finished run tells its user (and ``pareco train --json`` a script): points, MFLOPs range,
    the best point's top-1 (a front ranked by another metric: that metric's figure, under its name,
    and ``metric`` naming it) and the split it is on, the split the points were chosen on, wall times,
    the ``files`` that exist, PareCO's BO schedule (None for other algorithms) and the next commands."""
    front = Front.load(manifest, verify_weights=False)
    points = sorted(front.points, key=lambda p: p.mflops)
    splits = front.dataset.splits or {}
    top1_split = splits.get("top1", {"name": "val"})
    metric = front.metric
    if metric.declared:
        best = min(points, key=lambda p: _to_minimise(metric, p))
        figure: dict[str, Any] = {metric.rank: metric.score(best), "metric": metric.rank}
    else:
        best = max(points, key=lambda p: -1.0 if p.top1 is None else p.top1)
        figure = {"top1": best.top1}
    extra = front.training.extra
    mflops = [p.mflops for p in points]
    return {
        "manifest": str(manifest),
        "points": len(points),
        "candidates": extra.get("candidates_evaluated"),
        "mflops": [round(mflops[0], 4), round(mflops[-1], 4)],
        "best": {
            "id": best.id,
            "mflops": round(best.mflops, 4),
            **figure,
            "split": top1_split["name"],
        },
        "chosen_on": splits.get("selection", top1_split),
        "wall_time_s": {
            "training": front.training.wall_time_s,
            "front": extra.get("finalize_time_s"),
            "command": round(command_s, 3),
        },
        "files": [str(f) for f in files if f.exists()],
        "bo": bo_line(extra, (extra.get("config") or {}).get("history_size")),
        "next": _next(manifest, points, str(extra.get("cost", "MACs"))),
    }


def _to_minimise(metric: Metric, point: Any) -> float:
    """``point``'s reported figure of ``metric`` as a quantity to minimise; unmeasured last."""
    value = metric.score(point)
    return math.inf if value is None else metric.better_first(value)


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """:func:`run_summary` as the lines printed at the end of ``pareco train``."""
    chosen = summary["chosen_on"]
    on = (
        f"{chosen['images']} held-out training images"
        if chosen["name"] == "train-holdout"
        else f"the {chosen['name']} split itself ({chosen.get('images', '?')} images)"
    )
    low, high = summary["mflops"]
    best = summary["best"]
    name = best.get("metric", "top1")
    value = "-" if best[name] is None else f"{best[name]:.2f}" + ("%" if name == "top1" else "")
    label = "top-1" if name == "top1" else name
    wall = summary["wall_time_s"]
    front_time = "" if wall["front"] is None else f", front {format_duration(wall['front'])}"
    lines = [
        f"front: {summary['points']} points, {low:.2f}-{high:.2f} MFLOPs, from "
        f"{summary['candidates']} candidates chosen on {on}",
        f"best: {best['id']}, {label} {value} on {best['split']} at {best['mflops']:.2f} MFLOPs",
        f"time: training {format_duration(wall['training'])}{front_time} "
        f"(this command {format_duration(wall['command'])})",
        "files: " + ", ".join(summary["files"]),
    ]
    if summary["bo"]:
        lines.append(summary["bo"])
    return [*lines, "next:", *(f"  {c}" for c in summary["next"])]


def _next(manifest: Path, points: Sequence[Any], cost: str) -> list[str]:
    """The next commands, with a budget in the search's cost: MFLOPs, or the predicted milliseconds of
    the device a latency-aware run searched on (which ``select`` uses with ``--allow-predicted``)."""
    profile = cost.removeprefix("latency@")
    if profile == cost:
        return next_commands(manifest, suggested_budget([p.mflops for p in points]))
    ms = sorted(p.latency_predicted_ms[profile] for p in points)
    return next_commands(manifest, suggested_budget(ms, f"ms@{profile}"), " --allow-predicted")
