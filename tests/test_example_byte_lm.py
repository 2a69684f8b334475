"""examples/byte_lm.py end to end on tiny settings: a plain-torch byte-level decoder LM converted (heads and
SwiGLU widths), trained with Slim on generated text in the example's own loop, its front ranked by loss
(lower is better), with Mix'n'Match's front from the same weights; select honours a parameter budget, and the runtime loads the front of int64 ids from its
manifest and serves the chosen point as its standalone slice does."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

from pareco_runtime import SlimmableRuntime

from .example_fronts import check_declared, run_example

TINY = ["--epochs", "2", "--context", "32", "--dim", "32", "--heads", "4", "--layers", "2", "--batch-size", "16",
        "--algorithms", "slim"]  # fmt: skip


def _write_text(folder: Path) -> None:
    """Two files of seeded sentences over a small vocabulary: structure an LM can pick up in a few steps."""
    words = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "log", "red", "big", "quickly"]
    rng = random.Random(0)
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        sentences = (" ".join(rng.choice(words) for _ in range(rng.randint(4, 9))) + "." for _ in range(300))
        (folder / name).write_text(" ".join(sentences))


@pytest.mark.slow
def test_byte_lm_front_is_ranked_by_loss_and_serves_a_parameter_budget(
    repo_root: Path, tmp_path: Path, cli
) -> None:
    _write_text(tmp_path / "text")
    manifest = run_example(
        repo_root, "byte_lm.py", tmp_path / "runs", "--text", str(tmp_path / "text"), *TINY
    )["slim"]
    check_declared(manifest, "loss", ["loss", "bits_per_byte"], higher=False)
    # Mix'n'Match's front from Slim's weights: FFN widths from the granularities, heads at full width.
    mix = json.loads((tmp_path / "runs" / "mixnmatch" / "model.front.json").read_text())
    check_declared(mix, "loss", ["loss", "bits_per_byte"], higher=False)
    names = mix["width_space"]["names"]
    for p in mix["points"]:
        for name, w in zip(names, p["alpha"]):
            assert w == 1.0 if name.endswith(".heads") else w in (0.125, 0.25, 0.5, 1.0)
    front = tmp_path / "runs" / "slim"
    points = manifest["points"]
    params = sorted(p["params"] for p in points)
    budget = params[len(params) // 2]
    r = cli("select", str(front), "--budget", f"{budget}params", "--json")
    assert r.returncode == 0, r.stderr
    chosen = json.loads(r.stdout)["point"]
    within = [p for p in points if p["params"] <= budget]
    best = min((p.get("selection_metrics") or p["metrics"])["loss"] for p in within)
    assert (
        chosen["params"] <= budget and (chosen.get("selection_metrics") or chosen["metrics"])["loss"] == best
    )

    spec = importlib.util.spec_from_file_location("byte_lm", repo_root / "examples" / "byte_lm.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    # The manifest records int64 ids of 32 positions, so the runtime serves the front from it.
    rt = SlimmableRuntime.load(front / "model.front.json", model=example.byte_lm)
    ids = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(0))
    rt.switch(rt.point(chosen["id"]))
    standalone = rt.standalone(chosen["id"])
    assert sum(p.numel() for p in standalone.parameters()) == chosen["params"]
    with torch.no_grad():
        assert torch.equal(standalone(ids), rt(ids))
