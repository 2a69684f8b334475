"""Latency-aware PareCO and TwoStage: ``--cost latency@FILE`` searches on a device's table, chooses the
front by (top-1, that latency), records the table beside the manifest and keeps it across a resume."""

from __future__ import annotations

import dataclasses

import pytest

from pareco_runtime import SlimmableRuntime
from pareco_runtime.budget import parse_budget
from pareco_runtime.latency_table import LatencyLUT, lut_path
from pareco_runtime.pareto import non_dominated
from training.config import TrainConfig, TrainingError
from training.loop import build_for_data, train
from training.pareco import PareCO
from training.report import run_summary
from training.search_cost import LatencyCost

from .latency_tables import synthetic_table


def _config(settings: dict, **over) -> TrainConfig:
    return TrainConfig(epochs=1, history_size=4, probe_batch=16, **{**settings, **over})


def _table_file(tmp_path, cfg: TrainConfig, name: str = "phone.lut.json", **changes) -> str:
    lut = synthetic_table(build_for_data(cfg, 4, (3, 16, 16)))
    path = tmp_path / name
    dataclasses.replace(lut, **changes).save(path)
    return str(path)


@pytest.mark.slow
def test_a_twostage_run_on_latency_gets_a_front_by_that_latency(tmp_path, small_train_settings):
    base = _config(small_train_settings, algorithm="twostage")
    table = _table_file(tmp_path, base)
    out = tmp_path / "run"
    manifest = train(dataclasses.replace(base, cost=f"latency@{table}"), out, show_progress=False)
    rt = SlimmableRuntime.load(manifest)
    assert rt.front.training.extra["cost"] == "latency@phone"
    lut = LatencyLUT.load(lut_path(manifest, "phone"))
    assert lut == LatencyLUT.load(table), "the searched table is kept beside the manifest"
    predicted = [p.latency_predicted_ms["phone"] for p in rt.points]
    assert predicted == pytest.approx([lut.predict_ms(p.channels) for p in rt.points])
    assert predicted == sorted(predicted), "ids run from the fastest point to the slowest"
    chosen_by = {p.id: (-(p.selection_top1 or 0.0), p.latency_predicted_ms["phone"]) for p in rt.points}
    assert len(non_dominated(list(chosen_by), chosen_by.__getitem__)) == len(rt.points)
    assert [p.name for p in rt.front.device_profiles] == ["phone"]
    assert "--allow-predicted" in run_summary(manifest, [], 0.0)["next"][1]
    budget = parse_budget(f"{predicted[-1] * 0.999:.6f}ms@phone")
    assert rt.select(budget, allow_predicted=True).id != rt.points[-1].id


def test_the_latency_table_travels_in_the_checkpoint(tmp_path, small_train_settings):
    # A resumed run must search on the table it started with, even where the file was rebuilt since.
    cfg = _config(small_train_settings, algorithm="pareco", samples=2)
    first = _table_file(tmp_path, cfg, "a.json")
    rebuilt = _table_file(tmp_path, cfg, "b.json", scale=2.6, offset_ms=0.5)
    model = build_for_data(cfg, 4, (3, 16, 16))
    started = PareCO(dataclasses.replace(cfg, cost=f"latency@{first}"))
    started.setup(model, 12)
    state = started.state_dict()
    resumed = PareCO(dataclasses.replace(cfg, cost=f"latency@{rebuilt}"))
    resumed.setup(model, 12)
    assert resumed.costs != started.costs
    resumed.load_state_dict(state)
    assert resumed.costs == started.costs
    lat = resumed.latency_cost()
    assert isinstance(lat, LatencyCost) and lat.lut == LatencyLUT.load(first)
    mac_state = PareCO(cfg)
    mac_state.setup(model, 12)
    assert mac_state.latency_cost() is None and mac_state.state_dict()["cost_table"] == ""


