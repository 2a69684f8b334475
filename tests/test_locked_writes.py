"""Read-check-write is one critical section: two ``pareco calibrate`` or ``pareco specialize`` runs
started at once on one front, as real processes, lose nothing and report nothing false.

Before: two calibrations without ``--id`` both chose ``c00`` and one was thrown away with an error
about an id the user never gave; two specializations into one ``--out`` both reported success and
one front silently replaced the other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pareco_runtime import Front, SlimmableRuntime
from pareco_runtime.latency_table import lut_path

from .latency_tables import synthetic_table

DATA = "synthetic:256:4"  # the tiny front's own data


def _start(args: list[str], repo_root: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pareco_cli.main", *args],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PARECO_CACHE": str(cache)},
    )


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=600), *p.communicate()) for p in procs]


@pytest.mark.slow
def test_two_calibrations_at_once_without_id_both_land_under_distinct_ids(
    front_copy: Path, tmp_path: Path, repo_root: Path
) -> None:
    procs = [
        _start(["calibrate", str(front_copy), "--width", w, "--data", DATA, "--json"], repo_root, tmp_path)
        for w in ("0.5", "0.6")
    ]
    results = _finish(procs)
    assert [code for code, _, _ in results] == [0, 0], [err[-1500:] for _, _, err in results]
    ids = sorted(json.loads(out)["point"]["id"] for _, out, _ in results)
    assert ids == ["c00", "c01"]
    front = Front.load(front_copy)
    assert sorted(p.id for p in front.points if p.id.startswith("c")) == ids
    assert sorted(pid for e in front.stats_files for pid in e.points) == ids
    assert {"c00", "c01"} <= {p.id for p in SlimmableRuntime.load(front_copy).points}


@pytest.mark.slow
def test_two_specializations_into_one_out_one_lands_the_other_is_refused(
    front_copy: Path, tmp_path: Path, repo_root: Path
) -> None:
    lut = synthetic_table(SlimmableRuntime.load(front_copy).model, "phone", host="a phone far away")
    lut.save(lut_path(front_copy, "phone"))
    out = front_copy.with_name("phone.front.json")
    args = ["specialize", str(front_copy), "--profile", "phone", "--data", DATA, "--points", "3"]
    procs = [
        _start(
            [*args, "--evals", str(evals), "--seed", str(seed), "--out", str(out), "--json"],
            repo_root,
            tmp_path,
        )
        for seed, evals in ((1, 12), (2, 14))
    ]
    results = _finish(procs)
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [err[-1500:] for _, _, err in results]
    (winner,) = [json.loads(o) for code, o, _ in results if code == 0]
    (refused,) = [e for code, _, e in results if code == 2]
    assert refused.strip().splitlines()[-1] == (
        f"error: --out {out}: written by another process while this one searched; pass --force to "
        "replace it, or name another file"
    )
    saved = Front.load(out)
    assert saved.training.extra["specialized"]["seed"] == winner["training"]["extra"]["specialized"]["seed"]
    SlimmableRuntime.load(out)  # the front that landed is whole: its statistics file is there
