"""Bench: per-backend latency into the manifest, device profiles, energy sources, and the latency look-up table."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from bench.device import default_profile_name, device_profile, sanitise_profile_name, write_profile
from bench.energy import EnergyMeter, energy_note
from bench.errors import BenchError
from bench.lut import build_lut, discover_units, fit_calibration
from bench.timing import TimingSettings
from pareco_runtime import SlimmableRuntime, build_model
from pareco_runtime.budget import ProfileError
from pareco_runtime.latency_table import LatencyLUT, LatencyTableError, UnitTable, lut_path
from pareco_runtime.manifest import load_manifest


def _ids(manifest) -> list[str]:
    return [p["id"] for p in json.loads(manifest.read_text())["points"]]


@pytest.mark.slow
def test_bench_torch_and_onnxruntime_updates_the_manifest(front_copy, cli):
    manifest = front_copy
    ids = _ids(manifest)
    chosen = [ids[0], ids[-1]]
    code, out, err = cli(
        "bench",
        str(manifest),
        "--backend",
        "torch",
        "--backend",
        "onnxruntime",
        "--warmup",
        "2",
        "--runs",
        "5",
        "--points",
        ",".join(chosen),
        "--update",
    )
    assert code == 0, err
    for text in ("median ms", "p90 ms", "IQR ms", "x torch", "onnxruntime", "torch", *chosen):
        assert text in out
    assert "energy: not measured and not recorded" in out  # no RAPL/NVML here: nothing claimed
    data = load_manifest(manifest)
    profiles = {p["name"]: p for p in data["device_profiles"]}
    names = [default_profile_name(b, 1, 1) for b in ("torch", "onnxruntime")]
    assert set(names) <= set(profiles)
    for name in names:
        prof = profiles[name]
        assert prof["threads"] == 1 and prof["batch"] == 1 and prof["energy_source"] is None
        assert prof["host"] and prof["date"].endswith("Z") and prof["versions"]["torch"]
    assert "onnxruntime" in profiles[names[1]]["runtime"]
    by_id = {p["id"]: p for p in data["points"]}
    for pid in chosen:
        assert set(names) <= set(by_id[pid]["latency_ms"])
        assert "energy_mj" not in by_id[pid] or not by_id[pid]["energy_mj"]
    rt = SlimmableRuntime.load(manifest)
    slowest = max(by_id[pid]["latency_ms"][names[1]] for pid in chosen)
    assert rt.select(f"{slowest * 1.01}ms@{names[1]}").id in chosen
    code, out, err = cli("select", str(manifest), "--budget", f"{slowest * 1.01}ms@{names[1]}", "--json")
    assert code == 0, err
    assert json.loads(out)["point"]["id"] in chosen


def test_bench_json_report_and_profile_name(tiny_front, cli):
    code, out, err = cli(
        "bench",
        str(tiny_front),
        "--warmup",
        "1",
        "--runs",
        "3",
        "--points",
        _ids(tiny_front)[0],
        "--profile",
        "my phone!",
        "--threads",
        "1",
        "--json",
    )
    assert code == 0, err
    rep = json.loads(out)
    assert rep["profiles"]["torch"]["name"] == "my-phone"
    (m,) = rep["measurements"]
    assert m["backend"] == "torch" and m["ratio_to_torch"] == 1.0 and m["runs"] == 3
    assert 0 < m["median_ms"] <= m["p90_ms"] and m["iqr_ms"] >= 0 and m["energy_mj"] is None
    assert rep["updated_profiles"] == [] and "not measured" in rep["energy"]
    allocator = rep["profiles"]["torch"]["versions"].get("allocator")
    assert (allocator is not None) == any("glibc malloc" in n for n in rep["notes"])


@pytest.mark.parametrize(
    "args,message",
    [
        (["--backend", "tpu"], "unknown backend 'tpu'"),
        (["--points", "nope"], "no point 'nope' in this front"),
        (["--backend", "torch", "--backend", "onnxruntime", "--profile", "x"], "several --backend"),
        (["--runs", "0"], "--runs 0: must be at least 1"),
    ],
)
def test_bench_errors(tiny_front, cli, args, message):
    code, _, err = cli("bench", str(tiny_front), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_bench_cuda_without_a_gpu(tiny_front, cli):
    code, _, err = cli("bench", str(tiny_front), "--backend", "cuda")
    assert code == 2 and "no CUDA device here" in err


def test_untrained_front_loads_and_benches(tmp_path):
    from benchmarks.untrained_front import write_untrained_front

    manifest = write_untrained_front("resnet20", [1.0, 0.5], tmp_path, input_size=16, num_classes=4)
    rt = SlimmableRuntime.load(manifest)
    assert [p.alpha[0] for p in rt.points] == [0.5, 1.0] and all(p.top1 is None for p in rt.points)
    assert rt.points[1].mflops == pytest.approx(
        build_model("resnet20", input_size=16, num_classes=4).macs([1.0] * 6) / 1e6
    )
    assert rt(torch.randn(2, 3, 16, 16)).shape == (2, 4)


def test_energy_sources(tmp_path):
    assert EnergyMeter.for_backend("torch", rapl=tmp_path / "absent") is None
    assert "not measured" in energy_note({"torch": None})
    (tmp_path / "energy_uj").write_text("1000000\n")
    (tmp_path / "max_energy_range_uj").write_text("2000000\n")
    meter = EnergyMeter.for_backend("torch", rapl=tmp_path)
    assert meter is not None and meter.source == "rapl" and meter.read() == 1000.0 and meter.wrap_mj == 2000.0
    assert meter.per_call_mj(lambda: None, 1.0) == 0.0  # a counter that does not move: no energy
    assert "RAPL" in energy_note({"torch": meter})
    assert device_profile("torch", 2, 4, energy_source="rapl").energy_source == "rapl"


def test_profile_names_and_write_profile(front_copy):
    assert sanitise_profile_name("pixel 7 / big core") == "pixel-7-big-core"
    with pytest.raises(BenchError):
        sanitise_profile_name("///")
    manifest = front_copy
    ids = _ids(manifest)
    old = device_profile("torch", 1, 1, "dev")
    # Two points suffice (the tiny front has 2 on some CPUs): the first measured, the last predicted.
    first, last = ids[0], ids[-1]
    write_profile(manifest, old, {first: 2.0}, predicted_ms=dict.fromkeys(ids, 9.0))
    write_profile(manifest, device_profile("torch", 4, 1, "dev"), {first: 1.5})
    data = load_manifest(manifest)
    assert [(p["name"], p["threads"]) for p in data["device_profiles"]] == [
        ("dev", 4)
    ]  # replaced, not doubled
    pts = {p["id"]: p for p in data["points"]}
    assert pts[first]["latency_ms"]["dev"] == 1.5
    assert "dev" not in pts[first].get("latency_predicted_ms", {})  # measured points get no prediction
    assert pts[last]["latency_predicted_ms"]["dev"] == 9.0 and "dev" not in pts[last]["latency_ms"]


def test_unit_table_is_exact_for_multilinear_costs():
    # A block's cost a + b*c0 + c*c1 + d*c0*c1 is reproduced exactly between (and beyond) grid points.
    def cost(c0: float, c1: float) -> float:
        return 0.3 + 0.01 * c0 + 0.02 * c1 + 0.001 * c0 * c1

    levels = [[5, 10, 16], [10, 20, 32]]
    table = UnitTable("b", [0, 2], levels, [cost(a, b) for a, b in itertools.product(*levels)])
    for c0, c1 in [(5, 10), (7, 13), (16, 32), (11, 31), (3, 40)]:
        assert table.raw_ms([c0, 99, c1]) == pytest.approx(cost(c0, c1))


def test_fit_calibration_recovers_offset_and_scale():
    raw = [1.0, 2.0, 3.0, 5.0]
    offset, scale = fit_calibration(raw, [0.2 + 1.3 * r for r in raw])
    assert offset == pytest.approx(0.2) and scale == pytest.approx(1.3)
    assert fit_calibration([2.0], [3.0]) == (0.0, pytest.approx(1.5))  # one config: a scale alone
    # blocks timed as separate programs overcount a per-call cost: a negative offset that keeps
    # the smallest prediction positive is kept, one that would not is dropped for a scale alone
    offset, scale = fit_calibration(raw, [-0.5 + 1.0 * r for r in raw])
    assert offset == pytest.approx(-0.5) and scale == pytest.approx(1.0)
    offset, _ = fit_calibration(raw, [-1.5 + 1.0 * r for r in raw])
    assert offset == 0.0


@pytest.mark.slow
def test_lut_builds_predicts_and_round_trips(tmp_path):
    model = build_model("resnet20", num_classes=4, input_size=16)
    assert [u.name for u in discover_units(model)][:3] == ["conv1", "bn1", "layer1.0"]
    lut = build_lut(
        model, profile="tiny", timing=TimingSettings(warmup=1, runs=3), levels=2, calibrate=3, validate=20
    )
    rep = lut.report
    assert rep["validation"]["configs"] == 20 and rep["calibration"]["configs"] == 3
    for key in ("median_abs_rel_error", "max_abs_rel_error", "within_10pct"):
        assert math.isfinite(rep["validation"][key]) and math.isfinite(rep["validation"]["raw"][key])
    assert lut.scale > 0 and lut.offset_ms + lut.scale * min(r["raw_ms"] for r in rep["rows"]) > 0
    assert len(rep["rows"]) == 23 and all(r["measured_ms"] > 0 for r in rep["rows"])
    # every block was timed (a block that never ran its own forward would be a row of zeros)
    assert all(min(u.times_ms) > 0 for u in lut.units), [u.name for u in lut.units if min(u.times_ms) <= 0]
    configs = [
        *model.space.sample(torch.Generator().manual_seed(5), 10),
        model.space.uniform(model.space.low),
    ]
    preds = [lut.predict_alpha(a) for a in configs]
    assert all(math.isfinite(p) and p > 0 for p in preds)
    # Loose: within 5x of a crude measurement-free bound (the prediction tracks cost, not noise).
    assert max(preds) < 5 * lut.predict_alpha(model.space.uniform(1.0))
    path = lut_path(tmp_path / "model.front.json", "tiny")
    assert path.name == "model.lut.tiny.json"
    lut.save(path)
    again = LatencyLUT.load(path)
    assert np.allclose([again.predict_alpha(a) for a in configs], preds)
    with pytest.raises(LatencyTableError, match="width dimensions"):
        lut.predict_ms([4, 4])


@pytest.mark.slow
def test_cli_build_lut_writes_predictions_then_bench_keeps_them_apart(front_copy, cli):
    manifest = front_copy
    ids = _ids(manifest)
    code, out, err = cli(
        "bench",
        "lut",
        str(manifest),
        "--lut-levels",
        "2",
        "--lut-validate",
        "20",
        "--lut-calibrate",
        "3",
        "--warmup",
        "1",
        "--runs",
        "3",
        "--update",
        "--profile",
        "dev",
        "--json",
    )
    assert code == 0, err
    rep = json.loads(out)
    assert rep["lut"].endswith("model.lut.dev.json") and (manifest.parent / "model.lut.dev.json").is_file()
    for key in ("median_abs_rel_error", "max_abs_rel_error", "within_10pct", "raw"):
        assert key in rep["validation"]
    assert {"offset_ms", "scale", "configs"} <= set(rep["calibration"])
    data = load_manifest(manifest)
    assert all(p["latency_predicted_ms"]["dev"] > 0 for p in data["points"])
    rt = SlimmableRuntime.load(manifest)
    top = max(p.latency_predicted_ms["dev"] for p in rt.points)
    with pytest.raises(ProfileError, match="allow_predicted"):
        rt.select(f"{top}ms@dev")
    assert rt.select(f"{top * 1.01}ms@dev", allow_predicted=True).id in ids
    # Measuring one point with the same profile keeps the table's predictions for the others.
    code, out, err = cli(
        "bench",
        str(manifest),
        "--points",
        ids[0],
        "--warmup",
        "1",
        "--runs",
        "3",
        "--profile",
        "dev",
        "--update",
    )
    assert code == 0, err
    pts = {p["id"]: p for p in load_manifest(manifest)["points"]}
    assert "dev" in pts[ids[0]]["latency_ms"]
    assert all(
        "dev" in pts[pid]["latency_predicted_ms"] and "dev" not in pts[pid].get("latency_ms", {})
        for pid in ids[1:]
    )


@pytest.mark.parametrize(
    "content",
    ["[1, 2]", '"a string"', '{"lut_format": 1, "units": [1]}', '{"lut_format": 1, "units": "x"}', "{}"],
)
def test_a_latency_table_of_the_wrong_shape_is_one_error(tmp_path, content: str) -> None:
    from pareco_runtime.latency_table import LatencyLUT

    path = tmp_path / "model.lut.p.json"
    path.write_text(content)
    with pytest.raises(LatencyTableError, match="latency table") as err:
        LatencyLUT.load(path)
    assert "pareco bench lut" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_a_latency_table_for_a_compiled_runtime_times_every_block(backend: str) -> None:
    from torch import nn

    from pareco_runtime import make_slimmable

    plain = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )
    model = make_slimmable(plain, torch.zeros(1, 3, 16, 16))
    stages: list[str] = []
    lut = build_lut(
        model,
        profile="tiny",
        backend=backend,
        timing=TimingSettings(warmup=1, runs=3),
        levels=2,
        calibrate=2,
        validate=1,
        on_stage=stages.append,
    )
    assert lut.report["blocks_timed"] == "exported alone" and lut.backend == backend
    assert any(s.startswith("exporting ") and "distinct blocks" in s for s in stages)
    assert all(min(u.times_ms) > 0 for u in lut.units), [u.name for u in lut.units if min(u.times_ms) <= 0]
    assert len(lut.report["rows"]) == 3 and all(r["measured_ms"] > 0 for r in lut.report["rows"])
    predicted = [lut.predict_alpha(a) for a in model.space.sample(torch.Generator().manual_seed(0), 5)]
    assert all(math.isfinite(p) and p > 0 for p in predicted)


@pytest.mark.slow
def test_through_runtime_times_what_an_app_calls_and_records_its_own_profiles(front_copy, cli):
    pytest.importorskip("onnxruntime")
    ids = _ids(front_copy)[:2]
    r = cli("bench", str(front_copy), "--through-runtime", "--backend", "torch", "--backend", "onnxruntime",
            "--points", ",".join(ids), "--warmup", "2", "--runs", "5", "--update", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    names = {default_profile_name(b, 1, 1, through_runtime=True) for b in ("torch", "onnxruntime")}
    assert set(report["updated_profiles"]) == names and all("-rt-t1-b1" in n for n in names)
    assert {(m["point"], m["backend"]) for m in report["measurements"]} == set(
        itertools.product(ids, ("torch", "onnxruntime"))
    )
    manifest = load_manifest(front_copy)
    assert all("SlimmableRuntime" in p["runtime"] for p in manifest["device_profiles"] if p["name"] in names)
    for point in manifest["points"]:
        assert (set(point["latency_ms"]) >= names) == (point["id"] in ids)
    # The runtime found or exported each point's program beside the manifest, recorded as fp32.
    assert (front_copy.parent / "model.programs" / "export.json").is_file()
    r = cli("bench", str(front_copy), "--through-runtime", "--backend", "onnxruntime", "--int8")
    assert r.returncode == 2 and "--through-runtime" in r.stderr and r.stderr.count("\n") == 1, r.stderr
