"""The Torch-Pruning comparison script (benchmarks/peer_torch_pruning.py) measures both tools on a model
and regenerates the docs' coverage table between its markers (skipped without torch-pruning)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

# find_spec, not importorskip: importing torch-pruning here cost every worker 0.8 s of collection.
if importlib.util.find_spec("torch_pruning") is None:
    pytest.skip("torch-pruning is not installed", allow_module_level=True)
pytest.importorskip("torchvision")

from benchmarks import peer_torch_pruning as peer


@pytest.mark.slow
def test_resnet18_side_by_side_and_docs_table(tmp_path: Path) -> None:
    out = tmp_path / "peer.json"
    peer.main(["--models", "resnet18", "--size", "64", "--out", str(out)])
    r = json.loads(out.read_text())["results"]["resnet18"]
    ours, theirs = r["pareco"], r["torch_pruning"]
    assert ours["status"] == "fully" and ours["slice_equal"] is True
    assert ours["slimmable_params"] == 1.0
    # The slice's MACs by torch's counter equal the slimmable model's cost model.
    assert ours["macs_half_ratio"] == ours["model_macs_half_ratio"]
    assert theirs["status"] == "ok"
    assert 0.2 < ours["macs_half_ratio"] <= theirs["macs_half_ratio"] < 0.35

    page = tmp_path / "page.md"
    page.write_text(f"before\n{peer.BEGIN}\nold rows\n{peer.END}\nafter\n")
    peer.write_docs(json.loads(out.read_text())["results"], page)
    text = page.read_text()
    assert "old rows" not in text and text.startswith("before\n") and text.endswith("after\n")
    assert "| resnet18 | fully | 1.000 |" in text
    assert "1 models: pareco converts 1 fully" in text


def test_docs_page_without_markers_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("no markers\n")
    with pytest.raises(ValueError, match="no coverage markers"):
        peer.write_docs({}, page)
