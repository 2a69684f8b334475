"""The data layer: embedded digits, synthetic data, ImageFolder trees and archives, cache, batching."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmarks.datasets import cifar10_archive
from training.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SMALL_IMAGE_MAX,
    Data,
    DataError,
    StreamData,
    TensorData,
    decode,
    folder,
    load_data,
    memory,
    order,
)

CIFAR = cifar10_archive()
CACHE_NAME = re.compile(r"[0-9a-f]{64}-(\d+)\.safetensors")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write into the user's ~/.cache/pareco, whatever a test forgets to pass."""
    monkeypatch.setenv("PARECO_CACHE", str(tmp_path / "default_cache"))


def _save(path: Path, size: int, color: tuple[int, int, int], mode: str = "RGB", seed: int = 0) -> None:
    """Write a noisy image of one colour; the format follows the file suffix."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "L":
        image = image.convert("L")
    elif mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(128)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def _class_folder(folder: Path, color: tuple[int, int, int], count: int, size: int, extras: bool) -> None:
    for i in range(count):
        _save(folder / f"{i:02d}.{'jpg' if i % 2 else 'png'}", size, color, seed=i)
    if extras:
        _save(folder / "grey.png", size, color, mode="L")
        _save(folder / "alpha.png", size, color, mode="RGBA")
        (folder / "notes.txt").write_text("not an image")
        (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")


def make_tree(root: Path, split: bool, size: int = 12) -> Path:
    """cat + dog, 5 readable images each in training (incl. a grey and an RGBA PNG in cat), a .txt and a
    corrupt .jpg in cat, a README at the top; with ``split``, test/ holds 2 images per class."""
    train = root / "train" if split else root
    _class_folder(train / "cat", (200, 60, 60), 3, size, extras=True)
    _class_folder(train / "dog", (60, 60, 200), 5, size, extras=False)
    if split:
        _class_folder(root / "test" / "cat", (200, 60, 60), 2, size, extras=False)
        _class_folder(root / "test" / "dog", (60, 60, 200), 2, size, extras=False)
    (root / "README.md").write_text("a tiny tree")
    return root


def make_archive(tree: Path, out: Path, wrapper: str = "") -> Path:
    """Pack ``tree`` into ``out`` (.tar or gzip by suffix), under ``wrapper/`` or at the top."""
    mode = "w:gz" if out.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(out, mode) as tar:
        tar.add(tree, arcname=wrapper or ".")
    return out


def load_quiet(*args: object, **kwargs: object) -> Data:
    """``load_data`` with its warnings silenced (for tests that check something else)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_data(*args, **kwargs)


