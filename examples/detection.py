"""Object detection with pareco: a small single-stage detector, Slim and PareCO fronts ranked by mAP@0.5.

The detector is written here (a conv backbone and a head predicting, per cell of an 8x8 grid,
objectness, class and box, as YOLO does without anchors); ``make_slimmable`` converts it, the loop is
our own (AdamW, our loss, our in-place distillation: KL on logits does not fit a detector's outputs).
Decoding and NMS are post-processing outside the network, as YOLO exports do: what is exported is
the network, returning ``{"objectness", "classes", "boxes"}``. The data are generated here (64x64
noise with 1-3 rectangles, discs and triangles of random colours, the shape the class, boxes known);
the metric is torchmetrics' ``MeanAveragePrecision`` at IoU 0.5. From the repository root (``--model`` rebuilds our detector)::

    python examples/detection.py --out runs/det                # ~8 min on one core
    pareco show runs/det/slim runs/det/pareco
    pareco select runs/det/pareco/model.front.json --budget 2MFLOPs
    PYTHONPATH=. pareco export runs/det/pareco/model.front.json --budget 2MFLOPs --onnx --executorch \\
        --model examples.detection:detector
    PYTHONPATH=. pareco bench runs/det/pareco/model.front.json --backend torch --model examples.detection:detector
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import batched_nms

from pareco_runtime import make_slimmable
from pareco_runtime.manifest import DatasetSpec
from training import PareCO, Slim, Trainer, build_front

SIDE, STRIDE = 64, 8
GRID = SIDE // STRIDE
# Images are made normalised, (pixel / 255 - 0.5) / 0.25: grey noise, objects of random colours whose
# shape is their class.
DATASET = DatasetSpec("shapes", (3, SIDE, SIDE), [0.5] * 3, [0.25] * 3, ["rectangle", "disc", "triangle"])
SEED = 0

Batch = tuple[Tensor, Tensor, Tensor, Tensor]  # images, objectness, class, box targets per cell


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Detector(nn.Module):
    """Backbone to an 8x8 feature map (stride 8), then per cell: an objectness logit, class logits, and
    the box as logits of (centre x, centre y within the cell, width, height as fractions of the image)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2), conv(32, 64, 2), conv(64, 64))
        self.head = conv(64, 64)
        self.objectness, self.classes = nn.Conv2d(64, 1, 1), nn.Conv2d(64, num_classes, 1)
        self.boxes = nn.Conv2d(64, 4, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.head(self.backbone(x))
        return {"objectness": self.objectness(f), "classes": self.classes(f), "boxes": self.boxes(f)}


def detector(num_classes: int = 3) -> Detector:
    """The factory ``--model examples.detection:detector`` names."""
    return Detector(num_classes)


def make_scenes(n: int, seed: int) -> tuple[Batch, list[dict[str, Tensor]]]:
    """``n`` scenes of 1-3 non-overlapping objects: the batch tensors, and each image's boxes and labels."""
    g = torch.Generator().manual_seed(seed)
    images = 0.5 * torch.randn(n, 3, SIDE, SIDE, generator=g)
    obj, cls, box = (
        torch.zeros(n, 1, GRID, GRID),
        torch.zeros(n, GRID, GRID, dtype=torch.long),
        torch.zeros(n, 4, GRID, GRID),
    )
    yy, xx = torch.meshgrid(torch.arange(SIDE) + 0.5, torch.arange(SIDE) + 0.5, indexing="ij")
    targets = []
    for i in range(n):
        boxes: list[list[float]] = []
        labels: list[int] = []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            w, h, x0, y0 = (int(v) for v in torch.randint(10, 29, (4,), generator=g))
            x0, y0 = x0 * (SIDE - w) // 28, y0 * (SIDE - h) // 28
            b = [x0, y0, x0 + w, y0 + h]
            if any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in boxes):
                continue  # disjoint boxes of 10 px or more have their centres in different cells
            c = int(torch.randint(0, 3, (1,), generator=g))
            cx, cy = x0 + w / 2, y0 + h / 2
            inside = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
            if c == 1:
                inside &= ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
            elif c == 2:  # apex at the top centre, base at the bottom
                inside &= (xx - cx).abs() <= (yy - y0) * w / (2 * h)
            images[i][:, inside] = 2 * torch.rand(3, 1, generator=g) - 1
            gx, gy = int(cx // STRIDE), int(cy // STRIDE)
            obj[i, 0, gy, gx], cls[i, gy, gx] = 1.0, c
            box[i, :, gy, gx] = torch.tensor([cx / STRIDE - gx, cy / STRIDE - gy, w / SIDE, h / SIDE])
            boxes.append([float(v) for v in b])
            labels.append(c)
        targets.append(
            {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long)}
        )
    return (images, obj, cls, box), targets


def detection_loss(out: dict[str, Tensor], batch: Batch) -> Tensor:
    """Objectness BCE on every cell; class cross-entropy and box L1 on the cells holding an object."""
    _, obj, cls, box = batch
    pos = obj[:, 0] > 0
    loss = F.binary_cross_entropy_with_logits(out["objectness"], obj, pos_weight=torch.tensor(4.0))
    cls_loss = F.cross_entropy(out["classes"].permute(0, 2, 3, 1)[pos], cls[pos])
    box_loss = F.l1_loss(out["boxes"].sigmoid().permute(0, 2, 3, 1)[pos], box.permute(0, 2, 3, 1)[pos])
    return loss + cls_loss + 5 * box_loss