@pytest.mark.slow
def test_latency_proposals_spread_over_the_tables_range(tmp_path, small_train_settings):
    cfg = _config(small_train_settings, algorithm="pareco", samples=4, warmup_configs=0)
    model = build_for_data(cfg, 4, (3, 16, 16))
    s = PareCO(dataclasses.replace(cfg, cost=f"latency@{_table_file(tmp_path, cfg)}"))
    s.setup(model, 12)
    lat = s.latency_cost()
    assert lat is not None and s.costs == [lat.fraction(a) for a in s.history]
    s.losses = [2.0 - c for c in s.costs]  # the wider, the better: a front over the whole range
    proposals, _ = s._propose(4)
    got = [lat.fraction(p.alpha) for p in proposals]
    assert all(abs(p.cost - g) <= cfg.epsilon + 1e-9 for p, g in zip(proposals, got) if p.steps < 10)
    assert max(got) - min(got) > 0.2, f"proposals bunched at one latency: {got}"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"cost": "flops"}, "--cost must be macs or latency@FILE"),
        ({"cost": "latency@"}, "--cost must be macs or latency@FILE"),
        ({"cost": "latency@t.json", "algorithm": "slim"}, "--cost applies to --algorithm pareco or twostage"),
    ],
)
def test_bad_cost_settings_name_the_flag(small_train_settings, over, message):
    with pytest.raises(TrainingError, match=message):
        TrainConfig(**{**small_train_settings, **over}).validate()


def test_a_missing_or_foreign_table_is_refused_before_anything_is_written(tmp_path, small_train_settings):
    cfg = _config(small_train_settings, algorithm="twostage")
    out = tmp_path / "run"
    with pytest.raises(
        TrainingError,
        match=r"--cost latency@.*nope\.json: .*no such latency table.*pareco bench lut --arch resnet20",
    ):
        train(dataclasses.replace(cfg, cost=f"latency@{tmp_path / 'nope.json'}"), out, show_progress=False)
    assert not out.exists() or not any(out.iterdir())
    other = synthetic_table(build_for_data(dataclasses.replace(cfg, width_factor=2), 4, (3, 16, 16)))
    other.save(tmp_path / "wide.json")
    with pytest.raises(
        TrainingError,
        match=r"built for another network .*pareco bench lut --arch resnet20 --classes 4 --image-size 16 --backend",
    ):
        train(dataclasses.replace(cfg, cost=f"latency@{tmp_path / 'wide.json'}"), out, show_progress=False)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--arch", "resnet99", "--image-size", "16"), "resnet99"),
        (("--arch", "resnet20", "--image-size", "16", "--classes", "1"), "--classes 1: must be at least 2"),
        (("--arch", "resnet20", "--image-size", "16", "--width-factor", "0"), "--width-factor"),
        (("--arch", "resnet20"), "--image-size PX and --out FILE"),
    ],
)
def test_a_table_for_a_run_not_trained_yet_checks_its_network(cli, tmp_path, args, message):
    out = tmp_path / "t.json"
    extra = () if "--image-size" not in args else ("--out", str(out))
    r = cli("bench", "lut", *args, *extra)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_a_table_built_from_arch_fits_the_run_that_flag_trains(cli, tmp_path, small_train_settings):
    out = tmp_path / "r20.lut.json"
    r = cli(
        "bench", "--build-lut", "--arch", "resnet20", "--classes", "4", "--image-size", "16",
        "--backend", "torch", "--profile", "here", "--out", str(out),
        "--warmup", "2", "--runs", "5", "--lut-levels", "2", "--lut-validate", "3", "--lut-calibrate", "2",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"--cost latency@{out}" in r.stdout
    cfg = _config(small_train_settings, algorithm="twostage", cost=f"latency@{out}")
    strategy = PareCO(dataclasses.replace(cfg, algorithm="pareco"))
    strategy.setup(build_for_data(cfg, 4, (3, 16, 16)), 12)  # refused if the table were another network's
    assert strategy.latency_cost() is not None
