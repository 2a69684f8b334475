"""Non-finite numbers never pass silently in parsing: every float option of every command, and every number
read from a text option, refuses nan and ±inf in one line naming the flag (``--atol nan`` once passed every
parity check, as every comparison with nan is false)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from pareco_cli.app import app
from pareco_cli.bench_cmd import bench_import, bench_lut
from pareco_cli.finite import _float_flags

# What each command needs besides the option under test to get past the parser (the check runs first).
REQUIRED = {
    "train": ("--out", "{tmp}/run"),
    "select": ("--budget", "1ms"),
    "flops": ("--arch", "resnet20"),
    "calibrate": ("--data", "synthetic:64:4"),
    "specialize": ("--profile", "phone", "--data", "synthetic:64:4"),
}
COMMANDS = {
    **{info.name: info.callback for info in app.registered_commands},
    "bench lut": bench_lut,  # pareco bench's subcommands
    "bench import": bench_import,
}
FLOAT_OPTIONS = sorted((name, flag) for name, f in COMMANDS.items() for flag in _float_flags(f).values())


def _one_line(result: Any, flag: str) -> None:
    assert result.returncode == 2, result.stderr[-1500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-1500:]
    assert "Traceback" not in result.stderr
    assert re.match(rf"error: {re.escape(flag)} \S+: not a finite number", lines[0]), lines[0]


def test_the_walk_finds_the_options_of_the_issue():
    assert {
        ("export", "--atol"),
        ("export", "--max-drop"),
        ("train", "--low"),
        ("bench lut", "--low"),
    } <= set(FLOAT_OPTIONS)


@pytest.mark.parametrize(("command", "flag"), FLOAT_OPTIONS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_float_option_refuses_non_finite(command: str, flag: str, value: str, cli, tmp_path: Path):
    extra = [a.format(tmp=tmp_path) for a in REQUIRED.get(command, ())]
    _one_line(cli(*command.split(), *extra, f"{flag}={value}"), flag)
    assert not (tmp_path / "run").exists()


def test_atol_nan_in_a_real_process_writes_nothing(tiny_front: Path, cli_process, tmp_path: Path):
    out = tmp_path / "e"
    result = cli_process("export", str(tiny_front), "--all", "--onnx", "--atol", "nan", "--out", str(out))
    _one_line(result, "--atol")
    assert not out.exists()


@pytest.mark.parametrize("alpha", ["nan", "0.5,inf", "1e999"])
def test_alpha_refuses_non_finite_widths(alpha: str, cli):
    result = cli("flops", "--arch", "resnet20", "--alpha", alpha)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.fullmatch(r"error: --alpha: '\S+' is not a finite number; .*\n", result.stderr), result.stderr
