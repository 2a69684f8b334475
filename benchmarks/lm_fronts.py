"""Slim, Mix'n'Match and PareCO fronts of the byte-level LM example, compared at matched parameter counts.

    OMP_NUM_THREADS=1 nice python -m benchmarks.lm_fronts --out runs/lm-fronts --epochs 6

Trains ``examples/byte_lm.py`` twice with the same text, model, epochs and seed: Slim (MatFormer-style
nested training, which also writes the Mix'n'Match front from Slim's weights) and PareCO. The text is
``--text`` or, by default, the repository's own documentation (``docs/*.md`` and ``README.md``, copied as
``*.txt`` into ``OUT/text``): about 250 KB of English and Markdown that every checkout has, so the run
needs no download. A finished run is reused. The fronts are compared by held-out next-byte loss (lower
is better) at the parameter counts of uniform widths 0.25, 0.5 and 0.75 (the front's best point within
that many parameters, interpolated between points as :func:`benchmarks.reproduce_cifar.top1_at` does)
and by hypervolume in (parameters, loss) space, the reference point a uniform guess over the 256 bytes
(ln 256 nats) at 1.1 × the full model's parameters. Writes
``benchmarks/results/lm-fronts/lm-fronts-<settings>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.reproduce_cifar import comparison_table, hypervolume, top1_at, upper_front
from pareco_runtime.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "byte_lm.py"
RESULTS = ROOT / "benchmarks" / "results" / "lm-fronts"
FRONTS = ("slim", "mixnmatch", "pareco")
MATCHED_WIDTHS = (0.25, 0.5, 0.75)
GUESS = math.log(256)  # nats per byte of a uniform guess


def example_module() -> ModuleType:
    """The example, imported from its file, for its network (parameter counts of uniform widths)."""
    spec = importlib.util.spec_from_file_location("byte_lm", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def docs_text(out: Path) -> Path:
    """The repository's documentation as ``*.txt`` files in ``out`` (the default corpus)."""
    out.mkdir(parents=True, exist_ok=True)
    for source in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        shutil.copyfile(source, out / f"{source.stem}.txt")
    return out


def train(args: argparse.Namespace, text: Path) -> None:
    """Run the example for Slim (with Mix'n'Match) and PareCO where their fronts are missing."""
    shared = ["--text", str(text), "--out", str(args.out), "--epochs", str(args.epochs),
              "--context", str(args.context), "--dim", str(args.dim), "--heads", str(args.heads),
              "--layers", str(args.layers), "--batch-size", str(args.batch_size)]  # fmt: skip
    for algorithm in ("slim", "pareco"):
        if (args.out / algorithm / "model.front.json").exists():
            continue
        log = args.out / f"{algorithm}.log"
        with log.open("w") as f:
            done = subprocess.run(
                [sys.executable, str(EXAMPLE), *shared, "--algorithms", algorithm],
                stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{algorithm} failed (exit {done.returncode}); see {log}")


def corpus_record(text: Path) -> dict[str, Any]:
    """What the fronts were trained on: the files' count, bytes and one SHA-256 over them in name order
    (the docs change between commits, so a result names the exact text)."""
    files = sorted(text.rglob("*.txt"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files), "sha256": digest.hexdigest()}


def summary(args: argparse.Namespace, text: Path) -> dict[str, Any]:
    """Per front: points, loss at the matched parameter counts, hypervolume, training wall time."""
    model = example_module().slimmable_lm(args.dim, args.heads, args.layers, args.context)
    full = float(model.params(model.space.uniform(1.0)))
    targets = [float(model.params(model.space.uniform(w))) for w in MATCHED_WIDTHS]
    fronts: dict[str, Any] = {}
    for name in FRONTS:
        path = args.out / name / "model.front.json"
        if not path.exists():
            continue
        manifest = json.loads(path.read_text())
        points = [(float(p["params"]), -float(p["metrics"]["loss"])) for p in manifest["points"]]
        upper = upper_front(points)
        fronts[name] = {
            "points": len(points),
            "loss_at": [None if (v := top1_at(upper, t)) is None else round(-v, 4) for t in targets],
            "hypervolume": round(hypervolume(upper, full, -GUESS), 4),
            "wall_time_s": manifest["training"]["wall_time_s"],
        }
    return {
        "settings": {
            k: getattr(args, k) for k in ("epochs", "context", "dim", "heads", "layers", "batch_size")
        },
        "text": str(args.text) if args.text else "the repository's docs/*.md and README.md",
        "corpus": corpus_record(text),
        "full_params": int(full),
        "matched_params": [int(t) for t in targets],
        "fronts": fronts,
    }


def table(result: dict[str, Any]) -> str:
    """The comparison as a markdown table."""
    return comparison_table(
        ("front", "training s"),
        [f"loss @ {t / 1e3:.0f}K params" for t in result["matched_params"]],
        [
            (n, r["points"], r["loss_at"], r["hypervolume"], r["wall_time_s"])
            for n, r in result["fronts"].items()
        ],
        digits=4,
        hv_digits=4,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run folder (reused when the fronts exist)")
    ap.add_argument("--text", type=Path, default=None, help="a folder of *.txt files (default: the docs)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    text = args.text or (args.out / "text" if (args.out / "slim").exists() else docs_text(args.out / "text"))
    train(args, text)
    result = summary(args, text)
    s = result["settings"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"lm-fronts-d{s['dim']}-l{s['layers']}-c{s['context']}-e{s['epochs']}.json"
    atomic_write_text(RESULTS / name, json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"full model {result['full_params'] / 1e3:.0f}K params; written {RESULTS / name}")


if __name__ == "__main__":
    main()
