"""The decoded-image cache: a safetensors file per dataset and image size, named by a digest of its files."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from pareco_runtime.atomic import atomic_path, remove_stale_temporaries
from pareco_runtime.untrusted import parse_json

CACHE_FORMAT = "pareco-data/2"  # 2: the validation split's name (val_split), not a presplit flag


def _cache_dir(cache_dir: str | None) -> Path:
    return Path(cache_dir or os.environ.get("PARECO_CACHE") or Path.home() / ".cache" / "pareco").expanduser()


def _sha256_listing(root: Path, images: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in images:
        st = (root / rel).stat()
        digest.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class _Decoded:
    """Decoded images ``(N, 3, S, S)`` uint8 with labels, validation flags and class names."""

    images: Tensor
    labels: Tensor
    is_val: Tensor
    class_names: list[str]
    val_split: str | None


def _read_cache(file: Path) -> _Decoded | None:
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), "pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("format") != CACHE_FORMAT:
            return None
        tensors = load_file(str(file))
        return _Decoded(
            images=tensors["images"],
            labels=tensors["labels"],
            is_val=tensors["is_val"].bool(),
            class_names=parse_json(meta["class_names"], file, "data cache", "it is decoded again"),
            val_split=meta["val_split"] or None,
        )
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        warnings.warn(f"{file}: unreadable data cache ({exc}); decoding the images again", stacklevel=3)
        return None


def _write_cache(file: Path, decoded: _Decoded) -> None:
    tensors = {
        "images": decoded.images.contiguous(),
        "labels": decoded.labels,
        "is_val": decoded.is_val.to(torch.uint8),
    }
    meta = {
        "format": CACHE_FORMAT,
        "class_names": json.dumps(decoded.class_names),
        "val_split": decoded.val_split or "",
    }
    try:
        remove_stale_temporaries(file.parent)  # a decode killed mid-write leaves a file of its size
        with atomic_path(file) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
    except OSError as exc:
        warnings.warn(
            f"{file}: cannot write the data cache ({exc}); the next load decodes again", stacklevel=3
        )
