"""Which torchvision classification models make_slimmable converts, which in part, which it refuses, and why.

Run: ``.venv/bin/python -m benchmarks.convert_coverage [--size 224] [--skip-large] [--models NAME ...]
[--export onnx executorch ...]`` (random weights, no download). For each model: width dimensions found,
layers kept at full width, the reasons (grouped by the op that pinned them), MACs at uniform width 0.5
relative to full, and a check that a random config's slice equals the slimmable model. With ``--export``,
that slice is also exported to each format and run in its runtime: the largest difference from PyTorch,
and for ExecuTorch the operators XNNPACK left to the portable kernels. The test suite exports a few
models; this sweeps every one.
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision

from pareco_runtime import ConversionError, make_slimmable, slice_model

# Hundreds of millions of parameters: minutes and gigabytes each on a CPU host.
LARGE = {
    "vit_h_14",
    "vit_l_16",
    "vit_l_32",
    "regnet_y_128gf",
    "regnet_y_32gf",
    "regnet_y_16gf",
    "regnet_x_32gf",
}


def _reason(text: str) -> str:
    # "node (where): why" -> "why" with the op name, so that reasons group across nodes.
    why = text.split(": ", 1)[-1]
    op = re.search(r"\((call_\w+ \w+|[\w.]+)\)", text)
    return f"{why} [{op.group(1).split('.')[-1] if op else '?'}]" if "does not know" in why else why


def model_by_name(name: str) -> torch.nn.Module:
    """torchvision's model ``name``, or timm's for ``timm:NAME``, with random weights, in eval mode."""
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name.removeprefix("timm:")).eval()
    return torchvision.models.get_model(name, weights=None).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument(
        "--models", nargs="+", help="these models only (default: every torchvision one); timm:NAME for timm's"
    )
    parser.add_argument(
        "--export", nargs="+", default=[], metavar="FORMAT", help="also export the slice to these formats"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.models or torchvision.models.list_models(module=torchvision.models)
    for name in names:
        if args.skip_large and name in LARGE:
            print(f"{name}: skipped (large)", flush=True)
            continue
        original = model_by_name(name)
        x = torch.randn(1, 3, args.size, args.size)
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                slim = make_slimmable(original, x).eval()
        except ConversionError as exc:
            print(f"{name}: REFUSED: {str(exc)[:160]}", flush=True)
            continue
        seconds = time.perf_counter() - t0
        reasons = collections.Counter(
            _reason(r) for layer, r in slim.pinned.items() if r != "the network's output"
        )
        alpha = slim.space.sample(torch.Generator().manual_seed(0))
        sub = slice_model(slim, alpha).eval()
        slim.set_widths(alpha)
        with torch.no_grad():
            exact = torch.equal(sub(x), slim(x))
        dense = (torch.nn.Conv2d, torch.nn.Linear)
        layers = sum(1 for m in slim.modules() if isinstance(m, dense))
        full = sum(1 for n in slim.pinned if isinstance(slim.get_submodule(n), dense))
        kind = "converts" if not reasons else "in part"
        half = slim.macs(slim.space.uniform(0.5)) / slim.macs(slim.space.uniform(1.0))
        detail = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
        print(
            f"{name}: {kind}, {slim.space.dims} dims, {full}/{layers} conv/linear layers at full width, "
            f"MACs at 0.5: {half:.3f}, {seconds:.2f} s, slice equal: {exact}{'; ' + detail if detail else ''}",
            flush=True,
        )
        for fmt in args.export:
            print(f"  {fmt}: {_exported(sub, tuple(x.shape[1:]), fmt)}", flush=True)


def _exported(sub: torch.nn.Module, size: tuple[int, ...], fmt: str) -> str:
    """One line on exporting ``sub`` to ``fmt``: its difference from PyTorch and what was not delegated."""
    from export.exporter import export_point

    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        try:
            result = export_point(sub, size, fmt, Path(folder) / f"p.{fmt}")
        except Exception as exc:  # a failing model is one line of the report, not the end of the sweep
            return f"FAILED: {str(exc).splitlines()[0][:160]}"
    undelegated = result.details.get("undelegated_ops")
    left = "" if undelegated is None else f", not delegated: {', '.join(undelegated) or 'none'}"
    return f"max |diff| {result.max_abs_diff:.1e}, {time.perf_counter() - t0:.1f} s{left}"


if __name__ == "__main__":
    main()
