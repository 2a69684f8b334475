"""Trainers for slimmable networks (PareCO, Slim, TwoStage, Independent), data, BN calibration, evaluation.

The library for a training loop of your own: :class:`Trainer` with a strategy, :class:`Slim`,
:class:`Independent`, :class:`PareCO` or :class:`TwoStage` (:mod:`training.trainer` shows a loop), and
:func:`build_front` to build its front ranked by the user's own metric (:func:`evaluate_front` scores
a front's points again, :func:`calibrate_point` makes an off-front point with the same ``evaluate``;
:func:`training.specialize.specialize` re-chooses a front for a device).
They are imported on first use: ``pareco train --help`` reads :mod:`training.config` without torch,
and only PareCO and TwoStage load BoTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "Independent": "strategies",
    "Slim": "strategies",
    "Strategy": "strategies",
    "StepResult": "trainer",
    "Trainer": "trainer",
    "PareCO": "pareco",
    "TwoStage": "pareco",
    "build_front": "front_builder",
    "calibrate_point": "extend",
    "evaluate_front": "extend",
}
__all__ = [
    "Independent",
    "PareCO",
    "Slim",
    "StepResult",
    "Strategy",
    "Trainer",
    "TwoStage",
    "build_front",
    "calibrate_point",
    "evaluate_front",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'training' has no attribute '{name}'")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
