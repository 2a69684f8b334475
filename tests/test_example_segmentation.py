"""examples/segmentation.py end to end on tiny settings: LRASPP converted, trained with Slim and PareCO in
the example's own loop, fronts ranked by mIoU, then the docstring's show / select / export / bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from .example_fronts import check_commands, check_declared, run_example


@pytest.mark.slow
def test_segmentation_example_fronts_serve_every_command(repo_root: Path, tmp_path: Path, cli) -> None:
    pytest.importorskip("torchmetrics")
    pytest.importorskip("onnxruntime")
    # PareCO alone, and ONNX alone: Slim's loop is the same code, and tests/test_convert_tasks.py lowers an
    # LRASPP front to ExecuTorch already (lowering one point of this front took 79 CPU-seconds).
    manifests = run_example(
        repo_root, "segmentation.py", tmp_path, "--epochs", "1", "--images", "32", "--algorithms", "pareco"
    )
    for manifest in manifests.values():
        check_declared(manifest, "miou", ["miou", "pixel_acc"], higher=True)
        assert manifest["dataset"]["input_size"] == [3, 64, 64]
        assert all(0 <= p["metrics"]["miou"] <= 1 for p in manifest["points"])
    check_commands(
        cli,
        tmp_path / "pareco",
        "examples.segmentation:lraspp",
        tmp_path / "export",
        "miou",
        formats=["onnx"],
    )
