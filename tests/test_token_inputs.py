"""Networks of integer token ids: the input's dtype travels from make_slimmable through the manifest
(format 6, ``dataset.input_dtype``) to the runtime, export and bench; every way of getting it wrong is
one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from export import ExportError, export_point
from export.formats import Calibration
from pareco_runtime import SlimmableRuntime, make_slimmable, slice_model
from pareco_runtime.convert import ConversionError, rebuild
from pareco_runtime.inputs import DTYPES, InputSpec
from pareco_runtime.manifest import load_manifest
from pareco_runtime.manifest.rules import check_manifest_consistency, validate_schema
from pareco_runtime.untrusted import FormatError
from tests.user_models import tiny_token_net
from training import build_front

VOCAB, CONTEXT = 32, 12
FACTORY = "tests.user_models:tiny_token_net"
RECORD = {"algorithm": "slim", "epochs": 0, "seed": 0, "wall_time_s": 0.0}


def _converted() -> Any:
    torch.manual_seed(0)
    return make_slimmable(
        tiny_token_net(VOCAB, CONTEXT),
        torch.zeros(1, CONTEXT, dtype=torch.long),
        arch=FACTORY,
        model_kwargs={"vocab": VOCAB, "context": CONTEXT},
    )


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, CONTEXT), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def token_front(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-point front of the tiny token network, ranked by next-token loss, built in Python."""
    model = _converted()
    ids = _ids(16)

    def evaluate(m: Any) -> dict[str, float]:
        # Figures by width, so that each config is a point (an untrained network's loss ranks at random).
        return {"loss": 2.0 - float(m.alpha[0])}

    configs = [model.space.uniform(a) for a in (0.25, 0.5, 1.0)]
    out = tmp_path_factory.mktemp("tokens")
    built = build_front(
        out, model, configs, [(ids,)], evaluate, metric="loss", higher_is_better=False, training=RECORD
    )
    return built.manifest


def test_conversion_records_integer_inputs_and_rebuilds_them() -> None:
    model = _converted()
    assert model.arch_kwargs["convert"]["input_dtypes"] == ["int64"]
    assert model.input_specs == (InputSpec((CONTEXT,), torch.int64, VOCAB),)
    again = rebuild(model.arch, model.arch_kwargs, factory=tiny_token_net)
    assert again.input_specs == model.input_specs
    for a in (0.25, 0.6, 1.0):
        alpha = model.space.uniform(a)
        assert again.macs(alpha) == model.macs(alpha)
    # A float network records no dtypes, so its manifest keeps the form older versions rebuild.
    mlp = make_slimmable(
        nn.Sequential(nn.Conv1d(3, 16, 1), nn.ReLU(), nn.Conv1d(16, 4, 1)), torch.randn(1, 3, 8)
    )
    assert "input_dtypes" not in mlp.arch_kwargs["convert"]


def test_an_input_of_another_dtype_is_refused_at_conversion() -> None:
    with pytest.raises(
        ConversionError, match=r"example_input\[0\] has dtype torch.uint8; .*\.float\(\) or \.long\(\)"
    ):
        make_slimmable(tiny_token_net(), torch.zeros(1, CONTEXT, dtype=torch.uint8))


def test_the_front_is_format_6_and_the_runtime_serves_ids(token_front: Path) -> None:
    manifest = json.loads(token_front.read_text())
    assert manifest["format_version"] == 6
    assert manifest["dataset"]["input_size"] == [CONTEXT] and manifest["dataset"]["input_dtype"] == "int64"
    rt = SlimmableRuntime.load(token_front, model=tiny_token_net)
    assert rt.input_spec == InputSpec((CONTEXT,), torch.int64, VOCAB)
    ids = _ids(3, seed=1)
    for p in rt.points:
        rt.switch(p)
        with rt.model.config(p.alpha), torch.no_grad():
            expected = rt.model(ids)
        assert torch.equal(rt(ids), expected)
        assert torch.equal(slice_model(rt.model, p.alpha).eval()(ids), expected)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            _ids(2).float(),
            r"input has dtype torch.float32, expected torch.int64; convert with x\.to\(torch\.int64\)",
        ),
        (_ids(2).int(), "input has dtype torch.int32, expected torch.int64"),
        (_ids(2)[:, :5], r"input has shape \(2, 5\), expected \(N, 12\) int64; give windows of exactly"),
        (torch.full((1, CONTEXT), VOCAB), r"token id 32, outside the network's vocabulary \[0, 32\)"),
        (torch.full((1, CONTEXT), -1), r"token id -1, outside"),
    ],
)
def test_bad_ids_are_one_line_errors(token_front: Path, given: torch.Tensor, message: str) -> None:
    rt = SlimmableRuntime.load(token_front, model=tiny_token_net)
    with pytest.raises(ValueError, match=message):
        rt(given)


