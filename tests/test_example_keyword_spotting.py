"""examples/keyword_spotting.py end to end on tiny settings: a 1-D conv network converted, trained with
Slim and PareCO in the example's own loop, fronts ranked by top-1, then the docstring's show / select /
export / bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from .example_fronts import check_commands, check_declared, run_example


@pytest.mark.slow
def test_keyword_spotting_example_fronts_serve_every_command(repo_root: Path, tmp_path: Path, cli) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("executorch")
    # PareCO alone: the commands below take its front; Slim's loop is the same code.
    manifests = run_example(
        repo_root,
        "keyword_spotting.py",
        tmp_path,
        "--epochs",
        "1",
        "--clips",
        "256",
        "--algorithms",
        "pareco",
    )
    for manifest in manifests.values():
        check_declared(manifest, "top1", ["top1", "loss"], higher=True)
        assert manifest["dataset"]["input_size"] == [40, 98]
    check_commands(cli, tmp_path / "pareco", "examples.keyword_spotting:kws_net", tmp_path / "export", "top1")
