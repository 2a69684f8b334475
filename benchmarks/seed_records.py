"""Run records of the seed study: one small JSON file per finished training run, kept in the repository.

    python -m benchmarks.seed_records                      # report from benchmarks/results/*.json alone
    python -m benchmarks.seed_records --plot-dir docs      # also one plot per width

Run folders (weights, checkpoints) stay on the machine that trained them and were lost between
sessions before; a record keeps what the comparison needs: the command, seed, commit, wall time and
each front point's MFLOPs with its selection (held-out) and test top-1. The commit is the
checkout's when the record was written (a run resumed across commits trained under several). ``benchmarks.reproduce_cifar``
writes one when a run finishes. The report groups records by (architecture, width factor, epochs) and
gives, per group: each method's test top-1 at the matched MACs (the uniform widths 1, 0.75, 0.5, 0.316)
as mean ± sample standard deviation over seeds, the hypervolume per seed, and the paired difference
PareCO − Slim per seed at every matched MAC count with its sign.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RECORD_FORMAT = 1
MATCHED_WIDTHS = (0.316, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class RunRecord:
    """One finished run: its settings, its front's (MFLOPs, selection top-1, test top-1) points."""

    method: str
    arch: str
    width_factor: float
    epochs: int
    seed: int
    wall_time_s: float
    full_mflops: float
    matched_mflops: tuple[float, ...]
    chance: float
    points: tuple[tuple[float, float | None, float], ...]

    @property
    def group(self) -> tuple[str, float, int]:
        """What makes runs comparable: architecture, width factor, epochs."""
        return self.arch, self.width_factor, self.epochs

    def upper_front(self) -> list[tuple[float, float]]:
        """The non-dominated (MFLOPs down, test top-1 up) points, cheapest first."""
        from benchmarks.reproduce_cifar import upper_front

        return upper_front([(m, t) for m, _, t in self.points])


def record_path(method: str, arch: str, width_factor: float, seed: int, epochs: int) -> Path:
    """Where a run's record lives: ``benchmarks/results/<arch>-w<k>-e<epochs>-<method>-s<seed>.json``."""
    return RESULTS / f"{arch}-w{width_factor:g}-e{epochs}-{method}-s{seed}.json"


