"""Numbers are finite where they are read: ``1e400`` (which Python's JSON parser reads as infinity)
in any field of a manifest, latency table or export record, and figures out of range, are one-line
errors naming the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pareco_runtime import Front
from pareco_runtime.latency_table import LatencyLUT, LatencyTableError
from pareco_runtime.manifest import save_manifest
from pareco_runtime.models import build_model
from pareco_runtime.untrusted import FormatError, nonfinite_field, parse_json

from .latency_tables import synthetic_table
from .manifests import make_manifest


def _with_infinity(document: dict, path: list[str | int]) -> str:
    """``document`` as JSON text with the number at ``path`` written as 1e400."""
    marker = 123456.789012345
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return json.dumps(document).replace(repr(marker), "1e400")


@pytest.mark.parametrize(
    "path",
    [
        ["points", 0, "mflops"],
        ["points", 1, "latency_ms", "cpu1"],
        ["points", 0, "loss"],
        ["dataset", "mean", 0],
        ["dataset", "std", 2],
    ],
)
def test_a_manifest_number_that_reads_as_infinity_is_refused_naming_the_field(
    tmp_path: Path, path: list[str | int]
) -> None:
    manifest = tmp_path / "m.front.json"
    save_manifest(manifest, make_manifest())
    document = json.loads(manifest.read_text())
    manifest.write_text(_with_infinity(document, path))
    field = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
    with pytest.raises(FormatError) as caught:
        Front.load(manifest, verify_weights=False)
    message = str(caught.value)
    assert message.startswith(f"{manifest}: {field} is not a finite number (a JSON number beyond")
    assert "\n" not in message


def test_every_number_of_any_json_is_checked_integers_beyond_a_float_included() -> None:
    assert nonfinite_field({"a": [1, 2.5, {"b": -3}], "c": "1e400", "d": True}) is None
    assert nonfinite_field({"a": [1, {"b": float("inf")}]}) == "a[1].b"
    assert nonfinite_field([10**400]) == "[0]"
    with pytest.raises(FormatError, match=r"^x.json: rows\[1\] is not a finite number"):
        parse_json('{"rows": [1, -1e999]}', "x.json", "table", "fix it")


def test_a_dataset_std_of_zero_is_refused(tmp_path: Path) -> None:
    manifest = tmp_path / "m.front.json"
    data = make_manifest()
    data["dataset"]["std"][1] = 0
    with pytest.raises(FormatError, match=r"dataset\.std holds 0, and inputs are divided by it"):
        save_manifest(manifest, data)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"offset_ms": "1e400"}, "offset_ms is not a finite number"),
        ({"scale": "1e400"}, "scale is not a finite number"),
        ({"scale": "0"}, "field scale 0 is not a finite number above 0"),
        ({"scale": "-2.5"}, "field scale -2.5 is not a finite number above 0"),
        ({"times": "-1.0"}, "time -1.0 ms is not a finite number >= 0"),
        ({"times": "1e400"}, "is not a finite number"),
    ],
)
def test_a_latency_table_figure_out_of_range_is_refused(tmp_path: Path, change, problem) -> None:
    path = tmp_path / "m.lut.dev.json"
    synthetic_table(build_model("resnet20", num_classes=10)).save(path)
    data = json.loads(path.read_text())
    marker = 123456.789012345
    key, text = next(iter(change.items()))
    if key == "times":
        data["units"][0]["times_ms"][0] = marker
    else:
        data[key] = marker
    path.write_text(json.dumps(data).replace(repr(marker), text))
    with pytest.raises(LatencyTableError) as caught:
        LatencyLUT.load(path)
    assert str(caught.value).startswith(f"{path}: not a readable latency table (")
    assert problem in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "where,bad",
    [
        ("state", float("nan")),
        ("state", float("inf")),
        ("bn-var", float("nan")),
        ("bn-mean", float("-inf")),
    ],
)
def test_a_weight_or_bn_statistic_that_is_not_finite_is_refused_at_load(tmp_path: Path, where, bad) -> None:
    from pareco_runtime.weights_file import load_weights, save_weights

    weight, mean, var = torch.ones(4, 3), torch.zeros(4), torch.ones(4)
    target = {"state": weight, "bn-mean": mean, "bn-var": var}[where]
    target[1] = bad
    path = tmp_path / "model.safetensors"
    save_weights(path, {"conv.weight": weight}, {"p0": {"bn": (mean, var)}}, {"arch": "x"})
    with pytest.raises(FormatError) as caught:
        load_weights(path)
    name = {"state": "conv.weight", "bn-mean": "bn/p0/bn.running_mean", "bn-var": "bn/p0/bn.running_var"}
    message = str(caught.value)
    assert message.startswith(f"{path}: tensor '{name[where]}' holds NaN or infinite values;")
    assert "\n" not in message


def test_finite_weights_whose_sum_overflows_still_load(tmp_path: Path) -> None:
    from pareco_runtime.weights_file import load_weights, save_weights

    big = torch.full((4,), 3e38)  # finite, but their float32 sum is infinite
    path = tmp_path / "model.safetensors"
    save_weights(path, {"w": big}, {}, {"arch": "x"})
    assert torch.equal(load_weights(path).state["w"], big)
