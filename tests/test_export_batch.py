"""ExecuTorch batch sizes: ``--batch N`` and ``--batch dynamic:MAX``, their records in export.json, the
range check where pareco runs a ``.pte``, and ``pareco bench`` timing at the recorded batch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.run import recorded_batch
from export.batch import BatchRange, as_batch_range, parse_batch
from export.exporter import DEFAULT_ATOL, export_point
from export.formats import ExportError, Runner, load_runner
from export.formats.base import each
from export.index import INDEX_NAME, find_export, merge_index, read_index
from export.metadata import Carried
from pareco_runtime import SlimmableRuntime

BAD_BATCH = "give a batch size N >= 1, or dynamic:MAX"


@pytest.fixture(scope="module")
def rt(tiny_front):
    return SlimmableRuntime.load(tiny_front)


@pytest.mark.parametrize(
    "text,low,high,record",
    [("1", 1, 1, 1), ("4", 4, 4, 4), ("dynamic:8", 1, 8, "dynamic:8"), (" Dynamic:2 ", 1, 2, "dynamic:2")],
)
def test_parse_batch_spellings(text, low, high, record):
    batches = parse_batch(text)
    assert (batches.low, batches.high, batches.record()) == (low, high, record)
    assert parse_batch(str(batches.record())) == batches  # the record reads back as the same range


@pytest.mark.parametrize(
    "value,message",
    [
        ("0", BAD_BATCH),
        ("-3", BAD_BATCH),
        ("dynamic:0", BAD_BATCH),
        ("abc", BAD_BATCH),
        ("dynamic", BAD_BATCH),
        ("dynamic:1", "a dynamic batch needs a bound of at least 2; use --batch 1"),
    ],
)
def test_cli_export_bad_batch_is_one_line(tiny_front, tmp_path, cli, value, message):
    code, _, err = cli(
        "export",
        str(tiny_front),
        "--point",
        "p00",
        "--executorch",
        "--batch",
        value,
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2 and err.startswith(f"error: --batch {value}: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_api_batch_ranges_that_cannot_be_exported():
    assert as_batch_range(3) == BatchRange.static(3)
    assert as_batch_range(BatchRange.bounded(8)) == BatchRange(1, 8)
    for bad in (BatchRange.unbounded(), BatchRange(3, 8), BatchRange.static(0)):
        with pytest.raises(ValueError, match="cannot be exported; give a static batch N >= 1 or dynamic:MAX"):
            as_batch_range(bad)


def test_runner_rejects_batches_outside_its_range():
    echo = Runner(
        "executorch", Path("p00.pte"), lambda xs: xs[0], each(torch.as_tensor), batches=BatchRange.bounded(8)
    )
    for b in (1, 3, 8):
        assert echo(torch.zeros(b, 2)).shape == (b, 2)
    with pytest.raises(
        ExportError, match=r"p00\.pte runs batches 1 to 8 .* got batch 9; .*--batch dynamic:9"
    ):
        echo(torch.zeros(9, 2))
    static = Runner(
        "executorch", Path("p00.pte"), lambda xs: xs[0], each(torch.as_tensor), batches=BatchRange.static(4)
    )
    assert static.bind(torch.zeros(4, 2))().shape == (4, 2)
    with pytest.raises(
        ExportError, match=r"exported for batch 4 but got batch 3; export it again with --batch 3"
    ):
        static.bind(torch.zeros(3, 2))


def _record(point: str, fmt: str, file: str, batch: object = None, sha: str = "s") -> dict[str, object]:
    # The tests write b"x" as each file; its hash is what an export would have recorded.
    entry: dict[str, object] = {
        "point": point,
        "format": fmt,
        "file": file,
        "weights_sha256": sha,
        "sha256": hashlib.sha256(b"x").hexdigest(),
    }
    if batch is not None:
        entry["batch"] = batch
    return entry


def test_index_reads_bounded_static_and_older_records(tmp_path):
    records = [
        _record("p0", "executorch", "p0.pte", "dynamic:8"),
        _record("p1", "executorch", "p1.pte", 4),
        _record("p2", "executorch", "p2.pte"),  # an older record without a batch
        _record("p2", "onnx", "p2.onnx"),  # likewise; ONNX files take any batch
        _record("p3", "executorch", "p3.pte", "dynamic:x"),  # unreadable: never reused
    ]
    merge_index(tmp_path, records)
    for r in records:
        (tmp_path / str(r["file"])).write_bytes(b"x")
    assert len(read_index(tmp_path)) == 5
    usable = {
        (point, fmt, b)
        for point, fmt in (("p0", "executorch"), ("p1", "executorch"), ("p2", "executorch"), ("p2", "onnx"))
        for b in (1, 3, 4, 8, 9)
        if find_export(tmp_path, point, fmt, "s", b) is not None
    }
    assert usable == {
        *(("p0", "executorch", b) for b in (1, 3, 4, 8)),
        ("p1", "executorch", 4),
        *(("p2", "onnx", b) for b in (1, 3, 4, 8, 9)),
    }
    assert find_export(tmp_path, "p3", "executorch", "s", 1) is None


@pytest.mark.parametrize(
    "batches,expected",
    [
        ({}, 1),
        ({"p00": "dynamic:8"}, 1),
        ({"p00": 4, "p01": 4}, 4),
        ({"p00": 4, "p01": "dynamic:8"}, 4),
        ({"p00": 4, "p01": 2}, "share no batch size (p00 batch 4, p01 batch 2); give --batch B"),
        ({"p00": 4, "p01": "dynamic:2"}, "share no batch size (p00 batch 4, p01 batches 1 to 2)"),
    ],
)
def test_bench_batch_defaults_to_the_recorded_one(rt, tmp_path, batches, expected):
    sha = rt.front.weights_sha256
    merge_index(tmp_path, [_record(p, "executorch", f"{p}.pte", b, sha) for p, b in batches.items()])
    for p in batches:
        (tmp_path / f"{p}.pte").write_bytes(b"x")
    points = [rt.point("p00"), rt.point("p01")]
    assert (
        recorded_batch(tmp_path, points, ["torch"], sha) == 1
    )  # no .pte timed: the recorded ones do not count
    if isinstance(expected, int):
        assert recorded_batch(tmp_path, points, ["executorch"], sha) == expected
    else:
        with pytest.raises(BenchError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            recorded_batch(tmp_path, points, ["executorch"], sha)


def test_cli_bench_with_exports_of_no_common_batch_is_one_line(rt, tiny_front, tmp_path, cli):
    sha = rt.front.weights_sha256
    merge_index(
        tmp_path,
        [_record("p00", "executorch", "p00.pte", 4, sha), _record("p01", "executorch", "p01.pte", 2, sha)],
    )
    for p in ("p00", "p01"):
        (tmp_path / f"{p}.pte").write_bytes(b"x")
    code, _, err = cli("bench", str(tiny_front), "--backend", "executorch", "--exports", str(tmp_path))
    assert code == 2 and "share no batch size" in err and "--batch B" in err
    assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "p00.pte").read_bytes() == b"x", "nothing exported over the user's files"


@pytest.mark.slow
@pytest.mark.parametrize(
    "batch,runs_at,rejects",
    [("1", (1,), 3), ("4", (4,), 3), ("dynamic:8", (1, 3, 8), 9)],
)
def test_pte_runs_its_batches_and_matches_torch(rt, tmp_path, batch, runs_at, rejects):
    model = rt.standalone("p01")
    # What `pareco export --batch` writes (test_cli_export_records_the_batch_and_bench_times_at_it), so
    # that each program is lowered once per test session (tests/export_memo.py).
    carried = Carried.of(rt, rt.point("p01"))
    res = export_point(
        model, rt.input_size, "executorch", tmp_path / "p01.pte", batch=batch, point="p01", carried=carried
    )
    assert res.to_entry()["batch"] == parse_batch(batch).record()
    assert res.max_abs_diff <= DEFAULT_ATOL
    runner = load_runner("executorch", res.path, threads=1)  # the range comes from the file itself
    assert runner.batches == parse_batch(batch)
    for b in runs_at:
        x = torch.randn(b, *rt.input_size)
        with torch.no_grad():
            want = model(x).numpy()
        got = runner(x)
        assert got.shape == want.shape and np.abs(got - want).max() <= DEFAULT_ATOL
    with pytest.raises(ExportError, match=f"but got batch {rejects}; export it again with --batch"):
        runner(torch.randn(rejects, *rt.input_size))


class _PinnedBatch(nn.Module):
    """Adds a tensor of batch 2: its graph only runs at batch 2, so its batch cannot be dynamic."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.register_buffer("shift", torch.arange(4.0).reshape(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3))) + self.shift


