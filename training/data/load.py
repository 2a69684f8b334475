""":func:`load_data`: a dataset spec (digits, synthetic, an ImageFolder tree or archive) to :class:`Data`."""

from __future__ import annotations

import tarfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from pareco_runtime.untrusted import FormatError, regular_file, sha256_file

from .base import Data, DataError, Holdout
from .builtin import _digits, _synthetic
from .cache import _cache_dir, _Decoded, _read_cache, _sha256_listing, _write_cache
from .decode import _decode_many, _first_image_size
from .folder import (
    ARCHIVE_SUFFIXES,
    _archive_members,
    _build_tree,
    _dataset_name,
    _Listing,
    _report_tree,
    _Tree,
    _walk,
)
from .memory import TensorData, _tensor_data
from .order import _split
from .stream import StreamData

SMALL_IMAGE_MAX = 64
"""In ``mode="auto"``, images whose longer side is at most this many pixels, or any images asked for
at an ``image_size`` of at most this, are decoded into memory; larger ones stream from disk."""
_MODES = ("auto", "memory", "stream")
_DEFAULT_STREAM_SIZE = 224
_DEFAULT_SIZE = 32
_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)
_PASS_DATA = "pass an ImageFolder directory, a .tar/.tar.gz/.tgz archive of one, 'digits' or 'synthetic'"


def _assemble(where: str, tree: _Tree, arrays: dict[str, np.ndarray | None]) -> _Decoded:
    """Stack the decoded images of ``tree`` in sample order, skipping (and reporting) unreadable ones."""
    kept = [(a, label, is_val) for path, label, is_val in tree.samples if (a := arrays[path]) is not None]
    bad = [path for path, _, _ in tree.samples if arrays[path] is None]
    if bad:
        warnings.warn(f"{where}: skipped {len(bad)} unreadable image(s) (e.g. '{bad[0]}')", stacklevel=3)
    labels = torch.tensor([label for _, label, _ in kept], dtype=torch.int64)
    missing = sorted(set(range(len(tree.class_names))) - set(labels.tolist()))
    if missing:
        raise DataError(
            f"{where}: no readable image in class '{tree.class_names[missing[0]]}'; "
            "replace its files or remove the folder"
        )
    images = torch.from_numpy(np.stack([a for a, _, _ in kept]))
    return _Decoded(
        images=images.permute(0, 3, 1, 2).contiguous(),
        labels=labels,
        is_val=torch.tensor([v for _, _, v in kept], dtype=torch.bool),
        class_names=tree.class_names,
        val_split=tree.val_split,
    )


def _from_decoded(name: str, decoded: _Decoded, split: Holdout, device: torch.device) -> TensorData:
    if decoded.val_split is None:
        return _tensor_data(name, (decoded.images, decoded.labels), None, decoded.class_names, split, device)
    train, val = ~decoded.is_val, decoded.is_val
    return _tensor_data(
        name,
        (decoded.images[train], decoded.labels[train]),
        (decoded.images[val], decoded.labels[val]),
        decoded.class_names,
        split,
        device,
        decoded.val_split,
    )


