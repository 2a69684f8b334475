"""``pareco specialize``: a front re-chosen for one device's latency table, served by the same weight file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.device import host_description
from pareco_runtime.latency_table import LatencyLUT, lut_path
from pareco_runtime.manifest import Front
from pareco_runtime.pareto import non_dominated
from pareco_runtime.runtime import SlimmableRuntime
from pareco_runtime.untrusted import FormatError, sha256_file

from .latency_tables import synthetic_table

DATA = "synthetic:256:4"  # the tiny front's own data
PROFILE = "phone"
ARGS = ("--profile", PROFILE, "--data", DATA, "--points", "4", "--evals", "10", "--json")


def _json(result: Any) -> Any:
    assert result.returncode == 0, result.stderr[-1500:]
    return json.loads(result.stdout)


def _one_line_error(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-1500:]
    return lines[0]


def _with_table(manifest: Path, **kwargs: Any) -> LatencyLUT:
    lut = synthetic_table(SlimmableRuntime.load(manifest).model, PROFILE, **kwargs)
    lut.save(lut_path(manifest, PROFILE))
    return lut


@pytest.fixture(autouse=True)
def _data_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARECO_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def specialized(
    tiny_front: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, Any]]:
    """A copy of the tiny front specialized for a made-up table timed elsewhere, by ``pareco specialize`` in
    a process of its own (the in-process ``cli`` fixture is per test); (old manifest, new manifest, its JSON)."""
    folder = tmp_path_factory.mktemp("specialized") / "front"
    shutil.copytree(tiny_front.parent, folder)
    manifest = folder / tiny_front.name
    _with_table(manifest, host="a phone far away")
    env = {**os.environ, "PARECO_CACHE": str(folder.parent / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "pareco_cli.main", "specialize", str(manifest), *ARGS],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    report = _json(done)
    return manifest, Path(report["manifest"]), report


@pytest.mark.slow
class TestTheSpecializedFront:
    def test_it_is_a_new_manifest_beside_the_weights_that_copies_none_of_them(self, specialized) -> None:
        old, new, report = specialized
        assert new == old.with_name("model.phone.front.json")
        front, base = Front.load(new), Front.load(old)
        assert front.weights_file == base.weights_file and front.weights_sha256 == base.weights_sha256
        [stats] = front.stats_files
        assert stats.points == [p.id for p in front.points] and stats.sha256 == sha256_file(
            new.parent / stats.file
        )
        assert (new.parent / stats.file).stat().st_size < (old.parent / base.weights_file).stat().st_size / 10
        assert sorted(f.name for f in new.parent.glob("*.safetensors")) == sorted(
            [base.weights_file, stats.file]
        ), "only the one statistics file is new"
        assert report["measured"] is False and front.training.extra["specialized"]["profile"] == PROFILE

    def test_its_points_are_non_dominated_in_top1_and_the_tables_latency(self, specialized) -> None:
        old, new, _ = specialized
        front = Front.load(new)
        lut = LatencyLUT.load(lut_path(old, PROFILE))
        assert 2 <= len(front.points) <= 4 and [p.id for p in front.points] == [
            f"s{i:02d}" for i in range(len(front.points))
        ]
        ms = [p.latency_predicted_ms[PROFILE] for p in front.points]
        assert ms == sorted(ms)
        for p in front.points:
            assert p.latency_predicted_ms[PROFILE] == pytest.approx(lut.predict_ms(p.channels), rel=1e-6)
            assert p.latency_ms == {} and p.top1 is not None and p.selection_top1 is not None
        pairs = [(-p.selection_top1, p.latency_predicted_ms[PROFILE]) for p in front.points]
        assert len(non_dominated(pairs, lambda v: v)) == len(pairs)
        assert [d.name for d in front.device_profiles] == [PROFILE]
        assert front.device_profiles[0].host == "a phone far away"

    def test_it_serves_evaluates_selects_and_exports_like_a_trained_front(
        self, specialized, cli, tmp_path
    ) -> None:
        _, new, _ = specialized
        rt = SlimmableRuntime.load(new)
        report = _json(cli("eval", str(new), "--data", DATA, "--json"))
        for row, p in zip(report["points"], rt.points):
            assert round(row["top1"], 4) == p.top1, "the stored statistics reproduce each point's top-1"
        cheapest = rt.points[0].latency_predicted_ms[PROFILE]
        budget = f"{cheapest * 1.0001:.6f}ms@{PROFILE}"
        chosen = _json(cli("select", str(new), "--budget", budget, "--allow-predicted", "--json"))
        assert chosen["met"] and chosen["point"]["id"] == "s00"
        line = _one_line_error(cli("select", str(new), "--budget", budget))
        assert "--allow-predicted" in line or "allow_predicted" in line
        out = tmp_path / "export"
        _json(cli("export", str(new), "--point", "s00", "--onnx", "--out", str(out), "--json"))
        assert json.loads((out / "export.json").read_text())[0]["point"] == "s00"

    def test_a_statistics_file_that_changed_is_refused(self, specialized, tmp_path) -> None:
        old, new, _ = specialized
        copy = tmp_path / "front"
        shutil.copytree(old.parent, copy)
        [stats] = Front.load(new).stats_files
        with open(copy / stats.file, "r+b") as f:
            f.seek(-8, 2)
            f.write(b"\x00" * 8)
        with pytest.raises(FormatError, match=stats.file):
            SlimmableRuntime.load(copy / new.name)


class TestRefused:
    def test_no_table_for_the_profile_names_the_command_that_builds_it(self, front_copy: Path, cli) -> None:
        line = _one_line_error(cli("specialize", str(front_copy), *ARGS))
        assert (
            "no latency table for profile 'phone'" in line
            and "pareco bench lut " in line
            and "--profile phone" in line
        )

    def test_a_table_of_another_network_is_refused(self, front_copy: Path, cli) -> None:
        from pareco_runtime import build_model

        synthetic_table(build_model("mobilenet_v2"), PROFILE).save(lut_path(front_copy, PROFILE))
        line = _one_line_error(cli("specialize", str(front_copy), *ARGS))
        assert "built for another network (architecture" in line

    @pytest.mark.slow
    def test_an_out_outside_the_weights_folder_or_an_existing_one(
        self, front_copy: Path, cli, tmp_path
    ) -> None:
        _with_table(front_copy)
        before = sorted(p.name for p in front_copy.parent.iterdir())
        line = _one_line_error(
            cli("specialize", str(front_copy), *ARGS, "--out", str(tmp_path / "x.front.json"))
        )
        assert "must be saved in its folder" in line
        assert sorted(p.name for p in front_copy.parent.iterdir()) == before
        line = _one_line_error(cli("specialize", str(front_copy), *ARGS, "--out", str(front_copy)))
        assert "that is the front whose weights serve it" in line
        (front_copy.parent / "model.phone.front.json").write_text("{}")
        for force in ((), ("--force",)):
            line = _one_line_error(cli("specialize", str(front_copy), *ARGS, *force))
            assert "an existing file that is not a .front.json this command wrote" in line

    @pytest.mark.slow
    def test_an_earlier_specialized_front_is_replaced_only_with_force(self, specialized, cli) -> None:
        old, new, _ = specialized
        line = _one_line_error(cli("specialize", str(old), *ARGS, "--out", str(new)))
        assert "exists; pass --force" in line

    def test_measure_with_a_table_from_another_host(self, front_copy: Path, cli) -> None:
        _with_table(front_copy, host="a phone far away")
        line = _one_line_error(cli("specialize", str(front_copy), *ARGS, "--measure"))
        assert "was timed on a phone far away, not here" in line


@pytest.mark.slow
def test_a_table_built_here_gets_the_points_measured(front_copy: Path, cli) -> None:
    _with_table(front_copy, backend="torch", host=host_description("torch"))
    report = _json(cli("specialize", str(front_copy), *ARGS[:-3], "--evals", "12", "--json"))
    assert report["measured"] is True
    front = Front.load(Path(report["manifest"]))
    assert all(p.latency_ms[PROFILE] > 0 for p in front.points)
    chosen = _json(cli("select", report["manifest"], "--budget", f"1000ms@{PROFILE}", "--json"))
    assert chosen["met"]
