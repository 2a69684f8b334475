"""The evaluation transform travels with the model: recorded in the manifest, applied by rt.preprocess."""

from __future__ import annotations

import json

import pytest
import torch

from pareco_runtime import SlimmableRuntime
from pareco_runtime.preprocess import Preprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_shorter_side_resize_and_crop_equal_torchvisions_eval_transform():
    v2 = pytest.importorskip("torchvision.transforms.v2")
    size = 32
    reference = v2.Compose(
        [
            v2.Resize(int(size / 0.875), antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(MEAN), list(STD)),
        ]
    )
    ours = Preprocess((size, size), MEAN, STD, "shorter_side", int(size / 0.875))
    g = torch.Generator().manual_seed(0)
    for h, w in ((48, 64), (71, 40), (36, 36)):
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        got = ours(image)
        assert got.shape == (1, 3, size, size)
        assert (got[0] - reference(image)).abs().max().item() <= 1e-5
        assert torch.equal(ours(image.permute(1, 2, 0)), got), "HWC and CHW give the same input"


def test_pil_images_read_without_pil_in_the_runtime():
    Image = pytest.importorskip("PIL.Image")
    pixels = torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    image = Image.fromarray(pixels.numpy())
    ours = Preprocess((20, 30), MEAN, STD)
    assert torch.equal(ours(image), ours(pixels)), "a PIL image and its pixels are one input"
    assert torch.equal(ours(image.convert("L")), ours(image.convert("L").convert("RGB")))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.zeros(3, 8, 8), "dtype torch.float32; give uint8 pixels"),
        (torch.zeros(4, 8, 8, dtype=torch.uint8), r"shape \(4, 8, 8\); give an RGB image"),
        ([1, 2, 3], "cannot read an image from a list"),
    ],
)
def test_bad_images_are_one_line(image, message):
    with pytest.raises(ValueError, match=message):
        Preprocess((8, 8), MEAN, STD)(image)


def test_runtime_predicts_a_class_name_from_an_image(tiny_front):
    rt = SlimmableRuntime.load(tiny_front)
    c, h, w = rt.input_size
    image = torch.randint(
        0, 256, (3, 2 * h, 3 * w), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    x = rt.preprocess(image)
    assert x.shape == (1, c, h, w) and x.dtype == torch.float32
    name, score = rt.predict(image)
    probs = torch.softmax(rt(x)[0], 0)
    assert name == rt.class_names[int(probs.argmax())] and score == pytest.approx(float(probs.max()))


def test_the_manifest_records_the_transform_and_old_ones_still_load(tiny_front, tmp_path):
    manifest = json.loads(tiny_front.read_text())
    dataset = manifest["dataset"]
    # Synthetic and small-image data are resized whole to the input size: no preprocess object needed.
    assert "preprocess" not in dataset
    assert Preprocess.from_dataset(dataset).mode == "exact"
    streamed = {**dataset, "preprocess": Preprocess((16, 16), MEAN, STD, "shorter_side", 18).to_dict()}
    p = Preprocess.from_dataset(streamed)
    assert (p.mode, p.resize, p.size) == ("shorter_side", 18, (16, 16))
    with pytest.raises(ValueError, match="needs resize >= the crop"):
        Preprocess((16, 16), MEAN, STD, "shorter_side", 8)


def _apply_record(record, image):
    """An app's reading of ``Preprocess.describe()``: every step from the record alone, in torchvision."""
    v2 = pytest.importorskip("torchvision.transforms.v2")
    assert (record["layout"], record["dtype"], record["channels"]) == ("NCHW", "float32", "RGB")
    resize, crop = record["resize"], record["crop"]
    assert resize["interpolation"] == "bilinear" and resize["antialias"] is True
    steps = [v2.Resize(resize["size"], antialias=True)]
    if crop is not None:
        assert crop["mode"] == "center"
        steps.append(v2.CenterCrop(crop["size"]))
    assert record["pixel_range"] == [0, record["scale"]] == [0, 255]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(record["mean"], record["std"])]
    out = v2.Compose(steps)(image).unsqueeze(0)
    assert list(out.shape[1:]) == record["input_size"]
    return out


@pytest.mark.parametrize(
    "transform",
    [Preprocess((24, 20), MEAN, STD), Preprocess((24, 24), MEAN, STD, "shorter_side", 27)],
    ids=["exact", "shorter_side"],
)
def test_the_description_alone_reproduces_the_transform(transform):
    record = json.loads(json.dumps(transform.describe()))  # what an export stores: JSON
    image = torch.randint(0, 256, (3, 45, 61), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    assert (_apply_record(record, image) - transform(image)).abs().max().item() <= 1e-5
