"""Reproduce the paper's comparison at CPU scale: Independent, Slim, TwoStage and PareCO on CIFAR-10.

    python -m benchmarks.reproduce_cifar --data ../shared/datasets/cifar10-jpg.tar.gz --epochs 8 --out runs/reproduce

Trains ResNet20 with every method at equal epochs and the same schedule (Independent: four
separate runs at uniform widths 1.0, 0.75, 0.5, 0.316), one after another, each in ``OUT/<run>``.
It is resumable: a finished run is reused and an interrupted one continues from its checkpoint, so
the command can be run again after a stop (``nohup ... &`` for the long version). Then it reports,
from the manifests: top-1 at matched MACs (linear interpolation along each front), the
hypervolume of each front (top-1 above chance × MACs below 1.1 × full, reference point = chance
accuracy at 1.1 × full MACs; BoTorch's ``Hypervolume``), each method's training wall time and median
epoch time (robust to an epoch slowed by another job on a shared machine) as ratios to Slim's, a
plot of top-1 against MACs, and ``OUT/RESULTS.md``. ``--report-only`` skips training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

INDEPENDENT_WIDTHS = (1.0, 0.75, 0.5, 0.316)
METHODS = ("independent", "slim", "twostage", "pareco")


def run_names(methods: list[str]) -> list[tuple[str, str, float]]:
    """(run folder, algorithm, width) for every training run the comparison needs."""
    runs = []
    for m in methods:
        if m == "independent":
            runs += [(f"independent-{w:g}", m, w) for w in INDEPENDENT_WIDTHS]
        else:
            runs.append((m, m, 1.0))
    return runs


def train_all(args: argparse.Namespace, out: Path) -> None:
    """Train (or resume, or reuse) every run of the comparison."""
    from benchmarks.seed_records import write_record
    from training.config import TrainConfig
    from training.loop import train
    from training.run_dir import RUN_NAME

    base = TrainConfig(
        arch=args.arch,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        width_factor=args.width_factor,
        candidates=args.candidates,
        calib_batches=args.calib_batches,
        history_size=args.history_size,
        probe_batch=args.probe_batch,
        seed=args.seed,
        select_fraction=args.select_fraction,
    )
    for name, algorithm, width in run_names(args.methods):
        folder = out / name
        if (folder / "model.front.json").exists():
            print(f"{name}: finished, reused")
        else:
            cfg = replace(base, algorithm=algorithm, width=width)
            print(f"{name}: training ({'resuming' if (folder / RUN_NAME).exists() else 'new'})", flush=True)
            train(cfg, folder, resume=(folder / RUN_NAME).exists(), cache_dir=args.cache_dir)
        if algorithm != "independent":  # Independent's four runs make one front; the seed study has none
            print(f"{name}: record {write_record(folder, algorithm, args.width_factor, command_line(args))}")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this invocation (the settings given or defaulted, never --report-only)."""
    return "python -m benchmarks.reproduce_cifar " + " ".join(
        f"--{k.replace('_', '-')} {','.join(v) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if v not in (None, False) and k not in ("report_only", "cache_dir")
    )


