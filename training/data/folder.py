"""ImageFolder trees: listing a directory or a tar archive and finding its classes and splits."""

from __future__ import annotations

import os
import posixpath
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pareco_runtime.untrusted import FormatError, regular_file

from .base import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_SPLIT_NAMES = ("train", "val", "test")
MAX_IMAGE_BYTES = 256 << 20
"""The largest image file an archive member may be: an uncompressed 8-bit RGB image of 9,000 x 9,000 px
(243 MB) fits, PIL refuses to decode larger ones (its decompression-bomb limit is 179 megapixels)."""


def _is_image(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _clean(name: str) -> str | None:
    """Normalise an archive member name to a relative posix path; ``None`` for the root or hidden entries."""
    path = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    if path in ("", ".") or any(part.startswith(".") for part in path.split("/")):
        return None
    return path


@dataclass
class _Listing:
    """Files of a tree: image paths, non-image paths and directories, relative and in posix form."""

    images: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)
    dirs: set[str] = field(default_factory=set)


@dataclass
class _Tree:
    """An ImageFolder layout: sorted samples ``(path, label, is_val)``, class names, ignored files."""

    class_names: list[str]
    samples: list[tuple[str, int, bool]]
    val_split: str | None  # "val" or "test" for a train/ + val/ (or test/) tree; None without one
    ignored: list[str]
    # A test/ beside train/ and val/: the folder used (val/), the unused one and its image count.
    unused_split: tuple[str, str, int] | None = None


def _wrapper_depth(parts: list[tuple[str, ...]]) -> int:
    """How many leading folders every image shares (a wrapper such as ``cifar10/``) before the tree starts."""
    depth = 0
    while all(len(p) >= depth + 3 for p in parts) and len({p[depth] for p in parts}) == 1:
        if parts[0][depth] in _SPLIT_NAMES:
            break
        depth += 1
    return depth


def _build_tree(listing: _Listing, where: str) -> _Tree:
    """Find the layout (``train/`` + ``val/`` or ``test/``, or bare class folders) and label every image."""
    if not listing.images:
        raise DataError(
            f"{where}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); point it at an "
            "ImageFolder tree: <class>/<image> or train/<class>/<image> + val/<class>/<image>"
        )
    image_parts = [tuple(p.split("/")) for p in listing.images]
    depth = _wrapper_depth(image_parts)
    wrapper = image_parts[0][:depth]
    dir_parts = [tuple(d.split("/")) for d in listing.dirs]
    dir_parts = [d[depth:] for d in dir_parts if d[:depth] == wrapper and len(d) > depth]
    top = {p[depth] for p in image_parts if len(p) > depth + 1} | {d[0] for d in dir_parts}
    val_name = "val" if "val" in top else "test" if "test" in top else None
    if "train" in top and val_name is not None:
        roots: dict[tuple[str, ...], bool] = {("train",): False, (val_name,): True}
    elif "train" in top:
        roots = {("train",): False}
    else:
        roots = {(): False}
    counts: dict[tuple[tuple[str, ...], str], int] = {}
    for d in dir_parts:
        for split in roots:
            if len(d) == len(split) + 1 and d[: len(split)] == split:
                counts.setdefault((split, d[-1]), 0)
    members: list[tuple[str, tuple[str, ...], str, bool]] = []
    ignored: list[str] = []
    unused_splits = {("val",), ("test",)} - set(roots)
    unused = 0
    for path, parts in zip(listing.images, image_parts, strict=True):
        rel = parts[depth:]
        root = next((r for r in roots if len(rel) >= len(r) + 2 and rel[: len(r)] == r), None)
        if root is None:
            # Images of an unused split (test/ beside val/) are counted for one report; others listed.
            if rel[:1] in unused_splits:
                unused += 1
            else:
                ignored.append(path)
            continue
        cls = rel[len(root)]
        counts[(root, cls)] = counts.get((root, cls), 0) + 1
        members.append((path, root, cls, roots[root]))
    ignored += [p for p in listing.others if len(p.split("/")) > depth + 1]
    if not counts:
        raise DataError(
            f"{where}: images are not inside class folders; arrange them as <class>/<image> "
            "or train/<class>/<image> + val/<class>/<image>"
        )
    for (root, cls), count in sorted(counts.items()):
        if count == 0:
            folder = "/".join(wrapper + root + (cls,))
            raise DataError(f"{where}: class folder '{folder}' has no images; add images to it or remove it")
    train_root = next(r for r, is_val in roots.items() if not is_val)
    class_names = sorted(cls for root, cls in counts if root == train_root)
    if len(class_names) < 2:
        raise DataError(
            f"{where}: only one class ('{class_names[0]}'); a classifier needs at least two class folders"
        )
    label = {name: i for i, name in enumerate(class_names)}
    for root, cls in counts:
        if cls not in label:
            folder = "/".join(wrapper + root + (cls,))
            raise DataError(
                f"{where}: validation class folder '{folder}' has no training folder of the same name; "
                "rename or remove it"
            )
    samples = sorted((path, label[cls], is_val) for path, _, cls, is_val in members)
    val_split = val_name if len(roots) == 2 else None
    return _Tree(
        class_names=class_names,
        samples=samples,
        val_split=val_split,
        ignored=sorted(ignored),
        unused_split=(
            ("/".join((*wrapper, "val")), "/".join((*wrapper, "test")), unused)
            if unused and val_split == "val"
            else None
        ),
    )


