"""``pareco train --task segmentation``: the images/ + masks/ folder, joint augmentation, the loss,
distillation and mIoU, a run end to end with resume, and every bad mask refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from pareco_runtime.manifest import Front
from training.batch_loss import soft_target_distill
from training.config import TrainConfig, TrainingError
from training.data.base import DataError, Holdout
from training.data.segmentation import IGNORE_INDEX, load_segmentation
from training.tasks.segmentation import PixelTally, SegmentationTask, pixel_cross_entropy

FCN = "tests.user_models:user_fcn"


def shapes(root: Path, n: int = 24, size: int = 32, seed: int = 0) -> Path:
    """``n`` images of a red square (class 1) and a blue disc (class 2) on dark noise (class 0), each
    shape's outline marked 255 (ignore) in its mask, written as PNGs under ``root/images`` and
    ``root/masks``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    r = size // 5
    for i in range(n):
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cy, cx = rng.integers(r, size - r, 2)
        square = np.maximum(abs(yy - cy), abs(xx - cx))
        image[square <= r], mask[square <= r], mask[square == r] = (220, 40, 40), 1, IGNORE_INDEX
        cy, cx = rng.integers(r, size - r, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image[disc], mask[disc] = (40, 40, 220), 2
        Image.fromarray(image).save(root / "images" / f"img{i:03d}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"img{i:03d}.png")
    return root


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--task", "segmentation", "--data", str(data), "--arch", FCN, "--epochs", "2",
        "--batch-size", "8", "--candidates", "4", "--calib-batches", "1", "--calib-batch-size", "8",
        "--lr", "0.05", "--threads", "1", "--out", str(out), *extra,
    ]  # fmt: skip


def test_the_folder_loads_with_classes_from_the_masks_and_255_ignored(tmp_path):
    data = load_segmentation(str(shapes(tmp_path / "d")), split=Holdout(0.2, 0.1, 0))
    info = data.info
    assert (info.class_names, data.classes_from, info.input_size) == (["0", "1", "2"], "masks", (3, 32, 32))
    assert (info.num_train, info.num_val, info.num_selection) == (17, 5, 2)
    x, masks = next(data.val_batches(100))
    assert x.dtype == torch.float32 and masks.dtype == torch.int64 and masks.shape == (5, 32, 32)
    assert set(masks.unique().tolist()) == {0, 1, 2, IGNORE_INDEX}


def test_classes_txt_names_the_classes_and_a_train_val_layout_is_read(tmp_path):
    root = tmp_path / "d"
    shapes(root / "train", n=10)
    shapes(root / "val", n=4, seed=1)
    (root / "classes.txt").write_text("background\nsquare\ndisc\nunused\n")
    data = load_segmentation(str(root), split=Holdout(0.2, 0.0, 0))
    assert data.info.class_names == ["background", "square", "disc", "unused"]
    assert (data.info.num_train, data.info.num_val, data.info.val_split) == (10, 4, "val")


def test_augmentation_moves_image_and_mask_alike_and_repeats_per_seed_and_epoch(tmp_path):
    data = load_segmentation(str(shapes(tmp_path / "d")), split=Holdout(0.2, 0.0, 0))
    x, masks = next(data.train_batches(8, epoch=1, seed=3))
    again = next(data.train_batches(8, epoch=1, seed=3))
    assert torch.equal(x, again[0]) and torch.equal(masks, again[1])
    assert not torch.equal(masks, next(data.train_batches(8, epoch=2, seed=3))[1])
    data.renormalise([0.0] * 3, [1 / 255] * 3)  # batches in raw pixel values
    x, masks = next(data.train_batches(8, epoch=1, seed=3))
    red, blue = (x[:, 0] == 220) & (x[:, 2] == 40), x[:, 2] == 220
    assert torch.equal(blue, masks == 2)
    assert red[masks == 1].all() and ((masks[red] == 1) | (masks[red] == IGNORE_INDEX)).all()
    # The padding a crop brings in is black in the image and ignored in the mask, not background.
    padding = (masks == IGNORE_INDEX) & ~red
    assert padding.any() and (x.permute(1, 0, 2, 3)[:, padding] == 0).all()


@pytest.mark.parametrize(
    "damage,names,message",
    [
        ("missing", "images/img003.png", "no mask"),
        ("unreadable", "masks/img003.png", "cannot read the mask"),
        ("size", "masks/img003.png", "30x32 px, but its image img003.png is 32x32 px"),
        ("ids", "masks/img003.png", "class id 7, but --num-classes gives 3 classes"),
        ("rgb", "masks/img003.png", "a RGB image, not a class-id map"),
        ("empty", "images", "no .jpg or .png images"),
    ],
)
def test_a_bad_mask_is_refused_in_one_line_naming_the_file(tmp_path, cli, damage, names, message):
    root = shapes(tmp_path / "d", n=6)
    mask = root / "masks" / "img003.png"
    if damage == "missing":
        mask.unlink()
    elif damage == "unreadable":
        mask.write_bytes(b"not a png")
    elif damage == "size":
        Image.fromarray(np.zeros((32, 30), np.uint8), mode="L").save(mask)
    elif damage == "ids":
        Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(mask)
    elif damage == "rgb":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(mask)
    else:
        for image in (root / "images").iterdir():
            image.unlink()
    r = cli(*train_args(root, tmp_path / "out", "--num-classes", "3"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(root / names) in lines[0] and message in lines[0], r.stderr
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.slow  # imports torchvision and converts a network: seconds
def test_a_mask_id_beyond_classes_txt_and_a_classifier_are_refused(tmp_path, cli):
    root = shapes(tmp_path / "d", n=6)
    (root / "classes.txt").write_text("background\nsquare\n")
    r = cli(*train_args(root, tmp_path / "out"))
    assert r.returncode == 2 and "img000.png: class id 2, but classes.txt gives 2 classes" in r.stderr
    (root / "classes.txt").unlink()
    r = cli(*train_args(root, tmp_path / "out", "--arch", "tests.user_models:user_cnn"))
    assert r.returncode == 2 and "--task segmentation needs (1, 3, 32, 32)" in r.stderr, r.stderr
    r = cli(*train_args(root, tmp_path / "out", "--arch", "resnet20"))
    assert r.returncode == 2 and "not a segmentation network" in r.stderr
    assert (
        SegmentationTask().arch(TrainConfig(task="segmentation")) == "torchvision:lraspp_mobilenet_v3_large"
    )
    with pytest.raises(TrainingError, match="--num-classes applies to --task segmentation"):
        TrainConfig(num_classes=3).validate()


def test_the_default_arch_is_the_tasks():
    assert TrainConfig().arch == "resnet20"
    assert TrainConfig(task="segmentation").arch == "lraspp_mobilenet_v3_large"
    assert (
        SegmentationTask().arch(TrainConfig(task="segmentation")) == "torchvision:lraspp_mobilenet_v3_large"
    )


def test_pixel_loss_ignores_255_and_a_batch_of_only_ignore_is_zero_not_nan():
    torch.manual_seed(0)
    out = torch.randn(2, 3, 4, 4, requires_grad=True)
    masks = torch.randint(0, 3, (2, 4, 4))
    masks[0, :2] = IGNORE_INDEX
    loss = pixel_cross_entropy()(out, (None, masks))
    assert torch.allclose(loss, F.cross_entropy(out, masks, ignore_index=IGNORE_INDEX))
    empty = pixel_cross_entropy()(out, (None, torch.full_like(masks, IGNORE_INDEX)))
    assert empty.item() == 0.0


def test_distillation_is_pixelwise_kl_up_to_the_teachers_entropy():
    torch.manual_seed(0)
    student = torch.randn(2, 3, 5, 5, requires_grad=True)
    teacher = torch.randn(2, 3, 5, 5)
    assert SegmentationTask().distill() is True  # the Trainer's default term, on 4-D logits
    p = teacher.softmax(1)
    kl = (p * (p.log() - student.log_softmax(1))).sum(1).mean()
    entropy = -(p * p.log()).sum(1).mean()
    got = soft_target_distill(student, teacher)
    assert torch.allclose(got, kl + entropy, atol=1e-6)
    (g_got,) = torch.autograd.grad(got, student)
    (g_kl,) = torch.autograd.grad(kl, student)
    assert torch.allclose(g_got, g_kl, atol=1e-7)


@pytest.mark.slow  # torchmetrics takes seconds to import
def test_miou_and_pixel_accuracy_skip_ignored_pixels_and_absent_classes():
    masks = torch.tensor([[[0, 1, IGNORE_INDEX, 1]]])
    predicted = torch.tensor([[[0, 1, 1, 0]]])
    tally = PixelTally(4, torch.device("cpu"))
    tally.add(F.one_hot(predicted, 4).permute(0, 3, 1, 2).float() * 10, masks)
    result = tally.result()
    # class 0: 1 of 2 predicted-or-true pixels; class 1: 1 of 2; classes 2 and 3 absent: not counted.
    assert result["miou"] == pytest.approx(50.0) and result["pixel_acc"] == pytest.approx(200 / 3)


@pytest.mark.slow
def test_a_run_end_to_end_then_show_and_select(tmp_path, cli):
    data = shapes(tmp_path / "d")
    out = tmp_path / "run"
    r = cli(*train_args(data, out, "--json"))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["best"]["metric"] == "miou" and summary["best"]["split"] == "val"
    assert "mIoU largest" in r.stderr
    front = Front.load(out / "model.front.json")
    assert front.metric.to_dict() == {
        "rank": "miou",
        "higher_is_better": True,
        "names": ["miou", "pixel_acc", "loss"],
    }
    assert front.architecture.arch == FCN and front.dataset.class_names == ["0", "1", "2"]
    assert front.training.extra["classes_from"] == "masks"
    best = max(front.points, key=lambda p: p.metrics["miou"])
    assert best.metrics["miou"] > 60 and set(best.selection_metrics) == {"miou", "pixel_acc", "loss"}
    r = cli("show", str(out / "model.front.json"))
    assert r.returncode == 0 and "miou (val)" in r.stdout
    cheapest = min(front.points, key=lambda p: p.mflops)
    r = cli(
        "select", str(out / "model.front.json"), "--budget", f"{cheapest.mflops + 1e-3:.4f}MFLOPs", "--json"
    )
    assert r.returncode == 0 and json.loads(r.stdout)["point"]["id"] == cheapest.id
    # The dict output exports as a flat one, parity-checked against the sliced model.
    r = cli("export", str(out), "--point", cheapest.id, "--onnx", "--model", FCN)
    assert r.returncode == 0, r.stderr
    records = json.loads((out / "export" / "export.json").read_text())
    assert [(rec["point"], rec["format"]) for rec in records] == [(cheapest.id, "onnx")]


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path, cli, monkeypatch):
    import training.loop

    data = shapes(tmp_path / "d")
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert cli(*train_args(data, ref)).returncode == 0
    whole_epoch = training.loop._train_epoch

    class Killed(BaseException):
        """Stands for a kill: no handler of the CLI catches it."""

    def killed_in_epoch_two(run, epoch, *args):
        if epoch == 1:
            raise Killed
        return whole_epoch(run, epoch, *args)

    with monkeypatch.context() as m:
        m.setattr(training.loop, "_train_epoch", killed_in_epoch_two)
        with pytest.raises(Killed):
            cli(*train_args(data, cut))
    assert (cut / "checkpoint.pt").exists() and not (cut / "model.safetensors").exists()
    r = cli("train", "--resume", "--out", str(cut))
    assert r.returncode == 0, r.stderr
    a, b = load_file(ref / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    points = [json.loads((d / "model.front.json").read_text())["points"] for d in (ref, cut)]
    assert points[0] == points[1]


def test_a_diverging_run_stops_in_one_line(tmp_path, cli):
    r = cli(*train_args(shapes(tmp_path / "d"), tmp_path / "out", "--lr", "1e30", "--epoch-eval", "0"))
    assert r.returncode == 2 and "training diverged" in r.stderr and "lower --lr" in r.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_too_few_images_for_a_validation_split_are_refused(tmp_path):
    with pytest.raises(DataError, match="too few to hold out a validation split"):
        load_segmentation(str(shapes(tmp_path / "d", n=2)))
