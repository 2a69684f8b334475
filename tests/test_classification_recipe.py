"""examples/classification_recipe.py: a torchvision ResNet-18 trained with AdamW, MixUp/CutMix, label
smoothing and an EMA in the user's own loop; its fronts load, serve budgets and hold the EMA weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from safetensors.torch import load_file

from pareco_runtime import SlimmableRuntime
from training.data import load_data

DATA = "synthetic:256:4"
SMALL = ["--epochs", "1", "--batch-size", "32", "--candidates", "4", "--history-size", "10"]


def _recipe(repo_root: Path) -> ModuleType:
    """The example, imported from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "classification_recipe", repo_root / "examples" / "classification_recipe.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_weight_file_holds_the_ema_weights_not_the_raw_ones(repo_root: Path, tmp_path: Path) -> None:
    recipe = _recipe(repo_root)
    data = load_data(DATA, seed=recipe.SEED, select_fraction=recipe.SELECT_FRACTION, device="cpu")
    trainer, ema = recipe.train("slim", data, epochs=1, batch_size=32, candidates=4, history_size=10)
    raw = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    averaged = {k: v.detach().clone() for k, v in ema.module.named_parameters()}
    record = {"algorithm": "slim", "epochs": 1, "seed": 0, "wall_time_s": 0.0, "history_size": None}
    manifest = recipe.write_front(tmp_path, trainer, ema, data, record)

    saved = load_file(str(manifest.with_name("model.safetensors")))
    assert all(torch.equal(saved[k], averaged[k]) for k in raw)
    assert [
        k for k in raw if torch.equal(saved[k], raw[k])
    ] == []  # every weight is the average, none the raw


@pytest.mark.slow
def test_the_example_writes_a_pareco_front_that_serves_a_budget(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], cli
) -> None:
    recipe = _recipe(repo_root)
    recipe.main(["--out", str(tmp_path), "--data", DATA, "--algorithms", "pareco", *SMALL])
    manifest = tmp_path / "pareco" / "model.front.json"
    assert f"pareco: front written to {manifest}" in capsys.readouterr().out

    rt = SlimmableRuntime.load(manifest)  # checks the weight file against the manifest
    assert rt.front.architecture.arch == "torchvision:resnet18" and rt.front.training.algorithm == "pareco"
    cheapest = min(p.mflops for p in rt.points)
    budget = 2 * cheapest
    assert rt.select(f"{budget}MFLOPs").mflops <= budget
    shown = cli("select", str(manifest), "--budget", f"{budget}MFLOPs", "--json")
    assert shown.returncode == 0, shown.stderr
