"""``pareco train --task detection``: the YOLO folder, flips that move the boxes, the loss and its
cell assignment, decoding and NMS, the zoo detector's slices, a run end to end with resume, and every
bad label line refused in one line naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from pareco_runtime import build_model, slice_model
from pareco_runtime.detection import BOX_CHANNELS, decode_boxes, detections
from pareco_runtime.manifest import Front
from training.config import TrainConfig, TrainingError
from training.data.base import DataError, Holdout
from training.data.detection import NO_OBJECT, load_detection
from training.tasks.detection import DetectionTask, assign, detection_loss

COLOURS = ((220, 40, 40), (40, 40, 220))


def rectangles(root: Path, n: int = 24, size: int = 64, seed: int = 0) -> Path:
    """``n`` images of 1-3 filled rectangles (red: class 0, blue: class 1) on dark noise, written as
    PNGs under ``root/images`` with YOLO label files under ``root/labels``; the last image has none."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        lines = []
        for _ in range(0 if i == n - 1 else int(rng.integers(1, 4))):
            c, (w, h) = int(rng.integers(0, 2)), rng.integers(10, 24, 2)
            x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
            image[y0 : y0 + h, x0 : x0 + w] = COLOURS[c]
            lines.append(
                f"{c} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}"
            )
        Image.fromarray(image).save(root / "images" / f"img{i:03d}.png")
        if lines:
            (root / "labels" / f"img{i:03d}.txt").write_text("\n".join(lines) + "\n")
    return root


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--task", "detection", "--data", str(data), "--epochs", "2", "--batch-size", "8",
        "--candidates", "4", "--calib-batches", "1", "--calib-batch-size", "8", "--lr", "0.05",
        "--threads", "1", "--out", str(out), *extra,
    ]  # fmt: skip


def test_the_folder_loads_with_classes_from_the_labels_and_padded_targets(tmp_path):
    data = load_detection(str(rectangles(tmp_path / "d")), split=Holdout(0.2, 0.1, 0))
    info = data.info
    assert (info.class_names, data.classes_from, info.input_size) == (["0", "1"], "labels", (3, 64, 64))
    assert (info.num_train, info.num_val, info.num_selection) == (17, 5, 2)
    x, targets = next(data.val_batches(100))
    assert x.dtype == torch.float32 and targets.dtype == torch.float32 and targets.shape == (5, 3, 5)
    objects = targets[targets[..., 0] != NO_OBJECT]
    assert set(objects[:, 0].tolist()) <= {0.0, 1.0} and ((objects[:, 1:] > 0) & (objects[:, 1:] <= 1)).all()


def test_classes_txt_names_the_classes_and_a_train_val_layout_is_read(tmp_path):
    root = tmp_path / "d"
    rectangles(root / "train", n=10)
    rectangles(root / "val", n=4, seed=1)
    (root / "classes.txt").write_text("red\nblue\nunused\n")
    data = load_detection(str(root), split=Holdout(0.2, 0.0, 0))
    assert (data.info.class_names, data.classes_from) == (["red", "blue", "unused"], "classes.txt")
    assert (data.info.num_train, data.info.num_val, data.info.val_split) == (10, 4, "val")


