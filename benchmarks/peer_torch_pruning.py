"""pareco's converter side by side with Torch-Pruning's MetaPruner on torchvision and timm classifiers.

Run: ``python -m benchmarks.peer_torch_pruning [--skip-large] [--models NAME ...] [--timeout 120]
[--size 224] [--write-docs]`` (random weights, one thread, no download). Torch-Pruning is a benchmark-only
extra: ``pip install -e '.[peers]'`` (or ``pip install torch-pruning==1.6.1``).

For each model, each tool runs in a forked process under ``--timeout`` (Torch-Pruning hangs on some):

- pareco: ``make_slimmable(on_unsupported="pin")``; *fully* when only the classifier's output stays at
  full width, *partly* when other channels are pinned, *refused* on a ConversionError; the fraction of
  conv and linear weights that slim; MACs of the slice at uniform width 0.5 over the original's; a
  random config's slice equal to the slimmable model; conversion time.
- Torch-Pruning: ``MetaPruner`` with ``pruning_ratio=0.5``, L2 ``MagnitudeImportance``, the classifier
  (every conv or linear with as many outputs as classes) ignored, one ``step()``, as its README shows;
  torchvision ViTs with its torchvision example's recipe (round to the head count, then set
  ``hidden_dim``). *ok* when the pruned model runs and keeps the output's shape, else *failed* with the
  error's first line, or *timeout*.

Both tools' MACs are counted by the same counter (``pareco_runtime.models.base.flop_counter``, torch's
FLOP counter with attention counted on a CPU). Results go to
``benchmarks/results/peer-torch-pruning/<date>.json``, rewritten after each model so that a partial run
is usable; ``--write-docs`` regenerates the coverage table in docs/own-model.md from that file, and
``--from-json A.json B.json`` from the results of runs split over model sets (merged in order).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from benchmarks.convert_coverage import model_by_name
from pareco_runtime import ConversionError, make_slimmable, slice_model
from pareco_runtime.atomic import atomic_write_text
from pareco_runtime.models.base import flop_counter
from pareco_runtime.ops import _Slim

RESULTS = Path(__file__).parent / "results" / "peer-torch-pruning"
DOCS = Path(__file__).parent.parent / "docs" / "own-model.md"
BEGIN, END = (
    "<!-- coverage table: begin (benchmarks/peer_torch_pruning.py --write-docs) -->",
    ("<!-- coverage table: end -->"),
)
# Small timm models across families, beside torchvision's classifiers.
TIMM = [
    "resnet18d",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "convnext_atto",
    "dla34",
    "cspresnet50",
    "rexnet_100",
    "mixnet_s",
    "fastvit_t8",
    "hgnetv2_b0",
    "ghostnet_100",
    "regnety_002",
    "repvgg_a0",
    "levit_128s",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "efficientvit_b0",
    "mobilevit_xs",
    "edgenext_xx_small",
]
LARGE_PARAMS = 150_000_000
DENSE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def all_models() -> list[str]:
    """Every torchvision classification model, then the timm set as ``timm:NAME``."""
    return torchvision.models.list_models(module=torchvision.models) + [f"timm:{n}" for n in TIMM]


def param_count(name: str) -> int:
    """Parameters of ``name`` from torchvision's weight metadata (no model built); timm's set is small."""
    if name.startswith("timm:"):
        return 0
    return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])


def build(name: str, size: int) -> tuple[nn.Module, torch.Tensor]:
    """Model ``name`` with random weights in eval mode, and an input batch of one at ``size`` pixels
    (a timm model at its own input size where it declares one)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model_by_name(name)
    if name.startswith("timm:"):
        size = model.pretrained_cfg.get("input_size", (3, size, size))[-1]
    return model, torch.randn(1, 3, size, size)


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """MACs of one forward pass by pareco's FLOP counter (half its FLOPs)."""
    counter = flop_counter()
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2


def slimmable_fraction(slim: Any) -> float:
    """Fraction of conv and linear weights in layers whose input or output narrows at the lowest uniform
    width (the rest stay whole at every config)."""
    slim.set_widths(slim.space.uniform(1.0))
    full = {m: m.active() for m in slim.modules() if isinstance(m, _Slim)}
    slim.set_widths(slim.space.uniform(slim.space.low))
    dense = [m for m in slim.modules() if isinstance(m, DENSE)]
    narrow = sum(m.weight.numel() for m in dense if m in full and m.active() != full[m])
    return narrow / sum(m.weight.numel() for m in dense)


