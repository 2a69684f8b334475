"""PareCO and TwoStage: MOBO-RS proposals, Pareto-aware sampling, the strategies, end-to-end runs, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
from safetensors.torch import load_file

from pareco_runtime import build_model
from pareco_runtime.manifest import load_manifest
from training import mobo
from training.batch_loss import measure_losses
from training.config import TrainConfig, TrainingError
from training.data import load_data
from training.loop import train
from training.pareco import PareCO, TwoStage, bo_schedule, make_bo_strategy
from training.search_cost import CostPolynomial


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return build_model("resnet20")


def _search_inputs(model, n: int, seed: int = 0):
    """H of ``n`` random configs with a smooth loss that falls with cost and prefers wide inner widths."""
    full = model.macs(model.space.uniform(1.0))
    X = torch.tensor(model.space.sample(torch.Generator().manual_seed(seed), n), dtype=torch.float64)
    cost = torch.tensor([model.macs(a) / full for a in X.tolist()], dtype=torch.float64)
    loss = 0.5 + 1.0 / (0.3 + cost) - 0.3 * X[:, 1::2].mean(-1)
    d = model.space.dims
    bounds = torch.tensor([[model.space.low] * d, [1.0] * d], dtype=torch.float64)
    return X, loss, cost, bounds, (lambda a: model.macs(a) / full)


def test_cost_polynomial_is_exact_on_integer_channels(resnet):
    poly = CostPolynomial.from_model(resnet)
    full = resnet.macs(resnet.space.uniform(1.0))
    for a in resnet.space.sample(torch.Generator().manual_seed(1), 5):
        # α whose channel counts are integers: no rounding, so the relaxation is exact.
        alpha = [round(x * f) / f for x, f in zip(a, resnet.space.full)]
        assert poly(torch.tensor(alpha, dtype=torch.float64)).item() == pytest.approx(
            resnet.macs(alpha) / full, rel=1e-12
        )


def test_cost_polynomial_is_within_rounding_on_mobilenet():
    m = build_model("mobilenet_v2")
    poly = CostPolynomial.from_model(m)
    full = m.macs(m.space.uniform(1.0))
    alphas = m.space.sample(torch.Generator().manual_seed(1), 20)
    err = poly(torch.tensor(alphas, dtype=torch.float64)) - torch.tensor([m.macs(a) / full for a in alphas])
    assert err.abs().max() < 0.02 and poly(
        torch.ones(m.space.dims, dtype=torch.float64)
    ).item() == pytest.approx(1.0)


@pytest.mark.slow
def test_pas_draws_targets_in_under_explored_gaps():
    cost = torch.tensor([0.1, 0.2, 0.3, 0.9, 1.0, 0.5, 0.95], dtype=torch.float64)
    loss = torch.tensor([1.0, 0.9, 0.8, 0.2, 0.1, 0.95, 0.5], dtype=torch.float64)  # last two dominated
    front, areas = mobo.under_explored_areas(cost, loss)
    assert front.tolist() == [0.1, 0.2, 0.3, 0.9, 1.0]
    assert int(areas.argmax()) == 2 and areas[2] > 10 * areas[0]
    g = torch.Generator().manual_seed(0)
    targets = torch.tensor([mobo.draw_target(cost, loss, (0.1, 1.0), g) for _ in range(2000)])
    in_gap = ((targets > 0.3) & (targets < 0.9)).double().mean().item()
    share = float(areas[2] / areas.sum())
    assert in_gap == pytest.approx(share, abs=0.03)
    assert in_gap > 0.6 / 0.9 + 0.15, "PAS favours the under-explored gap more than a uniform cost would"
    assert targets.min() >= 0.1 and targets.max() <= 1.0


def test_pas_falls_back_to_uniform_targets_on_a_single_point_front():
    cost = torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64)
    loss = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    targets = [mobo.draw_target(cost, loss, (0.2, 1.0), g) for _ in range(200)]
    assert min(targets) < 0.3 and max(targets) > 0.9


@pytest.mark.slow
def test_bisection_meets_epsilon_and_records_steps(resnet):
    X, loss, cost, bounds, cost_of = _search_inputs(resnet, 30)
    from training.gp_search import propose  # BoTorch: imported by the tests that search, not at collection

    props, timings = propose(
        X,
        loss,
        cost,
        2,
        bounds=bounds,
        cost_of=cost_of,
        exact_cost=CostPolynomial.from_model(resnet),
        lambda_sampling="pas",
        epsilon=0.02,
        generator=torch.Generator().manual_seed(3),
    )
    for p in props:
        assert abs(p.cost - p.target) <= 0.02
        assert 1 <= p.steps <= mobo.MAX_BISECTION_STEPS and 0 < p.lam < 1
        assert p.cost == pytest.approx(cost_of(p.alpha))
    assert any(p.steps > 1 for p in props)
    assert timings.fit_s > 0 and timings.acquisition_s > 0


@pytest.mark.slow
@pytest.mark.parametrize("cost_model", ["exact", "gp"])
def test_both_cost_models_return_in_box_configs(resnet, cost_model):
    X, loss, cost, bounds, cost_of = _search_inputs(resnet, 20)
    exact = CostPolynomial.from_model(resnet) if cost_model == "exact" else None
    g = torch.Generator().manual_seed(0)
    state = torch.get_rng_state()
    from training.gp_search import propose

    props, _ = propose(
        X,
        loss,
        cost,
        2,
        bounds=bounds,
        cost_of=cost_of,
        exact_cost=exact,
        lambda_sampling="uniform",
        epsilon=0.02,
        generator=g,
    )
    assert torch.equal(torch.get_rng_state(), state), "BO leaves the global RNG alone"
    for p in props:
        resnet.space.validate(p.alpha)
        assert p.steps == 1 and p.target is None
    again, _ = propose(
        X,
        loss,
        cost,
        2,
        bounds=bounds,
        cost_of=cost_of,
        exact_cost=exact,
        lambda_sampling="uniform",
        epsilon=0.02,
        generator=torch.Generator().manual_seed(0),
    )
    assert [p.alpha for p in props] == [p.alpha for p in again], "same generator state, same proposals"


def test_thin_front_spreads_over_cost_and_keeps_endpoints():
    cost = [0.3, 1.0, 0.5, 0.55, 0.6, 0.8, 0.7, 0.4]
    loss = [2.0, 1.5, 1.8, 1.75, 1.7, 1.6, 1.9, math.nan]  # 0.7 is dominated by 0.6; NaN is unmeasured
    idx = mobo.thin_front(cost, loss, keep=[0, 1], limit=4)
    assert idx[0] == 0 and idx[-1] == 1 and len(idx) == 4
    assert 6 not in idx and 7 not in idx
    assert [cost[i] for i in idx] == sorted(cost[i] for i in idx)


@pytest.fixture(scope="module")
def tiny():
    data = load_data("synthetic:128:4", image_size=16)
    x, y = next(iter(data.train_batches(32, 0, 0)))
    return data, x, y


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_pareco_strategy_grows_history_and_leaves_model_untouched(tiny):
    _, x, y = tiny
    m = build_model("resnet20", num_classes=4, input_size=16)
    s = PareCO(TrainConfig(algorithm="pareco", samples=2, history_size=8, probe_batch=16, warmup_configs=2))
    s.setup(m, 8)
    assert (s.interval, s.target_size) == (2, 5 + 2 * 4) == (bo_schedule(8, 2, 8)[0], s.warmup + 8)
    m.set_widths(m.space.uniform(0.5))
    before, alpha, ch = _state(m), list(m.alpha), list(m.ctx.ch)
    sizes = []
    for step in range(4):
        cfgs = s.step_configs(step, m, (x, y))
        sizes.append(len(s.history))
        assert len(cfgs) == 4 and cfgs[0] == [1.0] * 6 and cfgs[-1] == [0.316] * 6
        assert cfgs[1:3] == s.current
    assert sizes == [7, 7, 9, 9], "H grows by M at every BO step (every n = 2 steps)"
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "BO touched weights or BN buffers"
    assert m.alpha == alpha and m.ctx.ch == ch and m.training
    rec = s.record()
    assert rec["history_size"] == 9 and rec["bo_interval_steps"] == 2 and rec["samples_per_iter"] == 2
    assert 0 < rec["bo_time_share"] <= 1 and rec["bisection_steps_mean"] >= 1
    assert s.bisection_steps[:2] == [0, 0] and min(s.bisection_steps[2:]) >= 1, "2 random, then BO"
    assert s.progress().startswith("|H| 9 BO ")
    assert all(math.isfinite(v) for v in s.losses[:7]) and all(math.isnan(v) for v in s.losses[7:])


def _pareco_with_history(model, losses: list[float], remeasure: int) -> PareCO:
    """A set-up PareCO whose H is len(losses) random configs with the given (stale) losses."""
    s = PareCO(
        TrainConfig(
            algorithm="pareco", seed=3, samples=2, history_size=50, probe_batch=16, remeasure=remeasure
        )
    )
    s.setup(model, 100)
    s._set_history(model.space.sample(torch.Generator().manual_seed(0), len(losses)), list(losses))
    return s


def test_remeasure_subset_holds_new_configs_the_front_and_a_seeded_draw(resnet):
    g = torch.Generator().manual_seed(1)
    losses = (2.0 + torch.rand(40, generator=g, dtype=torch.float64)).tolist()
    losses[5] = losses[17] = math.nan
    s = _pareco_with_history(resnet, losses, remeasure=12)
    idx = s.remeasure_indices(step=8)
    known = [i for i in range(40) if not math.isnan(losses[i])]
    front = mobo.pareto_mask(
        torch.tensor([s.costs[i] for i in known]), torch.tensor([losses[i] for i in known])
    )
    must = {5, 17} | {known[i] for i in front.nonzero().squeeze(-1).tolist()}
    assert must <= set(idx) and len(idx) == max(12, len(must)) and idx == sorted(set(idx))
    assert s.remeasure_indices(step=8) == idx, "the draw depends only on (seed, step)"
    assert any(s.remeasure_indices(step=t) != idx for t in range(9, 14))
    assert _pareco_with_history(resnet, losses, remeasure=0).remeasure_indices(8) == list(range(40))
    assert _pareco_with_history(resnet, losses, remeasure=40).remeasure_indices(8) == list(range(40))


def test_stale_losses_move_by_the_mean_change_of_the_remeasured(resnet):
    s = _pareco_with_history(resnet, [2.0, 3.0, 4.0, math.nan, 5.0], remeasure=3)
    s._update_losses([0, 1, 3], torch.tensor([1.5, 2.7, 9.0]))
    # mean change over configs that had a loss: (-0.5 - 0.3) / 2 = -0.4
    assert s.losses == pytest.approx([1.5, 2.7, 3.6, 9.0, 4.6])
    s._update_losses([0, 1, 2, 3, 4], torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0]))
    assert s.losses == [1.0] * 5


@pytest.mark.slow
def test_pareco_bo_step_remeasures_only_the_subset(tiny):
    _, x, y = tiny
    m = build_model("resnet20", num_classes=4, input_size=16)
    s = PareCO(
        TrainConfig(
            algorithm="pareco", samples=2, history_size=8, probe_batch=16, remeasure=6, warmup_configs=0
        )
    )
    s.setup(m, 8)
    for step in range(4):
        s.step_configs(step, m, (x, y))
    assert len(s.history) == 9 and s.remeasure_indices(4) != list(range(9))
    before = list(s.losses)
    idx = s.remeasure_indices(4)
    s.step_configs(4, m, (x, y))
    fresh = measure_losses(m, [s.history[i] for i in idx], (x[:16], y[:16])).double().tolist()
    assert [s.losses[i] for i in idx] == pytest.approx(fresh)
    shifts = {round(s.losses[i] - before[i], 9) for i in range(9) if i not in idx}
    assert len(shifts) == 1, "every stale loss moves by one common shift"


def test_measure_losses_matches_a_batch_statistics_forward(tiny):
    _, x, y = tiny
    m = build_model("resnet20", num_classes=4, input_size=16)
    cfgs = [m.space.uniform(1.0), m.space.uniform(0.5)]
    got = measure_losses(m, cfgs, (x, y))
    ref = []
    for a in cfgs:
        fresh = build_model("resnet20", num_classes=4, input_size=16)
        fresh.load_state_dict(m.state_dict())
        fresh.set_widths(a)
        ref.append(torch.nn.functional.cross_entropy(fresh.train()(x), y).item())
    assert got.tolist() == pytest.approx(ref, rel=1e-5)


def test_pareco_state_round_trip_reproduces_next_configs(tiny):
    _, x, y = tiny
    m = build_model("resnet20", num_classes=4, input_size=16)
    a = PareCO(TrainConfig(algorithm="pareco", samples=2, history_size=8, probe_batch=16))
    a.setup(m, 8)
    a.step_configs(0, m, (x, y))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = PareCO(TrainConfig(algorithm="pareco", samples=2, history_size=8, probe_batch=16))
    b.setup(m, 8)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.history == a.history and b.current == a.current
    assert b.step_configs(1, m, (x, y)) == a.step_configs(1, m, (x, y))
    assert b.step_configs(2, m, (x, y)) == a.step_configs(2, m, (x, y))
    assert b.history == a.history and b.bisection_steps == a.bisection_steps
    assert torch.equal(torch.tensor(b.lambdas).nan_to_num(-1), torch.tensor(a.lambdas).nan_to_num(-1))


@pytest.mark.slow
def test_twostage_trains_random_per_layer_widths_and_searches_after(tiny):
    data, x, y = tiny
    m = build_model("resnet20", num_classes=4, input_size=16)
    s = TwoStage(
        TrainConfig(
            algorithm="twostage", samples=2, history_size=4, probe_batch=16, candidates=5, warmup_configs=0
        )
    )
    s.setup(m, 4)
    cfgs = s.step_configs(0, m, (x, y))
    assert len(cfgs) == 4 and any(len(set(c)) > 1 for c in cfgs[1:3]), "per-dimension widths, not uniform"
    with pytest.raises(TrainingError, match="attach_data"):
        s.candidates(m)
    s.attach_data(data)
    before = _state(m)
    cands = s.candidates(m)
    assert len(s.history) == s.target_size == 5 + 2 * 2
    assert all(math.isfinite(v) for v in s.losses)
    assert 2 <= len(cands) <= 5 and cands[0] == [0.316] * 6 and cands[-1] == [1.0] * 6
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert s.record()["search_time_s"] > 0


@pytest.mark.parametrize(
    "field,value,flag",
    [
        ("lambda_sampling", "gaussian", "--lambda-sampling"),
        ("cost_model", "lut", "--cost-model"),
        ("epsilon", 0.0, "--epsilon"),
        ("samples", 0, "--samples-per-iter"),
        ("probe_batch", 0, "--probe-batch"),
        ("remeasure", -1, "--remeasure"),
    ],
)
def test_bad_bo_settings_name_the_flag(field, value, flag):
    with pytest.raises(TrainingError, match=flag):
        make_bo_strategy(TrainConfig(algorithm="pareco", **{field: value}))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["pareco", "twostage"])
def test_end_to_end_run_records_the_search(tmp_path, small_train_settings, algorithm):
    # 6 steps, |H| target 2: one BO iteration (PareCO at step 0, TwoStage after training) adding M = 2.
    cfg = TrainConfig(algorithm=algorithm, epochs=1, history_size=2, probe_batch=16, **small_train_settings)
    manifest = load_manifest(train(cfg, tmp_path, show_progress=False))
    training = manifest["training"]
    extra = training["extra"]
    assert training["algorithm"] == algorithm and training["history_size"] == extra["history_size"] == 5 + 2
    for key in ("samples_per_iter", "epsilon", "lambda_sampling", "cost_model", "bisection_steps_mean"):
        assert key in extra
    assert ("bo_time_share" in extra) == (algorithm == "pareco")
    assert ("search_time_s" in extra) == (algorithm == "twostage")
    m = build_model("resnet20", num_classes=4, input_size=16)
    pts = manifest["points"]
    assert pts and all(p["mflops"] * 1e6 == pytest.approx(m.macs(p["alpha"])) for p in pts)


@pytest.mark.slow
def test_pareco_resume_after_kill_is_bit_identical(tmp_path, cli_process, kill_mid_epoch, train_cli_args):
    # 3 steps per epoch, BO every 2 steps (at 0, 2, 4): the kill lands in epoch 2 before or during the
    # BO step 4, which the resumed run must redo from the checkpointed H, losses and generator.
    extra = ("--history-size", "6", "--probe-batch", "16", "--remeasure", "4")
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = cli_process(*train_cli_args(ref, 2, "pareco", extra))
    assert r.returncode == 0, r.stderr
    kill_mid_epoch(train_cli_args(killed, 2, "pareco", extra), killed, timeout=120)
    assert not (killed / "model.safetensors").exists()
    r = cli_process(*train_cli_args(killed, 2, "pareco", (*extra, "--resume")))
    assert r.returncode == 0, r.stderr
    a, b = load_file(ref / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = load_manifest(ref / "model.front.json"), load_manifest(killed / "model.front.json")
    assert ma["points"] == mb["points"]
    assert ma["training"]["history_size"] == mb["training"]["history_size"]


@pytest.mark.slow
def test_early_proposals_spread_over_the_cost_range():
    # Untrained, the smallest config has the lowest loss: BO from the first step piled its proposals
    # onto it (13 of the first 44 on digits, benchmarks/pareco_warmup.py); the first ones are random.
    data = load_data("digits")
    x, y = next(iter(data.train_batches(64, 0, 0)))
    torch.manual_seed(0)
    m = build_model("resnet20", num_classes=10, input_size=8)
    s = PareCO(
        TrainConfig(algorithm="pareco", samples=2, history_size=10_000, probe_batch=64, warmup_configs=8)
    )
    s.setup(m, 100)
    for step in range(5):
        s.step_configs(step, m, (x, y))
    costs = s.costs[5:]
    smallest = s._cost_of(m.space.smallest())
    assert len(costs) == 10 and s.bisection_steps[:8] == [0] * 8 and min(s.bisection_steps[8:]) >= 1
    assert sum(c <= smallest * 1.01 for c in costs[:8]) == 0, costs
    assert max(costs[:8]) - min(costs[:8]) >= 0.2 * (1 - smallest), costs
    rec = s.record()
    assert (
        rec["warmup_configs"] == 8 and math.isfinite(rec["lambda_mean"]) and rec["bisection_steps_mean"] >= 1
    )
