"""A program is served or timed only if it is the program of its point.

Each exported file's SHA-256 is recorded in ``export.json``; the runtime's compiled backends and
``pareco bench --exports`` compare it (and the point and weight file the file carries, where the
format lets them be read without running it) before any runtime loads the file. A file copied over
another point's, garbage under a valid record, and records with wrong-typed fields are one-line
errors; the ExecuTorch case runs in a real process, where the runtime would abort (SIGABRT).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from export.formats import ExportError
from export.index import read_index
from export.serving import cache_dir
from pareco_runtime import SlimmableRuntime

_TODO = "delete it and export the point again (the runtime re-exports a deleted program on first use)"


def _export(cli, manifest: Path, *flags: str, point: str | None = None) -> Path:
    """``pareco export`` of ``point``, or of every point, into the front's ``export`` folder."""
    which = ["--point", point] if point else ["--all"]
    r = cli("export", str(manifest), *which, *flags)
    assert r.returncode == 0, r.stderr
    return manifest.parent / "export"


def _ids(manifest: Path) -> list[str]:
    return [p["id"] for p in json.loads(manifest.read_text())["points"]]


def _active_and_other(manifest: Path) -> tuple[str, str]:
    """The point a runtime starts on (its program is loaded at once) and another one."""
    active = SlimmableRuntime.load(manifest).active.id
    return active, next(i for i in _ids(manifest) if i != active)


@pytest.mark.slow
def test_another_points_onnx_copied_over_a_program_is_refused_not_served(front_copy: Path, cli) -> None:
    folder = _export(cli, front_copy, "--onnx")
    assert all(len(e["sha256"]) == 64 for e in read_index(folder))
    first, last = _active_and_other(front_copy)
    shutil.copyfile(folder / f"{first}.onnx", folder / f"{last}.onnx")
    rt = SlimmableRuntime.load(front_copy, backend="onnxruntime")
    with pytest.raises(ExportError) as caught:
        rt.switch(next(p for p in rt.points if p.id == last))
    message = str(caught.value)
    assert message.startswith(
        f"{folder / f'{last}.onnx'}: not the file {folder / 'export.json'} records for fp32 point {last} (SHA-256 "
    )
    assert message.endswith(f"after export; {_TODO}") and "\n" not in message
    assert rt.active.id != last, "nothing was switched to"
    # pareco bench --exports times no such file either.
    r = cli("bench", str(front_copy), "--backend", "onnxruntime", "--exports", str(folder), "--runs", "2")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {message}"


@pytest.mark.slow
def test_a_record_rewritten_to_fit_a_copied_file_is_caught_by_what_the_file_carries(
    front_copy: Path, cli
) -> None:
    folder = _export(cli, front_copy, "--onnx", "--torchscript")
    first, last = _active_and_other(front_copy)
    records = json.loads((folder / "export.json").read_text())
    for fmt, ext in (("onnx", ".onnx"), ("torchscript", ".pt")):
        shutil.copyfile(folder / f"{first}{ext}", folder / f"{last}{ext}")
        source = next(e for e in records if e["point"] == first and e["format"] == fmt)
        target = next(e for e in records if e["point"] == last and e["format"] == fmt)
        target["sha256"] = source["sha256"]  # the hash fits; the file still says it is `first`'s
    (folder / "export.json").write_text(json.dumps(records))
    rt = SlimmableRuntime.load(front_copy, backend="onnxruntime")
    with pytest.raises(
        ExportError, match=rf"carries pareco\.point '{first}' but is recorded .* {last}'s file"
    ):
        rt.switch(next(p for p in rt.points if p.id == last))


@pytest.mark.slow
def test_garbage_pte_under_a_valid_record_is_one_line_not_sigabrt(
    front_copy: Path, cli, repo_root, python_process
) -> None:
    active = SlimmableRuntime.load(front_copy).active.id
    folder = _export(cli, front_copy, "--executorch", point=active)
    pte = folder / f"{active}.pte"
    pte.write_bytes(os.urandom(5000))
    script = (
        "import sys\nfrom pareco_runtime import SlimmableRuntime\n"
        "try:\n    SlimmableRuntime.load(sys.argv[1], backend='executorch')\n"
        "except ValueError as exc:\n    print(exc, file=sys.stderr); sys.exit(2)\n"
    )
    proc = python_process(script, str(front_copy))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.strip().startswith(f"{pte}: not the file") and proc.stderr.strip().endswith(_TODO)
    bench = subprocess.run(
        [
            sys.executable,
            "-m",
            "pareco_cli.main",
            "bench",
            str(front_copy),
            "--backend",
            "executorch",
            "--exports",
            str(folder),
            "--runs",
            "2",
            "--points",
            active,
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bench.returncode == 2, (bench.returncode, bench.stderr[-2000:])
    assert bench.stderr.strip().splitlines()[-1].startswith(f"error: {pte}: not the file")


def _record_folder(tmp_path: Path, **fields: object) -> Path:
    record = {"point": "p0", "format": "onnx", "file": "p0.onnx", "sha256": "0" * 64, **fields}
    (tmp_path / "export.json").write_text(json.dumps([record]))
    return tmp_path


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"file": None}, "field 'file' is null, not a file name in the folder"),
        ({"file": 7}, "field 'file' is 7, not a file name in the folder"),
        ({"file": "../../etc/passwd"}, "field 'file' is \"../../etc/passwd\", not a file name in the folder"),
        ({"point": ["p0"]}, "field 'point' is [\"p0\"], not a string"),
        ({"channels": "8,16"}, "field 'channels' is \"8,16\", not a list of channel counts"),
        ({"sha256": 12}, "field 'sha256' is 12, not a SHA-256 in 64 lower-case hex digits"),
        ({"weights_sha256": None}, "field 'weights_sha256' is null, not a string"),
    ],
)
def test_a_record_with_a_wrong_typed_field_is_one_line(tmp_path: Path, fields, problem) -> None:
    folder = _record_folder(tmp_path, **fields)
    with pytest.raises(ExportError) as caught:
        read_index(folder)
    assert str(caught.value) == (
        f"{folder / 'export.json'}: record 1 {problem}; move it away or delete it, and export again"
    )