def everything(data: Data, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Every validation image and label, concatenated."""
    xs, ys = zip(*data.val_batches(batch_size), strict=True)
    return torch.cat(xs), torch.cat(ys)


def all_train(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training image, un-augmented, as one batch."""
    return next(data.train_batches(data.info.num_train, epoch=0, seed=0, augment=False))


# --- digits


@pytest.mark.slow
def test_digits_shapes_counts_and_split() -> None:
    d = load_data("digits", device="cpu")
    assert isinstance(d, TensorData)
    assert d.info.name == "digits"
    assert d.info.input_size == (3, 32, 32)
    assert d.info.class_names == [str(i) for i in range(10)]
    # 20 % validation, then 10 % of the remaining 1438 held out for selection (never trained on)
    assert (d.info.num_train, d.info.num_val, d.info.num_selection) == (1438 - 144, 359, 144)
    assert d.info.val_split == "val"
    assert len(set(d.info.mean)) == 1 and len(d.info.std) == 3  # grey replicated to RGB
    x, y = next(d.train_batches(128, epoch=0, seed=0))
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert d.steps_per_epoch(128) == 1294 // 128
    vx, vy = everything(d)
    assert vx.shape == (359, 3, 32, 32)
    counts = torch.bincount(vy, minlength=10)
    assert counts.min() >= 33 and counts.max() <= 38  # stratified: ~36 of each digit
    tx, _ = all_train(d)
    # normalised with the training set's own statistics
    assert abs(float(tx.mean())) < 1e-3 and abs(float(tx.std()) - 1) < 1e-2


@pytest.mark.slow
def test_digits_size_fraction_and_seed() -> None:
    d = load_data("digits", image_size=16, val_fraction=0.5, seed=3, device="cpu")
    assert d.info.input_size == (3, 16, 16)
    assert d.info.num_val == round(1797 * 0.5)
    other = load_data("digits", image_size=16, val_fraction=0.5, seed=4, device="cpu")
    assert not torch.equal(everything(d)[1], everything(other)[1])


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def _selection(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*data.selection_batches(64), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_the_selection_split_is_held_out_of_training_seeded_and_stratified() -> None:
    d = load_data("synthetic:400:4", image_size=8, seed=5, device="cpu")
    train, val, sel = _rows(all_train(d)[0]), _rows(everything(d)[0]), _rows(_selection(d)[0])
    assert (len(train), len(val), len(sel)) == (d.info.num_train, d.info.num_val, d.info.num_selection)
    assert (len(val), len(sel)) == (80, 32)  # 20 % of 400, then 10 % of the remaining 320
    assert not train & sel and not val & sel and not train & val  # never trained on, never the val images
    assert torch.bincount(_selection(d)[1], minlength=4).tolist() == [8, 8, 8, 8]
    again = load_data("synthetic:400:4", image_size=8, seed=5, device="cpu")
    assert torch.equal(_selection(again)[0], _selection(d)[0])
    other = load_data("synthetic:400:4", image_size=8, seed=6, device="cpu")
    assert not torch.equal(_selection(other)[1], _selection(d)[1])


def test_without_a_selection_split_points_are_chosen_on_validation() -> None:
    d = load_data("synthetic:100:4", image_size=8, select_fraction=0, device="cpu")
    assert d.info.num_selection == 0 and d.info.num_train == 80
    assert torch.equal(_selection(d)[0], everything(d)[0])


def test_streamed_data_holds_out_a_selection_split(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "big", split=True, size=80)
    d = load_quiet(str(root), image_size=72, select_fraction=0.3, device="cpu")
    assert isinstance(d, StreamData) and (d.info.num_train, d.info.num_selection) == (8, 3)
    assert not {p for p, _ in d._selection.samples} & {p for p, _ in d._train_plain.samples}
    assert sum(len(y) for _, y in d.selection_batches(2)) == 3


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_bad_select_fraction_is_refused(fraction: float) -> None:
    with pytest.raises(DataError, match="select_fraction must be in"):
        load_data("digits", select_fraction=fraction)


# --- synthetic


def test_synthetic_default_and_spec() -> None:
    d = load_data("synthetic", device="cpu")
    assert d.info.num_train + d.info.num_val + d.info.num_selection == 512 and len(d.info.class_names) == 10
    d = load_data("synthetic:200:4", image_size=16, device="cpu")
    assert d.info.input_size == (3, 16, 16)
    assert (d.info.num_train, d.info.num_val, d.info.num_selection) == (144, 40, 16)
    tx, ty = all_train(d)
    vx, vy = everything(d)
    # learnable: the nearest class mean classifies held-out images
    centres = torch.stack([tx[ty == c].mean(0) for c in range(4)]).flatten(1)
    predicted = torch.cdist(vx.flatten(1), centres).argmin(1)
    assert (predicted == vy).float().mean() > 0.9
    assert torch.equal(everything(load_data("synthetic:200:4", image_size=16, device="cpu"))[0], vx)


@pytest.mark.parametrize("spec", ["synthetic:x:3", "synthetic:10", "synthetic:10:1", "synthetic:3:5"])
def test_synthetic_bad_spec(spec: str) -> None:
    with pytest.raises(DataError, match="synthetic"):
        load_data(spec, device="cpu")


# --- ImageFolder


def _messages(record: list[warnings.WarningMessage]) -> str:
    return "\n".join(str(w.message) for w in record)


def test_directory_without_split(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets", split=False)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_data(str(root), cache_dir=str(tmp_path / "cache"), device="cpu")
    text = _messages(record)
    assert "ignored 1 file(s)" in text and "cat/notes.txt" in text
    assert "skipped 1 unreadable image(s)" in text and "cat/broken.jpg" in text
    assert "README" not in text
    assert d.info.name == "pets"
    assert d.info.class_names == ["cat", "dog"]
    assert d.info.input_size == (3, 12, 12)
    assert d.info.num_train + d.info.num_val + d.info.num_selection == 10 and d.info.num_val == 2
    assert sorted(everything(d)[1].tolist()) == [0, 1]  # stratified: one of each
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and CACHE_NAME.fullmatch(files[0].name).group(1) == "12"


def test_directory_with_train_test_split(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets", split=True)
    d = load_quiet(str(root), cache_dir=str(tmp_path / "cache"), device="cpu", val_fraction=0.5)
    # val_fraction is ignored for split trees; 10 % of train/ is held out for selection
    assert (d.info.num_train, d.info.num_val, d.info.num_selection) == (9, 4, 1)
    assert d.info.val_split == "test"
    assert everything(d)[1].tolist() == [0, 0, 1, 1]
    resized = load_quiet(str(root), image_size=8, cache_dir=str(tmp_path / "cache"), device="cpu")
    assert resized.info.input_size == (3, 8, 8)
    assert len(list((tmp_path / "cache").iterdir())) == 2


@pytest.mark.parametrize("as_archive", [False, True])
def test_val_folder_preferred_over_test_and_the_unused_test_reported(
    tmp_path: Path, as_archive: bool
) -> None:
    root = make_tree(tmp_path / "pets", split=True)
    _class_folder(root / "val" / "cat", (200, 60, 60), 1, 12, extras=False)
    _class_folder(root / "val" / "dog", (60, 60, 200), 1, 12, extras=False)
    spec = make_archive(root, tmp_path / "pets.tgz", wrapper="pets") if as_archive else root
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_data(str(spec), cache_dir=str(tmp_path / "cache"), device="cpu")
    assert d.info.num_val == 2 and d.info.val_split == "val"
    prefix = "pets/" if as_archive else ""
    reports = [str(w.message) for w in record if "beside it" in str(w.message)]
    assert reports == [
        f"{spec}: validating on {prefix}val/ (2 images); {prefix}test/ beside it (4 images) is not used; "
        f"to validate on {prefix}test/ instead, move {prefix}val/ out of the tree"
    ]
    assert "ignored 1 file(s)" in _messages(record), "test/ images are not reported as stray files"


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".tgz"])
@pytest.mark.parametrize("split", [False, True])
def test_archive_equals_directory(tmp_path: Path, suffix: str, split: bool) -> None:
    root = make_tree(tmp_path / "pets", split=split)
    archive = make_archive(root, tmp_path / f"pets{suffix}", wrapper="pets" if suffix == ".tgz" else "")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        a = load_data(str(archive), cache_dir=str(tmp_path / "cache_a"), device="cpu")
    text = _messages(record)
    assert "ignored 1 file(s)" in text and "skipped 1 unreadable image(s)" in text
    d = load_quiet(str(root), cache_dir=str(tmp_path / "cache_d"), device="cpu")
    assert a.info == d.info
    for got, want in zip(everything(a) + all_train(a), everything(d) + all_train(d), strict=True):
        assert torch.equal(got, want)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert [p.name for p in (tmp_path / "cache_a").iterdir()] == [f"{digest}-12.safetensors"]


@pytest.mark.parametrize("kind", ["directory", "archive"])
def test_second_load_reads_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    root = make_tree(tmp_path / "pets", split=False)
    spec = str(root if kind == "directory" else make_archive(root, tmp_path / "pets.tar.gz"))
    first = load_quiet(spec, cache_dir=str(tmp_path / "cache"), device="cpu")

    def fail(*_: object) -> None:
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(decode, "_decode_image", fail)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a cache hit warns about nothing
        second = load_data(spec, cache_dir=str(tmp_path / "cache"), device="cpu")
    assert second.info == first.info
    assert torch.equal(everything(second)[0], everything(first)[0])


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "pets", split=True)
    monkeypatch.setenv("PARECO_CACHE", str(tmp_path / "env_cache"))
    load_quiet(str(root), device="cpu")
    assert len(list((tmp_path / "env_cache").glob("*.safetensors"))) == 1


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pets", split=True)
    first = load_quiet(str(root), cache_dir=str(tmp_path / "cache"), device="cpu")
    (cache_file,) = (tmp_path / "cache").iterdir()
    cache_file.write_bytes(b"garbage")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        again = load_data(str(root), cache_dir=str(tmp_path / "cache"), device="cpu")
    assert "unreadable data cache" in _messages(record)
    assert torch.equal(everything(again)[0], everything(first)[0])
    assert cache_file.stat().st_size > 100


def test_pool_decode_matches_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "pets", split=True)
    archive = make_archive(root, tmp_path / "pets.tar.gz")
    inline = load_quiet(str(archive), cache_dir=str(tmp_path / "c1"), device="cpu")
    monkeypatch.setattr(decode, "_POOL_MIN_IMAGES", 4)
    pooled = load_quiet(str(archive), cache_dir=str(tmp_path / "c2"), device="cpu")
    pooled_dir = load_quiet(str(root), cache_dir=str(tmp_path / "c3"), device="cpu")
    for other in (pooled, pooled_dir):
        assert torch.equal(everything(other)[0], everything(inline)[0])
        assert torch.equal(all_train(other)[0], all_train(inline)[0])


