"""Networks of several inputs (an image and a vector of side features): served by the runtime with a batch
of each, exported with every input and checked against PyTorch, benched; wrong calls are one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from export import ExportError, export_point
from export.formats import Calibration
from pareco_runtime import SlimmableRuntime, make_slimmable, slice_model
from pareco_runtime.inputs import InputSpec
from tests.user_models import sensor_fusion_net
from training import build_front

FACTORY = "tests.user_models:sensor_fusion_net"
RECORD = {"algorithm": "slim", "epochs": 0, "seed": 0, "wall_time_s": 0.0}


def _converted() -> Any:
    torch.manual_seed(0)
    return make_slimmable(sensor_fusion_net(), (torch.randn(1, 3, 8, 8), torch.randn(1, 4)), arch=FACTORY)


def _inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 4, generator=g)


@pytest.fixture(scope="module")
def two_input_front(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-point front of the two-input network, built in Python with the user's forward."""
    model = _converted()
    image, features = _inputs(8)
    batches = [(image, features, torch.zeros(8, dtype=torch.long))]

    def evaluate(m: Any) -> dict[str, float]:
        return {"top1": 50.0 * float(m.alpha[0])}  # figures by width: each config is a point

    built = build_front(
        tmp_path_factory.mktemp("two"),
        model,
        [model.space.uniform(a) for a in (0.25, 0.5, 1.0)],
        batches,
        evaluate,
        metric="top1",
        training=RECORD,
        forward=lambda m, b: m(b[0], b[1]),
    )
    return built.manifest


def test_the_runtime_takes_a_batch_of_each_input(two_input_front: Path) -> None:
    rt = SlimmableRuntime.load(two_input_front, model=sensor_fusion_net)
    assert rt.input_specs == (InputSpec((3, 8, 8)), InputSpec((4,)))
    image, features = _inputs(3, seed=1)
    for p in rt.points:
        rt.switch(p)
        with rt.model.config(p.alpha, rt.bn_stats(p)), torch.no_grad():
            expected = rt.model(image, features)
        assert torch.equal(rt(image, features), expected)
        assert torch.equal(
            slice_model(rt.model, p.alpha, bn_stats=rt.bn_stats(p)).eval()(image, features), expected
        )


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ("one", TypeError, r"takes 2 inputs \(\(N, 3, 8, 8\), \(N, 4\)\), got 1"),
        ("batches", ValueError, r"inputs have batches \[1, 3\]; give one batch size for every input"),
        ("shape", ValueError, r"input has shape \(3, 5\), expected \(N, 4\); give every input at the shape"),
        ("nan", ValueError, "input contains NaN or inf values"),
    ],
)
def test_wrong_calls_are_one_line(two_input_front: Path, call: str, error: type, message: str) -> None:
    rt = SlimmableRuntime.load(two_input_front, model=sensor_fusion_net)
    image, features = _inputs(3)
    args = {
        "one": (image,),
        "batches": (image, features[:1]),
        "shape": (image, torch.zeros(3, 5)),
        "nan": (image, torch.full((3, 4), float("nan"))),
    }[call]
    with pytest.raises(error, match=message):
        rt(*args)


def test_int8_export_of_several_inputs_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    converted = _converted()
    with pytest.raises(
        ExportError, match="int8 export calibrates one input of images or features, not 2 inputs"
    ):
        export_point(
            slice_model(converted, converted.space.uniform(1.0)),
            converted.input_specs,
            "onnx",
            tmp_path / "p.onnx",
            int8=Calibration([torch.zeros(1, 3, 8, 8)], "test"),
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_every_input_is_exported_checked_served_and_benched(
    two_input_front: Path, tmp_path: Path, cli
) -> None:
    out = tmp_path / "export"
    r = cli("export", str(two_input_front), "--model", FACTORY, "--point", "p00", "--onnx", "--executorch",
            "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    records = json.loads((out / "export.json").read_text())
    assert {e["format"] for e in records} == {"onnx", "executorch"}
    for e in records:
        assert e["input_sizes"] == [[3, 8, 8], [4]] and e["input_dtypes"] == ["float32", "float32"]
        assert e["max_abs_diff"] <= 1e-5
    # The compiled backend serves the point from its exported program, with both inputs.
    torch_rt = SlimmableRuntime.load(two_input_front, model=sensor_fusion_net)
    onnx_rt = SlimmableRuntime.load(two_input_front, model=sensor_fusion_net, backend="onnxruntime")
    point = torch_rt.point("p00")
    torch_rt.switch(point)
    onnx_rt.switch(point)
    image, features = _inputs(2, seed=3)
    assert torch.allclose(onnx_rt(image, features), torch_rt(image, features), atol=1e-5)
    r = cli("bench", str(two_input_front), "--model", FACTORY, "--backend", "torch", "--backend", "onnxruntime",
            "--points", "p00", "--runs", "5", "--warmup", "1", "--exports", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    # Through the runtime, as an app calls it: the second runtime is loaded with the same builder.
    r = cli("bench", str(two_input_front), "--model", FACTORY, "--backend", "onnxruntime", "--through-runtime",
            "--points", "p00", "--runs", "5", "--warmup", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr
