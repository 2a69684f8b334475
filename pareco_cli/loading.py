"""Loading a front for a command, with the user's own model builder when they name one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pareco_runtime.runtime import SlimmableRuntime

MODEL_HELP = (
    "pkg.module:factory: the builder of a front trained from your own architecture (imported because you "
    "name it here; a manifest's name for it never is)."
)


def load_runtime(manifest: Path, model: str | None) -> SlimmableRuntime:
    """``SlimmableRuntime.load(manifest)``, given the factory ``--model`` names (if any)."""
    from pareco_runtime.runtime import SlimmableRuntime
    from pareco_runtime.sources import import_factory

    return SlimmableRuntime.load(manifest, model=import_factory(model) if model else None)
