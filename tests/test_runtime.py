"""SlimmableRuntime: loading, selection, in-place switching, thread safety, input checks, CLI."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from pareco_runtime import SlimmableRuntime, parse_budget
from pareco_runtime.budget import BudgetUnmetError
from pareco_runtime.untrusted import FormatError


@pytest.fixture(scope="module")
def rt(tiny_front):
    return SlimmableRuntime.load(tiny_front)


def test_load_and_points(rt):
    assert len(rt.points) >= 2
    assert rt.active == max(rt.points, key=lambda p: p.mflops)
    assert rt.input_size == (3, 16, 16)


def test_select_is_pure_and_honours_budget(rt):
    before = rt.active
    cheap = min(rt.points, key=lambda p: p.mflops)
    limit = (cheap.mflops + max(p.mflops for p in rt.points)) / 2
    p = rt.select(f"{limit}MFLOPs")
    assert p.mflops <= limit
    assert all(q.selection_top1 <= p.selection_top1 for q in rt.points if q.mflops <= limit)
    assert rt.active == before
    assert rt.select(parse_budget(f"{limit}MFLOPs")) == p


def test_unmet_budget_names_cheapest(rt):
    cheap = min(rt.points, key=lambda p: p.mflops)
    with pytest.raises(BudgetUnmetError, match=cheap.id):
        rt.select("0.001MFLOPs")
    assert rt.select("0.001MFLOPs", fallback="cheapest") == cheap


def test_switch_matches_standalone_exactly(rt):
    x = torch.randn(4, 3, 16, 16)
    for p in rt.points:
        assert rt.switch(p) == p and rt.active == p
        y = rt(x)
        with torch.no_grad():
            ref = rt.standalone(p)(x)
        assert torch.allclose(y, ref, atol=1e-5, rtol=0)
        assert rt.active == p, "standalone() leaves the active point alone"


def test_switch_allocates_nothing(rt):
    ch = rt.model.ctx.ch
    params = [t.data_ptr() for t in rt.model.parameters()]
    stats = {p.id: [m.data_ptr() for m, _ in rt.bn_stats(p)] for p in rt.points}
    for p in rt.points:
        rt.switch(p)
        assert rt.model.ctx.ch is ch
        assert rt.model.ctx.bn_stats is rt.bn_stats(p)
    assert [t.data_ptr() for t in rt.model.parameters()] == params
    assert {p.id: [m.data_ptr() for m, _ in rt.bn_stats(p)] for p in rt.points} == stats


def test_battery_switch_is_monotone(rt):
    costs = [rt.switch(f"battery={level}%").mflops for level in (100, 70, 40, 10)]
    assert costs == sorted(costs, reverse=True)
    assert costs[-1] == min(p.mflops for p in rt.points)


@pytest.mark.slow
def test_concurrent_inference_never_mixes_configs(rt):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    expected = {}
    for p in rt.points:
        rt.switch(p)
        expected[p.id] = rt(x).clone()
    errors, outputs = [], []
    stop = threading.Event()

    def infer():
        try:
            while not stop.is_set():
                outputs.append(rt(x))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=infer) for _ in range(4)]
    for t in threads:
        t.start()
    gen = torch.Generator().manual_seed(1)
    switches = 0
    deadline = time.time() + 120
    # A switch waits for the forwards in flight (it takes the runtime's lock for writing), so each costs
    # about a forward: 10,000 switches beside eight inference threads took 38-120 s and hit the deadline
    # when the readers kept the lock; 1,000 beside four readers take 7 s and still interleave with
    # thousands of forwards.
    while (switches < 1_000 or len(outputs) < 50) and time.time() < deadline:
        rt.switch(rt.points[int(torch.randint(len(rt.points), (1,), generator=gen))])
        switches += 1
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert switches >= 1_000 and len(outputs) >= 50
    for y in outputs:
        diffs = sorted((y - e).abs().max().item() for e in expected.values())
        assert diffs[0] <= 1e-5 < diffs[1], diffs


@pytest.mark.parametrize(
    "x,msg",
    [
        (torch.randn(2, 3, 32, 32), r"shape \(2, 3, 32, 32\), expected \(N, 3, 16, 16\)"),
        (torch.randn(3, 16, 16), "expected \\(N, 3, 16, 16\\)"),
        (torch.randn(1, 3, 16, 16, dtype=torch.float64), "dtype torch.float64"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN or inf"),
    ],
)
def test_bad_inputs_rejected(rt, x, msg):
    with pytest.raises(ValueError, match=msg):
        rt(x)


def test_load_errors(front_copy, tmp_path):
    with pytest.raises(FormatError, match=r"missing|not found|no such|does not exist"):
        SlimmableRuntime.load(tmp_path / "nope.front.json")
    weights = front_copy.parent / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="sha256"):
        SlimmableRuntime.load(front_copy)


def test_unknown_architecture(front_copy):
    m = json.loads(front_copy.read_text())
    m["architecture"]["arch"] = "resnet99"
    front_copy.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="unknown architecture 'resnet99'"):
        SlimmableRuntime.load(front_copy)


def test_cli_select_and_show(tiny_front, tmp_path, cli):
    r = cli("select", str(tiny_front), "--budget", "1000MFLOPs", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["point"]["id"] and out["met"] is True and out["fallback"] is None
    assert out["budget"] == {"text": "≤ 1000 MFLOPs", "parts": [{"kind": "flops", "max_mflops": 1000.0}]}
    r = cli("select", str(tiny_front), "--budget", "0.0001MFLOPs")
    assert r.returncode == 2 and "cheapest point" in r.stderr
    assert r.stderr.rstrip().endswith("loosen the budget or pass --fallback cheapest")
    r = cli("select", str(tiny_front), "--budget", "0.0001MFLOPs", "--fallback", "cheapest", "--json")
    unmet = json.loads(r.stdout)
    assert unmet["met"] is False and unmet["fallback"] == "cheapest"
    assert unmet["point"]["mflops"] == min(p["mflops"] for p in json.loads(tiny_front.read_text())["points"])
    assert (
        "budget not met: no point satisfies it; this is the cheapest point (--fallback cheapest)"
        in cli("select", str(tiny_front), "--budget", "0.0001MFLOPs", "--fallback", "cheapest").stdout
    )
    r = cli("select", str(tiny_front), "--budget", "5 parsecs")
    assert r.returncode == 2 and "parsecs" in r.stderr
    r = cli("select", str(tiny_front), "--budget", "5ms")
    assert r.returncode == 2 and "pareco bench" in r.stderr
    r = cli("show", str(tiny_front))
    assert r.returncode == 0, r.stderr
    assert "top-1 % (val)" in r.stdout and "chosen-on %" in r.stdout
    assert "top-1: 51 val images; chosen-on: 20 training images held out of training" in r.stdout
    shown = json.loads(cli("show", str(tiny_front), "--json").stdout)
    assert shown["architecture"]["arch"] == "resnet20" and shown["width_space"]["names"]
    assert shown["dataset"]["class_names"] and shown["manifest"] == str(tiny_front)
    assert shown["dataset"]["splits"]["selection"]["images"] == 20
    assert all(p["selection_top1"] is not None for p in shown["points"])
    png = tmp_path / "front.png"
    r = cli("show", str(tiny_front), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_runtime_import_stays_light():
    """A device imports pareco_runtime with torch and safetensors only."""
    import subprocess
    import sys

    heavy = (
        "botorch gpytorch onnx onnxruntime matplotlib typer rich training export bench jsonschema executorch"
    )
    code = (
        f"import sys, pareco_runtime; heavy = set({heavy.split()!r}); "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
