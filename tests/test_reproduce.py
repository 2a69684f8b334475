"""The comparison report's arithmetic: fronts, matched-MAC interpolation, hypervolume."""

from __future__ import annotations

import pytest

from benchmarks.reproduce_cifar import comparison_table, hypervolume, run_names, top1_at, upper_front


def test_upper_front_keeps_non_dominated_points():
    pts = [(10, 50.0), (5, 40.0), (20, 49.0), (30, 60.0), (5, 30.0)]
    assert upper_front(pts) == [(5, 40.0), (10, 50.0), (30, 60.0)]
    # A loss front enters as minus the loss (benchmarks/lm_fronts.py): every value is negative.
    losses = [(100, -2.9), (150, -2.7), (200, -2.8), (250, -2.6)]
    assert upper_front(losses) == [(100, -2.9), (150, -2.7), (250, -2.6)]


def test_top1_at_interpolates_and_extends_upwards():
    front = [(10.0, 50.0), (30.0, 60.0)]
    assert top1_at(front, 20.0) == pytest.approx(55.0)
    assert top1_at(front, 40.0) == 60.0
    assert top1_at(front, 5.0) is None


def test_hypervolume_is_area_above_chance_and_below_reference():
    # One point at half the MACs with 60 % top-1, chance 10 %: (60 - 10) x (1.1 - 0.5).
    assert hypervolume([(50.0, 60.0)], 100.0, 10.0) == pytest.approx(50 * 0.6)
    bigger = hypervolume([(50.0, 60.0), (100.0, 70.0)], 100.0, 10.0)
    assert bigger > 50 * 0.6


def test_independent_is_four_runs():
    names = [n for n, _, _ in run_names(["independent", "slim"])]
    assert names == ["independent-1", "independent-0.75", "independent-0.5", "independent-0.316", "slim"]


def test_search_rows_describe_each_bo_method():
    from benchmarks.reproduce_cifar import search_rows

    fronts = {
        "slim": {"extra": {}},
        "pareco": {
            "extra": {
                "history_size": 105,
                "remeasure": 64,
                "bisection_steps_mean": 4.5,
                "bo_time_share": 0.125,
                "bo_measure_s": 100.0,
                "bo_fit_s": 20.0,
                "bo_acquisition_s": 30.0,
            }
        },
        "twostage": {"extra": {"history_size": 105, "bisection_steps_mean": 3.0, "search_time_s": 42.0}},
    }
    rows = search_rows(fronts)
    assert rows[-2] == "| twostage | 105 | once each | 3.0 | search after training 42 s |"
    assert rows[-1] == (
        "| pareco | 105 | 64 | 4.5 | 12.5% of training (re-measure 100 s, GP fit 20 s, acquisition 30 s) |"
    )
    assert search_rows({"slim": fronts["slim"]}) == []


def test_median_epoch_seconds_ignores_step_records_and_one_slow_epoch(tmp_path):
    import json

    from benchmarks.reproduce_cifar import median_epoch_seconds

    log = tmp_path / "train.log.jsonl"
    rows = [
        {"epoch": 1, "step": 20, "loss": 1.0},
        {"epoch": 1, "epoch_time_s": 200.0},
        {"epoch": 2, "epoch_time_s": 530.0},
        {"epoch": 3, "epoch_time_s": 210.0},
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert median_epoch_seconds(log) == 210.0
    assert median_epoch_seconds(tmp_path / "missing.jsonl") == 0.0


def test_comparison_table_has_a_separator_cell_per_column_and_a_dash_where_a_front_stops():
    text = comparison_table(
        ("front", "training s"), ["@ 1", "@ 2"], [("a", 3, [None, 2.5], 1.25, 60.4)], 2, 3
    )
    head, rule, row = text.splitlines()
    assert head.count("|") == rule.count("|") == row.count("|") == 7
    assert row == "| a | 3 | – | 2.50 | 1.250 | 60 |"


def test_vit_fronts_matches_latencies_on_the_slim_fronts_points():
    from benchmarks.vit_fronts import PROFILE, _latency_targets

    slim = [{"mflops": m, "latency_ms": {PROFILE: ms}} for m, ms in ((10.0, 1.0), (30.0, 2.0), (50.0, 4.0))]
    # Interpolated between the points around each MAC count; outside them, the nearest point's.
    assert _latency_targets(slim, [20.0, 40.0, 60.0, 5.0]) == pytest.approx([1.5, 3.0, 4.0, 1.0])
    assert _latency_targets([{"mflops": 10.0, "latency_ms": {}}], [20.0]) is None
