"""Slim, Mix'n'Match and PareCO fronts of the ViT example on CIFAR-10, compared at matched MACs and at
matched ExecuTorch latencies.

    OMP_NUM_THREADS=1 nice python -m benchmarks.vit_fronts --out runs/vit-fronts --epochs 4

Trains ``examples/vit_cifar.py`` twice with the same data, network, epochs and seed: Slim (MatFormer-style
nested training, which also writes the Mix'n'Match front from Slim's weights) and PareCO (per-layer FFN
widths and heads searched by BO). ``--algorithms slim`` / ``--algorithms pareco`` train one of them, so
two processes can train both at once; a front that exists is reused. Then every point of every front is
timed with ExecuTorch (XNNPACK, batch 1, one thread; ``pareco bench --update``, profile ``vit-et``) unless
``--no-latency``. The fronts are compared by test top-1 at the MACs and at the ExecuTorch latencies of
uniform widths 0.25, 0.5 and 0.75 (MACs from the network, latencies from the Slim front's points,
interpolated between them; each front's best point within the budget, interpolated as
:func:`benchmarks.reproduce_cifar.top1_at` does) and by hypervolume in (MACs, top-1) space, the reference
a chance guess at 1.1 × the full network's MACs. Writes
``benchmarks/results/vit-fronts/vit-fronts-<settings>.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.reproduce_cifar import comparison_table, hypervolume, top1_at, upper_front
from pareco_runtime.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "vit_cifar.py"
RESULTS = ROOT / "benchmarks" / "results" / "vit-fronts"
FRONTS = ("slim", "mixnmatch", "pareco")
MATCHED_WIDTHS = (0.25, 0.5, 0.75)
PROFILE = "vit-et"
MODEL = "examples.vit_cifar:vit_net"
SETTINGS = ("epochs", "depth", "dim", "heads", "batch_size", "history_size", "candidates")


def _run(command: list[str], log: Path) -> None:
    """Run ``command`` from the checkout with its output in ``log``; stop with its exit status on failure."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with log.open("a") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed (exit {done.returncode}); see {log}")


def train(args: argparse.Namespace) -> None:
    """Run the example for each of ``--algorithms`` whose front is missing."""
    shared = ["--out", str(args.out), "--data", args.data, "--epochs", str(args.epochs), "--depth",
              str(args.depth), "--dim", str(args.dim), "--heads", str(args.heads), "--batch-size",
              str(args.batch_size), "--history-size", str(args.history_size), "--candidates",
              str(args.candidates)]  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for algorithm in args.algorithms.split(","):
        if not (args.out / algorithm / "model.front.json").exists():
            _run(
                [sys.executable, str(EXAMPLE), *shared, "--algorithms", algorithm],
                args.out / f"{algorithm}.log",
            )


def time_fronts(args: argparse.Namespace) -> None:
    """Time every point of every front with ExecuTorch in one ``pareco bench`` run, interleaved (each
    round calls every point once), unless done before (``--retime``: again).

    The points go into one manifest over the Slim front's weights (``OUT/timing``, ids
    ``<front>.<id>``): a sub-network's latency depends on its shape, not its weights, and fronts timed
    in separate runs on this shared machine disagreed by up to 38 % on one and the same sub-network
    (the smallest: 0.79 ms in one run, 1.09 ms in the next).
    """
    from pareco_runtime.manifest import Front

    timing = args.out / "timing" / "model.front.json"
    if timing.exists() and not args.retime:
        return
    combined = Front.load(args.out / "slim" / "model.front.json")
    combined.points = [
        dataclasses.replace(p, id=f"{name}.{p.id}", latency_ms={}, energy_mj={}, latency_predicted_ms={})
        for name in FRONTS
        if (path := args.out / name / "model.front.json").exists()
        for p in Front.load(path).points
    ]
    combined.device_profiles = []
    timing.parent.mkdir(exist_ok=True)
    shutil.copyfile(combined.weights_path, timing.parent / combined.weights_file)
    combined.save(timing)
    _run(
        [sys.executable, "-m", "pareco_cli.main", "bench", str(timing), "--backend", "executorch",
         "--threads", "1", "--warmup", "30", "--runs", str(args.runs), "--model", MODEL, "--update",
         "--profile", PROFILE, "--exports", str(timing.parent / "exports")],
        args.out / "bench.log",
    )  # fmt: skip


def _timed(args: argparse.Namespace) -> dict[str, float]:
    """ExecuTorch median latency by ``<front>.<point id>`` from the timing run (empty if none)."""
    timing = args.out / "timing" / "model.front.json"
    if not timing.exists():
        return {}
    return {p["id"]: p["latency_ms"][PROFILE] for p in _points(timing) if PROFILE in p["latency_ms"]}


def _points(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["points"])


def _top1(point: dict[str, Any]) -> float:
    """Test top-1 of a point: the example declares top-1 as the front's metric."""
    return float(point["metrics"]["top1"] if "metrics" in point else point["top1"])