def _hold_out(
    samples: list[tuple[str, int]], num_classes: int, fraction: float, seed: int, purpose: str
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(kept, held out): a seeded stratified ``fraction`` of ``(path, label)`` samples held out."""
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    kept, held = _split(labels, num_classes, fraction, seed, purpose)
    return [samples[i] for i in kept.tolist()], [samples[i] for i in held.tolist()]


def _streams(mode: str, first: tuple[int, int], image_size: int | None) -> bool:
    """Whether images whose first one is ``first`` (width, height) stream from disk rather than
    being decoded into memory (see :data:`SMALL_IMAGE_MAX`)."""
    if mode != "auto":
        return mode == "stream"
    return max(first) > SMALL_IMAGE_MAX and (image_size is None or image_size > SMALL_IMAGE_MAX)


def _stream_notice(where: str, first: tuple[int, int], size: int) -> None:
    """Say that large images stream, and at what size: the pipeline differs from small images' in
    augmentation and normalisation, which a user of ``--image-size`` should choose knowingly."""
    warnings.warn(
        f"{where}: images of {first[0]}x{first[1]} px (above {SMALL_IMAGE_MAX} px) stream from disk at "
        f"{size}x{size} px with RandomResizedCrop and ImageNet mean/std; --image-size N sets the size, "
        f"N <= {SMALL_IMAGE_MAX} decodes them into memory instead (pad-crop + flip, the data's own mean/std)",
        stacklevel=4,
    )


def _load_directory(
    root: Path,
    image_size: int | None,
    split: Holdout,
    cache: Path,
    device: torch.device,
    mode: str,
) -> Data:
    where = str(root)
    listing = _walk(root)
    tree = _build_tree(listing, where)
    first = _first_image_size(str(root / path) for path, _, _ in tree.samples)
    if first is None:
        raise DataError(f"{where}: none of the {len(tree.samples)} image files can be read; check the files")
    name = _dataset_name(root)
    if _streams(mode, first, image_size):
        size = image_size or _DEFAULT_STREAM_SIZE
        if mode == "auto":
            _stream_notice(where, first, size)
        _report_tree(where, tree)
        train = [(str(root / p), label) for p, label, is_val in tree.samples if not is_val]
        val = [(str(root / p), label) for p, label, is_val in tree.samples if is_val]
        num_classes = len(tree.class_names)
        if tree.val_split is None:
            train, val = _hold_out(train, num_classes, split.val_fraction, split.seed, "split")
        selection = None
        if split.select_fraction > 0:
            train, selection = _hold_out(train, num_classes, split.select_fraction, split.seed, "selection")
        return StreamData(
            name,
            (train, val, selection),
            tree.class_names,
            size,
            device,
            val_split=tree.val_split or "val",
        )
    size = image_size or min(first)
    file = cache / f"{_sha256_listing(root, [p for p, _, _ in tree.samples])}-{size}.safetensors"
    decoded = _read_cache(file)
    if decoded is None:
        _report_tree(where, tree)
        arrays = _decode_many(((p, str(root / p)) for p, _, _ in tree.samples), size)
        decoded = _assemble(where, tree, arrays)
        _write_cache(file, decoded)
    return _from_decoded(name, decoded, split, device)


def _load_archive(
    path: Path,
    image_size: int | None,
    split: Holdout,
    cache: Path,
    device: torch.device,
    mode: str,
) -> Data:
    where = str(path)
    try:
        digest = sha256_file(path)
        peek = _Listing()
        first = _first_image_size(source for _, source in _archive_members(path, peek))
        if first is None:  # the whole archive was read: report a layout problem first, if there is one
            _build_tree(peek, where)
            raise DataError(f"{where}: no readable image in the archive; re-create it from good images")
        if _streams(mode, first, image_size):
            raise DataError(
                f"{where}: images of {first[0]}x{first[1]} px stream from a directory, not an archive; "
                f"extract the archive and pass the folder, or give --image-size N <= {SMALL_IMAGE_MAX} "
                "to decode them into memory at N px"
            )
        size = image_size or min(first)
        file = cache / f"{digest}-{size}.safetensors"
        decoded = _read_cache(file)
        if decoded is None:
            listing = _Listing()
            arrays = _decode_many(_archive_members(path, listing), size)
            tree = _build_tree(listing, where)
            _report_tree(where, tree)
            decoded = _assemble(where, tree, arrays)
            _write_cache(file, decoded)
    except _ARCHIVE_ERRORS as exc:
        raise DataError(
            f"{where}: cannot read the archive ({type(exc).__name__}: {exc}); re-download or re-create it"
        ) from exc
    return _from_decoded(_dataset_name(path), decoded, split, device)


def is_builtin(spec: str) -> bool:
    """Whether ``spec`` names data made in memory ('digits', 'synthetic', 'synthetic:N:C'), not files."""
    return spec == "digits" or spec == "synthetic" or spec.startswith("synthetic:")


def load_data(
    spec: str,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    select_fraction: float = 0.1,
    cache_dir: str | None = None,
    device: str | torch.device | None = None,
    mode: str = "auto",
) -> Data:
    """Load a dataset for training.

    ``spec`` is ``"digits"`` (scikit-learn's bundled 8x8 digits, no download), ``"synthetic"`` /
    ``"synthetic:N:C"`` (seeded random data for tests), or a directory / ``.tar``, ``.tar.gz``, ``.tgz``
    archive holding an ImageFolder tree (``train/<class>/*`` + ``val/`` or ``test/``, or bare ``<class>/*``,
    in which case a seeded stratified ``val_fraction`` is held out as validation); then a seeded stratified
    ``select_fraction`` of the training images is held out, never trained on, to choose front points on
    (``Data.selection_batches``; 0: choose on the validation split). With a ``val/`` and a ``test/``
    beside ``train/``, ``val/`` is used and the unused ``test/`` is reported. ``mode="auto"`` decodes
    small images (longer side <= 64 px, judged from the first image), and any images when
    ``image_size`` is 64 or less, into memory, cached in ``cache_dir`` (default ``$PARECO_CACHE`` or
    ``~/.cache/pareco``); larger ones stream from a directory, which it reports (a UserWarning
    naming the sizes). ``"memory"`` and ``"stream"`` force one. ``image_size`` defaults to 32 for
    digits/synthetic, the first image's shorter side in memory and 224 when streaming. ``device``
    defaults to CUDA when available. Raises ``DataError``.
    """
    if mode not in _MODES:
        raise DataError(f"mode '{mode}' is not one of {', '.join(_MODES)}")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 <= select_fraction < 1:
        raise DataError(f"select_fraction must be in [0, 1), got {select_fraction}")
    split = Holdout(val_fraction, select_fraction, seed)
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be a positive number of pixels, got {image_size}")
    dev = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if is_builtin(spec):
        if mode == "stream":
            raise DataError(f"'{spec}' is held in memory and cannot be streamed; use mode='auto' or 'memory'")
        if spec == "digits":
            return _digits(image_size or _DEFAULT_SIZE, split, dev)
        return _synthetic(spec, image_size or _DEFAULT_SIZE, split, dev)
    path = Path(spec).expanduser()
    cache = _cache_dir(cache_dir)
    if path.is_dir():
        return _load_directory(path, image_size, split, cache, dev, mode)
    try:  # a FIFO or a device would block the archive reader or stream without end
        regular_file(path, "file or directory", _PASS_DATA)
    except FormatError as exc:
        raise DataError(str(exc)) from None
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"{spec}: not a directory or a .tar/.tar.gz/.tgz archive; pass an ImageFolder tree")
    return _load_archive(path, image_size, split, cache, dev, mode)
