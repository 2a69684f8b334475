"""PareCO speed: BO wall time per iteration by phase, and PareCO's step time over Slim's.

Run: ``.venv/bin/python -m benchmarks.pareco_speed`` (1-2 minutes on 2 CPU cores). ResNet-20 on CIFAR-size
synthetic tensors (32x32, batch 128, 10 classes), M = 2 configs per BO iteration.

- BO iteration at |H| = 100, 500, 1000 for the exact and the GP cost model, split into loss
  re-measurement (one probe forward per re-measured config; timed at |H| = 100 and scaled
  linearly), GP fit and acquisition optimisation (PAS bisection). Re-measurement is shown both for
  all of H (the paper's rule, ``--remeasure 0``) and for the default subset (``--remeasure 64``:
  the M new configs, H's approximate front, random others up to 64). H holds random configs
  with a smooth synthetic loss (an untrained network's losses are flat noise, on which the bisection
  cannot converge), so the bisection steps are those of a trained network's front.
- Step time: one training step of PareCO ({largest, 2 BO configs, smallest}) and of Slim (the same
  with 2 uniform widths), interleaved in one process; PareCO's amortised step adds the mean BO
  iteration over the run divided by n, for the default schedule (|H| = 1000) of a CIFAR-10 run.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from bench.timing import interleaved
from pareco_runtime import build_model
from training import gp_search, mobo
from training.batch_loss import measure_losses
from training.config import COST_MODELS, TrainConfig
from training.pareco import WARMUP_WIDTHS, bo_schedule
from training.search_cost import CostPolynomial
from training.strategies import Slim, Strategy
from training.trainer import Trainer

SIZES = (100, 500, 1000)
SAMPLES = 2
BATCH = 128
CIFAR_TRAIN = 50_000
REMEASURE = TrainConfig.remeasure


def _history(model, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random configs, their exact cost fractions and a smooth noisy loss falling with cost."""
    g = torch.Generator().manual_seed(seed)
    full = model.macs(model.space.uniform(1.0))
    X = torch.tensor(model.space.sample(g, n), dtype=torch.float64)
    cost = torch.tensor([model.macs(a) / full for a in X.tolist()], dtype=torch.float64)
    loss = (
        0.5
        + 1.0 / (0.3 + cost)
        - 0.3 * X[:, 1::2].mean(-1)
        + 0.02 * torch.randn(n, generator=g, dtype=torch.float64)
    )
    return X, cost, loss


def bo_iterations(
    model, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[tuple[str, int], dict[str, float]], list]:
    """Per (cost model, |H|): seconds of re-measurement, GP fit, acquisition, and mean bisection steps."""
    full = model.macs(model.space.uniform(1.0))
    d = model.space.dims
    bounds = torch.tensor([[model.space.low] * d, [1.0] * d], dtype=torch.float64)
    probe = model.space.sample(torch.Generator().manual_seed(1), SIZES[0])
    measure_losses(model, probe[:2], (x, y))
    t0 = time.perf_counter()
    measure_losses(model, probe, (x, y))
    per_config = (time.perf_counter() - t0) / len(probe)
    out: dict[tuple[str, int], dict[str, float]] = {}
    configs: list = []
    for cost_model in COST_MODELS:
        exact = CostPolynomial.from_model(model) if cost_model == "exact" else None
        for n in SIZES:
            X, cost, loss = _history(model, n, seed=n)
            props, t = gp_search.propose(
                X,
                loss,
                cost,
                SAMPLES,
                bounds=bounds,
                cost_of=lambda a: model.macs(a) / full,
                exact_cost=exact,
                lambda_sampling="pas",
                epsilon=0.02,
                generator=torch.Generator().manual_seed(n),
            )
            subset = min(n, max(REMEASURE, int(mobo.pareto_mask(cost, loss).sum()) + SAMPLES))
            out[(cost_model, n)] = {
                "all": per_config * n,
                "subset": per_config * subset,
                "fit": t.fit_s,
                "acquisition": t.acquisition_s,
                "steps": sum(p.steps for p in props) / len(props),
            }
            configs = configs or [p.alpha for p in props]
            row = out[(cost_model, n)]
            for measure in ("all", "subset"):
                total = row[measure] + row["fit"] + row["acquisition"]
                print(
                    f"BO iteration {cost_model:5s} |H| {n:4d}, re-measure {measure:6s}: {total:6.1f} s = "
                    f"re-measure {row[measure]:5.1f} s ({subset if measure == 'subset' else n} configs) + GP fit "
                    f"{row['fit']:4.1f} s + acquisition {row['acquisition']:4.1f} s "
                    f"({row['acquisition'] / row['steps'] / SAMPLES:.2f} s per optimisation, "
                    f"{row['steps']:.1f} bisection steps)",
                    flush=True,
                )
    print(
        f"re-measurement: {per_config * 1e3:.0f} ms per config (probe {BATCH} images, timed on {SIZES[0]} configs)"
    )
    return out, configs