def _commit() -> str:
    """HEAD's commit, with ``+dirty`` when the work tree differs from it ("unknown" outside git)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def write_record(run_dir: Path, method: str, width_factor: float, command: str) -> Path:
    """Write the record of the finished run in ``run_dir`` (its ``model.front.json``); returns its path.

    A record already holding this front's points is left as it is: reusing a finished run (to report
    again) must not restamp its commit, host and command with the current ones."""
    from benchmarks.reproduce_cifar import median_epoch_seconds
    from pareco_runtime import Front
    from pareco_runtime.atomic import atomic_write_text

    front = Front.load(run_dir / "model.front.json", verify_weights=False)
    model = front.architecture.build()
    record = {
        "format": RECORD_FORMAT,
        "method": method,
        "arch": front.architecture.arch,
        "width_factor": width_factor,
        "epochs": front.training.epochs,
        "seed": front.training.seed,
        "command": command,
        "commit": _commit(),
        "host": f"{platform.machine()} {_cpu_name()}",
        "wall_time_s": round(front.training.wall_time_s, 1),
        "median_epoch_s": round(median_epoch_seconds(run_dir / "train.log.jsonl"), 1),
        "full_mflops": model.macs() / 1e6,
        "matched_mflops": [model.macs(model.space.uniform(w)) / 1e6 for w in MATCHED_WIDTHS],
        "chance": 100.0 / len(front.dataset.class_names),
        "points": [
            {"id": p.id, "mflops": p.mflops, "selection_top1": p.selection_top1, "top1": p.top1}
            for p in front.points
        ],
    }
    path = record_path(method, record["arch"], width_factor, record["seed"], record["epochs"])
    if path.exists() and json.loads(path.read_text()).get("points") == record["points"]:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def _cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (profiles record it: these machines change vendor)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_records(folder: Path = RESULTS) -> list[RunRecord]:
    """Every record in ``folder``; a record of an unknown format is an error naming the file."""
    records = []
    for path in sorted(folder.glob("*.json")):
        d: dict[str, Any] = json.loads(path.read_text())
        if d.get("format") != RECORD_FORMAT:
            raise SystemExit(f"{path}: record format {d.get('format')!r} unknown; update pareco")
        records.append(
            RunRecord(
                method=d["method"],
                arch=d["arch"],
                width_factor=float(d["width_factor"]),
                epochs=int(d["epochs"]),
                seed=int(d["seed"]),
                wall_time_s=float(d["wall_time_s"]),
                full_mflops=float(d["full_mflops"]),
                matched_mflops=tuple(map(float, d["matched_mflops"])),
                chance=float(d["chance"]),
                points=tuple((p["mflops"], p["selection_top1"], p["top1"]) for p in d["points"]),
            )
        )
    return records


def _mean_sd(values: list[float]) -> str:
    """``mean ± sd`` (sample sd; a lone value is shown alone, with its n)."""
    if len(values) == 1:
        return f"{values[0]:.2f} (n=1)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def group_report(runs: list[RunRecord]) -> list[str]:
    """Markdown for one group of comparable runs: top-1 at matched MACs, hypervolume, paired differences."""
    from benchmarks.reproduce_cifar import hypervolume, top1_at

    first = runs[0]
    targets = first.matched_mflops
    by_method: dict[str, dict[int, RunRecord]] = {}
    for r in runs:
        by_method.setdefault(r.method, {})[r.seed] = r
    arch, k, epochs = first.group
    lines = [
        f"### {arch}, width factor {k:g}, {epochs} epochs",
        "",
        "Test top-1 (%) at matched MACs, mean ± sd over seeds; hypervolume per seed (seed: value).",
        "",
        "| method | seeds | "
        + " | ".join(f"@ {t:.2f} MFLOPs" for t in targets)
        + " | hypervolume per seed |",
        "|---" * (len(targets) + 3) + "|",
    ]
    for method in sorted(by_method):
        seeds = by_method[method]
        cells = []
        for t in targets:
            vals = [v for r in seeds.values() if (v := top1_at(r.upper_front(), t)) is not None]
            cells.append(_mean_sd(vals) if vals else "–")
        hv = ", ".join(
            f"{s}: {hypervolume(r.upper_front(), r.full_mflops, r.chance):.2f}"
            for s, r in sorted(seeds.items())
        )
        lines.append(f"| {method} | {len(seeds)} | " + " | ".join(cells) + f" | {hv} |")
    lines += paired_rows(by_method, targets)
    return lines


def paired_rows(by_method: dict[str, dict[int, RunRecord]], targets: tuple[float, ...]) -> list[str]:
    """PareCO − Slim per seed that both finished, at each matched MAC count, and the hypervolume gap."""
    from benchmarks.reproduce_cifar import hypervolume, top1_at

    pareco, slim = by_method.get("pareco", {}), by_method.get("slim", {})
    seeds = sorted(set(pareco) & set(slim))
    if not seeds:
        return ["", "No seed has both a PareCO and a Slim run yet: no paired difference."]
    lines = [
        "",
        "Paired difference PareCO − Slim (test top-1 points; + means PareCO ahead):",
        "",
        "| seed | " + " | ".join(f"@ {t:.2f}" for t in targets) + " | hypervolume |",
        "|---" * (len(targets) + 2) + "|",
    ]
    diffs: list[list[float]] = [[] for _ in targets]
    for s in seeds:
        p, q = pareco[s], slim[s]
        cells = []
        for i, t in enumerate(targets):
            a, b = top1_at(p.upper_front(), t), top1_at(q.upper_front(), t)
            if a is None or b is None:
                cells.append("–")
                continue
            diffs[i].append(a - b)
            cells.append(f"{a - b:+.2f}")
        hv = hypervolume(p.upper_front(), p.full_mflops, p.chance) - hypervolume(
            q.upper_front(), q.full_mflops, q.chance
        )
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {hv:+.2f} |")
    signs = [f"{sum(d > 0 for d in col)}/{len(col)} ahead" if col else "–" for col in diffs]
    means = [f"{statistics.mean(col):+.2f}" if col else "–" for col in diffs]
    lines.append("| mean | " + " | ".join(means) + " | |")
    lines.append("| PareCO ahead | " + " | ".join(signs) + " | |")
    return lines


def plot_group(runs: list[RunRecord], path: Path) -> None:
    """Every seed's front as a thin line and each method's mean front as a thick one, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from benchmarks.reproduce_cifar import top1_at
    from pareco_runtime.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colours = {"slim": "tab:blue", "pareco": "tab:red"}
    for i, method in enumerate(sorted({r.method for r in runs})):
        colour = colours.get(method, f"C{i + 2}")
        mine = [r for r in runs if r.method == method]
        fronts = [r.upper_front() for r in mine]
        for f in fronts:
            ax.plot(*zip(*f, strict=True), color=colour, lw=0.7, alpha=0.45, marker=".", ms=3)
        lo, hi = max(f[0][0] for f in fronts), min(f[-1][0] for f in fronts)
        grid = np.linspace(lo, hi, 60)
        mean = [statistics.mean(v for f in fronts if (v := top1_at(f, x)) is not None) for x in grid]
        ax.plot(
            grid,
            mean,
            color=colour,
            lw=2.4,
            label=f"{method} (mean of {len(mine)} seed{'s' * (len(mine) != 1)})",
        )
    arch, k, epochs = runs[0].group
    ax.set(
        xlabel="MFLOPs (multiply-accumulates)",
        ylabel="test top-1 (%)",
        title=f"{arch} ×{k:g} width, CIFAR-10, {epochs} epochs: every seed (thin), mean (thick)",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def report(records: list[RunRecord], plot_dir: Path | None) -> str:
    """The whole report in markdown, one section per group; plots into ``plot_dir`` when given."""
    groups: dict[tuple[str, float, int], list[RunRecord]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    lines = [
        "# Seed study: PareCO against Slim, seed by seed",
        "",
        "Generated by `python -m benchmarks.seed_records --plot-dir docs --out docs/seed_study.md` from "
        "the records in `benchmarks/results/` alone (one per finished run; how the runs are made: "
        "[CIFAR-10 comparison](RESULTS.md#three-seeds-two-widths-the-seed-study-in-progress)).",
        "",
    ]
    for key in sorted(groups):
        lines += [*group_report(groups[key]), ""]
        if plot_dir is not None:
            arch, k, epochs = key
            path = plot_dir / f"seeds_{arch}_w{k:g}_e{epochs}.png"
            plot_group(groups[key], path)
            lines += [f"![every seed's front]({path.name})", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=Path, default=RESULTS, help="folder of run records")
    ap.add_argument("--plot-dir", type=Path, default=None, help="write one PNG per group here")
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = ap.parse_args()
    records = load_records(args.records)
    if not records:
        raise SystemExit(f"{args.records}: no run records; train with benchmarks.reproduce_cifar first")
    text = report(records, args.plot_dir)
    if args.out:
        from pareco_runtime.atomic import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
