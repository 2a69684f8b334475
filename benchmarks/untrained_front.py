"""An untrained front of uniform widths, for measuring export parity and latency before any training.

Latency does not depend on weight values, so a freshly initialised model sliced at a few uniform
widths is enough to benchmark an architecture on a device (``pareco export`` / ``pareco bench``).
Accuracy fields stay empty (null): nothing is claimed about them.

Run: ``.venv/bin/python -m benchmarks.untrained_front --arch mobilenet_v2 --widths 0.42,0.7,1.0 --out DIR``
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pareco_runtime import build_model, slice_model
from pareco_runtime.manifest import DatasetSpec, FrontPoint, TrainingRecord, write_front

# ImageNet's normalisation: the statistics the zoo's 224-pixel models expect.
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _estimate_bn_stats(
    model: nn.Module, input_size: Sequence[int], seed: int, batches: int = 2, batch_size: int = 16
) -> None:
    """Replace every BN layer's running statistics by their average over a few random batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
    gen = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, *input_size, generator=gen))
    model.eval()


def write_untrained_front(
    arch: str, widths: Sequence[float], out_dir: str | Path, seed: int = 0, **kwargs: Any
) -> Path:
    """Write ``model.safetensors`` and ``model.front.json`` for ``arch`` at uniform ``widths``; the manifest path.

    ``kwargs`` go to :func:`build_model` (``input_size``, ``num_classes``, ...). Each point's BN
    statistics are estimated on standard-normal inputs, so activations keep a realistic scale
    through the network (with the fresh mean 0 / variance 1 statistics a deep untrained network's
    outputs shrink towards 1e-15, and export parity figures would mean nothing).
    """
    torch.manual_seed(seed)
    model = build_model(arch, **kwargs).eval()
    points, stats = [], {}
    for i, w in enumerate(sorted(widths)):
        alpha = model.space.uniform(w)
        pid = f"p{i:02d}"
        sliced = slice_model(model, alpha)
        _estimate_bn_stats(sliced, model.input_size, seed)
        # The sliced model keeps the slimmable model's module names.
        modules = dict(sliced.named_modules())
        stats[pid] = {
            name: (modules[name].running_mean, modules[name].running_var) for name in model.bn_names
        }
        points.append(
            FrontPoint(
                id=pid,
                alpha=alpha,
                channels=model.channels(alpha),
                mflops=model.macs(alpha) / 1e6,
                params=model.params(alpha),
            )
        )
    c = model.input_size[0]
    dataset = DatasetSpec(
        name="untrained", input_size=tuple(model.input_size), mean=list(_MEAN[:c]), std=list(_STD[:c])
    )
    training = TrainingRecord(
        algorithm="independent",
        epochs=0,
        seed=seed,
        wall_time_s=0.0,
        extra={"untrained": True, "widths": [float(w) for w in widths]},
    )
    return write_front(out_dir, model, points, stats, dataset, training)


def main() -> None:
    """Command-line entry: build the front and print the manifest's path."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="mobilenet_v2")
    ap.add_argument("--widths", default="0.42,0.7,1.0", help="comma-separated uniform widths")
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    kwargs = {} if args.input_size is None else {"input_size": args.input_size}
    print(write_untrained_front(args.arch, [float(w) for w in args.widths.split(",")], args.out, **kwargs))


if __name__ == "__main__":
    main()
