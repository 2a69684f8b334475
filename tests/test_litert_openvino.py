"""LiteRT and OpenVINO as export formats, ``pareco bench`` backends and runtime backends: each file
loaded back in its own runtime matches PyTorch, carries pareco's metadata, and is refused with the
extra to install when its packages are missing."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from export.exporter import DEFAULT_ATOL, export_points
from export.formats import FORMATS, MissingDependencyError, load_runner, require
from export.formats import litert as litert_format
from export.formats import openvino as openvino_format
from export.index import read_index
from pareco_runtime import SlimmableRuntime
from pareco_runtime.backends import available

SYNTHETIC = "synthetic:256:4"  # the tiny front's data (tests/test_int8.py)
# (format, the module its export imports, the reader of its metadata)
CASES = {
    "litert": ("litert_torch", litert_format.read_metadata),
    "openvino": ("openvino", openvino_format.read_metadata),
}


def _installed(fmt: str) -> None:
    try:
        require(fmt)
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


def _served(backend: str) -> None:
    _installed(backend)
    if backend not in available():
        pytest.skip(f"the installed pareco metadata has no '{backend}' entry point; pip install -e . again")


@pytest.fixture(scope="module")
def rt(tiny_front):
    return SlimmableRuntime.load(tiny_front)


@pytest.mark.parametrize("fmt", sorted(CASES))
def test_an_uninstalled_toolchain_names_its_extra(monkeypatch, fmt):
    module, _ = CASES[fmt]
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=rf"pip install 'pareco\[{fmt}\]'"):
        require(fmt)


@pytest.mark.slow  # 3 s: a LiteRT conversion
def test_a_litert_file_runs_one_batch(rt, tmp_path):
    _installed("litert")
    with pytest.raises(ValueError, match=r"a LiteRT file runs one batch size .* export it with --batch N$"):
        export_points(rt, [rt.points[0]], ["litert"], tmp_path, batch="dynamic:8")
    assert not list(tmp_path.glob("*.tflite"))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(CASES))
def test_export_matches_pytorch_and_carries_the_metadata(rt, tmp_path, fmt):
    _installed(fmt)
    point = rt.points[-1]
    batch = 3
    (res,) = export_points(rt, [point], [fmt], tmp_path, batch=batch)
    assert res.path == tmp_path / f"{point.id}{FORMATS[fmt].ext}" and res.max_abs_diff <= DEFAULT_ATOL
    runner = load_runner(fmt, res.path, threads=1)
    x = torch.randn(batch, *rt.input_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = rt.standalone(point)(x).numpy()
    assert abs(runner(x) - expected).max() <= DEFAULT_ATOL
    meta = CASES[fmt][1](res.path)
    assert meta["pareco.point"] == point.id and meta["pareco.weights_sha256"] == rt.front.weights_sha256
    assert json.loads(meta["pareco.labels"]) == rt.class_names
    assert json.loads(meta["pareco.preprocess"])["input_size"] == list(rt.input_size)
    (entry,) = read_index(tmp_path)
    assert (entry["format"], entry["point"], entry["labels"]) == (fmt, point.id, "labels.txt")
    if fmt == "openvino":  # the weights travel beside the graph and count in the file's bytes
        weights = res.path.with_suffix(".bin")
        assert res.bytes == res.path.stat().st_size + weights.stat().st_size
        assert runner(x[:1]).shape == (1, len(rt.class_names)), "an IR file takes any batch"
    else:
        assert entry["batch"] == batch


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(CASES))
def test_the_runtime_serves_every_point_like_the_torch_backend(front_copy, backend):
    _served(backend)
    ref = SlimmableRuntime.load(front_copy)
    served = SlimmableRuntime.load(front_copy, backend=backend, threads=1)
    x = torch.randn(1, *served.input_size, generator=torch.Generator().manual_seed(0))
    for p in served.points:
        served.switch(p)
        ref.switch(p)
        torch.testing.assert_close(served(x), ref(x), atol=DEFAULT_ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"expected torch\.float32"):
        served(x.double())


@pytest.mark.slow
@pytest.mark.parametrize("backend", sorted(CASES))
def test_bench_times_the_backend_and_records_its_runtime(front_copy, cli, backend):
    _served(backend)
    pid = SlimmableRuntime.load(front_copy).points[0].id
    r = cli("bench", str(front_copy), "--backend", backend, "--points", pid, "--threads", "1",
            "--runs", "3", "--warmup", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    text = r.stdout
    version = FORMATS[backend].serving.package  # type: ignore[union-attr]
    assert version in text and backend in text


@pytest.mark.slow
@pytest.mark.parametrize("fmt", sorted(CASES))
def test_int8_programs_are_scored_in_their_runtime(front_copy, cli, fmt):
    _installed(fmt)
    from export.int8 import top1
    from training.front_data import evaluation_set

    pid = SlimmableRuntime.load(front_copy).points[-1].id
    r = cli("export", str(front_copy), "--point", pid, f"--{fmt}", "--int8", "--calib", SYNTHETIC,
            "--calib-batches", "2", "--max-drop", "100")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rt = SlimmableRuntime.load(front_copy)
    (variant,) = rt.point(pid).variants
    assert (variant.precision, variant.backend) == ("int8", fmt)
    program = front_copy.parent / "export" / f"{pid}.int8{FORMATS[fmt].ext}"
    images = evaluation_set(SYNTHETIC, rt.front)
    from export.int8 import program_forward

    assert variant.top1 == top1(program_forward(load_runner(fmt, program)), images.batches())


class _TwoOutputs(torch.nn.Module):
    """A segmentation-like head and a classifier: a dict of two outputs of different shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        return {"seg": y, "cls": self.fc(y.mean((2, 3)))}


@pytest.mark.slow
@pytest.mark.parametrize("fmt,ext", [("litert", ".tflite"), ("openvino", ".xml"), ("executorch", ".pte")])
def test_every_output_of_a_dict_network_comes_back_in_order(tmp_path, fmt, ext):
    from export.exporter import export_point
    from pareco_runtime.outputs import flatten_outputs

    _installed(fmt)
    model = _TwoOutputs().eval()
    result = export_point(model, (3, 16, 16), fmt, tmp_path / f"p{ext}")
    x = torch.randn(1, 3, 16, 16)
    got = load_runner(fmt, result.path).outputs(x)
    with torch.no_grad():
        want = [t.numpy() for _, t in flatten_outputs(model(x))]
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(abs(g - w).max() <= DEFAULT_ATOL for g, w in zip(got, want))


# Compiled on the main thread, freed on another, then a signal with a Python handler for the main thread:
# OpenVINO's CPU plugin had left it an unmapped signal stack, and the process died of SIGSEGV.
_FREED_ELSEWHERE = """
import signal, sys, threading
from pathlib import Path
from export.formats import load_runner
runner = [load_runner("openvino", Path(sys.argv[1]))]
freeing = threading.Thread(target=runner.clear)
freeing.start()
freeing.join()
handled = []
signal.signal(signal.SIGUSR1, lambda *args: handled.append(args[0]))
signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
print(handled == [signal.SIGUSR1])
"""


@pytest.mark.slow
def test_a_program_freed_on_another_thread_leaves_signals_working(tmp_path, python_process):
    from export.exporter import export_point

    _installed("openvino")
    path = tmp_path / "p.xml"
    export_point(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)).eval(), (3, 8, 8), "openvino", path)
    done = python_process(_FREED_ELSEWHERE, str(path))
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr[-2000:]
