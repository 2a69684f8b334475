"""A battery-aware classifier: switch sub-networks in place as a simulated battery drains.

    python examples/battery_app.py OUT/model.front.json [--data digits] [--drain 0.004]

Every inference drains the battery in proportion to the active sub-network's MACs (a cheaper
sub-network lasts longer); every few images the app calls ``rt.switch(f"battery={level}%")``
and prints when it switched, to what, and the accuracy it kept on the images it classified.
Images come from the validation split of the data the model was trained on (``--data``, as
given to ``pareco train``); a real app would feed its camera frames instead.

The app refuses data that does not fit the manifest, with a one-line error saying what to pass:
other classes (names or count), or, for data other than the manifest's own dataset, images far
from the model's input size (e.g. 32-px digits for a 64-px model). The images are normalised as
the manifest says, whatever the data's own statistics.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from pareco_runtime import SlimmableRuntime

if TYPE_CHECKING:
    from training.data import Data, DataInfo

# Data of another dataset is "far" from the model's input when one side is more than 1.5 times the
# other: the pad-crop augmentation of small images shifts them by 4 px but never rescales them, so
# a model has not seen its classes at such a different scale.
SIZE_RATIO_LIMIT = 1.5


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def check_data(rt: SlimmableRuntime, spec: str, info: DataInfo) -> None:
    """ValueError (one line naming ``--data``) when the data ``info`` describes (at its own size) is not what the model was trained for: other classes, or, for another
    dataset than the manifest's, images more than :data:`SIZE_RATIO_LIMIT` times off its input size."""
    trained = rt.front.dataset
    fix = f"pass --data with the images the model was trained on (its manifest's dataset: '{trained.name}')"
    names = rt.class_names
    outputs = len(names) if names else int(rt(torch.zeros(1, *rt.input_size)).shape[1])
    got = info.class_names
    if len(got) != outputs:
        raise ValueError(
            f"--data {spec}: {len(got)} classes ({_listed(got)}), the model has {outputs}"
            f"{f' ({_listed(names)})' if names else ''}; {fix}"
        )
    if names and got != names:
        first = next(i for i, (a, b) in enumerate(zip(got, names)) if a != b)
        raise ValueError(
            f"--data {spec}: class {first} is '{got[first]}', the model's is '{names[first]}'; {fix}"
        )
    _, h, w = info.input_size
    _, mh, mw = rt.input_size
    ratio = max(h / mh, mh / h, w / mw, mw / w)
    if info.name != trained.name and ratio > SIZE_RATIO_LIMIT:
        raise ValueError(
            f"--data {spec}: its images are {w}x{h} px, the model takes {mw}x{mh} (trained on "
            f"'{trained.name}'); {fix}"
        )


def to_model_input(x: torch.Tensor, info: DataInfo, rt: SlimmableRuntime) -> torch.Tensor:
    """A batch normalised with the data's mean/std, normalised instead with the manifest's."""
    dataset = rt.front.dataset
    view = (1, -1, 1, 1)
    pixels = x * torch.tensor(info.std).view(view) + torch.tensor(info.mean).view(view)
    return ((pixels - torch.tensor(dataset.mean).view(view)) / torch.tensor(dataset.std).view(view)).float()


def load_checked(rt: SlimmableRuntime, spec: str) -> Data:
    """The data of ``spec`` at the model's input size, after :func:`check_data` on it at its own size."""
    from training.data import load_data  # the app's image source; the runtime itself needs only torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data's notes speak of pareco train's flags, not this app's
        data = load_data(spec, device="cpu")
        check_data(rt, spec, data.info)
        if tuple(data.info.input_size) != rt.input_size:
            data = load_data(spec, image_size=rt.input_size[-1], device="cpu")
    return data


def run(rt: SlimmableRuntime, data: Data, drain: float, check_every: int) -> None:
    """Classify validation images until the simulated battery is empty; print switches and a summary."""
    largest = max(p.mflops for p in rt.points)
    level, images, segments = 100.0, 0, []
    current: dict[str, Any] = {}
    while level > 1.0:
        for x, y in data.val_batches(1):
            if images % check_every == 0:
                point = rt.switch(f"battery={level:.1f}%")
                if point.id != current.get("id"):
                    current = {"id": point.id, "from": level, "mflops": point.mflops, "n": 0, "correct": 0}
                    segments.append(current)
                    print(
                        f"battery {level:5.1f}%: switched to {point.id} ({point.mflops:.2f} MFLOPs, "
                        f"validation top-1 {point.top1:.1f}%)"
                    )
            pred = rt(to_model_input(x, data.info, rt)).argmax(1)
            current["n"] += 1
            current["correct"] += int((pred == y).sum())
            images += 1
            level -= drain * rt.active.mflops / largest
            if level <= 1.0:
                break
    print(f"\n{images} images classified before the battery ran out")
    print(f"{'from battery':>12} {'point':>6} {'MFLOPs':>8} {'images':>7} {'accuracy':>9}")
    for s in segments:
        print(
            f"{s['from']:11.1f}% {s['id']:>6} {s['mflops']:8.2f} {s['n']:7d} {100 * s['correct'] / s['n']:8.1f}%"
        )
    fixed = int(100 / drain)
    print(f"the largest point alone would have classified about {fixed} images on one charge")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and run; a bad manifest or data is one ``error: ...`` line and exit code 2."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument(
        "--data", default="digits", help="dataset the model was trained on (for its validation images)"
    )
    ap.add_argument(
        "--drain", type=float, default=0.004, help="battery %% used per image by the largest point"
    )
    ap.add_argument("--check-every", type=int, default=25, help="images between battery checks")
    ap.add_argument(
        "--backend",
        default="torch",
        help="what runs the points: torch, or onnxruntime / executorch (each point's exported program, "
        "exported on first use into NAME.programs/ beside the manifest)",
    )
    ap.add_argument("--threads", type=int, default=None, help="threads of a compiled backend")
    args = ap.parse_args(argv)
    try:
        rt = SlimmableRuntime.load(args.manifest, backend=args.backend, threads=args.threads)
        data = load_checked(rt, args.data)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    run(rt, data, args.drain, args.check_every)


if __name__ == "__main__":
    main()
