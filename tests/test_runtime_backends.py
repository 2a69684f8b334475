"""SlimmableRuntime on a compiled backend: each point served by its exported program, found through
the export index or exported on first use, with the torch backend's contract and outputs."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from export.exporter import DEFAULT_ATOL
from export.serving import cache_dir
from pareco_runtime import SlimmableRuntime
from pareco_runtime.backends import available


def _inputs(rt: SlimmableRuntime, n: int = 3) -> torch.Tensor:
    return torch.randn(n, *rt.input_size, generator=torch.Generator().manual_seed(0))


def _check_every_point(front_copy, backend: str) -> SlimmableRuntime:
    ref = SlimmableRuntime.load(front_copy)
    rt = SlimmableRuntime.load(front_copy, backend=backend, threads=1)
    x = _inputs(rt)
    for p in rt.points:
        assert rt.switch(p) is p and rt.active is p
        ref.switch(p)
        torch.testing.assert_close(rt(x), ref(x), atol=DEFAULT_ATOL, rtol=0)
    assert rt.backend == backend and sorted(rt._programs) == sorted(p.id for p in rt.points)
    return rt


@pytest.mark.slow
def test_onnxruntime_serves_every_point_like_the_torch_backend(front_copy):
    _check_every_point(front_copy, "onnxruntime")
    cache = cache_dir(front_copy)
    files = {f.name: f.stat().st_mtime_ns for f in cache.glob("*.onnx")}
    assert len(files) == len(SlimmableRuntime.load(front_copy).points)
    again = SlimmableRuntime.load(front_copy, backend="onnxruntime", preload=True)
    assert len(again._programs) == len(files), "preload loads every point's program"
    assert {f.name: f.stat().st_mtime_ns for f in cache.glob("*.onnx")} == files, "cached, not re-exported"


@pytest.mark.slow
def test_the_export_folder_beside_the_manifest_is_used_and_a_foreign_record_is_not(front_copy, cli):
    r = cli("export", str(front_copy), "--all", "--onnx")
    assert r.returncode == 0, r.stderr
    rt = SlimmableRuntime.load(front_copy, backend="onnxruntime", preload=True)
    assert not cache_dir(front_copy).exists(), "the points' files of `pareco export` were used"
    served = rt._programs[rt.points[0].id]
    assert served.path.parent == front_copy.parent / "export"
    # A record of the same id and weight file but other channels (another front's point) is not used.
    index = front_copy.parent / "export" / "export.json"
    records = json.loads(index.read_text())
    for e in records:
        e["channels"] = [c + 1 for c in e["channels"]]
    index.write_text(json.dumps(records))
    other = SlimmableRuntime.load(front_copy, backend="onnxruntime")
    assert other._programs[other.active.id].path.parent == cache_dir(front_copy)


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "batch"), [("onnxruntime", 2), ("litert", 1), ("openvino", 2)])
def test_inference_never_mixes_two_points_while_switching(front_copy, backend, batch):
    if backend not in available():
        pytest.skip(f"backend {backend} is not installed here")
    rt = SlimmableRuntime.load(front_copy, backend=backend, preload=True)
    x = _inputs(rt, batch)  # a LiteRT program served on first use runs batch 1
    expected = {}
    for p in rt.points:
        rt.switch(p)
        expected[p.id] = rt(x)
    bad: list[str] = []
    stop = threading.Event()

    def infer() -> None:
        while not stop.is_set():
            y = rt(x)
            if not any(torch.equal(y, e) for e in expected.values()):
                bad.append("an output that is no point's")

    workers = [threading.Thread(target=infer) for _ in range(2)]
    for w in workers:
        w.start()
    for k in range(200):
        rt.switch(rt.points[k % len(rt.points)])
    stop.set()
    for w in workers:
        w.join()
    assert not bad


@pytest.mark.slow
def test_input_is_checked_as_on_the_torch_backend(front_copy):
    rt = SlimmableRuntime.load(front_copy, backend="onnxruntime")
    with pytest.raises(ValueError, match=r"expected torch\.float32"):
        rt(_inputs(rt).double())
    with pytest.raises(ValueError, match="input has shape"):
        rt(torch.zeros(1, 3, 8, 8))


def test_an_unknown_backend_names_the_available_ones(front_copy):
    assert {"torch", "onnxruntime", "executorch"} <= set(available())
    with pytest.raises(ValueError, match=r"backend 'tpu' is not available here \(available: torch, "):
        SlimmableRuntime.load(front_copy, backend="tpu")


# Checked in a process of its own, as an app runs it: the threads=1 load replaces ExecuTorch's
# process-wide thread pool. The worker crashes once seen here were not ExecuTorch's: an OpenVINO program
# compiled on one thread and freed on another left the first an unmapped signal stack, and the next
# SIGCHLD killed the process (fixed in export/formats/signal_stack.py, tested in test_litert_openvino).
_SEVERAL_BATCHES = """
import sys
import torch
from export.exporter import DEFAULT_ATOL
from pareco_runtime import SlimmableRuntime
from tests.test_runtime_backends import _check_every_point, _inputs
from pathlib import Path

manifest = Path(sys.argv[1])
rt = _check_every_point(manifest, "executorch")
ref = SlimmableRuntime.load(manifest)
ref.switch(rt.active)
for n in (1, 8):
    x = _inputs(rt, n)
    torch.testing.assert_close(rt(x), ref(x), atol=DEFAULT_ATOL, rtol=0)
"""


@pytest.mark.slow
def test_executorch_serves_every_point_at_several_batches(front_copy, python_process):
    done = python_process(_SEVERAL_BATCHES, str(front_copy), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_widest_recorded_batch_range_is_used_an_unbounded_one_included(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import export.serving as serving
    from export.batch import BatchRange

    recorded = [
        (tmp_path / "none.onnx", None),
        (tmp_path / "any.onnx", BatchRange.unbounded()),
        (tmp_path / "eight.onnx", BatchRange.bounded(8)),
    ]
    monkeypatch.setattr(serving, "recorded_exports", lambda *args, **kwargs: recorded)
    rt = SimpleNamespace(front=SimpleNamespace(weights_sha256="0" * 64))
    point = SimpleNamespace(id="p0", channels=[8])
    assert serving.usable_export(rt, point, "onnx", [tmp_path]) == tmp_path / "any.onnx"
    recorded.pop(1)
    assert serving.usable_export(rt, point, "onnx", [tmp_path]) == tmp_path / "eight.onnx"
