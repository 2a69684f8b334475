"""``pareco bench import --from FILE --profile NAME``: latencies measured on a phone become a device profile that
latency budgets select with; every bad file is one line naming the file and the line, and writes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.imported import MAX_IMPORT_BYTES, read_latencies
from pareco_runtime.manifest import Front
from pareco_runtime.untrusted import FormatError

IDS = ["p00", "p01", "p02"]


def _read(tmp_path: Path, name: str, content: str | bytes) -> dict[str, float]:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return read_latencies(path, IDS, "model.front.json")


class TestFormats:
    def test_csv_with_a_header_blank_lines_and_spaces(self, tmp_path: Path) -> None:
        got = _read(tmp_path, "lat.csv", "point_id,ms\n\np00, 1.5\np02,3\n")
        assert got == {"p00": 1.5, "p02": 3.0}

    def test_csv_without_a_header_and_with_a_byte_order_mark(self, tmp_path: Path) -> None:
        assert _read(tmp_path, "lat.csv", "\ufeffp01,0.25\n".encode()) == {"p01": 0.25}

    def test_json_object(self, tmp_path: Path) -> None:
        assert _read(tmp_path, "lat.json", '{"p00": 1.5, "p01": 2}') == {"p00": 1.5, "p01": 2.0}

    def test_json_records_as_pareco_bench_json_writes_them(self, tmp_path: Path) -> None:
        records = [
            {"point": "p00", "backend": "executorch", "median_ms": 1.25, "p90_ms": 1.4},
            {"point_id": "p01", "ms": 2.5},
            {"id": "p02", "ms": 4},
        ]
        assert _read(tmp_path, "lat.json", json.dumps(records)) == {"p00": 1.25, "p01": 2.5, "p02": 4.0}


# (file name, content, words the one-line error must hold)
BAD = {
    "unknown point": (
        "lat.csv",
        "p00,1\np99,2\n",
        ["lat.csv: line 2: no point 'p99' in model.front.json", "p00, p01, p02"],
    ),
    "negative": ("lat.csv", "p00,-1.5\n", ["line 1: latency -1.5 ms is not above 0"]),
    "zero": ("lat.csv", "p00,0\n", ["line 1: latency 0.0 ms is not above 0"]),
    "nan": ("lat.csv", "p00,1\np01,nan\n", ["line 2: nan is not a finite number"]),
    "inf": ("lat.csv", "p00,inf\n", ["line 1: inf is not a finite number"]),
    "not a number": ("lat.csv", "p00,1\np01,fast\n", ["line 2: 'fast' is not a number of milliseconds"]),
    "duplicate": (
        "lat.csv",
        "p00,1\np01,2\np00,3\n",
        ["line 3: point 'p00' again (first at line 1)", "one figure"],
    ),
    "empty": ("lat.csv", "", ["lat.csv: no measurements in it"]),
    "header only": ("lat.csv", "point_id,ms\n", ["no measurements in it"]),
    "three cells": ("lat.csv", "p00,1,2\n", ["line 1: 3 cells, expected 2 (point_id,ms)"]),
    "not utf-8": ("lat.csv", b"p00,1\n\xff\xfe,2\n", ["not UTF-8 text at byte 6"]),
    "json nan": ("lat.json", '{"p00": NaN}', ["NaN is not a JSON value"]),
    "json inf": ("lat.json", '{"p00": 1e999}', ["p00 is not a finite number", "give one median per point"]),
    "json negative": ("lat.json", '[{"id": "p00", "ms": -2}]', ["record 1: latency -2 ms is not above 0"]),
    "json duplicate key": ("lat.json", '{"p00": 1, "p00": 2}', ["duplicate key 'p00'"]),
    "json duplicate record": (
        "lat.json",
        '[{"id": "p00", "ms": 1}, {"point": "p00", "ms": 2}]',
        ["record 2: point 'p00' again (first at record 1)"],
    ),
    "json string": ("lat.json", '{"p00": "1.5"}', ["key 'p00': '1.5' is not a number"]),
    "json bool": ("lat.json", '{"p00": true}', ["key 'p00': True is not a number"]),
    "json unknown point": ("lat.json", '{"p00": 1, "p7": 2}', ["key 'p7': no point 'p7'"]),
    "json empty": ("lat.json", "{}", ["no measurements in it"]),
    "json record without ms": (
        "lat.json",
        '[{"id": "p00", "p90_ms": 1}]',
        ["record 1: needs one of 'ms', 'median_ms', has none"],
    ),
    "json record with two ids": (
        "lat.json",
        '[{"id": "p00", "point": "p01", "ms": 1}]',
        ["has 'id' and 'point'"],
    ),
    "json scalar": ("lat.json", "3", ["a JSON int, not an object or a list of records"]),
    "json broken": ("lat.json", '{"p00": 1,', ["not valid JSON (line 1"]),
    "other suffix": ("lat.txt", "p00,1\n", ["'.txt' is neither .csv nor .json"]),
}


class TestBadFiles:
    @pytest.mark.parametrize("case", sorted(BAD))
    def test_one_line_naming_the_file_and_where(self, tmp_path: Path, case: str) -> None:
        name, content, words = BAD[case]
        with pytest.raises(FormatError) as info:
            _read(tmp_path, name, content)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{tmp_path / name}: ")
        for w in words:
            assert w in message, message

    def test_a_file_over_the_bound_is_refused_unread(self, tmp_path: Path) -> None:
        with pytest.raises(FormatError, match=f"larger than {MAX_IMPORT_BYTES} bytes"):
            _read(tmp_path, "lat.csv", "p00,1\n" * (MAX_IMPORT_BYTES // 6 + 1))

    def test_a_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        fifo = tmp_path / "lat.csv"
        os.mkfifo(fifo)
        with pytest.raises(FormatError, match="FIFO"):
            read_latencies(fifo, IDS)


def _csv(tmp_path: Path, rows: dict[str, float], name: str = "pixel7.csv") -> Path:
    path = tmp_path / name
    path.write_text("point_id,ms\n" + "".join(f"{pid},{ms}\n" for pid, ms in rows.items()))
    return path


class TestCommand:
    def test_an_imported_profile_is_what_a_latency_budget_selects_with(
        self, front_copy: Path, tmp_path: Path, cli
    ) -> None:
        points = Front.load(front_copy).points
        ms = {p.id: 2.0 * (i + 1) for i, p in enumerate(points)}
        r = cli(
            "bench", "import", str(front_copy), "--from", str(_csv(tmp_path, ms)), "--profile", "pixel7",
            "--runtime", "executorch 1.5.1 XNNPACK", "--threads", "4", "--host", "Pixel 7 (Tensor G2)",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "manifest updated: latency_ms[pixel7]; select with --budget <ms>ms@pixel7" in r.stdout
        chosen = cli("select", str(front_copy), "--budget", "5ms@pixel7", "--json")
        assert chosen.returncode == 0, chosen.stderr
        point = json.loads(chosen.stdout)["point"]
        fitting = [p for p in points if ms[p.id] <= 5.0]
        assert point["latency_ms"]["pixel7"] == ms[point["id"]] <= 5.0
        assert point["selection_top1"] == max(p.selection_top1 for p in fitting)
        profile = next(p for p in Front.load(front_copy).device_profiles if p.name == "pixel7")
        assert (profile.runtime, profile.threads, profile.batch, profile.host) == (
            "executorch 1.5.1 XNNPACK", 4, 1, "Pixel 7 (Tensor G2)",
        )  # fmt: skip
        assert profile.versions == {"imported_from": "pixel7.csv"}

    def test_missing_points_are_listed_and_an_earlier_figure_is_kept(
        self, front_copy: Path, tmp_path: Path, cli
    ) -> None:
        ids = [p.id for p in Front.load(front_copy).points]
        first = cli(
            "bench",
            "import",
            str(front_copy),
            "--from",
            str(_csv(tmp_path, {ids[0]: 1.0})),
            "--profile",
            "pixel7",
        )
        assert first.returncode == 0, first.stderr
        assert f"not in pixel7.csv: {', '.join(ids[1:])}; without a latency on pixel7" in first.stdout
        again = _csv(tmp_path, {ids[1]: 2.0}, "again.csv")
        r = cli("bench", "import", str(front_copy), "--from", str(again), "--profile", "pixel7", "--json")
        assert r.returncode == 0, r.stderr
        done = json.loads(r.stdout)
        assert done["missing"] == [i for i in ids if i != ids[1]]
        assert done["kept"] == {ids[0]: 1.0}
        latency = {p.id: p.latency_ms.get("pixel7") for p in Front.load(front_copy).points}
        assert latency == {i: {ids[0]: 1.0, ids[1]: 2.0}.get(i) for i in ids}

    def test_a_refused_file_leaves_the_manifest_byte_for_byte(
        self, front_copy: Path, tmp_path: Path, cli
    ) -> None:
        before = front_copy.read_bytes()
        bad = tmp_path / "lat.csv"
        bad.write_text("p00,1\np00,nan\n")
        # The spelling before `pareco bench import` still works, and says the new one.
        r = cli("bench", str(front_copy), "--import", str(bad), "--profile", "pixel7")
        lines = r.stderr.strip().splitlines()
        assert lines[0] == "note: `pareco bench --import FILE` is now `pareco bench import --from FILE`"
        assert r.returncode == 2 and lines[-1].startswith(f"error: {bad}: line 2: ")
        assert front_copy.read_bytes() == before

    @pytest.mark.parametrize(
        ("extra", "words"),
        [
            ((), "Missing option '--profile'; see 'pareco bench import --help'"),
            (("--profile", "pixel7", "--backend", "torch"), "No such option: --backend"),
            (("--profile", "pixel7", "--points", "p00"), "No such option: --points"),
        ],
    )
    def test_options_that_do_not_go_with_import(
        self, tiny_front: Path, tmp_path: Path, cli, extra, words
    ) -> None:
        r = cli("bench", "import", str(tiny_front), "--from", str(_csv(tmp_path, {"p00": 1.0})), *extra)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], r.stderr
