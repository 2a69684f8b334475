"""PareCO and TwoStage: slimmable training with multi-objective BO over per-layer widths.

PareCO (Chin et al., Algorithms 1 and 2) keeps a history H of configs. Every ``n`` steps it
re-measures the loss of configs in H on a probe of the current batch, fits the GPs, samples
``M`` new configs with Pareto-aware sampling (or uniform λ), adds them to H and trains
{largest, the M new configs, smallest} with in-place distillation for the next ``n`` steps.
``n = max(1, total_steps · M // history_size)``, so H grows to about ``history_size`` configs (1000
unless set, fewer on short runs, where a BO step comes at most every 10 steps). H starts with 5 uniform
widths spread over MACs, and the first ``warmup_configs`` proposals are uniform random per-layer
configs instead of BO's: at initialisation the smallest config has the lowest loss, H's front is that
one point, and BO from the first step piled its proposals onto it (13 of the first 44 on digits).

The paper re-measures all of H at every BO step; on a CPU those |H| forwards are most of PareCO's
cost. With ``remeasure = K > 0`` a BO step re-measures at most about K configs: the ones never
measured, H's current approximate front, and a random draw of the rest; every stale loss is moved
by the mean change measured on the re-measured configs that had a value (the loss falls as
training goes on, and an unshifted stale loss would look worse than a fresh one). ``remeasure = 0``
is the paper's rule.

TwoStage trains with the sandwich rule over independent random per-dimension widths, then runs the
same MOBO search over the trained weights, with as many evaluated configs as PareCO's H would reach.

Both hand the approximate front of H (by measured loss and exact MACs), thinned to at most
``candidates`` configs spread over MACs plus the largest and smallest, to the loop's BN
calibration, evaluation and non-dominated sort.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from pareco_runtime.latency_table import LatencyLUT, LatencyTableError
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.sources import is_converted

from . import mobo
from .batch_loss import Measure, head
from .config import TrainConfig, TrainingError
from .search_cost import LatencyCost, SearchCost, search_cost
from .strategies import Strategy

# Uniform widths (spread evenly over MACs, smallest and largest included) that seed H.
WARMUP_WIDTHS = 5
# |H| when --history-size is not given, as in the paper's runs, and the fewest training steps between
# BO steps that an unset |H| allows: with |H| = 1000 a 28-step digits run did BO at every step, 71 %
# of its time, at 2 images/s.
DEFAULT_HISTORY = 1000
AUTO_MIN_INTERVAL = 10


def bo_schedule(total_steps: int, samples: int, history_size: int | None) -> tuple[int, int]:
    """``(n, iterations)``: a BO iteration every ``n = max(1, total_steps · samples // history_size)``
    steps, starting at step 0, hence ``ceil(total_steps / n)`` iterations adding ``samples`` configs each.

    ``history_size`` None: 1000, lowered on short runs so that ``n`` is at least 10.
    """
    target = history_size or min(DEFAULT_HISTORY, max(1, total_steps * samples // AUTO_MIN_INTERVAL))
    interval = max(1, total_steps * samples // target)
    return interval, math.ceil(total_steps / interval)


def _world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _BOStrategy(Strategy):
    """What PareCO and TwoStage share: H with its measured losses and exact costs, the BO settings,
    the proposal step and the front-thinned candidates."""

    distill = True

    def __init__(
        self, cfg: TrainConfig | None = None, settings: mobo.SearchSettings | None = None, **options: Any
    ) -> None:
        """Read the run's seed and BO settings from ``cfg``, or from ``options`` named as
        :class:`training.config.TrainConfig`'s fields (``seed``, ``samples``, ``history_size``,
        ``probe_batch``, ``remeasure``, ``warmup_configs``, ``lambda_sampling``, ``epsilon``, ``cost``,
        ``cost_model``, ``candidates``); ``settings`` tune the acquisition search."""
        if cfg is None:
            cfg = TrainConfig(algorithm=self.name, **options)
            cfg.validate()
        elif options:
            raise TypeError(f"{type(self).__name__}: pass cfg or the options {sorted(options)}, not both")
        super().__init__(cfg.seed)
        self.cfg = cfg
        self.settings = settings or mobo.SearchSettings()
        self.data: Any = None
        self.history: list[list[float]] = []
        self.interval = 0  # training steps between BO steps, from bo_schedule at setup()
        self.losses: list[float] = []
        self.costs: list[float] = []
        self.bisection_steps: list[int] = []
        self.lambdas: list[float] = []

    def attach_data(self, data: Any) -> None:
        """Keep the training data (a :class:`training.data.Data`) for probes measured after training."""
        self.data = data

    def setup(self, model: SlimmableNet, total_steps: int, measure: Measure | None = None) -> None:
        super().setup(model, total_steps, measure)
        s = model.space
        self._set_cost(model, self.cfg.latency_table())
        self.bounds = torch.tensor([s.smallest(), [s.high] * s.dims], dtype=torch.float64)
        self.interval, iterations = bo_schedule(total_steps, self.cfg.samples, self.cfg.history_size)
        warmup = self.cost.widths_spread(WARMUP_WIDTHS)
        self.warmup = len(warmup)
        self.target_size = self.warmup + self.cfg.samples * iterations
        self._set_history([s.uniform(w) for w in warmup], [math.nan] * len(warmup))
        self.bisection_steps, self.lambdas = [], []

    def _set_cost(self, model: SlimmableNet, table: str | LatencyLUT | None) -> None:
        """Search on MACs (``table`` None) or on the latency of a table (a file, or one read already)."""
        # Not the tables' own advice, which names a manifest: a run not trained yet has none.
        todo = f"build the table for this run with `{self._table_command(model)}`"
        try:
            self.cost: SearchCost = (
                LatencyCost(table, model, "the checkpoint's latency table", todo)
                if isinstance(table, LatencyLUT)
                else search_cost(model, table, todo)
            )
        except LatencyTableError as exc:
            raise TrainingError(f"{TrainConfig.flag('cost')} {self.cfg.cost}: {exc}") from None
        self.exact_cost = self.cost if self.cfg.cost_model == "exact" else None

    def _table_command(self, model: SlimmableNet) -> str:
        """The ``pareco bench`` command that builds a latency table for the network this run trains."""
        cfg = self.cfg
        extra = f" --width-factor {cfg.width_factor}" if cfg.width_factor != 1 else ""
        extra += f" --low {cfg.low}" if is_converted(cfg.arch) else ""
        return (
            f"pareco bench lut --arch {cfg.arch} --classes {model.arch_kwargs.get('num_classes')} "
            f"--image-size {model.input_size[-1]}{extra} --backend BACKEND --profile NAME --out FILE"
        )

    def latency_cost(self) -> LatencyCost | None:
        return self.cost if isinstance(self.cost, LatencyCost) else None

    def state_dict(self) -> dict[str, Any]:
        # The table travels in the checkpoint: a resumed run searches on the very table it started
        # with even if the file was rebuilt since.
        lat = self.latency_cost()
        return {**super().state_dict(), "cost_table": "" if lat is None else json.dumps(lat.lut.to_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("cost_table") and self.model is not None:
            self._set_cost(self.model, LatencyLUT.from_dict(json.loads(state["cost_table"])))
            self.costs = [self._cost_of(a) for a in self.history]

    def _set_history(self, configs: list[list[float]], losses: list[float]) -> None:
        self.history = configs
        self.losses = losses
        self.costs = [self._cost_of(a) for a in configs]

    def _cost_of(self, alpha: Sequence[float]) -> float:
        return self.cost.fraction(alpha)

    def _add(self, rows: Sequence[dict[str, Any]]) -> list[list[float]]:
        """Append proposals (as ``dataclasses.asdict(Proposal)``, the form a broadcast carries) to H with
        unknown losses; returns their configs."""
        for r in rows:
            self.history.append([float(a) for a in r["alpha"]])
            self.losses.append(math.nan)
            self.costs.append(self._cost_of(r["alpha"]))
            self.lambdas.append(float(r["lam"]))
            self.bisection_steps.append(int(r["steps"]))
        return self.history[len(self.history) - len(rows) :]

    def _propose(self, count: int) -> tuple[list[mobo.Proposal], mobo.Timings]:
        """``count`` new configs: uniform random ones (``steps`` 0, λ NaN) until ``warmup_configs`` have
        been drawn, then from a BO iteration over H (every loss in H must be measured)."""
        drawn = sum(1 for k in self.bisection_steps if k == 0)
        if drawn < self.cfg.warmup_configs:
            assert self.model is not None
            configs = self.model.space.sample(self.generator, min(count, self.cfg.warmup_configs - drawn))
            return [mobo.Proposal(a, self._cost_of(a), math.nan, 0, None) for a in configs], mobo.Timings()
        from .gp_search import propose  # BoTorch: loaded by the first BO step

        return propose(
            torch.tensor(self.history, dtype=torch.float64),
            torch.tensor(self.losses, dtype=torch.float64),
            torch.tensor(self.costs, dtype=torch.float64),
            count,
            bounds=self.bounds,
            cost_of=self._cost_of,
            exact_cost=self.exact_cost,
            lambda_sampling=self.cfg.lambda_sampling,
            epsilon=self.cfg.epsilon,
            generator=self.generator,
            settings=self.settings,
        )

    def _probe(self, probe: Any) -> Any:
        """``probe``, else a fixed batch of ``probe_batch`` un-augmented images of the attached data
        (seeded by the run's seed)."""
        if probe is not None:
            return probe
        if self.data is None:
            raise TrainingError(
                f"{self.name} measures configs on training data after training: pass a probe batch, "
                "Trainer.candidates(probe=batch), or call strategy.attach_data(data) before"
            )
        return next(iter(self.data.calib_batches(self.cfg.probe_batch, 1, self.cfg.seed)))

    def _front(self) -> list[list[float]]:
        """H's approximate front by measured loss and exact MACs, thinned to ``candidates`` configs
        spread over MACs, plus the smallest and largest (the first and last warm-up widths)."""
        keep = [0, self.warmup - 1]
        return [self.history[i] for i in mobo.thin_front(self.costs, self.losses, keep, self.cfg.candidates)]

    def record(self) -> dict[str, Any]:
        steps = [k for k in self.bisection_steps if k > 0]
        lams = [lam for lam, k in zip(self.lambdas, self.bisection_steps) if k > 0]
        return {
            "history_size": len(self.history),
            "samples_per_iter": self.cfg.samples,
            "epsilon": self.cfg.epsilon,
            "lambda_sampling": self.cfg.lambda_sampling,
            "cost": self.cost.name,
            "cost_model": self.cfg.cost_model,
            "probe_batch": self.cfg.probe_batch,
            "remeasure": self.cfg.remeasure,
            "warmup_configs": self.cfg.warmup_configs,
            "bisection_steps_mean": round(sum(steps) / len(steps), 3) if steps else None,
            "lambda_mean": round(sum(lams) / len(lams), 4) if lams else None,
            "candidates": self.cfg.candidates,
        }


class PareCO(_BOStrategy):
    """PareCO: BO-sampled per-layer widths trained with the sandwich rule and in-place distillation.

    Every ``interval`` steps (from :func:`bo_schedule`) :meth:`step_configs` re-measures H (all of it, or
    the subset of :meth:`remeasure_indices`) on the first ``probe_batch`` images of the current batch
    (model left bit-identical), proposes ``samples`` configs
    and returns ``[largest, *those configs, smallest]`` until the next BO step. Under torchrun the
    losses are averaged over ranks, BO runs on rank 0 and its configs are broadcast. H, its losses,
    the λ and bisection statistics and the generator are in :meth:`state_dict`, so a resumed run
    samples the same configs.
    """

    name = "pareco"

    def __init__(
        self, cfg: TrainConfig | None = None, settings: mobo.SearchSettings | None = None, **options: Any
    ) -> None:
        super().__init__(cfg, settings, **options)
        self.current: list[list[float]] = []
        self.bo_seconds = 0.0
        self.split = {"measure_s": 0.0, "fit_s": 0.0, "acquisition_s": 0.0}
        self.elapsed_before = 0.0
        self.started = time.perf_counter()

    def setup(self, model: SlimmableNet, total_steps: int, measure: Measure | None = None) -> None:
        super().setup(model, total_steps, measure)
        self.current = []
        self.started = time.perf_counter()

    def step_configs(self, step: int, model: SlimmableNet, batch: Any) -> list[list[float]]:
        if step % self.interval == 0 or not self.current:
            self._bo_step(step, batch)
        s = model.space
        return [s.uniform(s.high), *self.current, s.smallest()]

    def remeasure_indices(self, step: int) -> list[int]:
        """Indices of H to re-measure at the BO step of ``step``: all of H when ``remeasure`` is 0 or
        |H| ≤ ``remeasure``; otherwise every unmeasured config, H's approximate front (stale losses,
        exact costs) and, to fill up to ``remeasure``, others drawn at random. The draw is seeded by
        (seed, step), so every rank and a resumed run pick the same subset."""
        n = len(self.history)
        if self.cfg.remeasure == 0 or n <= self.cfg.remeasure:
            return list(range(n))
        losses = torch.tensor(self.losses, dtype=torch.float64)
        known = ~losses.isnan()
        chosen = torch.zeros(n, dtype=torch.bool)
        chosen[~known] = True
        if known.any():
            idx = known.nonzero().squeeze(-1)
            front = mobo.pareto_mask(torch.tensor(self.costs, dtype=torch.float64)[idx], losses[idx])
            chosen[idx[front]] = True
        rest = (~chosen).nonzero().squeeze(-1)
        fill = max(0, self.cfg.remeasure - int(chosen.sum()))
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        chosen[rest[torch.randperm(len(rest), generator=g)[:fill]]] = True
        return chosen.nonzero().squeeze(-1).tolist()

    def _update_losses(self, indices: list[int], measured: torch.Tensor) -> None:
        """Store fresh losses at ``indices`` and shift every stale one by the mean change seen on the
        re-measured configs that already had a loss."""
        losses = torch.tensor(self.losses, dtype=torch.float64)
        sel = torch.tensor(indices, dtype=torch.long)
        fresh = measured.double().cpu()
        prior = losses[sel]
        had = ~prior.isnan()
        if len(indices) < len(losses) and had.any():
            losses += (fresh[had] - prior[had]).mean()
        losses[sel] = fresh
        self.losses = losses.tolist()

    def _bo_step(self, step: int, batch: Any) -> None:
        t0 = time.perf_counter()
        indices = self.remeasure_indices(step)
        losses = self.measure([self.history[i] for i in indices], head(batch, self.cfg.probe_batch))
        rank, world = _world()
        if world > 1:
            dist.all_reduce(losses, op=dist.ReduceOp.SUM)
            losses /= world
        self._update_losses(indices, losses)
        t1 = time.perf_counter()
        self.split["measure_s"] += t1 - t0
        payload: list[dict[str, Any]] | None = None
        if rank == 0:
            proposals, timings = self._propose(self.cfg.samples)
            payload = [dataclasses.asdict(p) for p in proposals]
            self.split["fit_s"] += timings.fit_s
            self.split["acquisition_s"] += timings.acquisition_s
        if world > 1:
            box = [payload]
            dist.broadcast_object_list(box, src=0)
            payload = box[0]
        assert payload is not None
        self.current = self._add(payload)
        self.bo_seconds += time.perf_counter() - t0

    def candidates(self, model: SlimmableNet, probe: Any = None) -> list[list[float]]:
        """The thinned front of H; given ``probe`` or attached data, H is first re-measured on it with the
        final weights (the configs of the last BO step have no measurement otherwise)."""
        if probe is not None or self.data is not None:
            self.losses = self.measure(self.history, self._probe(probe)).double().cpu().tolist()
        return self._front()

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def _bo_share(self) -> float:
        """BO seconds over wall-clock seconds since setup (across resumes)."""
        return self.bo_seconds / max(self._elapsed(), 1e-9)

    def record(self) -> dict[str, Any]:
        return {
            **super().record(),
            "bo_interval_steps": self.interval,
            "bo_time_s": round(self.bo_seconds, 3),
            "bo_time_share": round(self._bo_share(), 4),
            **{f"bo_{k}": round(v, 3) for k, v in self.split.items()},
        }

    def progress(self) -> str:
        return f"|H| {len(self.history)} BO {self._bo_share():.0%}"

    def state_dict(self) -> dict[str, Any]:
        d = self.model.space.dims if self.model is not None else 0
        return {
            **super().state_dict(),
            "history": torch.tensor(self.history, dtype=torch.float64),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "current": torch.tensor(self.current, dtype=torch.float64).reshape(-1, d),
            "lambdas": torch.tensor(self.lambdas, dtype=torch.float64),
            "bisection_steps": torch.tensor(self.bisection_steps, dtype=torch.int64),
            "bo_seconds": self.bo_seconds,
            "split": dict(self.split),
            "elapsed_s": self._elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._set_history(state["history"].tolist(), state["losses"].tolist())
        self.current = state["current"].tolist()
        self.lambdas = state["lambdas"].tolist()
        self.bisection_steps = state["bisection_steps"].tolist()
        self.bo_seconds = float(state["bo_seconds"])
        self.split = {k: float(v) for k, v in state["split"].items()}
        self.elapsed_before = float(state["elapsed_s"])
        self.started = time.perf_counter()


class TwoStage(_BOStrategy):
    """TwoStage: sandwich-rule training over independent random per-dimension widths, then MOBO search.

    Stage 1 trains ``[largest, *samples random configs, smallest]`` with in-place distillation.
    Stage 2 (:meth:`candidates`, on a probe batch or the data of :meth:`attach_data`) measures configs on a fixed training
    probe with the trained weights and grows H by BO (PAS or uniform λ, ``samples`` per iteration) to
    as many configs as PareCO's H would reach with the same settings.
    """

    name = "twostage"

    def __init__(
        self, cfg: TrainConfig | None = None, settings: mobo.SearchSettings | None = None, **options: Any
    ) -> None:
        super().__init__(cfg, settings, **options)
        self.search_seconds = 0.0

    def step_configs(self, step: int, model: SlimmableNet, batch: Any) -> list[list[float]]:
        s = model.space
        return [s.uniform(s.high), *s.sample(self.generator, self.cfg.samples), s.smallest()]

    def candidates(self, model: SlimmableNet, probe: Any = None) -> list[list[float]]:
        t0 = time.perf_counter()
        probe = self._probe(probe)
        # The weights are fixed now, so each config is measured once, when it joins H.
        self.losses = self.measure(self.history, probe).double().cpu().tolist()
        while len(self.history) < self.target_size:
            proposals, _ = self._propose(min(self.cfg.samples, self.target_size - len(self.history)))
            new = self._add([dataclasses.asdict(p) for p in proposals])
            self.losses[len(self.history) - len(new) :] = self.measure(new, probe).double().cpu().tolist()
        self.search_seconds += time.perf_counter() - t0
        return self._front()

    def record(self) -> dict[str, Any]:
        return {**super().record(), "search_time_s": round(self.search_seconds, 3)}


def make_bo_strategy(cfg: TrainConfig) -> Strategy:
    """The PareCO or TwoStage strategy of ``cfg``; TrainingError naming the flag of a bad setting."""
    cfg.validate()
    classes: dict[str, type[_BOStrategy]] = {"pareco": PareCO, "twostage": TwoStage}
    if cfg.algorithm not in classes:
        raise TrainingError(
            f"{TrainConfig.flag('algorithm')}: '{cfg.algorithm}' is not a BO algorithm; "
            "choose pareco or twostage"
        )
    return classes[cfg.algorithm](cfg)
