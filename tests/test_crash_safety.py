"""Crash safety: SIGKILL inside atomic writes leaves whole files, and resuming reproduces the result.

The full harness (20 kill points, timed and injected) is ``python -m benchmarks.crash_harness``.
"""

from __future__ import annotations

import pytest

from benchmarks.crash_harness import Kill, harness


@pytest.mark.slow
def test_kills_inside_writes_leave_whole_files_and_same_result(tmp_path):
    kills = [
        Kill(target="checkpoint.pt", mode="mid", nth=1),
        Kill(target="checkpoint.pt", mode="before-rename", nth=1),
        Kill(target="model.safetensors", mode="mid", nth=1),
        Kill(target="model.front.json", mode="before-rename", nth=1),
    ]
    landed, survived = harness(kills, epochs=2, workdir=tmp_path)
    assert landed == len(kills)
    assert survived == landed
