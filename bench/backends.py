"""The backends ``pareco bench`` times on: PyTorch eager on the CPU (``torch``) or the GPU
(``cuda``), and the compiled runtimes of the export formats (:data:`export.formats.SERVED`).

Importing this module imports neither torch nor a format's runtime: the CLI lists the backends in
its help from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.errors import BenchError
from export.formats import SERVED

BACKENDS = ("torch", *SERVED, "cuda")


def check_backends(backends: Sequence[str]) -> list[str]:
    """The backends, deduplicated in order; BenchError for unknown ones or for cuda without a GPU."""
    import torch

    if not backends:
        raise BenchError(f"give at least one --backend ({', '.join(BACKENDS)})")
    out: list[str] = []
    for b in backends:
        if b not in BACKENDS:
            raise BenchError(f"unknown backend '{b}'; choose from {', '.join(BACKENDS)}")
        if b == "cuda" and not torch.cuda.is_available():
            raise BenchError(
                "no CUDA device here: torch.cuda.is_available() is False; bench a CPU backend "
                f"({', '.join(x for x in BACKENDS if x != 'cuda')}) or run on a machine with a GPU"
            )
        if b not in out:
            out.append(b)
    return out
