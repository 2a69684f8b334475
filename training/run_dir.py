"""A run's folder: its settings file ``run.json``, who may start, continue or replace a run there.

A start is checked twice: before the data is loaded (a refusal then costs nothing) and again
under ``run.json``'s lock just before the file is written, once the data, the architecture and
the settings have all been checked, so that a start that fails on them leaves no ``run.json`` to
block the corrected command.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pareco_runtime.atomic import atomic_write_text, remove_stale_temporaries
from pareco_runtime.filelock import locked
from pareco_runtime.manifest import MANIFEST_NAME, WEIGHTS_NAME
from pareco_runtime.untrusted import FormatError, read_json

from .checkpoint import CHECKPOINT_NAME
from .config import BEFORE_SETTING, TrainConfig, TrainingError

RUN_NAME = "run.json"
LOG_NAME = "train.log.jsonl"
RUN_FILES = (MANIFEST_NAME, WEIGHTS_NAME, CHECKPOINT_NAME, LOG_NAME, RUN_NAME)
"""The files a run writes into its folder, the front first."""


def _saved_settings(out: Path) -> dict[str, Any] | None:
    """The settings in ``out``'s run.json; None when the file cannot be read as JSON settings."""
    try:
        saved = read_json(out / RUN_NAME, "run settings file", "move it away or pass --force")
    except FormatError:
        return None
    return saved if isinstance(saved, dict) else None


def settings_changed(previous: Mapping[str, Any] | None, cfg: TrainConfig) -> list[str]:
    """Names of the settings in which ``cfg`` would train something else than a run's saved
    ``previous`` ones (all of them when None). A setting that a newer pareco added is absent from an
    older run.json and reads as the value that keeps the old behaviour (:data:`BEFORE_SETTING`, else
    its default), so a run started before an upgrade still resumes. Settings that change how a run goes but not what it
    trains (:meth:`TrainConfig.changes_result`) are not compared."""
    current = dataclasses.asdict(cfg)
    if previous is None:
        return sorted(current)
    defaults = {f.name: BEFORE_SETTING.get(f.name, f.default) for f in dataclasses.fields(TrainConfig)}
    return sorted(
        k for k in current if TrainConfig.changes_result(k) and previous.get(k, defaults[k]) != current[k]
    )


def resume_settings(out: Path, given: Mapping[str, Any], typed: Collection[str]) -> TrainConfig:
    """The settings ``--resume`` continues the run in ``out`` with: those of its run.json, except the
    ``typed`` ones (the flags given on the command line), which come from ``given``; a setting absent
    from an older run.json reads as the value that keeps the old behaviour (:data:`BEFORE_SETTING`,
    else its default). TrainingError when there is no readable run.json."""
    if not (out / RUN_NAME).exists():
        raise TrainingError(f"{out}: no run to resume (no {RUN_NAME}); run without --resume")
    saved = _saved_settings(out)
    if saved is None:
        raise TrainingError(
            f"{out / RUN_NAME}: not a readable settings file; give every setting with --force to start afresh"
        )
    values = {}
    for f in dataclasses.fields(TrainConfig):
        values[f.name] = (
            given[f.name] if f.name in typed else saved.get(f.name, BEFORE_SETTING.get(f.name, f.default))
        )
    return TrainConfig(**values)


def check_run(out: Path, cfg: TrainConfig, resume: bool, force: bool) -> None:
    """Raise TrainingError when ``out`` holds a run this start may not continue (``resume`` with settings
    that differ) or replace (neither ``resume`` nor ``force``), or ``resume`` finds no run. Writes nothing."""
    run_file = out / RUN_NAME
    if not run_file.exists():
        if resume:
            raise TrainingError(f"{out}: no run to resume (no {RUN_NAME}); run without --resume")
        return
    if resume:
        diff = settings_changed(_saved_settings(out), cfg)
        if diff:
            raise TrainingError(
                f"{out}: --resume with settings that differ from the run there "
                f"({', '.join(diff)}); use the same settings, or --force to start afresh"
            )
    elif not force:
        raise TrainingError(
            f"{out} already holds a training run; pass --resume to continue it or --force to overwrite it"
        )


def prepare_out_dir(out: Path, cfg: TrainConfig, resume: bool, force: bool) -> None:
    """Check ``out`` again (:func:`check_run`) and, for a new start, clear a replaced run's checkpoint
    and log and write run.json.

    Checked and written under run.json's lock: of two runs started into one new folder at once, the
    second finds the first's run.json (and refuses without ``--resume`` / ``--force``).
    """
    remove_stale_temporaries(out)  # of writes that a killed run interrupted
    with locked(out / RUN_NAME):
        check_run(out, cfg, resume, force)
        if resume:
            return
        if force:
            for name in (CHECKPOINT_NAME, LOG_NAME):
                (out / name).unlink(missing_ok=True)
        atomic_write_text(out / RUN_NAME, json.dumps(dataclasses.asdict(cfg), indent=2))
