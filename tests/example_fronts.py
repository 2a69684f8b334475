"""What the task examples (examples/segmentation.py, examples/keyword_spotting.py) promise, checked the way
a user meets it: the example runs, writes a Slim and a PareCO front ranked by its metric, and the
commands of its docstring work on them.

Not a test module: tests/test_example_*.py call :func:`run_example` and :func:`check_commands`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pareco_runtime import SlimmableRuntime
from pareco_runtime.outputs import flatten_outputs
from pareco_runtime.sources import import_factory


def run_example(repo_root: Path, script: str, out: Path, *args: str) -> dict[str, dict[str, Any]]:
    """Run ``examples/<script>`` writing into ``out``; the manifest of each algorithm it ran (``--algorithms``
    in ``args``, else slim and pareco) as JSON."""
    r = subprocess.run(
        [sys.executable, str(repo_root / "examples" / script), "--out", str(out), *args],
        capture_output=True, text=True, cwd=repo_root, timeout=900,
        env={**os.environ, "PYTHONPATH": str(repo_root)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    manifests = {}
    ran = args[args.index("--algorithms") + 1].split(",") if "--algorithms" in args else ["slim", "pareco"]
    for algorithm in ran:
        assert f"{algorithm}: " in r.stdout and "points" in r.stdout
        manifests[algorithm] = json.loads((out / algorithm / "model.front.json").read_text())
    return manifests


def check_declared(manifest: dict[str, Any], rank: str, names: Sequence[str], higher: bool) -> None:
    """The manifest declares the metric ``rank`` among ``names`` in its direction, and every point has
    each figure."""
    assert manifest["metric"] == {"rank": rank, "higher_is_better": higher, "names": list(names)}
    assert manifest["points"] and all(list(p["metrics"]) == list(names) for p in manifest["points"])


def check_commands(
    cli: Callable[..., Any],
    front: Path,
    model: str,
    out: Path,
    rank: str,
    higher: bool = True,
    formats: Sequence[str] = ("onnx", "executorch"),
) -> None:
    """``pareco show``, ``select --budget``, ``export --budget`` to ``formats`` and ``bench`` on the front
    in folder ``front``, with ``--model`` where the network must be rebuilt."""
    import onnxruntime as ort

    r = cli("show", str(front))
    assert r.returncode == 0, r.stderr
    assert rank in r.stdout
    points = json.loads((front / "model.front.json").read_text())["points"]
    mflops = sorted(p["mflops"] for p in points)
    budget = f"{mflops[len(mflops) // 2] * 1.01:.4f}MFLOPs"  # the middle point's cost, and a margin
    r = cli("select", str(front), "--budget", budget, "--json")
    assert r.returncode == 0, r.stderr
    chosen = json.loads(r.stdout)["point"]
    within = [p for p in points if p["mflops"] <= float(budget.removesuffix("MFLOPs"))]

    # select ranks by the figure the points were chosen on (held out of training), else the reported one.
    def chosen_on(p: dict[str, Any]) -> float:
        return (p.get("selection_metrics") or p["metrics"])[rank]

    best = (max if higher else min)(chosen_on(p) for p in within)
    assert chosen["mflops"] <= float(budget.removesuffix("MFLOPs")) and chosen_on(chosen) == best
    pid = chosen["id"]

    r = cli(
        "export",
        str(front),
        "--budget",
        budget,
        *(f"--{fmt}" for fmt in formats),
        "--out",
        str(out),
        "--model",
        model,
    )
    assert r.returncode == 0, r.stderr
    records = json.loads((out / "export.json").read_text())
    assert {rec["format"] for rec in records} == set(formats)
    assert all(rec["max_abs_diff"] <= 1e-4 for rec in records)
    # Our own check of the ONNX file against the sliced model, on an input of our own.
    rt = SlimmableRuntime.load(front / "model.front.json", model=import_factory(model))
    sliced = rt.standalone(rt.point(pid)).eval()
    x = torch.randn(1, *rt.front.dataset.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = [t.numpy() for _, t in flatten_outputs(sliced(x))]
    session = ort.InferenceSession(str(out / f"{pid}.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert len(got) == len(want)
    assert all(np.abs(g - w).max() <= 1e-4 for g, w in zip(got, want))

    r = cli(
        "bench", str(front), "--backend", "torch", "--warmup", "1", "--runs", "3", "--model", model, "--json"
    )
    assert r.returncode == 0, r.stderr
    assert pid in r.stdout