@pytest.mark.slow
def test_model_without_a_dynamic_batch_names_the_static_flag(tmp_path):
    model = _PinnedBatch().eval()
    with pytest.raises(
        ExportError,
        match=r"m\.pte: this model cannot be lowered to ExecuTorch with a dynamic batch .* --batch N",
    ):
        export_point(model, (3, 4, 4), "executorch", tmp_path / "m.pte", batch="dynamic:8")
    assert list(tmp_path.iterdir()) == []
    res = export_point(model, (3, 4, 4), "executorch", tmp_path / "m.pte", batch=2)  # what the message says
    assert res.batch == BatchRange.static(2) and res.max_abs_diff <= DEFAULT_ATOL


def _bench_json(cli, manifest: Path, *args: str) -> dict[str, object]:
    code, out, err = cli(
        "bench",
        str(manifest),
        "--backend",
        "executorch",
        "--points",
        "p01",
        "--warmup",
        "1",
        "--runs",
        "2",
        "--json",
        *args,
    )
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
def test_cli_export_records_the_batch_and_bench_times_at_it(tiny_front, tmp_path, cli):
    out = tmp_path / "exports"
    code, stdout, err = cli(
        "export", str(tiny_front), "--point", "p01", "--executorch", "--batch", "4", "--out", str(out)
    )
    assert code == 0, err
    assert "batch" in stdout
    (entry,) = read_index(out)
    assert entry["batch"] == 4
    report = _bench_json(cli, tiny_front, "--exports", str(out))  # no --batch: the recorded one
    assert report["batch"] == 4 and report["profiles"]["executorch"]["name"].endswith("-b4")
    assert read_index(out) == [entry], "the recorded file was reused, not exported again"

    code, _, err = cli(
        "export",
        str(tiny_front),
        "--point",
        "p01",
        "--executorch",
        "--batch",
        "dynamic:8",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, err
    (entry,) = read_index(out)
    assert entry["batch"] == "dynamic:8"
    for batch, expected in ((None, 1), ("3", 3), ("8", 8)):
        report = _bench_json(
            cli, tiny_front, "--exports", str(out), *(() if batch is None else ("--batch", batch))
        )
        assert report["batch"] == expected
    assert read_index(out) == [entry], "a batch inside the recorded range reuses the file"
    assert json.loads((out / INDEX_NAME).read_text()) == [entry]
