"""examples/battery_app.py refuses data that does not fit the manifest and runs on data that does."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from pareco_runtime import SlimmableRuntime
from training.data import DataInfo


@pytest.fixture
def app(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("battery_app", repo_root / "examples" / "battery_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARECO_CACHE", str(tmp_path / "cache"))


def _folder(root: Path, classes: list[str], size: int) -> Path:
    """An ImageFolder of 5 noisy ``size`` px PNGs per class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(5):
            pixels = np.clip(40 * c + rng.normal(100, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.png")
    return root


def _run(app: ModuleType, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        app.main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


CLASSES = ["class0", "class1", "class2", "class3"]  # the tiny front's


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "synthetic:64:3",
            "--data synthetic:64:3: 3 classes (class0, class1, class2), the model has 4 "
            "(class0, class1, class2, class3); pass --data with the images the model was trained on "
            "(its manifest's dataset: 'synthetic')",
        ),
        # slow: the first import of scikit-learn, which holds the digits, takes seconds
        pytest.param(
            "digits", "--data digits: 10 classes (0, 1, 2, 3, ...), the model has 4", marks=pytest.mark.slow
        ),
        ("letters", "class 0 is 'a', the model's is 'class0'; pass --data with the images"),
        ("big", "its images are 48x48 px, the model takes 16x16 (trained on 'synthetic'); pass --data"),
    ],
    ids=["class-count", "digits", "class-names", "image-size"],
)
def test_data_that_does_not_fit_the_manifest_is_refused(app, tiny_front, tmp_path, capsys, data, message):
    folders = {"letters": (["a", "b", "c", "d"], 16), "big": (CLASSES, 48)}
    if data in folders:
        data = str(_folder(tmp_path / data, *folders[data]))
        message = f"--data {data}: {message}" if data.endswith("big") else message
    code, out, err = _run(app, capsys, str(tiny_front), "--data", data)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("data", ["synthetic:64:4", "folder"], ids=["same-dataset", "same-classes-and-size"])
def test_data_that_fits_is_classified(app, tiny_front, tmp_path, capsys, data):
    if data == "folder":
        data = str(_folder(tmp_path / "mine", CLASSES, 16))
    code, out, err = _run(app, capsys, str(tiny_front), "--data", data, "--drain", "40", "--check-every", "1")
    assert code == 0, err
    assert "switched to" in out and "images classified before the battery ran out" in out


def test_images_are_normalised_as_the_manifest_says(app, tiny_front):
    rt = SlimmableRuntime.load(tiny_front)
    info = DataInfo("other", (3, 16, 16), (0.2, 0.3, 0.4), (0.5, 0.6, 0.7), CLASSES, 1, 1)
    pixels = torch.rand(2, 3, 16, 16)
    view = (1, 3, 1, 1)
    theirs = (pixels - torch.tensor(info.mean).view(view)) / torch.tensor(info.std).view(view)
    dataset = rt.front.dataset
    ours = (pixels - torch.tensor(dataset.mean).view(view)) / torch.tensor(dataset.std).view(view)
    assert (app.to_model_input(theirs, info, rt) - ours).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_the_app_runs_on_a_compiled_backend_and_refuses_an_unknown_one(app, front_copy, capsys):
    args = (str(front_copy), "--data", "synthetic:64:4", "--drain", "40", "--check-every", "1")
    code, out, err = _run(app, capsys, *args, "--backend", "onnxruntime", "--threads", "1")
    assert code == 0, err
    assert "switched to" in out and "images classified before the battery ran out" in out
    code, out, err = _run(app, capsys, *args, "--backend", "tpu")
    assert code == 2 and err.startswith("error: backend 'tpu' is not available here")
