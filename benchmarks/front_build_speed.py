"""Where the time of building a front goes, and what keeping the calibration batches saves.

Run: ``.venv/bin/python -m benchmarks.front_build_speed`` (about 8 minutes on 2 CPU cores; digits, no
download). Trains ResNet20 with Slim for ``--epochs`` on digits, as a new user's first run does, and
prints its training time against the time ``pareco train`` then spent building the front. Then it
times, on the trained weights, the three parts of building the front for ``--candidates`` configs:
making the calibration batches, the calibration forwards and the evaluation on the selection
split; and ``evaluate_candidates`` with the calibration batches kept against made again per
candidate (the previous behaviour), interleaved over ``--rounds`` rounds, as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any


def _seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=10, help="configs timed per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from pareco_runtime import SlimmableRuntime
    from training import front_builder
    from training.calibrate import calibrate_bn, evaluate
    from training.config import TrainConfig
    from training.data import load_data
    from training.loop import train
    from training.strategies import widths_spread_over_macs

    cfg = TrainConfig(arch="resnet20", data="digits", epochs=args.epochs, algorithm="slim")
    manifest = train(cfg, tempfile.mkdtemp(prefix="front-speed-"), show_progress=False)
    rt = SlimmableRuntime.load(manifest)
    record = rt.front.training
    print(
        f"{args.epochs}-epoch digits Slim run: training {record.wall_time_s:.1f} s, building the front "
        f"({record.extra['candidates_evaluated']} candidates) {record.extra['finalize_time_s']:.1f} s"
    )
    model = rt.model
    data = load_data(cfg.data, seed=cfg.seed, select_fraction=cfg.select_fraction, device="cpu")
    configs = [model.space.uniform(w) for w in widths_spread_over_macs(model, cfg.candidates)]
    configs = configs[:: max(1, len(configs) // args.candidates)][: args.candidates]
    calib = (cfg.calib_batch_size, cfg.calib_batches, cfg.seed)

    make = _seconds(lambda: [list(data.calib_batches(*calib)) for _ in configs])
    kept = [x for x, _ in data.calib_batches(*calib)]
    stats = []
    forward = _seconds(lambda: stats.extend(calibrate_bn(model, a, kept) for a in configs))
    scoring = _seconds(
        lambda: [evaluate(model, a, s, data.selection_batches(500)) for a, s in zip(configs, stats)]
    )
    total = make + forward + scoring
    print(
        f"per {len(configs)} candidates: making calibration batches {make:.2f} s ({make / total:.0%}), "
        f"calibration forwards {forward:.2f} s ({forward / total:.0%}), "
        f"evaluation on {data.info.num_selection} selection images {scoring:.2f} s ({scoring / total:.0%})"
    )

    def build(keep_bytes: int) -> float:
        front_builder.CALIB_KEEP_BYTES = keep_bytes
        return _seconds(
            lambda: front_builder.evaluate_candidates(
                model, configs, data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed
            )
        )

    ratios = []
    for _ in range(args.rounds):
        again, once = build(0), build(1 << 30)
        ratios.append(once / again)
    print(
        f"evaluate_candidates, calibration batches kept vs made per candidate: "
        f"median {statistics.median(ratios):.2f}x over {args.rounds} rounds ({', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