def test_a_flip_mirrors_the_boxes_with_the_image_and_repeats_per_seed_and_epoch(tmp_path):
    data = load_detection(str(rectangles(tmp_path / "d")), split=Holdout(0.2, 0.0, 0))
    x, targets = next(data.train_batches(8, epoch=1, seed=3))
    again = next(data.train_batches(8, epoch=1, seed=3))
    assert torch.equal(x, again[0]) and torch.equal(targets, again[1])
    plain = next(data.train_batches(8, epoch=1, seed=3, augment=False))[1]
    flipped = (targets[..., 1] != plain[..., 1]).any(1)
    assert flipped.any() and not flipped.all()
    objects = plain[..., 0] != NO_OBJECT
    mirrored = torch.where(flipped[:, None] & objects, 1 - plain[..., 1], plain[..., 1])
    assert torch.allclose(targets[..., 1], mirrored) and torch.equal(targets[..., 2:], plain[..., 2:])
    data.renormalise([0.0] * 3, [1 / 255] * 3)  # batches in raw pixel values
    x, targets = next(data.train_batches(8, epoch=1, seed=3))
    # The last-drawn rectangle of each image is whole: its centre pixel has its class's colour.
    for image, padded in zip(x, targets):
        rows = padded[padded[:, 0] != NO_OBJECT]
        if len(rows):
            c, cx, cy = int(rows[-1, 0]), float(rows[-1, 1]), float(rows[-1, 2])
            pixel = image[:, int(cy * 64), int(cx * 64)]
            assert pixel.tolist() == list(COLOURS[c])