def load_fronts(out: Path, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Per method: its (MFLOPs, top-1) points, its front (Independent's runs as one, each point named by its
    width) for the plot, training wall time and median epoch time (both summed over Independent's runs),
    BO record and epochs."""
    from pareco_runtime import Front

    fronts: dict[str, dict[str, Any]] = {}
    for name, algorithm, width in run_names(methods):
        path = out / name / "model.front.json"
        if not path.exists():
            continue
        front = Front.load(path, verify_weights=False)
        if algorithm == "independent":  # one point per run, all named p00
            front.points = [replace(p, id=f"w{width:g}") for p in front.points]
        entry = fronts.setdefault(
            algorithm,
            {"points": [], "front": front, "wall_s": 0.0, "epoch_s": 0.0, "epochs": front.training.epochs},
        )
        if entry["front"] is not front:
            entry["front"].points += front.points
        entry["points"] += [(p.mflops, p.top1) for p in front.points]
        entry["wall_s"] += front.training.wall_time_s
        entry["epoch_s"] += median_epoch_seconds(out / name / "train.log.jsonl")
        entry["extra"] = front.training.extra
    return fronts


def search_rows(fronts: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown rows describing the BO of PareCO and TwoStage: |H|, re-measurement, bisection, BO time."""
    rows = []
    for k in ("twostage", "pareco"):
        if k not in fronts:
            continue
        e = fronts[k]["extra"]
        bo = (
            f"{e['bo_time_share']:.1%} of training (re-measure {e['bo_measure_s']:.0f} s, GP fit {e['bo_fit_s']:.0f} s, "
            f"acquisition {e['bo_acquisition_s']:.0f} s)"
            if k == "pareco"
            else f"search after training {e['search_time_s']:.0f} s"
        )
        rows.append(
            f"| {k} | {e['history_size']} | {e.get('remeasure', 'all') if k == 'pareco' else 'once each'} | "
            f"{e['bisection_steps_mean']} | {bo} |"
        )
    return (
        [
            "",
            r"| method | \|H\| | re-measured per BO step | mean bisection steps | BO time |",
            "|---|---|---|---|---|",
            *rows,
        ]
        if rows
        else []
    )


def median_epoch_seconds(log: Path) -> float:
    """Median of the ``epoch_time_s`` records of a run's JSON-lines log (0 when it has none)."""
    import statistics

    times = (
        [r["epoch_time_s"] for r in map(json.loads, log.read_text().splitlines()) if "epoch_time_s" in r]
        if log.exists()
        else []
    )
    return statistics.median(times) if times else 0.0


def upper_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Non-dominated (cost down, value up: MFLOPs and top-1, or parameters and minus a loss) points,
    cheapest first."""
    best, front = -math.inf, []
    for mflops, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if top1 > best:
            front.append((mflops, top1))
            best = top1
    return front


def top1_at(front: list[tuple[float, float]], mflops: float) -> float | None:
    """Top-1 of the front at ``mflops``: linear interpolation inside its MAC range, its best point above
    it (that point meets the budget), None below its cheapest point."""
    if not front or mflops < front[0][0] * (1 - 1e-6):
        return None
    if mflops >= front[-1][0]:
        return front[-1][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(front):
        if x0 <= mflops <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (mflops - x0) / (x1 - x0)
    return front[-1][1]


def hypervolume(front: list[tuple[float, float]], full_mflops: float, chance: float) -> float:
    """Area dominated by the front in (top-1 above chance, MACs below 1.1 × full) space, MACs in units of full.

    The reference point sits 10 % beyond the full model's MACs so that the full-width point counts.
    """
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    y = torch.tensor([[t - chance, 1.1 - m / full_mflops] for m, t in front], dtype=torch.float64)
    return float(Hypervolume(ref_point=torch.zeros(2, dtype=torch.float64)).compute(y.clamp(min=0.0)))


def comparison_table(
    columns: tuple[str, str],
    heads: Sequence[str],
    rows: Sequence[tuple[str, int, Sequence[float | None], float, float]],
    digits: int,
    hv_digits: int,
) -> str:
    """A markdown table of fronts compared at matched costs: one row per ``(name, points, the figure at
    each of heads ("–" where the front does not reach it), hypervolume, training seconds)``;
    ``columns`` names the first and the last column."""
    lines = [
        f"| {columns[0]} | points | {' | '.join(heads)} | hypervolume | {columns[1]} |",
        "|---" * (len(heads) + 4) + "|",
    ]
    for name, points, values, hv, seconds in rows:
        cells = " | ".join("–" if v is None else f"{v:.{digits}f}" for v in values)
        lines.append(f"| {name} | {points} | {cells} | {hv:.{hv_digits}f} | {seconds:.0f} |")
    return "\n".join(lines)


def report(
    out: Path,
    methods: list[str],
    targets: list[float],
    full_mflops: float,
    chance: float,
    plot: Path,
    command: str,
) -> str:
    """Tables (markdown) of the comparison at the MFLOPs ``targets``; also draws ``plot``."""
    from bench.plots import plot_fronts

    fronts = load_fronts(out, methods)
    if not fronts:
        raise SystemExit(f"no finished runs in {out}; train first")
    upper = {k: upper_front(v["points"]) for k, v in fronts.items()}
    lines = [
        f"Command: `{command}`",
        "",
        "| method | "
        + " | ".join(f"top-1 @ {t:.1f} MFLOPs" for t in targets)
        + " | hypervolume | wall time vs Slim | median epoch vs Slim |",
        "|---" * (len(targets) + 4) + "|",
    ]
    slim = fronts.get("slim")
    for k in (m for m in METHODS if m in fronts):
        cells = []
        for t in targets:
            v = top1_at(upper[k], t)
            cells.append("–" if v is None else f"{v:.2f}")
        ratios = [
            f"{fronts[k][key] / slim[key]:.2f}×" if slim and slim[key] else "–"
            for key in ("wall_s", "epoch_s")
        ]
        lines.append(
            f"| {k} | "
            + " | ".join(cells)
            + f" | {hypervolume(upper[k], full_mflops, chance):.2f} | "
            + " | ".join(ratios)
            + " |"
        )
    lines += search_rows(fronts)
    plot_fronts(
        [v["front"] for v in fronts.values()],
        plot,
        labels=list(fronts),
        title=f"ResNet20, CIFAR-10, {next(iter(fronts.values()))['epochs']} epochs",
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/reproduce")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--width-factor", type=float, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--candidates", type=int, default=12)
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--history-size", type=int, default=100)
    ap.add_argument("--probe-batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--select-fraction",
        type=float,
        default=0.1,
        help="training images held out to choose each front on (0: choose on the test split, as before)",
    )
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument(
        "--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS)
    )
    ap.add_argument("--plot", default=None, help="PNG path (default OUT/front.png)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    out = Path(args.out)
    if not args.report_only:
        train_all(args, out)
    from pareco_runtime import Front
    from pareco_runtime.atomic import atomic_write_text

    any_front = Front.load(next(out.glob("*/model.front.json")), verify_weights=False)
    model = any_front.architecture.build()
    full = model.macs() / 1e6
    # Matched MACs: those of the Independent models (uniform widths), the paper's comparison points.
    targets = [model.macs(model.space.uniform(w)) / 1e6 for w in sorted(INDEPENDENT_WIDTHS)]
    chance = 100.0 / len(any_front.dataset.class_names)
    table = report(
        out, args.methods, targets, full, chance, Path(args.plot or out / "front.png"), command_line(args)
    )
    atomic_write_text(out / "RESULTS.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