def _latency_targets(slim: list[dict[str, Any]], macs: list[float]) -> list[float] | None:
    """The Slim front's ExecuTorch latency at each of ``macs`` (MFLOPs), interpolated between its
    points; None where the points are not timed."""
    timed = sorted((p["mflops"], p["latency_ms"][PROFILE]) for p in slim if PROFILE in p["latency_ms"])
    if len(timed) < 2:
        return None
    targets = []
    for m in macs:
        below = [t for t in timed if t[0] <= m] or timed[:1]
        above = [t for t in timed if t[0] >= m] or timed[-1:]
        (x0, y0), (x1, y1) = below[-1], above[0]
        targets.append(y0 if x1 == x0 else y0 + (y1 - y0) * (m - x0) / (x1 - x0))
    return targets


def summary(args: argparse.Namespace) -> dict[str, Any]:
    """Per front: points, top-1 at the matched MACs and latencies, hypervolume, training wall time."""
    from examples.vit_cifar import slimmable_vit

    manifests = {
        n: json.loads(p.read_text()) for n in FRONTS if (p := args.out / n / "model.front.json").exists()
    }
    loaded = {n: list(m["points"]) for n, m in manifests.items()}
    timed = _timed(args)
    for name, points in loaded.items():
        for p in points:
            p["latency_ms"] = {PROFILE: timed[f"{name}.{p['id']}"]} if f"{name}.{p['id']}" in timed else {}
    kwargs = next(iter(manifests.values()))["architecture"]["kwargs"]["model"]
    model = slimmable_vit(kwargs["num_classes"], kwargs["depth"], kwargs["dim"], kwargs["heads"])
    full = model.macs(model.space.uniform(1.0)) / 1e6
    macs = [model.macs(model.space.uniform(w)) / 1e6 for w in MATCHED_WIDTHS]
    latencies = _latency_targets(loaded["slim"], macs) if "slim" in loaded else None
    fronts: dict[str, Any] = {}
    for name, points in loaded.items():
        by_macs = upper_front([(float(p["mflops"]), _top1(p)) for p in points])
        row: dict[str, Any] = {
            "points": len(points),
            "top1_at_macs": [None if (v := top1_at(by_macs, m)) is None else round(v, 2) for m in macs],
            "hypervolume": round(hypervolume(by_macs, full, 100.0 / kwargs["num_classes"]), 2),
            "wall_time_s": manifests[name]["training"]["wall_time_s"],
        }
        if latencies and all(PROFILE in p["latency_ms"] for p in points):
            by_ms = upper_front([(float(p["latency_ms"][PROFILE]), _top1(p)) for p in points])
            row["top1_at_ms"] = [None if (v := top1_at(by_ms, t)) is None else round(v, 2) for t in latencies]
            row["latency_ms"] = {p["id"]: [p["mflops"], p["latency_ms"][PROFILE]] for p in points}
        fronts[name] = row
    from bench.device import host_description

    return {
        "settings": {k: getattr(args, k) for k in SETTINGS},
        "data": Path(args.data).name,
        "host": host_description("executorch"),
        "full_mflops": round(full, 3),
        "matched_mflops": [round(m, 3) for m in macs],
        "matched_ms": None if latencies is None else [round(t, 4) for t in latencies],
        "fronts": fronts,
    }


def tables(result: dict[str, Any]) -> str:
    """The comparison at matched MACs and, where timed, at matched latencies, as markdown tables."""
    rows = result["fronts"].items()
    text = comparison_table(
        ("front", "training s"),
        [f"top-1 @ {m:.1f} MFLOPs" for m in result["matched_mflops"]],
        [(n, r["points"], r["top1_at_macs"], r["hypervolume"], r["wall_time_s"]) for n, r in rows],
        digits=2,
        hv_digits=2,
    )
    if result["matched_ms"]:
        text += "\n\n" + comparison_table(
            ("front", "training s"),
            [f"top-1 @ {t:.2f} ms" for t in result["matched_ms"]],
            [(n, r["points"], r.get("top1_at_ms", []), r["hypervolume"], r["wall_time_s"]) for n, r in rows],
            digits=2,
            hv_digits=2,
        )
    return text


def main(argv: list[str] | None = None) -> None:
    from examples.vit_cifar import default_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run folder (fronts there are reused)")
    ap.add_argument("--data", default=default_data(), help="a pareco train --data spec")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--history-size", type=int, default=100, help="PareCO's |H|")
    ap.add_argument("--candidates", type=int, default=20, help="configs evaluated per front")
    ap.add_argument("--algorithms", default="slim,pareco", help="which to train here (slim, pareco)")
    ap.add_argument("--runs", type=int, default=200, help="timed ExecuTorch runs per point")
    ap.add_argument("--retime", action="store_true", help="time every front again (a quiet machine)")
    ap.add_argument("--no-latency", action="store_true", help="compare at matched MACs only")
    ap.add_argument("--train-only", action="store_true", help="train, then stop (no timing, no report)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON result")
    args = ap.parse_args(argv)
    train(args)
    if args.train_only:
        return
    if not args.no_latency:
        time_fronts(args)
    result = summary(args)
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"vit-fronts-d{args.dim}-l{args.depth}-h{args.heads}-e{args.epochs}.json"
    atomic_write_text(args.results / name, json.dumps(result, indent=2) + "\n")
    print(tables(result))
    print(f"\nwritten: {args.results / name}")


if __name__ == "__main__":
    main()
