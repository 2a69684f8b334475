"""The front manifest ``NAME.front.json``: its one owner. Reading, validation, writing and locking live here.

Modules, by what they hold:

- :mod:`.points`: :class:`FrontPoint` and its quantized :class:`Variant` (the manifest's ``points[]``).
- :mod:`.sections`: the other sections, :class:`Architecture`, :class:`DatasetSpec`,
  :class:`TrainingRecord`, :class:`DeviceProfile` and :class:`StatsFile` (``weights.bn_stats``).
- :mod:`.front`: :class:`Front`, the whole manifest typed; loads, saves (under the file's lock),
  updates (lock, load, change, save) and :func:`write_front` for a new front with its weight file.
- :mod:`.file`: the JSON file as a dict: :func:`load_manifest` (bounded JSON, version, schema, rules,
  the files it names and their SHA-256) and :func:`save_manifest` (validated, atomic).
- :mod:`.rules` and ``schema.json``: what a valid manifest obeys, the schema (checked by
  :mod:`.json_schema`, a validator of the schema's subset of draft 2020-12, so the runtime needs no
  ``jsonschema``) and the cross-field rules, one small function each.
- :mod:`.metric`: :class:`Metric`, what a front's points are ranked by (the optional ``metric``
  declaration; top-1 without one) and the one accessor of a point's figure for ranking.
- :mod:`.versions`: formats 1 to 7, what each added, the oldest one a manifest needs.
- :mod:`.paths`: the files a manifest names, kept inside its folder.
- :mod:`.stats_files`: BN statistics files of points added after training, and a front's weights read
  from where the manifest puts each point's statistics.

The weight file's own format (safetensors, BN statistics keys, statistics files bound by SHA-256) is
:mod:`pareco_runtime.weights_file`; non-dominated sorting is :mod:`pareco_runtime.pareto`.

Adding a per-point field
------------------------
1. :mod:`.points`: the field on :class:`FrontPoint` with a default meaning "absent", read in
   ``from_dict``; if optional, add it to the keys ``to_dict`` leaves out when unset, so files written
   before it existed keep their bytes.
2. ``schema.json``: the field under ``$defs.point.properties`` (``additionalProperties`` is false, so
   a file with it is refused until then).
3. :mod:`.versions`, where older pareco versions must not be handed it silently: the field under a new
   format in ``_FORMAT_FIELDS``, :data:`FORMAT_VERSION` and the schema's ``format_version`` enum raised.
4. :mod:`.rules`, only where it refers to other fields (a dict by device profile name: add it to
   ``_PER_PROFILE_FIELDS``; by evaluation name: ``_EVALUATION_FIELDS``).
5. Tests: ``tests/test_fileformat.py`` (schema and dataclass agree; a rule's message) and
   ``tests/test_front_file.py`` (round trip; old files without it still load).

Nothing else builds or parses point dicts: readers and writers go through :class:`Front`.
"""

from ..weights_file import POINT_ID_PATTERN
from .file import load_manifest, save_manifest
from .front import MANIFEST_NAME, WEIGHTS_NAME, Front, utc_timestamp, write_front
from .metric import Metric
from .paths import inside_folder, weights_path
from .points import PRECISIONS, FrontPoint, Variant
from .rules import (
    MAX_CHANNELS,
    MAX_INPUT_SIDE,
    MAX_INPUT_VALUES,
    check_input_size,
    check_manifest_consistency,
    manifest_schema,
)
from .sections import Architecture, DatasetSpec, DeviceProfile, StatsFile, TrainingRecord
from .stats_files import (
    add_points,
    check_derived_path,
    front_header,
    load_front_weights,
    save_derived_front,
    stats_file_name,
)
from .versions import FORMAT_VERSION, manifest_format

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MAX_CHANNELS",
    "MAX_INPUT_SIDE",
    "MAX_INPUT_VALUES",
    "POINT_ID_PATTERN",
    "PRECISIONS",
    "WEIGHTS_NAME",
    "Architecture",
    "DatasetSpec",
    "DeviceProfile",
    "Front",
    "FrontPoint",
    "Metric",
    "StatsFile",
    "TrainingRecord",
    "Variant",
    "add_points",
    "check_derived_path",
    "check_input_size",
    "check_manifest_consistency",
    "front_header",
    "inside_folder",
    "load_front_weights",
    "load_manifest",
    "manifest_format",
    "manifest_schema",
    "save_derived_front",
    "save_manifest",
    "stats_file_name",
    "utc_timestamp",
    "weights_path",
    "write_front",
]
