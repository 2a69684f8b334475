"""MOBO-RS over per-layer widths with BoTorch, and PareCO's Pareto-aware sampling (Algorithms 1 and 2).

One BO iteration takes the history H (configs in the width box, their measured cross-entropy and
their exact cost as a fraction of the full model's: MACs, or a device's latency,
:mod:`training.search_cost`) and proposes new configs:

- the loss is modelled by a ``SingleTaskGP`` with BoTorch's default likelihood and priors, a Matérn-5/2
  ARD kernel (the dimension-scaled prior BoTorch uses for its default RBF), inputs normalised to the
  unit cube and the outcome standardised, fitted with ``fit_gpytorch_mll``;
- the cost is either exact (``"exact"``: the cost's differentiable surrogate, e.g. the MAC count as a
  torch polynomial of α, exact up to channel rounding, evaluated on the candidate itself) or a
  second GP of the same kind (``"gp"``, the paper's black-box treatment);
- the acquisition is the augmented Tchebyshev scalarisation (weights (1-λ, λ), β = 1e-6, ideal point
  = the best loss and cost seen in H, both normalised by their range in H) of the loss GP's lower
  confidence bound and the cost (its lower confidence bound for the cost GP), maximised with
  ``optimize_acqf`` over the box [low, 1]^d;
- λ is drawn uniformly (the ablation) or, with Pareto-aware sampling, a target cost is drawn with
  probability proportional to the under-explored area between consecutive points of H's approximate
  front (eq. 4) and λ is bisected until the proposal's exact cost is within ε of the target.

Everything random draws from a caller's ``torch.Generator`` (BoTorch's own Sobol and multinomial draws
run inside a forked global RNG seeded from it), so a resumed run proposes the same configs. The GP
work runs on one CPU thread: its matrices are small (|H| ≤ a few thousand) and one thread avoided
the OpenMP contention that made a 2-thread fit 60x slower on the 2-core development machine.

The GP models, the acquisition and :func:`~training.gp_search.propose` live in
:mod:`training.gp_search`, which PareCO and TwoStage import for their first BO step: importing this
module (the search's settings, the Pareto-aware target and :func:`thin_front`) does not load
BoTorch, whose import took 2.8 s here (2.1 s of it JAX, which BoTorch imports where it is installed,
as the ``litert`` extra installs it).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Exploration weight of the confidence bounds: LCB = mean - sqrt(UCB_BETA) * std (BoTorch's UCB convention).
UCB_BETA = 0.1
# β of the augmented Tchebyshev scalarisation (the paper's value): a tie-break towards the weighted sum.
AUGMENTATION = 1e-6
# The paper's cap on λ bisection steps per sampled config.
MAX_BISECTION_STEPS = 10


@dataclass
class SearchSettings:
    """Effort of one acquisition optimisation (``optimize_acqf``) and the thread count of the GP work."""

    num_restarts: int = 2
    raw_samples: int = 128
    maxiter: int = 50
    threads: int = 1


@dataclass
class Proposal:
    """A proposed config: α, its exact cost (MACs / full MACs), the λ that produced it, how many
    acquisition optimisations it took (1 for uniform λ) and the target cost (None for uniform λ)."""

    alpha: list[float]
    cost: float
    lam: float
    steps: int
    target: float | None


@dataclass
class Timings:
    """Wall-clock seconds of one BO iteration's GP fits and acquisition optimisations."""

    fit_s: float = 0.0
    acquisition_s: float = 0.0


def pareto_mask(cost: Tensor, loss: Tensor) -> Tensor:
    """Which (cost, loss) pairs are non-dominated when both are minimised (duplicates kept once)."""
    from botorch.utils.multi_objective.pareto import is_non_dominated

    return is_non_dominated(torch.stack([cost, loss], dim=-1), maximize=False)


def under_explored_areas(cost: Tensor, loss: Tensor) -> tuple[Tensor, Tensor]:
    """The approximate front's costs in increasing order and the area A_i of eq. 4 for each gap.

    On the front (cost up, loss down), normalised by its own ranges, ``A_i = (c_{i+1} - c_i) (l_i - l_{i+1})``:
    the rectangle between two consecutive points that no point of H lies in, large where the front is
    poorly sampled. Returns ``(front_costs, areas)`` with ``len(areas) == len(front_costs) - 1``.
    """
    mask = pareto_mask(cost, loss)
    c, order = cost[mask].sort()
    l_ = loss[mask][order]
    cn = (c - c[0]) / (c[-1] - c[0]).clamp_min(1e-12)
    ln = (l_ - l_.min()) / (l_.max() - l_.min()).clamp_min(1e-12)
    return c, (cn[1:] - cn[:-1]) * (ln[:-1] - ln[1:])


def draw_target(
    cost: Tensor, loss: Tensor, cost_range: tuple[float, float], generator: torch.Generator
) -> float:
    """A target cost: a front gap drawn with probability ∝ its area A_i, then a uniform point inside it.

    Falls back to a uniform draw over ``cost_range`` while the front has no gap with area (one point).
    """
    front, areas = under_explored_areas(cost, loss)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if areas.numel() == 0 or float(areas.sum()) <= 0.0:
        return cost_range[0] + u * (cost_range[1] - cost_range[0])
    i = int(torch.multinomial(areas, 1, generator=generator))
    return float(front[i] + u * (front[i + 1] - front[i]))


@contextlib.contextmanager
def isolated(generator: torch.Generator, threads: int) -> Iterator[None]:
    """Global RNG forked and seeded from ``generator``, ``threads`` intra-op threads, BoTorch's warning
    about flat initial acquisition values muted (it falls back to random starts on its own)."""
    from botorch.exceptions.warnings import BadInitialCandidatesWarning

    seed = int(torch.randint(2**62, (), generator=generator))
    old = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", BadInitialCandidatesWarning)
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(old)


def thin_front(cost: Sequence[float], loss: Sequence[float], keep: Sequence[int], limit: int) -> list[int]:
    """Indices of at most ``max(limit, len(keep))`` configs: the ``keep`` indices plus points of the
    approximate front of (cost, loss) spread evenly over cost (nearest to evenly spaced targets).

    NaN losses count as dominated. The result is sorted by cost.
    """
    c = torch.tensor(cost, dtype=torch.float64)
    lo_ = torch.tensor(loss, dtype=torch.float64)
    front = [i for i in pareto_mask(c, lo_).nonzero().flatten().tolist() if not math.isnan(loss[i])]
    chosen = list(dict.fromkeys(keep))
    pool = sorted(set(front) - set(chosen), key=lambda i: cost[i])
    room = max(0, limit - len(chosen))
    if pool and room:
        lo, hi = min(cost[i] for i in pool), max(cost[i] for i in pool)
        targets = (
            [lo + (hi - lo) * k / max(1, room - 1) for k in range(room)] if room > 1 else [(lo + hi) / 2]
        )
        for t in targets:
            if not pool:
                break
            j = min(pool, key=lambda i: (abs(cost[i] - t), i))
            chosen.append(j)
            pool.remove(j)
    return sorted(chosen, key=lambda i: (cost[i], i))
