"""Latency measured elsewhere (on a phone, say) recorded in a front manifest as a device profile:
``pareco bench import --from FILE --profile NAME``.

The file gives one median per point, in milliseconds:

- ``.csv``: lines ``point_id,ms`` (a first line such as ``point_id,ms`` or ``id,latency (ms)``, whose
  second cell is no number but says ms, is a header; blank lines are skipped);
- ``.json``: an object ``{"p00": 1.25, ...}`` or a list of records, each with the point's id under
  ``point_id``, ``id`` or ``point`` and its median under ``ms`` or ``median_ms`` (so the
  ``measurements`` of ``pareco bench --json`` on another machine fit; other keys are ignored).

Every figure is checked before anything is written: a point the front does not have, a value that
is not a finite number above 0, a point given twice and a file with no figure at all are one-line
errors naming the file and the line (CSV) or the key / record (JSON). Points the file leaves out
are allowed and listed. The profile is then written by :func:`bench.device.write_profile`, the
same path ``pareco bench --update`` takes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.device import sanitise_profile_name, write_profile
from bench.errors import BenchError
from pareco_runtime.manifest import DeviceProfile, Front, utc_timestamp
from pareco_runtime.untrusted import format_error, parse_json, read_bounded

# A CSV line is about 20 bytes: 4 MiB holds some 200,000 points, far more than any front has (tens).
MAX_IMPORT_BYTES = 4 << 20
_TODO = 'give one median per point in milliseconds: CSV lines point_id,ms or JSON {"p00": 1.25, ...}'
_ID_KEYS = ("point_id", "id", "point")
_MS_KEYS = ("ms", "median_ms")
_SHOWN_IDS = 8


@dataclass
class ImportedProfile:
    """What :func:`import_profile` recorded: the profile, the figures per point id, the front's points the
    file left out, and of those the ones that keep a figure an earlier run recorded for this profile."""

    profile: DeviceProfile
    latency_ms: dict[str, float]
    missing: list[str]
    kept: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--json``)."""
        return {
            "profile": self.profile.to_dict(),
            "latency_ms": self.latency_ms,
            "missing": self.missing,
            "kept": self.kept,
        }


_Entry = tuple[str, object, object]  # where in the file (line N, key 'ID', record N), point id, ms


def _csv_entries(path: Path, text: str, ids: set[str]) -> list[_Entry]:
    """(``line N``, id, ms text) of each row; a first row that names no point and holds no number is a header."""
    entries: list[_Entry] = []
    for n, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if len(cells) != 2:
            raise format_error(path, f"line {n}: {len(cells)} cells, expected 2 (point_id,ms)", _TODO)
        if not entries and _is_header(cells, ids):
            continue
        number = _number(cells[1])
        entries.append((f"line {n}", cells[0], cells[1] if number is None else number))
    return entries


def _is_header(cells: Sequence[str], ids: set[str]) -> bool:
    """A header names its columns: no point id first, and a second cell that is no number but says ms."""
    return cells[0] not in ids and _number(cells[1]) is None and "ms" in cells[1].lower()


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _one_key(path: Path, record: Mapping[str, Any], keys: Sequence[str], where: str) -> object:
    found = [k for k in keys if k in record]
    if len(found) != 1:
        what = "none" if not found else " and ".join(repr(k) for k in found)
        raise format_error(
            path, f"{where}: needs one of {', '.join(repr(k) for k in keys)}, has {what}", _TODO
        )
    return record[found[0]]


def _json_entries(path: Path, data: object) -> list[_Entry]:
    """(``key 'ID'`` or ``record N``, id, ms) of an ``{id: ms}`` object or a list of records."""
    if isinstance(data, dict):
        return [(f"key {k!r}", k, v) for k, v in data.items()]
    if not isinstance(data, list):
        raise format_error(path, f"a JSON {type(data).__name__}, not an object or a list of records", _TODO)
    entries: list[_Entry] = []
    for n, record in enumerate(data, start=1):
        where = f"record {n}"
        if not isinstance(record, dict):
            raise format_error(path, f"{where} is a JSON {type(record).__name__}, not an object", _TODO)
        entries.append(
            (where, _one_key(path, record, _ID_KEYS, where), _one_key(path, record, _MS_KEYS, where))
        )
    return entries