@pytest.mark.parametrize("field", ["bytes", "max_abs_diff", "max_abs_output", "seconds", "top1"])
def test_a_record_number_that_parses_to_infinity_is_refused(tmp_path: Path, field: str) -> None:
    (tmp_path / "export.json").write_text(
        f'[{{"point": "p0", "format": "onnx", "file": "p0.onnx", "{field}": 1e400}}]'
    )
    with pytest.raises(ExportError, match=rf"\[0\]\.{field} is not a finite number"):
        read_index(tmp_path)


def test_cli_and_runtime_report_a_null_file_field_in_one_line(front_copy: Path, cli) -> None:
    folder = front_copy.parent / "export"
    folder.mkdir()
    sha = SlimmableRuntime.load(front_copy).front.weights_sha256
    _record_folder(folder, point=_ids(front_copy)[-1], file=None, weights_sha256=sha)
    expected = (
        f"{folder / 'export.json'}: record 1 field 'file' is null, not a file name in the folder; "
        "move it away or delete it, and export again"
    )
    with pytest.raises(ExportError) as caught:
        SlimmableRuntime.load(front_copy, backend="onnxruntime")
    assert str(caught.value) == expected
    r = cli("bench", str(front_copy), "--backend", "onnxruntime", "--exports", str(folder), "--runs", "2")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {expected}"


@pytest.mark.slow
def test_a_record_without_sha256_is_passed_over_and_the_point_exported_again(front_copy: Path, cli) -> None:
    folder = _export(cli, front_copy, "--onnx")
    records = json.loads((folder / "export.json").read_text())
    for e in records:
        del e["sha256"]
    (folder / "export.json").write_text(json.dumps(records))
    rt = SlimmableRuntime.load(front_copy, backend="onnxruntime")
    assert rt._programs[rt.active.id].path.parent == cache_dir(front_copy)


@pytest.mark.slow
def test_a_read_only_folder_serves_what_is_there_and_refuses_the_rest_in_one_line(
    front_copy: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _export(cli, front_copy, "--onnx")
    if os.geteuid() == 0:  # root writes into read-only folders: what it would be refused, refused here
        import export.exporter
        import pareco_runtime.filelock

        def refused(*args: object, **kwargs: object) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(front_copy.parent))

        monkeypatch.setattr(pareco_runtime.filelock, "_open_lock_file", refused)
        monkeypatch.setattr(export.exporter, "export_points", refused)
    active = SlimmableRuntime.load(front_copy).active.id
    for f in folder.iterdir():
        if f.suffix == ".onnx" and f.stem != active:
            f.unlink()
    modes = {d: d.stat().st_mode for d in (front_copy.parent, folder)}
    for d in modes:
        d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        rt = SlimmableRuntime.load(front_copy, backend="onnxruntime")  # served without writing
        assert rt._programs[active].path == folder / f"{active}.onnx"
        other = next(p for p in rt.points if p.id != active)
        with pytest.raises(ExportError) as caught:
            rt.switch(other)
        message = str(caught.value)
        assert message.startswith(
            f"{cache_dir(front_copy)}: cannot export point {other.id}'s ONNX program there on first use ("
        )
        assert "\n" not in message and "writable" in message
    finally:
        for d, mode in modes.items():
            d.chmod(mode)


def test_an_export_never_writes_over_a_file_it_did_not_write(front_copy: Path, cli) -> None:
    run = front_copy.parent  # a training run's folder: checkpoint.pt, run.json, the weights
    point = _ids(front_copy)[0]
    mine = run / f"{point}.pt"
    mine.write_bytes(b"a training checkpoint, not an export")
    r = cli("export", str(front_copy), "--point", point, "--torchscript", "--out", str(run))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {mine}: exists and is not a file pareco exported there (export.json does not record it); "
        "nothing was exported; choose another --out, or move that file away"
    ]
    assert mine.read_bytes() == b"a training checkpoint, not an export"
    assert not (run / "export.json").exists()