def run_pareco(name: str, size: int) -> dict[str, Any]:
    """pareco's converter on ``name``: status, slimmable fraction, MACs at 0.5, slice parity, time."""
    model, x = build(name, size)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = make_slimmable(model, x, on_unsupported="pin").eval()
    except ConversionError as exc:
        return {"status": "refused", "error": str(exc).splitlines()[0][:200]}
    seconds = time.perf_counter() - t0
    pinned = sorted({r for r in slim.pinned.values() if r != "the network's output"})
    full = macs(model, x)
    half = macs(slice_model(slim, slim.space.uniform(0.5)).eval(), x)
    alpha = slim.space.sample(torch.Generator().manual_seed(0))
    sub = slice_model(slim, alpha).eval()
    slim.set_widths(alpha)
    with torch.no_grad():
        exact = torch.equal(sub(x), slim(x))
    return {
        "status": "partly" if pinned else "fully",
        "dims": slim.space.dims,
        "slimmable_params": round(slimmable_fraction(slim), 4),
        "macs_full": full,
        "macs_half_ratio": round(half / full, 4),
        "model_macs_half_ratio": round(
            slim.macs(slim.space.uniform(0.5)) / slim.macs(slim.space.uniform(1.0)), 4
        ),
        "slice_equal": exact,
        "seconds": round(seconds, 2),
        "pinned_reasons": pinned[:3],
    }


def _classifiers(model: nn.Module, classes: int) -> list[nn.Module]:
    """The layers TP's README ignores: every conv or linear with as many outputs as classes."""
    return [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == classes)
    ]


def run_torch_pruning(name: str, size: int) -> dict[str, Any]:
    """Torch-Pruning's MetaPruner at ratio 0.5 on ``name``: status, MACs after / before, time."""
    import torch_pruning as tp

    model, x = build(name, size)
    with torch.no_grad():
        reference = model(x)
    full = macs(model, x)
    vit = isinstance(model, torchvision.models.VisionTransformer)
    t0 = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            x,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=0.5,
            ignored_layers=_classifiers(model, reference.shape[-1]),
            round_to=model.encoder.layers[0].num_heads if vit else None,
        )
        pruner.step()
        if vit:
            model.hidden_dim = model.conv_proj.out_channels
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            out = model(x)
        if out.shape != reference.shape:
            return {"status": "failed", "error": f"output shape {tuple(out.shape)}"}
        return {
            "status": "ok",
            "macs_half_ratio": round(macs(model, x) / full, 4),
            "seconds": round(seconds, 2),
        }
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        return {"status": "failed", "error": f"{type(exc).__name__}: {first}"[:200]}


def _child(fn: Callable[[str, int], dict[str, Any]], name: str, size: int, conn: Any) -> None:
    torch.set_num_threads(1)
    try:
        conn.send(fn(name, size))
    except Exception as exc:  # a crash outside the tool's own call (building, counting) is reported too
        conn.send(
            {
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}"[:200],
                "trace": traceback.format_exc()[-400:],
            }
        )


def isolated(
    fn: Callable[[str, int], dict[str, Any]], name: str, size: int, timeout: float
) -> dict[str, Any]:
    """``fn(name, size)`` in a forked process, killed after ``timeout`` seconds (status ``timeout``)."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, name, size, send))
    t0 = time.perf_counter()
    proc.start()
    result: dict[str, Any] = {"status": "timeout", "error": f"over {timeout:.0f} s"}
    if receive.poll(timeout):
        try:
            result = receive.recv()
        except EOFError:
            result = {"status": "failed", "error": f"process died (exit {proc.exitcode})"}
    if proc.is_alive():
        proc.kill()
    proc.join()
    if result["status"] == "failed" and "error" not in result:
        result["error"] = f"process died (exit {proc.exitcode})"
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def family(name: str) -> str:
    """The module that defines ``name`` (``resnet`` holds ResNeXt and Wide ResNet; ``timm:`` kept)."""
    if name.startswith("timm:"):
        import timm

        return "timm:" + timm.models.model_entrypoint(name.removeprefix("timm:")).__module__.split(".")[-1]
    return torchvision.models.get_model_builder(name).__module__.split(".")[-1]


def _pareco_handled(r: dict[str, Any]) -> bool:
    return r["pareco"]["status"] in ("fully", "partly")


def _tp_handled(r: dict[str, Any]) -> bool:
    return r["torch_pruning"]["status"] == "ok"


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Models handled by each tool, and per family the median MACs at 0.5 / full of each."""
    families: dict[str, dict[str, list[float]]] = {}
    for name, r in results.items():
        f = families.setdefault(family(name), {"models": [], "pareco": [], "torch_pruning": []})
        f["models"].append(name)  # type: ignore[arg-type]
        if _pareco_handled(r):
            f["pareco"].append(r["pareco"]["macs_half_ratio"])
        if _tp_handled(r):
            f["torch_pruning"].append(r["torch_pruning"]["macs_half_ratio"])
    pareco = [r["pareco"]["status"] for r in results.values()]
    return {
        "models": len(results),
        "pareco": {s: pareco.count(s) for s in ("fully", "partly", "refused", "failed", "timeout")},
        "pareco_slice_equal": sum(bool(r["pareco"].get("slice_equal")) for r in results.values()),
        "torch_pruning_ok": sum(_tp_handled(r) for r in results.values()),
        "families": {
            k: {
                "models": len(v["models"]),
                "pareco": statistics.median(v["pareco"]) if v["pareco"] else None,
                "torch_pruning": statistics.median(v["torch_pruning"]) if v["torch_pruning"] else None,
            }
            for k, v in families.items()
        },
    }


