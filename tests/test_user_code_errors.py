"""Code the user names fails in one line: a `pkg.module:factory` given to --arch or --model whose module
fails to import, whose factory raises or returns no network is one line naming it and the exception,
exit 2, no traceback, wherever pareco calls it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pareco_runtime import SlimmableRuntime
from pareco_runtime.sources import UserCodeError

from .test_convert_front import _small_front
from .user_models import raising_factory

BROKEN = [
    (
        "tests.user_models:raising_factory",
        r"factory tests\.user_models:raising_factory.* raised RuntimeError: the user's bug \(4 classes\)",
    ),
    (
        "tests.user_models:not_a_module",
        r"factory tests\.user_models:not_a_module.* returned dict, not an nn\.Module",
    ),
    ("tests.user_models_import_error:net", r"importing tests\.user_models_import_error raised RuntimeError"),
]


def _one_line(result: Any, spec: str, pattern: str) -> None:
    assert result.returncode == 2, result.stderr[-1500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-1500:]
    assert "Traceback" not in result.stderr
    assert spec in lines[0] and re.search(pattern, lines[0]), lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "pattern"), BROKEN)
def test_train_arch(spec: str, pattern: str, cli_process, tmp_path: Path):
    out = tmp_path / "run"
    result = cli_process(
        "train", "--arch", spec, "--data", "synthetic:64:4", "--image-size", "16", "--out", str(out)
    )
    _one_line(result, spec, pattern)


@pytest.mark.parametrize(("spec", "pattern"), BROKEN)
def test_flops_arch(spec: str, pattern: str, cli):
    _one_line(
        cli("flops", "--arch", spec, "--width", "1", "--num-classes", "4", "--input-size", "16"),
        spec,
        pattern,
    )


@pytest.fixture(scope="module")
def user_front(tmp_path_factory) -> Path:
    """A one-epoch front of the user's own CNN (see test_convert_front)."""
    return _small_front(tmp_path_factory, "user_front", "tests.user_models:user_cnn")


def test_the_runtime_names_the_factory(user_front: Path):
    with pytest.raises(
        UserCodeError,
        match=r"factory tests\.user_models:raising_factory of architecture 'tests\.user_models:user_cnn' raised",
    ):
        SlimmableRuntime.load(user_front, model=raising_factory)


@pytest.mark.parametrize(("spec", "pattern"), BROKEN)
def test_model_on_commands_that_load_a_front(spec: str, pattern: str, user_front: Path, cli, tmp_path: Path):
    for args in (
        ("export", "--all", "--torchscript", "--out", str(tmp_path / "e")),
        ("eval", "--data", "synthetic:64:4"),
    ):
        _one_line(cli(args[0], str(user_front), *args[1:], "--model", spec), spec, pattern)
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_a_process_exits_with_one_line(user_front: Path, cli_process, tmp_path: Path):
    spec, pattern = BROKEN[0]
    result = cli_process("export", str(user_front), "--all", "--torchscript", "--out", str(tmp_path / "e"),
                         "--model", spec)  # fmt: skip
    _one_line(result, spec, pattern)
