"""Where the developer scripts and the tests find the CIFAR-10 JPEG archive: one rule, never a machine path.

The examples under ``examples/`` state the same rule for themselves, since each runs as a standalone
script that imports nothing of the checkout's but the installed packages.
"""

from __future__ import annotations

import os
from pathlib import Path

CIFAR10_ENV = "PARECO_CIFAR10"


def cifar10_archive() -> Path:
    """``$PARECO_CIFAR10`` when set, else ``../shared/datasets/cifar10-jpg.tar.gz`` beside this checkout.

    The path is not checked: callers that need the archive say so when it is missing (tests skip).
    """
    where = os.environ.get(CIFAR10_ENV)
    if where:
        return Path(where)
    return Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpg.tar.gz"