def _report_tree(where: str, tree: _Tree) -> None:
    """Warn about what the tree holds but training will not use: stray files, and a test/ beside val/."""
    if tree.ignored:
        warnings.warn(
            f"{where}: ignored {len(tree.ignored)} file(s) that are not images in class folders "
            f"(e.g. '{tree.ignored[0]}')",
            stacklevel=3,
        )
    if tree.unused_split is not None:
        val, folder, count = tree.unused_split
        used = sum(is_val for _, _, is_val in tree.samples)
        warnings.warn(
            f"{where}: validating on {val}/ ({used} images); {folder}/ beside it ({count} images) is "
            f"not used; to validate on {folder}/ instead, move {val}/ out of the tree",
            stacklevel=3,
        )


def _walk(root: Path) -> _Listing:
    """List a directory tree (following links, skipping hidden entries), sorted.

    DataError for an image that is not a regular file (a FIFO or a device would block its decoder
    for ever) and for a link to a folder that leads back to one above it (the walk would not end).
    """
    listing = _Listing()
    # Per folder still to walk, the (device, inode) of it and of every folder above it.
    above = {os.fspath(root): frozenset({_folder_id(root)})}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        chain = above.pop(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            folder = os.path.join(dirpath, d)
            if _folder_id(folder) in chain:
                raise DataError(
                    f"{folder}: a link to a folder above it, so the tree has no end; remove the link"
                )
            above[folder] = chain | {_folder_id(folder)}
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        if prefix:
            listing.dirs.add(rel)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if _is_image(name):
                _check_regular(os.path.join(dirpath, name))
                listing.images.append(prefix + name)
            else:
                listing.others.append(prefix + name)
    listing.images.sort()
    listing.others.sort()
    return listing


def _folder_id(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _check_regular(path: str) -> None:
    try:
        regular_file(path, "image file", "remove it from the tree or replace it with the image")
    except FormatError as exc:
        raise DataError(str(exc)) from None


def _archive_members(path: Path, listing: _Listing) -> Iterator[tuple[str, bytes]]:
    """Stream ``(name, bytes)`` of the image members of a tar archive, filling ``listing`` on the way."""
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            name = _clean(member.name)
            if name is None:
                continue
            if member.isdir():
                listing.dirs.add(name)
            elif member.isfile():
                if _is_image(name):
                    if member.size > MAX_IMAGE_BYTES:  # a .tar.gz can inflate one member to any size
                        raise DataError(
                            f"{path}: member '{name}' is {member.size} bytes, more than the "
                            f"{MAX_IMAGE_BYTES} an image may take; re-create the archive from good images"
                        )
                    listing.images.append(name)
                    handle = archive.extractfile(member)
                    yield name, handle.read() if handle is not None else b""
                else:
                    listing.others.append(name)


def _dataset_name(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