def _milliseconds(path: Path, where: str, value: object) -> float:
    """``value`` as milliseconds: a finite number above 0 (a string, a JSON one or a CSV cell that is no
    number, is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise format_error(path, f"{where}: {value!r} is not a number of milliseconds", _TODO)
    if not math.isfinite(value):
        raise format_error(path, f"{where}: {value!r} is not a finite number of milliseconds", _TODO)
    if value <= 0:
        raise format_error(path, f"{where}: latency {value!r} ms is not above 0", _TODO)
    return float(value)


def _listing(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    return shown + (f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else "")


def _checked(path: Path, entries: Sequence[_Entry], ids: Sequence[str], manifest: str) -> dict[str, float]:
    """{point id: ms} of ``entries``, each naming a point of ``ids`` once with a valid figure."""
    if not entries:
        raise format_error(path, "no measurements in it", _TODO)
    out: dict[str, float] = {}
    first: dict[str, str] = {}
    for where, point, value in entries:
        if not isinstance(point, str) or point not in ids:
            raise format_error(
                path,
                f"{where}: no point {point!r} in {manifest} (its points: {_listing(list(ids))})",
                "import figures measured on this front's exported points",
            )
        if point in out:
            raise format_error(
                path, f"{where}: point {point!r} again (first at {first[point]})", "keep one figure per point"
            )
        out[point] = _milliseconds(path, where, value)
        first[point] = where
    return out


def read_latencies(
    path: str | Path, point_ids: Sequence[str], manifest: str = "the manifest"
) -> dict[str, float]:
    """{point id: ms} from the ``.csv`` or ``.json`` file ``path`` (read bounded, :data:`MAX_IMPORT_BYTES`),
    validated against the front's ``point_ids``; :class:`~pareco_runtime.untrusted.FormatError` (one line
    naming the file and the line, key or record) for anything else."""
    source = Path(path)
    suffix = source.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise format_error(
            source,
            f"'{source.suffix}' is neither .csv nor .json",
            "name the file FILE.csv (point_id,ms lines) or FILE.json",
        )
    data = read_bounded(source, "latency file", _TODO, MAX_IMPORT_BYTES)
    if suffix == ".json":
        entries = _json_entries(source, parse_json(data, source, "latency file", _TODO))
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise format_error(source, f"not UTF-8 text at byte {exc.start}", _TODO) from None
        entries = _csv_entries(source, text, set(point_ids))
    return _checked(source, entries, point_ids, manifest)


def import_profile(
    manifest: str | Path,
    file: str | Path,
    profile: str,
    *,
    runtime: str | None = None,
    threads: int = 1,
    batch: int = 1,
    host: str | None = None,
) -> ImportedProfile:
    """Record the latencies of ``file`` (:func:`read_latencies`) in ``manifest`` as the device profile
    ``profile`` (its name sanitised: :func:`bench.device.sanitise_profile_name`), described by
    ``runtime``, ``threads``, ``batch`` and ``host``, dated now, its source file under
    ``versions["imported_from"]``. Written by :func:`bench.device.write_profile` (locked, validated,
    atomic), so ``--budget <ms>ms@<profile>`` selects with it. Nothing is written when the file is refused."""
    if threads < 1 or batch < 1:
        raise BenchError(
            f"--threads and --batch describe the measurement and must be >= 1; got threads={threads}, batch={batch}"
        )
    name = sanitise_profile_name(profile)  # the flags first: a bad name costs no file read
    path = Path(manifest)
    front = Front.load(path, verify_weights=False)
    ids = [p.id for p in front.points]
    latency = read_latencies(file, ids, path.name)
    prof = DeviceProfile(
        name=name,
        runtime=runtime or "not given (measured elsewhere)",
        threads=threads,
        batch=batch,
        host=host or "not given",
        date=utc_timestamp(),
        versions={"imported_from": Path(file).name},
    )
    write_profile(path, prof, latency)
    missing = [i for i in ids if i not in latency]
    kept = {
        p.id: p.latency_ms[prof.name] for p in front.points if p.id in missing and prof.name in p.latency_ms
    }
    return ImportedProfile(prof, latency, missing, kept)
