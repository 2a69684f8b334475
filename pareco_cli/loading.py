"""Finding and loading the front a command works on, with the user's own model builder when they name one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from pareco_runtime.runtime import SlimmableRuntime

MODEL_HELP = (
    "pkg.module:factory: the builder of a front trained from your own architecture (imported because you "
    "name it here; a manifest's name for it never is)."
)
_MANIFEST_SUFFIX = ".front.json"

TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        metavar="TASK",
        help="classification, segmentation or detection: the task whose data --data is and whose figures "
        "the front is measured by (default: the one its training recorded; a top-1 front's is "
        "classification). Needed for a front built in Python from a loop of your own.",
        show_default=False,
    ),
]
"""The ``--task`` option of commands that measure a front again (:func:`training.tasks.front_task`)."""

ManifestArg = Annotated[
    Path | None,
    typer.Argument(
        help="A front manifest (NAME.front.json), or the run folder holding one (pareco train --out); "
        "default: the one in the current folder.",
        metavar="MANIFEST|RUN_DIR",
        show_default=False,
    ),
]
"""The manifest argument of every command that reads a front; resolve it with :func:`resolve_manifest`."""

ManifestsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Front manifests or run folders, one or several (pareco show A B overlays them); "
        "default: the one in the current folder.",
        metavar="[MANIFEST|RUN_DIR]...",
        show_default=False,
    ),
]
"""The argument of a command that reads one front or several; resolve each with :func:`resolve_manifest`."""


def resolve_manifest(given: Path | None) -> Path:
    """The manifest a command reads: ``given`` when it is a file; in a folder (``given``, or the current
    one when nothing is given) its ``model.front.json``, else its only ``*.front.json``. A manifest found
    rather than named is reported on stderr; a folder without one is a one-line ValueError."""
    from pareco_runtime.manifest import MANIFEST_NAME

    folder = Path(".") if given is None else given
    if given is not None and not given.is_dir():
        return given  # a file, or a missing path that the loader reports
    found = folder / MANIFEST_NAME
    if not found.is_file():
        others = sorted(p for p in folder.glob(f"*{_MANIFEST_SUFFIX}") if p.is_file())
        if len(others) != 1:
            where = "the current folder" if given is None else str(folder)
            what = (
                f"several manifests ({', '.join(p.name for p in others)})" if others else "no front manifest"
            )
            raise ValueError(
                f"{where}: {what} (NAME{_MANIFEST_SUFFIX}); name the manifest, e.g. "
                f"'pareco show runs/demo/{MANIFEST_NAME}', or run the command inside a run folder"
            )
        found = others[0]
    print(f"using {found}", file=sys.stderr)
    return found


def load_runtime(manifest: Path, model: str | None) -> SlimmableRuntime:
    """``SlimmableRuntime.load(manifest)``, given the factory ``--model`` names (if any)."""
    from pareco_runtime.runtime import SlimmableRuntime
    from pareco_runtime.sources import import_factory

    return SlimmableRuntime.load(manifest, model=import_factory(model) if model else None)