def _broken(manifest: dict[str, Any], edit: str) -> dict[str, Any]:
    broken = copy.deepcopy(manifest)
    dataset = broken["dataset"]
    if edit == "ids of two axes":
        dataset["input_size"] = [1, CONTEXT]
    elif edit == "float of one axis":
        del dataset["input_dtype"]
    elif edit == "older format":
        broken["format_version"] = 5
    return broken


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("ids of two axes", r"dataset.input_size \[1, 12\] with input_dtype int64: token ids .* are \[T\]"),
        ("float of one axis", r"dataset.input_size \[12\] with input_dtype float32: token ids"),
        ("older format", r"format_version 5 cannot hold dataset.input_dtype \(format 6\)"),
    ],
)
def test_manifest_rules_on_token_inputs(token_front: Path, edit: str, message: str) -> None:
    broken = _broken(json.loads(token_front.read_text()), edit)
    with pytest.raises(FormatError, match=message):
        validate_schema(broken, "m.json", "fix it")
        check_manifest_consistency(broken, "m.json")


def test_an_unknown_dtype_is_a_schema_error(token_front: Path) -> None:
    broken = json.loads(token_front.read_text())
    broken["dataset"]["input_dtype"] = "uint8"
    with pytest.raises(FormatError, match=r"dataset\.input_dtype"):
        validate_schema(broken, "m.json", "fix it")


def test_a_dtype_the_architecture_does_not_take_is_refused_at_load(token_front: Path, tmp_path: Path) -> None:
    folder = tmp_path / "front"
    folder.mkdir()
    for f in token_front.parent.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    manifest = load_manifest(folder / token_front.name)
    manifest["dataset"]["input_dtype"] = "int32"
    (folder / token_front.name).write_text(json.dumps(manifest))
    with pytest.raises(
        FormatError, match=r"dataset\.input_dtype is int32 but architecture .* takes int64 inputs"
    ):
        SlimmableRuntime.load(folder / token_front.name, model=tiny_token_net)


def test_int8_export_of_ids_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    converted = _converted()
    model = slice_model(converted, converted.space.uniform(1.0))
    with pytest.raises(
        ExportError, match="int8 export calibrates one input of images or features, not int64 token ids"
    ):
        export_point(
            model,
            InputSpec((CONTEXT,), torch.int64, VOCAB),
            "onnx",
            tmp_path / "p.onnx",
            int8=Calibration([torch.zeros(1, CONTEXT)], "test"),
        )
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple),
    dtype=st.sampled_from(sorted(DTYPES)),
    high=st.integers(1, 50),
    n=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_input_spec_batches_are_what_it_checks(
    shape: tuple[int, ...], dtype: str, high: int, n: int, seed: int
) -> None:
    spec = InputSpec(shape, DTYPES[dtype], None if dtype == "float32" else high)
    zeros = spec.batch(n)
    drawn = spec.batch(n, torch.Generator().manual_seed(seed))
    for x in (zeros, drawn):
        assert x.shape == (n, *shape) and x.dtype == DTYPES[dtype]
        spec.check(x, "hint")
    assert not zeros.any()
    if not spec.is_float:
        assert int(drawn.min()) >= 0 and int(drawn.max()) < high
        with pytest.raises(ValueError, match=f"token id {high}, outside"):
            spec.check(torch.full((n, *shape), high, dtype=spec.dtype), "hint")
    other = torch.int64 if spec.is_float else torch.float32
    with pytest.raises(ValueError, match="input has dtype"):
        spec.check(zeros.to(other), "hint")


@pytest.mark.slow
def test_a_token_front_exports_with_parity_and_benches(token_front: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "export"
    front = str(token_front)
    r = cli("export", front, "--model", FACTORY, "--all", "--onnx", "--executorch", "--out", str(out))
    assert r.returncode == 0, r.stderr
    records = json.loads((out / "export.json").read_text())
    assert len(records) == 6
    assert all(e["input_dtype"] == "int64" and e["input_size"] == [CONTEXT] for e in records)
    assert all(e["max_abs_diff"] <= 1e-4 for e in records)
    r = cli("bench", front, "--model", FACTORY, "--backend", "torch", "--backend", "onnxruntime",
            "--points", "p00", "--runs", "5", "--warmup", "1", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