def _interp(points: dict[int, float], n: float) -> float:
    """Piecewise-linear in |H| through the measured sizes (flat outside them)."""
    xs = sorted(points)
    if n <= xs[0]:
        return points[xs[0]]
    for a, b in itertools.pairwise(xs):
        if n <= b:
            return points[a] + (points[b] - points[a]) * (n - a) / (b - a)
    return points[xs[-1]]


def mean_bo_seconds(
    rows: dict[tuple[str, int], dict[str, float]], cost_model: str, measure: str, total_steps: int
) -> tuple[float, int]:
    """(mean BO iteration seconds over a run of ``total_steps``, n) for |H| = 1000 and M = 2, re-measuring
    ``measure`` ("all" of H or the default "subset")."""
    n, iterations = bo_schedule(total_steps, SAMPLES, 1000)
    per_size = {h: sum(rows[(cost_model, h)][k] for k in (measure, "fit", "acquisition")) for h in SIZES}
    times = [_interp(per_size, WARMUP_WIDTHS + SAMPLES * i) for i in range(iterations)]
    return sum(times) / len(times), n


class _Fixed(Strategy):
    """The same configs at every step, the first the teacher: a PareCO step between BO steps."""

    distill = True

    def __init__(self, configs: list[list[float]]) -> None:
        super().__init__(0)
        self.configs = configs

    def step_configs(self, step, model, batch):
        return self.configs

    def candidates(self, model, probe=None):
        return self.configs


def step_times(
    model, x: torch.Tensor, y: torch.Tensor, pareco_configs: list, runs: int
) -> tuple[float, float]:
    """Median seconds of one Slim and one PareCO training step, interleaved."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    s = model.space
    pareco = [s.uniform(s.high), *pareco_configs, s.uniform(s.low)]
    # Distillation at full weight from the first step (distill_warmup 0), as late in a run.
    slim = Trainer(model, Slim(0, samples=SAMPLES), total_steps=1, distill_warmup=0)
    fixed = Trainer(model, _Fixed(pareco), total_steps=1, distill_warmup=0)

    def run(trainer: Trainer) -> None:
        model.train()
        opt.zero_grad(set_to_none=True)
        trainer.train_step((x, y), step=0)
        opt.step()

    t = interleaved({"slim": lambda: run(slim), "pareco": lambda: run(fixed)}, warmup=1, runs=runs)
    return t["slim"].median, t["pareco"].median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for training work (BO always uses 1); 1 is stable on a shared box",
    )
    ap.add_argument("--runs", type=int, default=5, help="timed training steps per algorithm")
    ap.add_argument(
        "--epochs", type=int, nargs="+", default=[30, 200], help="run lengths for the amortised ratio"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); ResNet-20, 32x32, batch {BATCH}, M = {SAMPLES}"
    )
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, input_size=32)
    x, y = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    rows, configs = bo_iterations(model, x, y)
    for cost_model in COST_MODELS[1:]:
        for n in SIZES:
            ratio = sum(rows[(cost_model, n)][k] for k in ("fit", "acquisition")) / sum(
                rows[("exact", n)][k] for k in ("fit", "acquisition")
            )
            print(f"GP cost model / exact cost, fit + acquisition at |H| {n}: {ratio:.2f}x")
    slim_s, pareco_s = step_times(model, x, y, configs, args.runs)
    print(
        f"training step: Slim {slim_s:.2f} s, PareCO {pareco_s:.2f} s (ratio {pareco_s / slim_s:.2f}x, before BO)"
    )
    spe = CIFAR_TRAIN // BATCH
    for epochs in args.epochs:
        for cost_model, measure in itertools.product(COST_MODELS, ("all", "subset")):
            bo, n = mean_bo_seconds(rows, cost_model, measure, epochs * spe)
            amortised = pareco_s + bo / n
            print(
                f"{epochs:3d} epochs ({epochs * spe} steps, n = {n}), cost {cost_model:5s}, re-measure {measure:6s}: "
                f"mean BO iteration {bo:.1f} s; PareCO step / Slim step = {amortised / slim_s:.2f}x "
                f"(BO share {bo / n / amortised:.0%})"
            )


if __name__ == "__main__":
    main()