@pytest.mark.parametrize(
    "line,message",
    [
        ("0 0.5 0.5 0.2", "4 fields, not 5"),
        ("0 0.5 abc 0.2 0.2", "'abc' is not a number"),
        ("1.5 0.5 0.5 0.2 0.2", "class id 1.5 is not a class"),
        ("-1 0.5 0.5 0.2 0.2", "class id -1 is not a class"),
        ("0 1.2 0.5 0.2 0.2", "cx 1.2 is outside [0, 1]"),
        ("0 0.5 0.5 0 0.2", "box width 0 is not above 0"),
        ("0 0.5 nan 0.2 0.2", "cy is nan, not a finite number"),
        ("0 0.5 0.5 0.2 inf", "h is inf, not a finite number"),
        ("7 0.5 0.5 0.2 0.2", "class id 7, but --num-classes gives 2 classes"),
    ],
)
def test_a_bad_label_line_is_refused_in_one_line_naming_file_and_line(tmp_path, cli, line, message):
    root = rectangles(tmp_path / "d", n=6)
    labels = root / "labels" / "img003.txt"
    labels.write_text(labels.read_text() + "\n" + line + "\n")
    where = f"{labels}:{len(labels.read_text().splitlines())}:"
    r = cli(*train_args(root, tmp_path / "out", "--num-classes", "2"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {where} ") and message in lines[0], r.stderr
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("damage,name,message", [
    ("unreadable", "images/img003.png", "cannot be read as an image"),
    ("empty", "images", "no .jpg or .png images"),
    ("nothing", "d", "no label file holds an object"),
])  # fmt: skip
def test_a_bad_image_or_folder_is_refused_in_one_line(tmp_path, damage, name, message):
    root = rectangles(tmp_path / "d", n=6)
    if damage == "unreadable":
        (root / "images" / "img003.png").write_bytes(b"not a png")
    elif damage == "empty":
        for image in (root / "images").iterdir():
            image.unlink()
    else:
        for labels in (root / "labels").iterdir():
            labels.write_text("")
    with pytest.raises(DataError) as err:
        load_detection(str(root))
    text = str(err.value)
    assert "\n" not in text and text.startswith(str(root / name if name != "d" else root)) and message in text


def test_a_validation_split_without_objects_is_refused_before_training(tmp_path):
    root = tmp_path / "d"
    rectangles(root / "train", n=8)
    rectangles(root / "val", n=2, seed=1)
    for labels in (root / "val" / "labels").iterdir():
        labels.unlink()
    with pytest.raises(
        DataError, match=r"the val split's 2 images hold no object, so mAP cannot be measured"
    ):
        load_detection(str(root), split=Holdout(0.2, 0.0, 0))


def test_each_object_is_assigned_to_the_cell_of_its_centre_the_last_listed_winning():
    targets = torch.tensor([[[0, 0.1, 0.1, 0.2, 0.2], [1, 0.9, 0.6, 0.1, 0.3], [0, 0.95, 0.7, 0.05, 0.05]],
                            [[1, 0.5, 0.5, 1.0, 1.0], [NO_OBJECT, 0, 0, 0, 0], [NO_OBJECT, 0, 0, 0, 0]]])  # fmt: skip
    positive, classes, boxes = assign(targets, (2, 2))
    assert positive.tolist() == [[[True, False], [False, True]], [[False, False], [False, True]]]
    assert classes[0, 1, 1].item() == 0 and torch.equal(boxes[0, 1, 1], targets[0, 2, 1:])
    assert classes[1, 1, 1].item() == 1 and classes[0, 0, 0].item() == 0


def test_the_loss_is_low_for_a_map_that_states_the_truth_and_finite_without_objects():
    targets = torch.tensor([[[1, 0.375, 0.625, 0.5, 0.25]]])  # cell (row 1, col 0) of a 2 x 2 grid
    raw = torch.zeros(1, BOX_CHANNELS + 2, 2, 2)
    raw[:, 0] = -12
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    raw[0, :5, 1, 0] = torch.tensor([12, logit(0.75), logit(0.25), logit(0.5), logit(0.25)])
    raw[0, BOX_CHANNELS + 1, 1, 0] = 12
    assert torch.allclose(decode_boxes(raw)[0, :, 1, 0], targets[0, 0, 1:])
    loss = detection_loss()
    assert loss(raw, (None, targets)).item() < 1e-3
    assert loss(torch.zeros_like(raw), (None, targets)).item() > 1
    empty = loss(raw, (None, torch.full((1, 1, 5), float(NO_OBJECT))))
    assert torch.isfinite(empty) and empty.item() > 1  # the one confident cell is a false positive


def test_decode_and_nms_keep_the_best_box_per_object_in_pixels():
    raw = torch.full((1, BOX_CHANNELS + 2, 2, 2), -12.0)
    raw[0, 1:5] = 0.0  # every box at its cell's centre, half the image high
    raw[0, 3] = float(np.log(3))  # and three quarters wide: sigmoid(log 3) = 0.75
    raw[0, 0, 0, 0], raw[0, 0, 0, 1], raw[0, 0, 1, 1] = 4.0, 2.0, 3.0
    raw[0, BOX_CHANNELS, 0, 0] = raw[0, BOX_CHANNELS, 0, 1] = 12.0  # class 0
    raw[0, BOX_CHANNELS + 1, 1, 1] = 12.0  # class 1
    (found,) = detections(raw, (40, 80), iou_threshold=0.2)
    # Clipped to the image, (0, 1) overlaps (0, 0) by IoU 400 / 1600 and is of the same class:
    # suppressed; (1, 1) is of another class.
    assert found["labels"].tolist() == [0, 1]
    assert torch.allclose(found["scores"], torch.sigmoid(torch.tensor([4.0, 3.0])), atol=1e-4)
    assert torch.allclose(found["boxes"], torch.tensor([[0.0, 0.0, 50.0, 20.0], [30.0, 20.0, 80.0, 40.0]]))
    (loose,) = detections(raw, (40, 80), iou_threshold=0.5)
    assert loose["labels"].tolist() == [0, 1, 0]
    (none,) = detections(raw, (40, 80), score_threshold=0.99)
    assert none["boxes"].shape == (0, 4)


def test_the_zoo_detectors_slices_equal_it_and_cost_what_torch_counts():
    torch.manual_seed(0)
    model = build_model("tiny_detector", num_classes=3, input_size=64).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    for alpha in ([0.25] * 6, [0.3, 0.5, 0.7, 0.9, 0.4, 0.6], [1.0] * 6):
        sub = slice_model(model, alpha).eval()
        model.set_widths(alpha)
        with torch.no_grad():
            assert torch.equal(model(x), sub(x))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            sub(torch.zeros(1, 3, 64, 64))
        assert model.macs(alpha) == counter.get_total_flops() // 2
        assert model.params(alpha) == sum(p.numel() for p in sub.parameters())
    assert model(x).shape == (2, BOX_CHANNELS + 3, 8, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        build_model("tiny_detector", input_size=60)


def test_the_task_defaults_to_the_zoo_detector_and_refuses_a_classifier_by_name():
    cfg = TrainConfig(task="detection")
    assert cfg.arch == "tiny_detector" and DetectionTask().arch(cfg) == "tiny_detector"
    assert DetectionTask().distill() is False
    with pytest.raises(TrainingError, match="--arch resnet20: not a detection network"):
        DetectionTask().arch(TrainConfig(task="detection", arch="resnet20"))
    TrainConfig(task="detection", num_classes=1).validate()  # one kind of object is a detection


@pytest.mark.slow
def test_a_run_end_to_end_then_show_select_and_export(tmp_path, cli):
    data = rectangles(tmp_path / "d", n=48)
    out = tmp_path / "run"
    r = cli(*train_args(data, out, "--epochs", "8", "--json"))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["best"]["metric"] == "map50" and "mAP@0.5 largest" in r.stderr
    front = Front.load(out / "model.front.json")
    assert front.metric.to_dict() == {
        "rank": "map50",
        "higher_is_better": True,
        "names": ["map50", "map", "loss"],
    }
    assert front.architecture.arch == "tiny_detector" and front.training.extra["classes_from"] == "labels"
    best = max(front.points, key=lambda p: p.metrics["map50"])
    assert best.metrics["map50"] > 40 and best.metrics["map"] < best.metrics["map50"]
    r = cli("show", str(out / "model.front.json"))
    assert r.returncode == 0 and "map50 (val)" in r.stdout
    cheapest = min(front.points, key=lambda p: p.mflops)
    r = cli(
        "select", str(out / "model.front.json"), "--budget", f"{cheapest.mflops + 1e-3:.4f}MFLOPs", "--json"
    )
    assert r.returncode == 0 and json.loads(r.stdout)["point"]["id"] == cheapest.id
    r = cli("export", str(out), "--point", cheapest.id, "--onnx")
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_a_classifier_factory_is_refused_for_detection(tmp_path, cli):
    root = rectangles(tmp_path / "d", n=6)
    r = cli(*train_args(root, tmp_path / "out", "--arch", "tests.user_models:user_cnn"))
    assert r.returncode == 2 and "a detector returns one map (N, 5 + 2 classes = 7" in r.stderr, r.stderr


def test_the_detector_is_refused_for_classification(tmp_path, cli):
    r = cli(
        "train",
        "--arch",
        "tiny_detector",
        "--data",
        "synthetic:64:4",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "--arch tiny_detector: its output for a 3x32x32 input is (1, 9, 4, 4)" in lines[0]
    assert "needs logits of shape (1, 4); for a detector or a segmenter pass --task detection" in lines[0]


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path, cli, monkeypatch):
    import training.loop

    data = rectangles(tmp_path / "d")
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


class OwnDetector(torch.nn.Module):
    """A user's own detector: plain layers down to stride 4, returning the raw map."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        )  # fmt: skip
        self.predict = torch.nn.Conv2d(32, BOX_CHANNELS + num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(self.body(x))


def own_detector(num_classes: int = 2) -> OwnDetector:
    """The factory a user names: ``--arch tests.test_task_detection:own_detector``."""
    return OwnDetector(num_classes)


@pytest.mark.slow
def test_your_own_detector_trains_made_slimmable_from_its_graph(tmp_path, cli):
    out = tmp_path / "run"
    arch = "tests.test_task_detection:own_detector"
    r = cli(*train_args(rectangles(tmp_path / "d"), out, "--arch", arch))
    assert r.returncode == 0, r.stderr
    front = Front.load(out / "model.front.json")
    assert front.architecture.arch == arch and front.metric.rank == "map50"
    assert all(0 <= p.metrics["map50"] <= 100 for p in front.points)
