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
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from botorch.acquisition import AcquisitionFunction, UpperConfidenceBound
from botorch.exceptions.errors import ModelFittingError
from botorch.exceptions.warnings import BadInitialCandidatesWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from botorch.optim import optimize_acqf
from botorch.utils.multi_objective.pareto import is_non_dominated
from botorch.utils.multi_objective.scalarization import get_chebyshev_scalarization
from botorch.utils.transforms import t_batch_mode_transform
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from .config import LAMBDA_SAMPLING

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


class ScalarizedLCB(AcquisitionFunction):
    """Augmented Tchebyshev scalarisation of (loss LCB, cost), to be maximised (q = 1).

    ``cost`` maps ``batch x 1 x d`` candidates to their (estimated) cost fractions ``batch``;
    ``scalarization`` is BoTorch's ``get_chebyshev_scalarization`` with negative weights (minimisation).
    """

    def __init__(
        self,
        loss_model: SingleTaskGP,
        cost: Callable[[Tensor], Tensor],
        scalarization: Callable[..., Tensor],
    ) -> None:
        super().__init__(model=loss_model)
        self.loss_ucb = UpperConfidenceBound(loss_model, beta=UCB_BETA, maximize=False)
        self.cost = cost
        self.scalarization = scalarization

    # botorch types the decorator for AcquisitionFunction methods only; this subclass's is one too.
    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]
    def forward(self, X: Tensor) -> Tensor:
        # UCB with maximize=False returns -(mean - sqrt(beta) * std): minus the lower confidence bound.
        y = torch.stack([-self.loss_ucb(X), self.cost(X)], dim=-1)
        return self.scalarization(y)


def fit_gp(X: Tensor, y: Tensor, bounds: Tensor) -> SingleTaskGP:
    """A fitted SingleTaskGP of ``y`` (n) over ``X`` (n x d, inside ``bounds``): Matérn-5/2 ARD kernel with
    BoTorch's dimension-scaled lengthscale prior, inputs normalised to the unit cube, outcome standardised.
    If every fitting attempt fails it warns and keeps the prior's initial hyperparameters."""
    d = X.shape[-1]
    gp = SingleTaskGP(
        X,
        y.unsqueeze(-1),
        covar_module=get_covar_module_with_dim_scaled_prior(d, use_rbf_kernel=False),
        input_transform=Normalize(d, bounds=bounds),
        outcome_transform=Standardize(m=1),
    )
    try:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    except ModelFittingError:
        # Every restart failed (e.g. a degenerate H); BoTorch rolled back to the prior's initial
        # hyperparameters, which still give a valid posterior: a BO step must not stop a training run.
        warnings.warn(
            "GP fit failed on this history; using the prior's hyperparameters", RuntimeWarning, stacklevel=2
        )
        gp.eval()
    return gp


def pareto_mask(cost: Tensor, loss: Tensor) -> Tensor:
    """Which (cost, loss) pairs are non-dominated when both are minimised (duplicates kept once)."""
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
def _isolated(generator: torch.Generator, threads: int) -> Iterator[None]:
    """Global RNG forked and seeded from ``generator``, ``threads`` intra-op threads, BoTorch's warning
    about flat initial acquisition values muted (it falls back to random starts on its own)."""
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


