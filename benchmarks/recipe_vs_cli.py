"""The example's own recipe against ``pareco train``: same data, model, epochs, seed and front settings.

    OMP_NUM_THREADS=1 nice python -m benchmarks.recipe_vs_cli --data ../shared/datasets/cifar10-jpg.tar.gz \\
        --train-per-class 100 --test-per-class 100 --epochs 3 --out runs/recipe-vs-cli

Both train torchvision's ResNet-18 (made slimmable, 32 px) on a class-balanced subset of an ImageFolder
archive (the first ``--train-per-class`` / ``--test-per-class`` images of each class, by name, written
to ``OUT/data``): ``pareco train`` with its defaults (SGD, Nesterov momentum 0.9, lr 0.1, weight decay
5e-4, cosine; no label smoothing), and ``examples/classification_recipe.py`` (AdamW, warm-up + cosine,
label smoothing, MixUp/CutMix, EMA weights). Batch size, candidates, BN calibration, |H| and PareCO's
probe batch are the same, one thread each, one after the other. A finished run is reused. Then, from
the manifests: front points, hypervolume and top-1 at matched MACs, with the functions of
:mod:`benchmarks.reproduce_cifar` (reference point: chance accuracy at 1.1 x full MACs), into
``benchmarks/results/recipe-vs-cli/recipe-vs-cli-<settings>.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.datasets import cifar10_archive
from benchmarks.reproduce_cifar import INDEPENDENT_WIDTHS, comparison_table, hypervolume, top1_at, upper_front

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "classification_recipe.py"
# Beside, not among, the seed records: benchmarks/seed_records.py reads every JSON of results/.
RESULTS = ROOT / "benchmarks" / "results" / "recipe-vs-cli"


def recipe_module() -> ModuleType:
    """The example, imported from its file, for the settings it fixes (calibration, probe batch, seed)."""
    spec = importlib.util.spec_from_file_location("classification_recipe", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subset(archive: Path, out: Path, per_split: dict[str, int]) -> Path:
    """``out`` holding the first ``per_split[split]`` images (by name) of each class of each split of the
    ImageFolder ``archive``; reused when it exists."""
    if out.is_dir():
        return out
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and len(Path(m.name).parts) == 3]
        chosen: set[str] = set()
        count: dict[tuple[str, str], int] = {}
        for m in sorted(members, key=lambda m: m.name):
            split, cls, _ = Path(m.name).parts
            if count.get((split, cls), 0) < per_split.get(split, 0):
                count[(split, cls)] = count.get((split, cls), 0) + 1
                chosen.add(m.name)
        tmp = out.with_name(out.name + ".tmp")
        # In the archive's order: a gzip stream read out of order is decompressed again from its start.
        tar.extractall(tmp, members=[m for m in members if m.name in chosen], filter="data")
    tmp.rename(out)
    return out


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` with one intra-op thread, its output appended to ``log``; SystemExit if it fails."""
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode:
            raise SystemExit(f"{cmd[1:3]} failed; see {log}")


def train_both(args: argparse.Namespace, data: Path, out: Path, recipe: ModuleType) -> None:
    """Train each algorithm with ``pareco train`` into ``out/cli/ALG`` and with the example into
    ``out/recipe/ALG``, skipping runs already finished."""
    shared = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    shared += ["--candidates", str(args.candidates), "--history-size", str(args.history_size)]
    for algorithm in args.algorithms.split(","):
        if not (out / "cli" / algorithm / "model.front.json").exists():
            cli = [sys.executable, "-m", "pareco_cli.main", "train", "--arch", "torchvision:resnet18"]
            cli += ["--data", str(data), "--algorithm", algorithm, "--seed", str(recipe.SEED), *shared]
            cli += [
                "--calib-batches",
                str(recipe.CALIB_BATCHES),
                "--calib-batch-size",
                str(recipe.CALIB_BATCH_SIZE),
            ]
            cli += [
                "--probe-batch",
                str(recipe.PROBE_BATCH),
                "--select-fraction",
                str(recipe.SELECT_FRACTION),
            ]
            cli += ["--threads", "1", "--epoch-eval", "0", "--force", "--out", str(out / "cli" / algorithm)]
            run(cli, out / "train.log")
        if not (out / "recipe" / algorithm / "model.front.json").exists():
            own = [sys.executable, str(EXAMPLE), "--data", str(data), "--algorithms", algorithm, *shared]
            run([*own, "--out", str(out / "recipe")], out / "train.log")


def summary(out: Path, algorithms: list[str]) -> dict[str, Any]:
    """Per finished run (``cli/ALG``, ``recipe/ALG``): its points, hypervolume, top-1 at the MACs of
    uniform widths and training wall time, plus the full model's MACs and chance accuracy."""
    from pareco_runtime import Front

    runs: dict[str, Any] = {}
    full = chance = 0.0
    targets: list[float] = []
    for algorithm in algorithms:
        for who in ("cli", "recipe"):
            path = out / who / algorithm / "model.front.json"
            if not path.exists():
                continue
            front = Front.load(path, verify_weights=False)
            model = front.architecture.build()
            full = model.macs() / 1e6
            targets = [model.macs(model.space.uniform(w)) / 1e6 for w in sorted(INDEPENDENT_WIDTHS)]
            chance = 100.0 / len(front.dataset.class_names)
            points = [(p.mflops, front.metric.score(p)) for p in front.points]
            upper = upper_front(points)
            runs[f"{who}/{algorithm}"] = {
                "points": [{"id": p.id, "mflops": round(p.mflops, 3), "top1": p.top1} for p in front.points],
                "hypervolume": round(hypervolume(upper, full, chance), 4),
                "top1_at": [None if (v := top1_at(upper, t)) is None else round(v, 2) for t in targets],
                "wall_time_s": front.training.wall_time_s,
            }
    return {
        "full_mflops": full,
        "matched_mflops": [round(t, 3) for t in targets],
        "chance": chance,
        "runs": runs,
    }


def table(result: dict[str, Any]) -> str:
    """The comparison as a markdown table."""
    return comparison_table(
        ("run", "wall time s"),
        [f"top-1 @ {t:.1f} MFLOPs" for t in result["matched_mflops"]],
        [
            (n, len(r["points"]), r["top1_at"], r["hypervolume"], r["wall_time_s"])
            for n, r in result["runs"].items()
        ],
        digits=2,
        hv_digits=3,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=str(cifar10_archive()),
    )
    ap.add_argument("--out", type=Path, default=Path("runs/recipe-vs-cli"))
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--history-size", type=int, default=40)
    ap.add_argument("--algorithms", default="slim,pareco")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = recipe_module()
    if not args.report_only:
        per_split = {"train": args.train_per_class, "test": args.test_per_class}
        data = subset(Path(args.data), args.out / "data", per_split)
        train_both(args, data, args.out, recipe)
    settings = {k: v for k, v in vars(args).items() if k != "report_only"}
    command = "python -m benchmarks.recipe_vs_cli " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in settings.items()
    )
    result = {
        "command": command,
        **settings,
        "out": str(args.out),
        **summary(args.out, args.algorithms.split(",")),
    }
    name = f"recipe-vs-cli-{args.train_per_class}pc-e{args.epochs}-s{recipe.SEED}.json"
    from pareco_runtime.atomic import atomic_write_text

    atomic_write_text(RESULTS / name, json.dumps(result, indent=1) + "\n")
    print(f"Command: `{command}`\n\n{table(result)}\n\nwritten to {RESULTS / name}")


if __name__ == "__main__":
    main()