def test_decoder_handles_grey_rgba_palette_and_garbage(tmp_path: Path) -> None:
    _save(tmp_path / "grey.png", 10, (90, 90, 90), mode="L")
    _save(tmp_path / "alpha.png", 10, (90, 20, 20), mode="RGBA")
    palette = Image.new("P", (10, 10))
    palette.info["transparency"] = 0
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", transparency=0)
    grey = decode._decode_image(str(tmp_path / "grey.png"), 10)
    assert grey.shape == (10, 10, 3) and (grey[..., 0] == grey[..., 2]).all()
    assert decode._decode_image((tmp_path / "alpha.png").read_bytes(), 6).shape == (6, 6, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert decode._decode_image(buffer.getvalue(), 4).shape == (4, 4, 3)
    assert decode._decode_image(b"junk", 4) is None


# --- errors


def _bad_tree(root: Path, case: str) -> Path:
    if case == "empty":
        root.mkdir()
    elif case == "only_text":
        (root / "cat").mkdir(parents=True)
        (root / "cat" / "a.txt").write_text("x")
    elif case == "empty_class":
        make_tree(root, split=False)
        (root / "bird").mkdir()
    elif case == "class_of_text":
        make_tree(root, split=False)
        (root / "bird").mkdir()
        (root / "bird" / "readme.txt").write_text("x")
    elif case == "one_class":
        _class_folder(root / "cat", (1, 2, 3), 3, 8, extras=False)
    elif case == "flat":
        _class_folder(root, (1, 2, 3), 3, 8, extras=False)
    elif case == "val_only_class":
        make_tree(root, split=True)
        _class_folder(root / "test" / "bird", (1, 2, 3), 1, 8, extras=False)
    elif case == "all_corrupt":
        make_tree(root, split=False)
        (root / "bird").mkdir()
        (root / "bird" / "x.jpg").write_bytes(b"nope")
    return root


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", r"no images found"),
        ("only_text", r"no images found"),
        ("empty_class", r"class folder 'bird' has no images"),
        ("class_of_text", r"class folder 'bird' has no images"),
        ("one_class", r"only one class \('cat'\)"),
        ("flat", r"not inside class folders"),
        ("val_only_class", r"'test/bird' has no training folder"),
        ("all_corrupt", r"no readable image in class 'bird'"),
    ],
)
@pytest.mark.parametrize("as_archive", [False, True])
def test_tree_errors(tmp_path: Path, case: str, message: str, as_archive: bool) -> None:
    root = _bad_tree(tmp_path / "bad", case)
    spec = make_archive(root, tmp_path / "bad.tar.gz") if as_archive else root
    with pytest.raises(DataError, match=message) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_data(str(spec), cache_dir=str(tmp_path / "cache"), device="cpu")
    assert str(spec) in str(info.value) and "\n" not in str(info.value)