@dataclass
class MoboRS:
    """The GP models of one BO iteration over H and the map λ → acquisition optimum.

    ``X`` (n x d) are H's configs, ``loss`` and ``cost`` (n) their measured loss and exact cost
    fraction; ``exact_cost`` is the differentiable cost (None → a cost GP is fitted); ``cost_of`` is the
    exact cost fraction of a config (``model.macs`` / full MACs), which the bisection checks.
    """

    X: Tensor
    loss: Tensor
    cost: Tensor
    bounds: Tensor
    cost_of: Callable[[Sequence[float]], float]
    exact_cost: Callable[[Tensor], Tensor] | None
    settings: SearchSettings = field(default_factory=SearchSettings)
    timings: Timings = field(default_factory=Timings)

    def __post_init__(self) -> None:
        t0 = time.perf_counter()
        self.loss_gp = fit_gp(self.X, self.loss, self.bounds)
        if self.exact_cost is None:
            cost_gp = fit_gp(self.X, self.cost, self.bounds)
            cost_ucb = UpperConfidenceBound(cost_gp, beta=UCB_BETA, maximize=False)
            self._cost_fn: Callable[[Tensor], Tensor] = lambda x: -cost_ucb(x)
        else:
            surrogate = self.exact_cost
            self._cost_fn = lambda x: surrogate(x.squeeze(-2))
        self.timings.fit_s += time.perf_counter() - t0
        ideal = torch.stack([self.loss.min(), self.cost.min()])
        spread = torch.stack([self.loss.max(), self.cost.max()]) - ideal
        # Two rows whose column ranges are H's ranges: the scalarisation normalises by them, so the
        # ideal point is H's best loss and cost; the floor keeps a flat H from dividing by zero.
        self._reference = torch.stack([ideal, ideal + spread.clamp_min(1e-6)])

    def optimum(self, lam: float) -> list[float]:
        """The config maximising the scalarised acquisition with weights (1 - λ, λ) on (loss, cost)."""
        t0 = time.perf_counter()
        weights = -torch.tensor([1.0 - lam, lam], dtype=torch.float64)
        scalarization = get_chebyshev_scalarization(weights, self._reference, alpha=AUGMENTATION)
        acq = ScalarizedLCB(self.loss_gp, self._cost_fn, scalarization)
        x, _ = optimize_acqf(
            acq,
            bounds=self.bounds,
            q=1,
            num_restarts=self.settings.num_restarts,
            raw_samples=self.settings.raw_samples,
            options={"maxiter": self.settings.maxiter},
            # The max() in the scalarisation has kinks where L-BFGS-B's line search may stop
            # early; its point is still the best found, so a costly second round is not run.
            retry_on_optimization_warning=False,
        )
        self.timings.acquisition_s += time.perf_counter() - t0
        return x[0].tolist()  # optimize_acqf clamps its candidates to the bounds

    def bisect(self, target: float, epsilon: float) -> Proposal:
        """Bisect λ until the optimum's exact cost is within ``epsilon`` of ``target`` (at most 10 steps).

        More weight on cost (larger λ) gives cheaper optima, so λ rises while the cost is above the
        target. Returns the proposal closest to the target among those tried, with the steps taken.
        """
        lo, hi = 0.0, 1.0
        best: Proposal | None = None
        for step in range(1, MAX_BISECTION_STEPS + 1):
            lam = (lo + hi) / 2
            alpha = self.optimum(lam)
            c = self.cost_of(alpha)
            if best is None or abs(c - target) < abs(best.cost - target):
                best = Proposal(alpha, c, lam, step, target)
            if abs(c - target) <= epsilon:
                break
            if c > target:
                lo = lam
            else:
                hi = lam
        assert best is not None
        best.steps = step
        return best


def propose(
    X: Tensor,
    loss: Tensor,
    cost: Tensor,
    count: int,
    *,
    bounds: Tensor,
    cost_of: Callable[[Sequence[float]], float],
    exact_cost: Callable[[Tensor], Tensor] | None,
    lambda_sampling: str,
    epsilon: float,
    generator: torch.Generator,
    settings: SearchSettings | None = None,
) -> tuple[list[Proposal], Timings]:
    """Fit the GPs on H = (X, loss, cost) and propose ``count`` configs by PAS or uniform λ.

    Deterministic given ``generator``'s state (which it advances); leaves the global RNG and the thread
    count as they were. Returns the proposals and the time spent fitting and optimising.
    """
    settings = settings or SearchSettings()
    if lambda_sampling not in LAMBDA_SAMPLING:
        raise ValueError(
            f"lambda_sampling must be one of {', '.join(LAMBDA_SAMPLING)}, got '{lambda_sampling}'"
        )
    if not torch.isfinite(loss).all():
        raise ValueError("every config in H needs a measured, finite loss before a BO iteration")
    X, loss, cost = (t.detach().to("cpu", torch.float64) for t in (X, loss, cost))
    bounds = bounds.to(torch.float64)
    cost_range = (float(cost_of(bounds[0].tolist())), float(cost_of(bounds[1].tolist())))
    with _isolated(generator, settings.threads):
        search = MoboRS(X, loss, cost, bounds, cost_of, exact_cost, settings)
        out = []
        for _ in range(count):
            if lambda_sampling == "uniform":
                lam = float(torch.rand((), generator=generator, dtype=torch.float64))
                alpha = search.optimum(lam)
                out.append(Proposal(alpha, cost_of(alpha), lam, 1, None))
            else:
                out.append(search.bisect(draw_target(cost, loss, cost_range, generator), epsilon))
    return out, search.timings


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
