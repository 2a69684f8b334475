"""The files a manifest names (its weight file, its BN statistics files), as paths inside the manifest's folder.

pareco refuses to read a file outside that folder, so a stranger's manifest cannot point it at
``/etc/passwd`` or ``../../secrets``; the check is on the text of the path.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from ..untrusted import format_error as _error


def weights_path(manifest_path: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Absolute path of the weight file a schema-valid manifest names, inside the manifest's folder.

    ``weights.file`` must be a file name or a '/'-separated relative path that stays inside the
    folder holding the manifest (:func:`inside_folder`).
    """
    return inside_folder(manifest_path, manifest["weights"]["file"], "weights.file")


def inside_folder(manifest_path: str | os.PathLike[str], file: str, where: str) -> Path:
    """Absolute path of ``file``, a file the manifest names in field ``where``, inside the manifest's folder.

    ``file`` must be a file name or a '/'-separated relative path that stays inside the folder holding
    the manifest; an absolute path, a drive, a backslash or a '..' leaving that folder raises
    :class:`FormatError`. The check is on the text of the path (symbolic links placed in the folder
    by its owner are followed when the file is opened).
    """
    parts = _inside_parts(file)
    if parts is None:
        raise _error(
            manifest_path,
            f"{where} '{file}' is not a file inside the manifest's folder, and "
            "pareco refuses to read weights outside its folder",
            "put the file beside the manifest and give its name, or a relative path with '/'",
        )
    return Path(os.path.abspath(manifest_path)).parent.joinpath(*parts)


def _inside_parts(file: str) -> list[str] | None:
    """The normalised components of a relative path that stays inside its folder, else None."""
    if "\\" in file or "\x00" in file or PureWindowsPath(file).drive or PurePosixPath(file).is_absolute():
        return None
    parts: list[str] = []
    for part in PurePosixPath(file).parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part != ".":
            parts.append(part)
    return parts or None