def _cell(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.3f}" if isinstance(r.get(key), float) else "–"


def _seconds(r: dict[str, Any]) -> str:
    return f"{r['seconds']:.2f} s" if "seconds" in r else "–"


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """The docs' coverage section: the summary line, the per-family medians and one row per model."""
    s = summary(results)
    p = s["pareco"]
    lines = [
        f"{s['models']} models: pareco converts {p['fully']} fully and {p['partly']} in part, refuses "
        f"{p['refused']}, fails on {p['failed'] + p['timeout']}; a random config's slice equals the slimmable "
        f"model on {s['pareco_slice_equal']}. Torch-Pruning prunes {s['torch_pruning_ok']}.",
        "",
        "| family | models | pareco: median MACs at 0.5 / full | Torch-Pruning: median MACs after / before |",
        "|---|---|---|---|",
    ]
    for name, f in sorted(s["families"].items()):
        cells = [f"{f[k]:.3f}" if f[k] is not None else "–" for k in ("pareco", "torch_pruning")]
        lines.append(f"| {name} | {f['models']} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "| model | pareco | slimmable conv/linear weights | MACs at 0.5 / full | slice equal | conversion | "
        "Torch-Pruning | MACs after / before | pruning |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        a, b = r["pareco"], r["torch_pruning"]
        why = a.get("pinned_reasons") or ([a["error"]] if "error" in a else [])
        ours = a["status"] + (f" ({why[0][:70]})" if why and a["status"] != "fully" else "")
        theirs = b["status"] + (f" ({b['error'][:70]})" if "error" in b else "")
        cells = [
            name,
            ours,
            _cell(a, "slimmable_params"),
            _cell(a, "macs_half_ratio"),
            str(a.get("slice_equal", "–")),
            _seconds(a),
            theirs,
            _cell(b, "macs_half_ratio"),
            _seconds(b),
        ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def write_docs(results: dict[str, dict[str, Any]], page: Path = DOCS) -> None:
    """Replace the text between the coverage markers of ``page`` by :func:`markdown_table`."""
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{page}: no coverage markers; add {BEGIN!r} and {END!r} where the table goes")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    atomic_write_text(page, f"{head}{BEGIN}\n{markdown_table(results)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="these only (default: torchvision's and the timm set)")
    parser.add_argument(
        "--skip-large", action="store_true", help=f"skip models over {LARGE_PARAMS:,} parameters"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model and tool")
    parser.add_argument("--size", type=int, default=224, help="input pixels (timm models use their own)")
    parser.add_argument(
        "--out", type=Path, help="results file (default: results/peer-torch-pruning/<date>.json)"
    )
    parser.add_argument("--write-docs", action="store_true", help="regenerate the docs' coverage table")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="only write the docs from these results files (merged in order)",
    )
    args = parser.parse_args(argv)
    if args.from_json:
        merged: dict[str, dict[str, Any]] = {}
        for path in args.from_json:
            merged.update(json.loads(path.read_text())["results"])
        write_docs(merged)
        return
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        sys.exit("torch_pruning: not installed; pip install -e '.[peers]' (torch-pruning==1.6.1)")
    torch.set_num_threads(1)
    out = args.out or RESULTS / f"{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    for name in args.models or all_models():
        if args.skip_large and param_count(name) > LARGE_PARAMS:
            print(f"{name}: skipped (over {LARGE_PARAMS:,} parameters)", flush=True)
            continue
        ours = isolated(run_pareco, name, args.size, args.timeout)
        theirs = isolated(run_torch_pruning, name, args.size, args.timeout)
        results[name] = {"pareco": ours, "torch_pruning": theirs}
        print(f"{name}: pareco {ours} | torch-pruning {theirs}", flush=True)
        record = {"command": " ".join(sys.argv), "torch": torch.__version__, "results": results}
        atomic_write_text(out, json.dumps(record, indent=1))
    print(markdown_table(results))
    if args.write_docs:
        write_docs(results)


if __name__ == "__main__":
    main()
