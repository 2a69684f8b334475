"""The raw output of a single-stage detector and its decoding into boxes (the post-processing an app runs).

A detector ``pareco train --task detection`` trains returns one tensor, ``(N, 5 + classes, Gh, Gw)``:
a map of cells laid over the input (the cell at row ``i``, column ``j`` covers the ``1/Gh`` x ``1/Gw``
of the image there). Per cell, channel 0 is the objectness logit; channels 1-4 are ``(tx, ty, tw, th)``,
the box centre ``((j + sigmoid(tx)) / Gw, (i + sigmoid(ty)) / Gh)`` and size ``(sigmoid(tw),
sigmoid(th))`` as fractions of the image's width and height; channels 5 on are the class logits.
Decoding (:func:`decode_boxes`) and non-maximum suppression (:func:`detections`) are not part of the
network: an exported front point returns the raw map, and the app calls :func:`detections` on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

BOX_CHANNELS = 5
"""Channels before the class logits: objectness, then the box's (tx, ty, tw, th)."""


def check_raw(raw: object, num_classes: int | None = None) -> Tensor:
    """``raw`` itself where it is a raw detection map ``(N, 5 + classes, Gh, Gw)`` (of ``num_classes``
    classes where given); ValueError saying what the network must return otherwise."""
    want = (
        "5 + classes" if num_classes is None else f"5 + {num_classes} classes = {BOX_CHANNELS + num_classes}"
    )
    if not isinstance(raw, Tensor) or raw.dim() != 4 or raw.shape[1] < BOX_CHANNELS + 1:
        shape = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
        raise ValueError(
            f"the network returns {shape}; a detector returns one map (N, {want}, grid rows, grid columns)"
        )
    if num_classes is not None and raw.shape[1] != BOX_CHANNELS + num_classes:
        raise ValueError(
            f"the network's map has {raw.shape[1]} channels; a detector of {num_classes} classes needs {want}"
        )
    return raw


def decode_boxes(raw: Tensor) -> Tensor:
    """The box of every cell of ``raw`` as ``(N, 4, Gh, Gw)``: centre x, centre y, width, height, each a
    fraction of the image's width or height (module docstring)."""
    _, _, gh, gw = raw.shape
    cols = torch.arange(gw, device=raw.device, dtype=raw.dtype).view(1, 1, gw)
    rows = torch.arange(gh, device=raw.device, dtype=raw.dtype).view(1, gh, 1)
    t = raw[:, 1:BOX_CHANNELS].sigmoid()
    return torch.stack(((cols + t[:, 0]) / gw, (rows + t[:, 1]) / gh, t[:, 2], t[:, 3]), 1)


def corners(boxes: Tensor) -> Tensor:
    """``(..., 4)`` boxes as (cx, cy, w, h) turned into (x1, y1, x2, y2) in the same units."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def detections(
    raw: Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> list[dict[str, Tensor]]:
    """The objects in each image of the raw map ``raw``: per image a dict of ``boxes`` ``(K, 4)`` as
    (x1, y1, x2, y2) in pixels of an ``image_size`` (height, width) input, ``scores`` ``(K,)`` and
    ``labels`` ``(K,)`` (class ids), best first, the format torchmetrics' mean average precision reads.

    Each cell proposes one box, of its most likely class, scored sigmoid(objectness) x that class's
    softmax probability; those scoring at least ``score_threshold`` go through per-class non-maximum
    suppression at ``iou_threshold`` (``torchvision.ops.batched_nms``) and the best ``max_detections``
    are kept. Needs torchvision (the ``vision`` extra).
    """
    from torchvision.ops import batched_nms

    raw = check_raw(raw).float()
    n = raw.shape[0]
    h, w = image_size
    scale = torch.tensor([w, h, w, h], device=raw.device, dtype=raw.dtype)
    boxes = (corners(decode_boxes(raw).flatten(2).transpose(1, 2)) * scale).clamp(min=0)
    boxes = torch.minimum(boxes, scale)
    probs = raw[:, BOX_CHANNELS:].flatten(2).softmax(1) * raw[:, :1].flatten(2).sigmoid()
    scores, labels = probs.max(1)
    found = []
    for i in range(n):
        keep = scores[i] >= score_threshold
        b, s, c = boxes[i][keep], scores[i][keep], labels[i][keep]
        kept = batched_nms(b, s, c, iou_threshold)[:max_detections]
        found.append({"boxes": b[kept], "scores": s[kept], "labels": c[kept]})
    return found