def distill(student: dict[str, Tensor], teacher: dict[str, Tensor]) -> Tensor:
    """In-place distillation: each smaller network follows the largest one's objectness and, weighted by
    that objectness, its class probabilities and boxes."""
    p = teacher["objectness"].sigmoid()
    cls = -(teacher["classes"].softmax(1) * student["classes"].log_softmax(1)).sum(1, keepdim=True)
    box = (student["boxes"].sigmoid() - teacher["boxes"].sigmoid()).abs().sum(1, keepdim=True)
    return F.binary_cross_entropy_with_logits(student["objectness"], p) + ((cls + 5 * box) * p).mean()


def decode(out: dict[str, Tensor], threshold: float = 0.05) -> list[dict[str, Tensor]]:
    """Per image: boxes (x1, y1, x2, y2 in pixels), scores and labels after class-wise NMS."""
    prob, label = out["classes"].softmax(1).max(1)
    score = (out["objectness"][:, 0].sigmoid() * prob).flatten(1)
    b = out["boxes"].sigmoid()
    gy, gx = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
    cx, cy = (gx + b[:, 0]) * STRIDE, (gy + b[:, 1]) * STRIDE
    w, h = b[:, 2] * SIDE, b[:, 3] * SIDE
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).flatten(1, 2)
    results = []
    for boxes, scores, labels in zip(xyxy, score, label.flatten(1)):
        keep = scores > threshold
        kept = batched_nms(boxes[keep], scores[keep], labels[keep], iou_threshold=0.5)
        results.append(
            {"boxes": boxes[keep][kept], "scores": scores[keep][kept], "labels": labels[keep][kept]}
        )
    return results


def evaluator(images: Tensor, targets: list[dict[str, Tensor]]) -> Callable[[nn.Module], dict[str, float]]:
    """Our metric: mAP at IoU 0.5 (torchmetrics) of the decoded detections on ``images``."""

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        metric = MeanAveragePrecision(iou_thresholds=[0.5])
        for i in range(0, len(images), 128):
            metric.update(decode(model(images[i : i + 128])), targets[i : i + 128])
        return {"map50": round(100 * float(metric.compute()["map_50"]), 2)}

    return evaluate


def train(algorithm: str, data: Batch, epochs: int, batch_size: int) -> Trainer:
    """Convert a fresh detector and train it with ``algorithm``'s strategy in our own loop."""
    torch.manual_seed(SEED)
    model = make_slimmable(
        detector(), data[0][:1], arch="examples.detection:detector", model_kwargs={"num_classes": 3}
    )
    steps = -(-len(data[0]) // batch_size) * epochs
    # 12 candidates each; PareCO's BO every 50 steps (|H| 40) on 32 images: the default |H| (201 here,
    # probing 64 images) made PareCO's run about 5x Slim's CPU time (50 s per epoch against 10).
    strategy = (
        Slim(seed=SEED, num_candidates=12)
        if algorithm == "slim"
        else PareCO(seed=SEED, history_size=40, probe_batch=32, candidates=12)
    )
    trainer = Trainer(model, strategy, detection_loss, total_steps=steps, distill=distill)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(data[0]), generator=torch.Generator().manual_seed(SEED + epoch))
        for i in range(0, len(order), batch_size):
            result = trainer.train_step(tuple(t[order[i : i + batch_size]] for t in data))
            opt.step()
            opt.zero_grad()
            schedule.step()
        print(f"{algorithm} epoch {epoch + 1}/{epochs}: loss of the largest {result.losses[0].item():.3f}")
    return trainer


def clock() -> tuple[float, float]:
    """(wall, CPU) seconds: on a shared machine the CPU time is what one free core would take."""
    return time.perf_counter(), time.process_time()


def spent(since: tuple[float, float], until: tuple[float, float]) -> str:
    """The wall and CPU seconds between two :func:`clock` readings, as the run prints them."""
    return f"{until[0] - since[0]:.0f} s ({until[1] - since[1]:.0f} s CPU)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for slim/ and pareco/")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--images", type=int, default=2000, help="generated training images")
    ap.add_argument("--eval-images", type=int, default=256, help="for each of selection and validation")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--algorithms", default="slim,pareco")
    args = ap.parse_args()
    data, _ = make_scenes(args.images, SEED)
    selection, validation = make_scenes(args.eval_images, SEED + 1), make_scenes(args.eval_images, SEED + 2)
    calib = [
        tuple(t[i : i + args.batch_size] for t in data)
        for i in range(0, min(4 * args.batch_size, args.images), args.batch_size)
    ]  # BN statistics of each candidate: four training batches
    for algorithm in args.algorithms.split(","):
        start = clock()
        trainer = train(algorithm, data, args.epochs, args.batch_size)
        trained = clock()
        record = {
            "algorithm": algorithm,
            "epochs": args.epochs,
            "seed": SEED,
            "wall_time_s": round(trained[0] - start[0], 3),
            "extra": trainer.strategy.record(),
        }
        built = build_front(
            args.out / algorithm,
            trainer.model,
            trainer.candidates(probe=calib[0]),
            calib,
            evaluator(validation[0][0], validation[1]),
            selection_evaluate=evaluator(selection[0][0], selection[1]),
            metric="map50",
            higher_is_better=True,
            training=record,
            dataset=DATASET,  # the input's normalisation and the class names travel with exports
        )
        front = ", ".join(f"{c.macs / 1e6:.2f} MFLOPs {c.reported['map50']:.1f}" for c in built.chosen)
        print(f"{algorithm}: trained in {spent(start, trained)}, front built in {spent(trained, clock())}")
        print(f"{algorithm}: {len(built.chosen)} points (MFLOPs mAP@0.5 %): {front}")
        print(f"{algorithm}: front written to {built.manifest}")


if __name__ == "__main__":
    main()
