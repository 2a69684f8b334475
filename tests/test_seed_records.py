"""The seed study's report is computed from the run records alone: means, paired differences, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.seed_records import RECORD_FORMAT, load_records, report

MATCHED = [1.0, 2.0, 3.0, 4.0]


def _record(folder: Path, method: str, seed: int, top1: list[float]) -> None:
    """A record whose front has one point at each matched MAC count with the given test top-1."""
    d = {
        "format": RECORD_FORMAT,
        "method": method,
        "arch": "resnet20",
        "width_factor": 0.5,
        "epochs": 8,
        "seed": seed,
        "command": "python -m benchmarks.reproduce_cifar ...",
        "commit": "abc",
        "host": "x86_64 test",
        "wall_time_s": 100.0,
        "median_epoch_s": 10.0,
        "full_mflops": 4.0,
        "matched_mflops": MATCHED,
        "chance": 10.0,
        "points": [
            {"id": f"p{i}", "mflops": m, "selection_top1": t - 0.5, "top1": t}
            for i, (m, t) in enumerate(zip(MATCHED, top1))
        ],
    }
    (folder / f"{method}-s{seed}.json").write_text(json.dumps(d))


def test_report_gives_mean_sd_and_paired_differences_with_their_sign(tmp_path):
    _record(tmp_path, "slim", 0, [50, 60, 70, 80])
    _record(tmp_path, "slim", 1, [52, 62, 72, 82])
    _record(tmp_path, "pareco", 0, [51, 59, 70.5, 81])
    _record(tmp_path, "pareco", 1, [53, 63, 71, 83])
    text = report(load_records(tmp_path), plot_dir=tmp_path)
    assert "| slim | 2 | 51.00 ± 1.41 | 61.00 ± 1.41 | 71.00 ± 1.41 | 81.00 ± 1.41 |" in text
    # seed 0: +1, -1, +0.5, +1; seed 1: +1, +1, -1, +1
    assert "| 0 | +1.00 | -1.00 | +0.50 | +1.00 |" in text
    assert "| 1 | +1.00 | +1.00 | -1.00 | +1.00 |" in text
    assert "| PareCO ahead | 2/2 ahead | 1/2 ahead | 1/2 ahead | 2/2 ahead | |" in text
    assert (tmp_path / "seeds_resnet20_w0.5_e8.png").stat().st_size > 10_000


def test_a_seed_without_its_pair_is_reported_alone(tmp_path):
    _record(tmp_path, "slim", 0, [50, 60, 70, 80])
    text = report(load_records(tmp_path), plot_dir=None)
    assert "51.00" not in text and "50.00 (n=1)" in text
    assert "No seed has both a PareCO and a Slim run yet" in text


def test_a_record_of_a_newer_format_is_refused_by_name(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"format": RECORD_FORMAT + 1}))
    with pytest.raises(SystemExit, match=r"x\.json: record format 2 unknown"):
        load_records(tmp_path)


def test_a_finished_run_writes_a_record_the_report_reads(tiny_front, tmp_path, monkeypatch):
    import benchmarks.seed_records as sr

    monkeypatch.setattr(sr, "RESULTS", tmp_path)
    path = sr.write_record(tiny_front.parent, "slim", 1, "python -m benchmarks.reproduce_cifar --seed 0")
    assert path.parent == tmp_path and path.name == "resnet20-w1-e1-slim-s0.json"
    (record,) = load_records(tmp_path)
    front = json.loads(tiny_front.read_text())
    assert [p[0] for p in record.points] == [p["mflops"] for p in front["points"]]
    assert [p[2] for p in record.points] == [p["top1"] for p in front["points"]]
    assert record.matched_mflops[-1] == record.full_mflops