def test_path_and_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: no such file or directory; pass"):
        load_data(str(tmp_path / "nowhere"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes.txt: not a directory or a .tar"):
        load_data(str(tmp_path / "notes.txt"))
    with pytest.raises(DataError, match="mode 'fast'"):
        load_data("digits", mode="fast")
    with pytest.raises(DataError, match="val_fraction"):
        load_data("digits", val_fraction=1.0)
    with pytest.raises(DataError, match="image_size"):
        load_data("digits", image_size=0)
    with pytest.raises(DataError, match="cannot be streamed"):
        load_data("digits", mode="stream")
    d = load_data("synthetic:20:2", device="cpu")
    with pytest.raises(DataError, match="fewer than one global batch of 32"):
        d.steps_per_epoch(16, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        d.train_batches(4, epoch=0, seed=0, rank=2, world_size=2)


def test_corrupt_archives(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b definitely not gzip" * 10)
    with pytest.raises(
        DataError, match=r"junk.tar.gz: cannot read the archive .*re-download or re-create it"
    ):
        load_data(str(junk), cache_dir=str(tmp_path / "cache"), device="cpu")
    archive = make_archive(make_tree(tmp_path / "pets", split=True), tmp_path / "pets.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.tar.gz: cannot read the archive"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_data(str(cut), cache_dir=str(tmp_path / "cache"), device="cpu")


def test_large_images_in_an_archive_need_a_directory(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "big", split=False, size=80)
    archive = make_archive(root, tmp_path / "big.tar")
    with pytest.raises(
        DataError, match=r"big.tar: images of 80x80 px stream from a directory, not an archive"
    ):
        load_data(str(archive), cache_dir=str(tmp_path / "cache"), device="cpu")
    d = load_quiet(str(archive), image_size=16, cache_dir=str(tmp_path / "cache"), device="cpu")
    assert isinstance(d, TensorData) and d.info.input_size == (3, 16, 16)
    with pytest.raises(DataError, match=r"or give --image-size N <= 64 to decode them into memory"):
        load_data(str(archive), image_size=72, cache_dir=str(tmp_path / "cache"), device="cpu")


# --- batching


@pytest.fixture(scope="module")
def synth() -> TensorData:
    return load_data("synthetic:120:4", image_size=16, select_fraction=0, device="cpu")


def _epoch(data: Data, **kwargs: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.train_batches(**kwargs))


def test_train_batches_are_a_pure_function_of_seed_and_epoch(synth: TensorData) -> None:
    state = torch.get_rng_state()
    a = _epoch(synth, batch_size=16, epoch=3, seed=7)
    b = _epoch(synth, batch_size=16, epoch=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not used
    assert len(a) == synth.steps_per_epoch(16) == 96 // 16
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    plain = _epoch(synth, batch_size=16, epoch=3, seed=7, augment=False)
    next_epoch = _epoch(synth, batch_size=16, epoch=4, seed=7, augment=False)
    other_seed = _epoch(synth, batch_size=16, epoch=3, seed=8, augment=False)
    assert not torch.equal(plain[0][0], next_epoch[0][0])
    assert not torch.equal(plain[0][0], other_seed[0][0])


def test_augmentation_keeps_order_shape_and_dtype(synth: TensorData) -> None:
    aug = _epoch(synth, batch_size=32, epoch=0, seed=1)
    plain = _epoch(synth, batch_size=32, epoch=0, seed=1, augment=False)
    for (xa, ya), (xp, yp) in zip(aug, plain, strict=True):
        assert xa.shape == xp.shape == (32, 3, 16, 16) and xa.dtype == torch.float32
        assert xa.is_contiguous() and torch.isfinite(xa).all()
        assert torch.equal(ya, yp) and not torch.equal(xa, xp)


def test_crop_flip_is_exact() -> None:
    x = torch.randint(0, 256, (3, 3, 5, 6), dtype=torch.uint8)
    offsets = torch.tensor([[2, 2], [2, 2], [0, 4]])
    flips = torch.tensor([False, True, False])
    out = memory._crop_flip(x, offsets, flips, 2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out[0], x[0])
    assert torch.equal(out[1], x[1].flip(-1))
    assert torch.equal(out[2, :, 2:, :4], x[2, :, :3, 2:])
    assert out[2, :, :2].eq(0).all() and out[2, :, :, 4:].eq(0).all()


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_are_disjoint_and_cover_the_global_batch(synth: TensorData, world_size: int) -> None:
    kwargs = {"epoch": 2, "seed": 5, "augment": False}
    single = _epoch(synth, batch_size=8 * world_size, **kwargs)
    shards = [_epoch(synth, batch_size=8, rank=r, world_size=world_size, **kwargs) for r in range(world_size)]
    assert {len(s) for s in shards} == {len(single)} == {synth.steps_per_epoch(8, world_size)}
    rows = [{row.numpy().tobytes() for step in s for row in step[0]} for s in shards]
    assert sum(len(r) for r in rows) == len(set().union(*rows))  # disjoint
    for step, (x, y) in enumerate(single):
        assert torch.equal(torch.cat([s[step][0] for s in shards]), x)
        assert torch.equal(torch.cat([s[step][1] for s in shards]), y)


def test_val_and_calib_batches(synth: TensorData) -> None:
    vx, vy = everything(synth, batch_size=7)
    batches = list(synth.val_batches(7))
    assert [len(b[1]) for b in batches] == [7, 7, 7, 3]
    assert torch.equal(everything(synth, batch_size=24)[0], vx) and len(vy) == synth.info.num_val
    calib = list(synth.calib_batches(10, num_batches=3, seed=0))
    assert [len(y) for _, y in calib] == [10, 10, 10]
    again = list(synth.calib_batches(10, num_batches=3, seed=0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(calib, again, strict=True))
    assert not torch.equal(calib[0][0], next(synth.calib_batches(10, num_batches=1, seed=1))[0])
    train_rows = {row.numpy().tobytes() for row in all_train(synth)[0]}
    assert all(row.numpy().tobytes() in train_rows for x, _ in calib for row in x)  # not augmented
    assert sum(len(y) for _, y in synth.calib_batches(50, num_batches=9, seed=0)) == synth.info.num_train


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=60),
    st.floats(0, 0.9),
    st.integers(0, 2**31),
)
def test_split_is_seeded_stratified_disjoint_and_covering(
    labels: list[int], fraction: float, seed: int
) -> None:
    y = torch.tensor(labels)
    train, val = order._split(y, 5, fraction, seed)
    assert sorted(train.tolist() + val.tolist()) == list(range(len(labels)))
    assert len(val) <= round(len(labels) * fraction)
    counts = torch.bincount(y, minlength=5)
    assert (torch.bincount(y[val], minlength=5) <= (counts - 1).clamp(min=0)).all()
    assert torch.equal(order._split(y, 5, fraction, seed)[1], val)


# --- streaming


def test_large_images_stream_from_a_directory(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "big", split=True, size=80)
    with pytest.warns(UserWarning, match="ignored 1 file"):
        d = load_data(str(root), image_size=72, select_fraction=0, device="cpu")
    assert isinstance(d, StreamData)
    assert d.info.mean == IMAGENET_MEAN and d.info.std == IMAGENET_STD
    assert d.info.input_size == (3, 72, 72) and (d.info.num_train, d.info.num_val) == (11, 4)
    assert (d.info.num_selection, d.info.val_split) == (0, "test")
    d.num_workers = 0
    state = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broken.jpg may be drawn; its warning is checked below
        a = _epoch(d, batch_size=4, epoch=1, seed=0)
        assert torch.equal(torch.get_rng_state(), state)
        d.num_workers = 1  # the same batches whichever process decodes them
        b = _epoch(d, batch_size=4, epoch=1, seed=0)
        d.num_workers = 0
        plain = _epoch(d, batch_size=4, epoch=1, seed=0, augment=False)
    assert len(a) == 2 and a[0][0].shape == (4, 3, 72, 72) and a[0][1].dtype == torch.int64
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b, strict=True))
    assert torch.equal(plain[0][1], a[0][1]) and not torch.equal(plain[0][0], a[0][0])
    assert [len(y) for _, y in d.val_batches(3)] == [3, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [len(y) for _, y in d.calib_batches(5, num_batches=3, seed=0)] == [5, 5, 1]
    with pytest.warns(UserWarning, match="broken.jpg: unreadable image"):
        list(d.calib_batches(11, num_batches=1, seed=0))


@pytest.mark.parametrize(("image_size", "shown"), [(None, 224), (72, 72)])
def test_streaming_is_said_with_its_size_and_how_to_choose(
    tmp_path: Path, image_size: int | None, shown: int
) -> None:
    root = make_tree(tmp_path / "big", split=True, size=80)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_data(str(root), image_size=image_size, device="cpu")
    assert isinstance(d, StreamData) and d.info.input_size == (3, shown, shown)
    notices = [str(w.message) for w in record if "stream from disk" in str(w.message)]
    assert notices == [
        f"{root}: images of 80x80 px (above 64 px) stream from disk at {shown}x{shown} px with "
        "RandomResizedCrop and ImageNet mean/std; --image-size N sets the size, N <= 64 decodes them "
        "into memory instead (pad-crop + flip, the data's own mean/std)"
    ]


@pytest.mark.parametrize(("size", "image_size"), [(80, 16), (80, 64), (12, 72)])
def test_image_size_decides_memory_for_large_images_and_keeps_small_ones_in_memory(
    tmp_path: Path, size: int, image_size: int
) -> None:
    root = make_tree(tmp_path / "pets", split=True, size=size)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_data(str(root), image_size=image_size, cache_dir=str(tmp_path / "cache"), device="cpu")
    assert isinstance(d, TensorData) and d.info.input_size == (3, image_size, image_size)
    assert d.info.mean != IMAGENET_MEAN, "in memory the data's own statistics normalise it"
    assert not any("stream" in str(w.message) for w in record)


@pytest.mark.slow  # 2 s: loads the digits dataset
def test_image_size_help_states_the_switch() -> None:
    from training.config import TrainConfig, _fields

    text = _fields()["image_size"].metadata["help"]
    assert TrainConfig.flag("image_size") == "--image-size"
    for fact in (f"at most {SMALL_IMAGE_MAX} px", f"N <= {SMALL_IMAGE_MAX} decodes", "224", "ImageNet"):
        assert fact in text
    assert load_data("digits", device="cpu").info.input_size == (3, 32, 32), "digits/synthetic 32"


def test_memory_mode_for_large_images(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "big", split=False, size=80)
    d = load_quiet(str(root), image_size=16, mode="memory", cache_dir=str(tmp_path / "cache"), device="cpu")
    assert isinstance(d, TensorData) and d.info.input_size == (3, 16, 16)
    small = make_tree(tmp_path / "small", split=False)
    assert isinstance(load_quiet(str(small), mode="stream", device="cpu"), StreamData)


# --- real data


@pytest.mark.skipif(not CIFAR.exists(), reason="CIFAR-10 JPEG archive not present")
def test_real_cifar_archive_first_members() -> None:
    listing = folder._Listing()
    members = folder._archive_members(CIFAR, listing)
    first = [next(members) for _ in range(16)]
    members.close()
    assert all(name.split("/")[0] in ("train", "test") for name, _ in first)
    assert decode._first_image_size(source for _, source in first) == (32, 32)
    decoded = [decode._decode_image(source, 32) for _, source in first]
    assert all(a is not None and a.shape == (32, 32, 3) and a.dtype == np.uint8 for a in decoded)


@pytest.mark.slow
def test_pareco_train_says_the_switch_and_the_unused_test_split_in_one_line_each(tmp_path, cli_process):
    root = make_tree(tmp_path / "big", split=True, size=80)
    _class_folder(root / "val" / "cat", (200, 60, 60), 1, 80, extras=False)
    _class_folder(root / "val" / "dog", (60, 60, 200), 1, 80, extras=False)
    # An unknown --arch stops the run right after the data is read: what was said about it is all there is.
    r = cli_process("train", "--data", str(root), "--arch", "no_such_arch", "--out", str(tmp_path / "run"))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1].startswith("error: unknown architecture 'no_such_arch'")
    stream = f"warning: {root}: images of 80x80 px (above 64 px) stream from disk at 224x224 px"
    assert sum(line.startswith(stream) for line in lines) == 1
    assert (
        f"warning: {root}: validating on val/ (2 images); test/ beside it (4 images) is not used; "
        "to validate on test/ instead, move val/ out of the tree"
    ) in lines
    assert all(line.startswith(("warning: ", "error: ")) for line in lines), r.stderr
