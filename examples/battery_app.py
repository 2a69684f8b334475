"""A battery-aware classifier: switch sub-networks in place as a simulated battery drains.

    python examples/battery_app.py OUT/model.front.json [--data digits] [--drain 0.004]

Every inference drains the battery in proportion to the active sub-network's MACs (a cheaper
sub-network lasts longer); every few images the app calls ``rt.switch(f"battery={level}%")``
and prints when it switched, to what, and the accuracy it kept on the images it classified.
Images come from the validation split of the data the model was trained on (``--data``, as
given to ``pareco train``); a real app would feed its camera frames instead.
"""

from __future__ import annotations

import argparse

from pareco_runtime import SlimmableRuntime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument(
        "--data", default="digits", help="dataset the model was trained on (for its validation images)"
    )
    ap.add_argument(
        "--drain", type=float, default=0.004, help="battery %% used per image by the largest point"
    )
    ap.add_argument("--check-every", type=int, default=25, help="images between battery checks")
    args = ap.parse_args()

    from training.data import load_data  # the app's image source; the runtime itself needs only torch

    rt = SlimmableRuntime.load(args.manifest)
    data = load_data(args.data, image_size=rt.input_size[-1], device="cpu")
    largest = max(p.mflops for p in rt.points)
    level, images, segments = 100.0, 0, []
    current = None
    while level > 1.0:
        for x, y in data.val_batches(1):
            if images % args.check_every == 0:
                point = rt.switch(f"battery={level:.1f}%")
                if current is None or point.id != current["id"]:
                    current = {"id": point.id, "from": level, "mflops": point.mflops, "n": 0, "correct": 0}
                    segments.append(current)
                    print(
                        f"battery {level:5.1f}%: switched to {point.id} ({point.mflops:.2f} MFLOPs, "
                        f"validation top-1 {point.top1:.1f}%)"
                    )
            pred = rt(x).argmax(1)
            current["n"] += 1
            current["correct"] += int((pred == y).sum())
            images += 1
            level -= args.drain * rt.active.mflops / largest
            if level <= 1.0:
                break
    print(f"\n{images} images classified before the battery ran out")
    print(f"{'from battery':>12} {'point':>6} {'MFLOPs':>8} {'images':>7} {'accuracy':>9}")
    for s in segments:
        print(
            f"{s['from']:11.1f}% {s['id']:>6} {s['mflops']:8.2f} {s['n']:7d} {100 * s['correct'] / s['n']:8.1f}%"
        )
    fixed = int(100 / args.drain)
    print(f"the largest point alone would have classified about {fixed} images on one charge")


if __name__ == "__main__":
    main()
