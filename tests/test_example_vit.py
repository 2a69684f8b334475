"""examples/vit_cifar.py end to end on tiny settings: a timm ViT converted (heads and FFN widths), trained with
Slim in the example's own loop, its Slim and Mix'n'Match fronts written; the runtime serves the ViT front
(switching points in place, equal to the standalone slices) and the docstring's select / export / bench
work on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pareco_runtime import SlimmableRuntime
from pareco_runtime.sources import import_factory

from .example_fronts import check_commands, check_declared, run_example

MODEL = "examples.vit_cifar:vit_net"
TINY = ["--data", "synthetic:512:4", "--epochs", "3", "--depth", "2", "--dim", "32", "--heads", "4",
        "--batch-size", "32", "--candidates", "6", "--algorithms", "slim"]  # fmt: skip


@pytest.mark.slow
def test_vit_example_writes_slim_and_mixnmatch_fronts_that_serve(
    repo_root: Path, tmp_path: Path, cli
) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("executorch")
    manifests = run_example(repo_root, "vit_cifar.py", tmp_path, *TINY)
    manifests["mixnmatch"] = json.loads((tmp_path / "mixnmatch" / "model.front.json").read_text())
    for manifest in manifests.values():
        check_declared(manifest, "top1", ["top1", "loss"], higher=True)
        assert manifest["architecture"]["arch"] == MODEL
    names = manifests["mixnmatch"]["width_space"]["names"]
    assert names == ["blocks.0.attn.heads", "blocks.0.mlp.fc1", "blocks.1.attn.heads", "blocks.1.mlp.fc1"]
    for point in manifests["mixnmatch"][
        "points"
    ]:  # MatFormer's rule: heads whole, FFN from the granularities
        heads, ffn = point["alpha"][0::2], point["alpha"][1::2]
        assert heads == [1.0, 1.0] and set(ffn) <= {0.125, 0.25, 0.5, 1.0} and ffn == sorted(ffn)

    for front in ("slim", "mixnmatch"):
        rt = SlimmableRuntime.load(tmp_path / front / "model.front.json", model=import_factory(MODEL))
        x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        for point in [*rt.points, rt.points[0]]:  # switch in place, back and forth
            rt.switch(point)
            with torch.no_grad():
                assert torch.equal(rt(x), rt.standalone(point).eval()(x)), point.id
    check_commands(cli, tmp_path / "slim", MODEL, tmp_path / "export", "top1")
