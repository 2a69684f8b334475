"""The BoTorch half of MOBO-RS (:mod:`training.mobo`): the GPs fitted on H, the scalarised acquisition
whose optimum is a proposal, and :func:`propose`, one BO iteration. Imported by PareCO's and
TwoStage's first BO step, not with :mod:`training.mobo`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from botorch.acquisition import AcquisitionFunction, UpperConfidenceBound
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms import Normalize, Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from botorch.optim import optimize_acqf
from botorch.utils.multi_objective.scalarization import get_chebyshev_scalarization
from botorch.utils.transforms import t_batch_mode_transform
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from .config import LAMBDA_SAMPLING
from .mobo import (
    AUGMENTATION,
    MAX_BISECTION_STEPS,
    UCB_BETA,
    Proposal,
    SearchSettings,
    Timings,
    draw_target,
    isolated,
)


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
    with isolated(generator, settings.threads):
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
