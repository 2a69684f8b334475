"""Concurrent writers lose nothing: manifests, export records and run.json under a file lock, with real processes.

Each round starts every writer at once (a barrier) on one shared file; at the end every write must be
there. Before the lock, 4 writers x 20 rounds kept 23 of 80 profiles and 50 of 80 export records.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.device import write_profile
from export.index import merge_index, read_index
from pareco_runtime import Front
from pareco_runtime.filelock import DEFAULT_LOCK_TIMEOUT_S, LockTimeout, lock_file_of, lock_timeout, locked
from pareco_runtime.manifest import DeviceProfile, load_manifest, save_manifest
from training.config import TrainConfig, TrainingError
from training.run_dir import prepare_out_dir

from .manifests import make_manifest

WRITERS = 4
ROUNDS = 20
# fork: the children share this process's imports (a fresh interpreter costs seconds per writer).
_FORK = multiprocessing.get_context("fork")


def _profile(name: str) -> DeviceProfile:
    return DeviceProfile(name=name, runtime="torch", threads=1, batch=1, host="box", date="2026-01-01")


def _profile_writer(writer: int, barrier: multiprocessing.synchronize.Barrier, manifest: Path) -> None:
    for r in range(ROUNDS):
        barrier.wait()
        write_profile(manifest, _profile(f"w{writer}-r{r}"), {"p0": writer + r / 100})


def _index_writer(writer: int, barrier: multiprocessing.synchronize.Barrier, folder: Path) -> None:
    for r in range(ROUNDS):
        barrier.wait()
        merge_index(folder, [{"point": f"w{writer}-r{r}", "format": "onnx", "file": f"w{writer}-r{r}.onnx"}])


def _run_writers(target, shared: Path) -> list[int | None]:
    """Run ``WRITERS`` processes of ``target(writer, barrier, shared)``; their exit codes."""
    barrier = _FORK.Barrier(WRITERS)
    procs = [_FORK.Process(target=target, args=(i, barrier, shared)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    return [p.exitcode for p in procs]


@pytest.mark.slow
def test_concurrent_profile_writers_keep_every_profile(tmp_path: Path) -> None:
    manifest = tmp_path / "m.front.json"
    save_manifest(manifest, make_manifest())
    assert _run_writers(_profile_writer, manifest) == [0] * WRITERS
    data = load_manifest(manifest, verify_weights=False)
    expected = {f"w{w}-r{r}" for w in range(WRITERS) for r in range(ROUNDS)}
    assert {p["name"] for p in data["device_profiles"]} == expected | {"cpu1"}
    p0 = next(p for p in data["points"] if p["id"] == "p0")
    assert p0["latency_ms"] == {"cpu1": 1.5} | {
        f"w{w}-r{r}": round(w + r / 100, 6) for w in range(WRITERS) for r in range(ROUNDS)
    }


def test_concurrent_export_index_merges_keep_every_record(tmp_path: Path) -> None:
    assert _run_writers(_index_writer, tmp_path) == [0] * WRITERS
    points = sorted(e["point"] for e in read_index(tmp_path))
    assert points == sorted(f"w{w}-r{r}" for w in range(WRITERS) for r in range(ROUNDS))


def _trainer_start(writer: int, barrier: multiprocessing.synchronize.Barrier, root: Path) -> None:
    results = []
    for r in range(ROUNDS):
        barrier.wait()
        try:
            prepare_out_dir(root / f"run{r}", TrainConfig(seed=writer), resume=False, force=False)
            results.append("started")
        except TrainingError as exc:
            results.append("refused" if "already holds a training run" in str(exc) else str(exc))
    (root / f"writer{writer}.json").write_text(json.dumps(results))


def test_concurrent_training_starts_into_one_folder_start_one_run(tmp_path: Path) -> None:
    assert _run_writers(_trainer_start, tmp_path) == [0] * WRITERS
    outcomes = [json.loads((tmp_path / f"writer{w}.json").read_text()) for w in range(WRITERS)]
    for r in range(ROUNDS):
        assert sorted(o[r] for o in outcomes) == ["refused"] * (WRITERS - 1) + ["started"]
        winner = next(w for w in range(WRITERS) if outcomes[w][r] == "started")
        assert json.loads((tmp_path / f"run{r}" / "run.json").read_text())["seed"] == winner


def _hold(
    path: Path, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    with locked(path):
        ready.set()
        release.wait(timeout=120)


@contextlib.contextmanager
def _held_elsewhere(path: Path) -> Iterator[multiprocessing.process.BaseProcess]:
    """Another process holding the lock of ``path`` for the ``with`` block."""
    ready, release = _FORK.Event(), _FORK.Event()
    proc = _FORK.Process(target=_hold, args=(path, ready, release))
    proc.start()
    try:
        assert ready.wait(timeout=60)
        yield proc
    finally:
        # Setting the event with a killed waiter hangs: multiprocessing's Condition waits for every
        # sleeper to acknowledge the wake-up, and a dead one never does.
        if proc.is_alive():
            release.set()
        proc.join(timeout=60)


def test_timeout_names_the_file_the_holder_and_the_lock_file(tmp_path: Path) -> None:
    manifest = tmp_path / "m.front.json"
    save_manifest(manifest, make_manifest())
    before = manifest.read_bytes()
    with _held_elsewhere(manifest) as holder:
        with pytest.raises(LockTimeout) as caught, locked(manifest, timeout=0.2):
            pass
        message = str(caught.value)
        assert message == (
            f"{manifest}: locked by another pareco process (pid {holder.pid}) for more than 0.2 s; "
            f"wait for it to finish or remove {lock_file_of(manifest)} if no such process runs"
        )
        assert isinstance(caught.value, OSError)  # the CLI prints it as one line, exit 2
        with pytest.MonkeyPatch.context() as m:
            m.setenv("PARECO_LOCK_TIMEOUT", "0.1")
            with pytest.raises(LockTimeout, match=r"pid \d+\) for more than 0.1 s"):
                write_profile(manifest, _profile("late"), {"p0": 1.0})
    assert manifest.read_bytes() == before  # the timed-out writer wrote nothing
    write_profile(manifest, _profile("late"), {"p0": 1.0})  # released: goes through
    assert "late" in Front.load(manifest, verify_weights=False).profile_names


def test_a_killed_holder_frees_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "export.json"
    with _held_elsewhere(target) as holder:
        holder.kill()
        holder.join(timeout=60)
        with locked(target, timeout=30):  # the kernel dropped the dead holder's lock
            pass


def test_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    outcome: list[str] = []

    def other_thread() -> None:
        try:
            with locked(a, timeout=0.2):
                outcome.append("entered")
        except LockTimeout as exc:
            outcome.append(str(exc))

    with locked(a), locked(b), locked(a, timeout=0.2):  # nested, and two files: no deadlock
        t = threading.Thread(target=other_thread)
        t.start()
        t.join()
    assert len(outcome) == 1 and "locked by another pareco process" in outcome[0]
    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert outcome[1:] == ["entered"]  # released once the outermost block ended


def test_update_saves_on_success_and_writes_nothing_on_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.front.json"
    save_manifest(manifest, make_manifest())
    before = manifest.read_bytes()
    with pytest.raises(ValueError, match="no point 'nope'"), Front.update(manifest) as front:
        front.record_profile(_profile("dev"), {"nope": 1.0})
    assert manifest.read_bytes() == before
    with Front.update(manifest) as front:
        front.record_profile(_profile("dev"), {"p1": 2.0})
    assert Front.load(manifest, verify_weights=False).points[1].latency_ms["dev"] == 2.0
    with locked(manifest, timeout=0):  # nothing left holding it
        pass


def test_lock_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARECO_LOCK_TIMEOUT", raising=False)
    assert lock_timeout() == DEFAULT_LOCK_TIMEOUT_S == 60
    monkeypatch.setenv("PARECO_LOCK_TIMEOUT", "2.5")
    assert lock_timeout() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("PARECO_LOCK_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"PARECO_LOCK_TIMEOUT: '{bad}' is not a number of seconds"):
            lock_timeout()


def test_cli_reports_a_held_manifest_in_one_line(
    front_copy: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARECO_LOCK_TIMEOUT", "0.2")
    with _held_elsewhere(front_copy) as holder:
        code, _out, err = cli("bench", str(front_copy), "--warmup", "1", "--runs", "2", "--update")
    assert code == 2 and "Traceback" not in err
    # The last line is the error; the lines before it are the benchmark's own progress.
    assert err.strip().splitlines()[-1] == (
        f"error: {front_copy}: locked by another pareco process (pid {holder.pid}) for more than 0.2 s; "
        f"wait for it to finish or remove {lock_file_of(front_copy)} if no such process runs"
    )


def _pareco(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pareco_cli.main", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_concurrent_cli_bench_updates_and_exports_keep_everything(
    front_copy: Path, tmp_path: Path, repo_root: Path
) -> None:
    manifest, out = front_copy, tmp_path / "exports"
    ids = [p["id"] for p in json.loads(manifest.read_text())["points"]]
    exports = [(ids[0], "--torchscript"), (ids[0], "--pt2"), (ids[-1], "--torchscript")]
    procs = [
        _pareco(
            "bench",
            str(manifest),
            "--warmup",
            "1",
            "--runs",
            "3",
            "--profile",
            f"dev{i}",
            "--update",
            cwd=repo_root,
        )
        for i in range(3)
    ] + [
        _pareco("export", str(manifest), "--point", pid, fmt, "--out", str(out), cwd=repo_root)
        for pid, fmt in exports
    ]
    results = [(p.wait(timeout=600), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0] * len(procs), results
    front = Front.load(manifest)
    assert {"dev0", "dev1", "dev2"} <= set(front.profile_names)
    for name in ("dev0", "dev1", "dev2"):
        assert all(name in p.latency_ms for p in front.points)
    records = {(e["point"], e["format"]) for e in read_index(out)}
    assert records == {(ids[0], "torchscript"), (ids[0], "pt2"), (ids[-1], "torchscript")}


def test_stale_temporaries_of_dead_writers_go_and_live_ones_stay(tmp_path: Path) -> None:
    from pareco_runtime.atomic import atomic_path, remove_stale_temporaries, staging_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file = tmp_path / f".model.front.json.{dead.pid}.abcd1234.tmp"
    stale_dir = tmp_path / f".p00.onnx.{dead.pid}.abcd1234.staging"
    stale_file.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "p00.onnx").write_bytes(b"x")
    live = staging_dir(tmp_path / "p01.onnx")
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_text("mine")
    with atomic_path(tmp_path / "export.json") as tmp:
        tmp.write_text("[]")
        assert remove_stale_temporaries(tmp_path) == sorted([stale_dir, stale_file])
        assert tmp.exists(), "this process's own write in progress is live"
    assert live.is_dir() and unrelated.exists() and not stale_file.exists() and not stale_dir.exists()
