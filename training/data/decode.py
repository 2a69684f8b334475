"""Image decoding: any PIL-readable file or bytes to RGB uint8 arrays, with a process pool for many."""

from __future__ import annotations

import functools
import io
import itertools
import multiprocessing
import os
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

_DECODE_WORKERS = 2
_POOL_MIN_IMAGES = 2048
_POOL_CHUNK = 256
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image as RGB, loaded (palette images with transparency go through RGBA, as PIL asks)."""
    if im.mode == "RGB":
        im.load()
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _decode_image(source: bytes | str, size: int) -> np.ndarray | None:
    """Decode an encoded image (bytes or a file path) to uint8 ``(size, size, 3)``; ``None`` if unreadable."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            image = _to_rgb(im)
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except _DECODE_ERRORS:
        return None


def _decode_task(task: tuple[str, bytes | str], size: int) -> tuple[str, np.ndarray | None]:
    name, source = task
    return name, _decode_image(source, size)


def _decode_many(tasks: Iterator[tuple[str, bytes | str]], size: int) -> dict[str, np.ndarray | None]:
    """Decode ``(name, source)`` tasks; a pool of 2 processes takes over once there are many."""
    head = list(itertools.islice(tasks, _POOL_MIN_IMAGES))
    workers = min(_DECODE_WORKERS, os.cpu_count() or 1)
    work = functools.partial(_decode_task, size=size)
    if len(head) < _POOL_MIN_IMAGES or workers < 2:
        return dict(map(work, itertools.chain(head, tasks)))
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    with context.Pool(workers) as pool:
        return dict(pool.imap(work, itertools.chain(head, tasks), chunksize=_POOL_CHUNK))


def _image_size(source: bytes | str) -> tuple[int, int] | None:
    """``(width, height)`` from an image header, or ``None`` if it is not a readable image."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            return im.size
    except _DECODE_ERRORS:
        return None


def _first_image_size(sources: Iterable[bytes | str]) -> tuple[int, int] | None:
    """Size of the first readable image among ``sources``."""
    return next((size for size in map(_image_size, sources) if size is not None), None)
