"""Files from a stranger or a careless user: nothing they hold exhausts memory, mis-types a tensor, or hangs.

Four classes, each table-driven: sizes a manifest asks for are checked against the weight file's header
and pareco's limits before a model is built; JSON nested too deep or too large is a one-line error;
tensors of another dtype or shape, and points of another front, are refused naming what is wrong; a
FIFO, a device, a link loop or a folder given as any file pareco reads is refused before it is opened.
Readers that a regression could block run in a subprocess with a timeout, so the test fails instead
of hanging.
"""

from __future__ import annotations

import copy
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pareco_runtime import SlimmableRuntime, build_model
from pareco_runtime.untrusted import MAX_JSON_DEPTH, FormatError, parse_json, read_json, sha256_file
from pareco_runtime.weights_file import load_weights

from .manifests import front_files

ROOT = Path(__file__).resolve().parent.parent
# Long enough for a cold interpreter on a loaded machine; a reader that blocks never finishes.
TIMEOUT_S = 60


def _edit(manifest: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    document = json.loads(manifest.read_text())
    change(document)
    manifest.write_text(json.dumps(document))


def _weights(manifest: Path) -> Path:
    return manifest.parent / "model.safetensors"


def _rewrite_weights(
    manifest: Path,
    tensors: Callable[[dict[str, torch.Tensor]], Any] = lambda t: None,
    metadata: Callable[[dict[str, Any]], Any] = lambda m: None,
) -> None:
    """Change the weight file's tensors and pareco metadata in place, then re-sign it in the manifest, so
    that the loader itself meets the change."""
    path = _weights(manifest)
    with safe_open(str(path), "pt") as fh:
        file_metadata = fh.metadata()
        names = fh.keys()  # a list: safe_open objects are not iterable
        state = {key: fh.get_tensor(key) for key in names}
    meta = json.loads(file_metadata["pareco_metadata"])
    tensors(state)
    metadata(meta)
    save_file(state, str(path), metadata={**file_metadata, "pareco_metadata": json.dumps(meta)})
    _edit(manifest, lambda m: m["weights"].update(sha256=sha256_file(path)))


def _one_line_refusal(result: Any, pattern: str) -> None:
    """Exit 2, one line starting 'error:', no traceback, and ``pattern`` in it."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]


def _export(cli: Callable[..., Any], manifest: Path, out: Path) -> Any:
    point = json.loads(manifest.read_text())["points"][0]["id"]
    result = cli("export", str(manifest), "--point", point, "--torchscript", "--out", str(out))
    assert not (out / f"{point}.pt").exists()
    return result


def _set_kwarg(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda m: m["architecture"]["kwargs"].update({key: value})


def _classes(n: int) -> Callable[[dict[str, Any]], None]:
    """``n`` classes, without class names (which would have to number ``n``)."""
    return lambda m: (m["architecture"]["kwargs"].update(num_classes=n), m["dataset"].update(class_names=[]))


def _many_blocks(m: dict[str, Any]) -> None:
    """A torchvision MobileNetV2 of 2,000 inverted-residual blocks: tens of thousands of modules."""
    m["architecture"] = {
        "arch": "torchvision:mobilenet_v2",
        "kwargs": {
            "model": {"num_classes": 4, "inverted_residual_setting": [[1, 16, 2000, 1]]},
            "convert": {
                "input_size": [3, 16, 16],
                "low": 0.25,
                "divisor": None,
                "pin": [],
                "tie": {},
                "on_unsupported": "pin",
            },
        },
    }


def _preprocess_resize(m: dict[str, Any]) -> None:
    size = m["dataset"]["input_size"][1:]
    m["dataset"]["preprocess"] = {"mode": "shorter_side", "resize": 10**6, "size": size}


SIZE_CASES = [
    ("kwargs-width-huge", _set_kwarg("width", 10**6), "kwargs.width = 1000000 exceeds the 65536"),
    ("kwargs-classes-huge", _classes(10**9), "kwargs.num_classes = 1000000000 exceeds"),
    ("kwargs-float-huge", _set_kwarg("low", 1e300), "kwargs.low = 1e\\+300 exceeds"),
    ("kwargs-input-size", _set_kwarg("input_size", 50_000), r"kwargs.input_size \[1, 50000, 50000\] exceeds"),
    ("kwargs-width-fits-limit", _set_kwarg("width", 60), "width space does not match"),
    (
        "dataset-input-size",
        lambda m: m["dataset"].update(input_size=[3, 100_000, 100_000]),
        r"dataset.input_size \[3, 100000, 100000\] exceeds pareco's input limits",
    ),
    (
        "dataset-input-values",
        lambda m: m["dataset"].update(input_size=[3, 4096, 4096], mean=[0.5] * 3, std=[0.2] * 3),
        "16777216 values an image",
    ),
    (
        "width-space-full",
        lambda m: m["width_space"]["full"].__setitem__(0, 10**7),
        r"width_space.full\[0\] = 10000000 exceeds the 65536 channels",
    ),
    ("preprocess-resize", _preprocess_resize, "preprocess resizes to 1000000 px"),
    ("layer-count", _many_blocks, "build more than .* modules"),
]


class TestSizesAreCheckedBeforeBuilding:
    """Every manifest field that sizes an allocation is refused, in one line, before a model is built."""

    @pytest.mark.parametrize("case,change,words", SIZE_CASES, ids=[c[0] for c in SIZE_CASES])
    def test_refused_in_one_line(self, case, change, words, front_copy, tmp_path, cli):
        _edit(front_copy, change)
        _one_line_refusal(_export(cli, front_copy, tmp_path / "exp"), words)

    def test_classes_that_pass_the_limits_are_checked_against_the_header(self, front_copy, tmp_path, cli):
        """A class count within the limits, in the manifest and in the weight file's metadata alike, meets
        the classifier's shape in the header: the message names the tensor."""
        _edit(
            front_copy, lambda m: (_set_kwarg("num_classes", 60_000)(m), m["dataset"].update(class_names=[]))
        )
        _rewrite_weights(
            front_copy, metadata=lambda meta: meta["architecture"]["kwargs"].update(num_classes=60_000)
        )
        _one_line_refusal(
            _export(cli, front_copy, tmp_path / "exp"),
            r"tensor 'fc.weight' is float32 of shape \(4, 64\) in the file, the architecture needs float32 of "
            r"shape \(60000, 64\)",
        )

    @pytest.mark.slow
    @pytest.mark.parametrize("consistent", [False, True], ids=["space-differs", "space-and-metadata-match"])
    def test_a_wide_manifest_allocates_nothing(self, consistent, front_copy):
        """width=60 makes ResNet20 a 1.1-billion-parameter model (4.4 GB); under a 6 GiB address-space limit
        the load is refused with the fitting message instead of failing to allocate. ``consistent``: the
        manifest's width space, channels and the weight file's metadata are made to agree with width 60,
        so only the header's shapes tell."""
        kwargs = json.loads(front_copy.read_text())["architecture"]["kwargs"]
        if consistent:
            with torch.device("meta"):
                wide = build_model("resnet20", **{**kwargs, "width": 60}).space
            _edit(front_copy, lambda m: _widen(m, wide))
            _rewrite_weights(
                front_copy, metadata=lambda meta: meta["architecture"]["kwargs"].update(width=60)
            )
        else:
            _edit(front_copy, _set_kwarg("width", 60))
        code = f"from pareco_runtime import SlimmableRuntime\nSlimmableRuntime.load({str(front_copy)!r})"
        proc = _run_python(code, limit_bytes=6 << 30)
        words = "tensor 'conv1.weight' is float32 of shape" if consistent else "width space does not match"
        assert proc.returncode == 3 and words in proc.stdout, proc.stdout + proc.stderr


def _widen(m: dict[str, Any], space: Any) -> None:
    m["architecture"]["kwargs"]["width"] = 60
    m["width_space"].update(full=list(space.full))
    for p in m["points"]:
        p["channels"] = space.channels(p["alpha"])


def _run_python(code: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (timeout :data:`TIMEOUT_S`); a ValueError it raises is printed
    and exits 3, so the test reads the one-line message from stdout."""
    wrapped = (
        f"import sys\ntry:\n    exec({code!r})\nexcept ValueError as exc:\n    print(exc)\n    sys.exit(3)\n"
    )

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-c", wrapped],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        preexec_fn=limit,
    )


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_lut(folder: Path) -> Callable[[], Any]:
    from pareco_runtime.latency_table import LatencyLUT

    path = folder / "model.lut.p.json"
    path.write_text(_nested(10_000))
    return lambda: LatencyLUT.load(path)


def _deep_index(folder: Path) -> Callable[[], Any]:
    from export.index import INDEX_NAME, read_index

    (folder / INDEX_NAME).write_text(
        json.dumps([{"point": "p", "format": "onnx", "file": json.loads(_nested(70))}])
    )
    return lambda: read_index(folder)


def _deep_metadata(folder: Path) -> Callable[[], Any]:
    path = folder / "w.safetensors"
    save_file(
        {"a": torch.ones(2)}, str(path), metadata={"pareco_format": "1", "pareco_metadata": _nested(5000)}
    )
    return lambda: load_weights(path)


DEEP_READERS = [
    ("latency-table", _deep_lut, "not a readable latency table .*nested more than 64 levels"),
    ("export-index", _deep_index, "not a valid export record .*nested more than 64 levels"),
    ("weight-metadata", _deep_metadata, "corrupt pareco metadata .*nested more than 64 levels"),
]


class TestJsonIsBounded:
    """Every JSON file pareco reads is bounded in depth and size: a one-line error, never a RecursionError."""

    @pytest.mark.parametrize("case,make,words", DEEP_READERS, ids=[r[0] for r in DEEP_READERS])
    def test_deep_json_is_one_line(self, case, make, words, tmp_path):
        with pytest.raises(ValueError, match=words) as info:
            make(tmp_path)()
        assert "\n" not in str(info.value)

    @pytest.mark.parametrize("depth", [100, 100_000])
    def test_deep_manifest_through_the_cli(self, depth, tmp_path, cli):
        manifest = tmp_path / "model.front.json"
        manifest.write_text('{"format_version": 1, "training": {"extra": ' + _nested(depth) + "}}")
        _one_line_refusal(cli("show", str(manifest)), "JSON nested more than 64 levels deep")

    def test_deep_free_form_field_in_a_real_manifest(self, front_copy, tmp_path, cli):
        _edit(front_copy, lambda m: m["training"].update(extra={"x": json.loads(_nested(200))}))
        _one_line_refusal(_export(cli, front_copy, tmp_path / "exp"), "nested more than 64 levels")

    @pytest.mark.parametrize(
        "text,accepted",
        [
            (_nested(MAX_JSON_DEPTH), True),
            (_nested(MAX_JSON_DEPTH + 1), False),
            ('{"a": "' + "[" * 1000 + '"}', True),  # brackets inside a string are text
            ('["\\"[[[[[[[["]', True),  # an escaped quote does not end the string
            ('{"a": ' * (MAX_JSON_DEPTH + 1) + "1" + "}" * (MAX_JSON_DEPTH + 1), False),
        ],
        ids=["at-limit", "over-limit", "brackets-in-string", "escaped-quote", "objects-over-limit"],
    )
    def test_depth_limit_counts_brackets_outside_strings(self, text, accepted):
        if accepted:
            assert parse_json(text, "f.json", "file", "fix it") is not None
        else:
            with pytest.raises(FormatError, match=r"^f.json: JSON nested more than 64 levels deep"):
                parse_json(text, "f.json", "file", "fix it")

    def test_size_limit(self, tmp_path):
        path = tmp_path / "big.json"
        path.write_text("[" + "0," * 600 + "0]")
        assert len(read_json(path, "table", "rebuild it", limit=2000)) == 601
        with pytest.raises(FormatError, match=r"big.json: larger than 1000 bytes, more than any table takes"):
            read_json(path, "table", "rebuild it", limit=1000)


def _retype(key: str, dtype: torch.dtype) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda t: t.__setitem__(key, t[key].to(dtype))


def _reshape(key: str, n: int) -> Callable[[dict[str, torch.Tensor]], None]:
    return lambda t: t.__setitem__(key, torch.ones(n, dtype=t[key].dtype))


TYPE_CASES = [
    ("bn-var-float16", "running_var", torch.float16, None, "running_var has dtype torch.float16"),
    ("bn-mean-float64", "running_mean", torch.float64, None, "running_mean has dtype torch.float64"),
    ("bn-var-int64", "running_var", torch.int64, None, "running_var has dtype torch.int64"),
    ("bn-var-shape", "running_var", None, 3, r"layer1.0.bn1.running_var has shape \(3,\)"),
    ("bn-mean-shape", "running_mean", None, 3, r"layer1.0.bn1.running_mean has shape \(3,\)"),
    ("weight-float16", "conv1.weight", torch.float16, None, "tensor 'conv1.weight' is float16"),
    ("weight-float64", "fc.weight", torch.float64, None, "tensor 'fc.weight' is float64"),
    ("weight-int64", "conv1.weight", torch.int64, None, "tensor 'conv1.weight' is int64"),
    (
        "state-var-shape",
        "bn1.running_var",
        None,
        2,
        r"tensor 'bn1.running_var' is float32 of shape \(2,\)",
    ),
    ("state-bool", "fc.bias", torch.bool, None, "tensor 'fc.bias' is bool"),
]


class TestTypesAreChecked:
    """Tensors of another dtype or shape are refused at load naming the tensor; another front's point is
    refused by switch and standalone."""

    @pytest.mark.parametrize("case,name,dtype,size,words", TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
    def test_misfit_tensor_is_named(self, case, name, dtype, size, words, front_copy, tmp_path, cli):
        pid = json.loads(front_copy.read_text())["points"][-1]["id"]
        key = f"bn/{pid}/layer1.0.bn1.{name}" if name.startswith("running_") else name
        _rewrite_weights(front_copy, _retype(key, dtype) if dtype is not None else _reshape(key, size))
        _one_line_refusal(_export(cli, front_copy, tmp_path / "exp"), words)

    def test_unknown_safetensors_dtype_is_named(self, tmp_path):
        path = tmp_path / "w.safetensors"
        meta = {"pareco_format": "1", "pareco_metadata": "{}"}
        save_file({"a": torch.ones(2).to(torch.float8_e4m3fn)}, str(path), metadata=meta)
        with pytest.raises(FormatError, match="tensor 'a' has dtype F8_E4M3, which no pareco model holds"):
            load_weights(path)

    @pytest.fixture
    def rt_and_foreign(self, front_copy):
        """A runtime and a point of "another front": same id as one of its points, other widths."""
        rt = SlimmableRuntime.load(front_copy)
        own = min(rt.points, key=lambda p: p.mflops)
        foreign = copy.deepcopy(own)
        foreign.alpha = list(rt.model.space.uniform(1.0))
        foreign.channels = rt.model.space.channels(foreign.alpha)
        return rt, own, foreign

    @pytest.mark.parametrize("use", ["switch", "standalone"])
    def test_foreign_point_is_refused(self, use, rt_and_foreign):
        rt, own, foreign = rt_and_foreign
        before = rt.active
        with pytest.raises(ValueError, match=f"point '{own.id}' is not this front's"):
            getattr(rt, use)(foreign)
        assert rt.active is before and rt.model.channels() == before.channels

    @pytest.mark.parametrize("use", ["switch", "standalone"])
    def test_equal_copy_is_this_fronts_point(self, use, rt_and_foreign):
        rt, own, _ = rt_and_foreign
        result = getattr(rt, use)(copy.deepcopy(own))
        if use == "switch":
            assert result is own and rt.active is own and rt.model.channels() == own.channels
        else:
            assert result.channels == own.channels


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _dev_zero(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def _link_loop(path: Path) -> Path:
    path.symlink_to(path.name)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


# What a reader says about each kind of path given in place of its file.
KINDS = {
    "fifo": (_fifo, r"is a FIFO \(named pipe\), not a regular file"),
    "dev-zero": (_dev_zero, "is a character device, not a regular file"),
    "link-loop": (_link_loop, "is a symbolic link loop"),
    "folder": (_folder, "is a folder"),
}
# Reader: (file name the reader is given, Python code reading ``path`` (a str), message prefix).
READERS = {
    "weight-file": (
        "model.safetensors",
        "from pareco_runtime.weights_file import load_weights; load_weights(path)",
    ),
    "manifest": ("model.front.json", "from pareco_runtime import Front; Front.load(path)"),
    "latency-table": (
        "model.lut.p.json",
        "from pareco_runtime.latency_table import LatencyLUT; LatencyLUT.load(path)",
    ),
    "export-index": (
        "export.json",
        "from export.index import read_index; import os; read_index(os.path.dirname(path))",
    ),
    "data-archive": ("data.tar", "from training.data import load_data; load_data(path, device='cpu')"),
}
# Kinds whose reading could block or never end: run in a subprocess with a timeout.
BLOCKING = ("fifo", "dev-zero")


# A folder given as the data path is an image tree, not a misplaced archive.
HANG_CASES = [(r, k) for r in READERS for k in KINDS if (r, k) != ("data-archive", "folder")]


class TestNothingHangs:
    """A FIFO, /dev/zero, a link loop or a folder in place of any file pareco reads is refused at once."""

    @pytest.mark.slow
    @pytest.mark.parametrize("reader,kind", HANG_CASES, ids=[f"{r}-{k}" for r, k in HANG_CASES])
    def test_refused_before_opening(self, reader, kind, tmp_path):
        name, code = READERS[reader]
        make, words = KINDS[kind]
        path = make(tmp_path / name)
        if kind in BLOCKING:
            proc = _run_python(f"path = {str(path)!r}\n{code}")
            assert proc.returncode == 3, proc.stdout + proc.stderr
            message = proc.stdout.strip()
        else:
            with pytest.raises(ValueError) as info:
                exec(code, {"path": str(path)})
            message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        assert re.search(words, message), message

    @pytest.mark.slow
    @pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
    def test_cli_weight_file_and_manifest(self, kind, front_copy, tmp_path, cli_process):
        """Through the CLI as a user meets it: the manifest's weight file, then the manifest itself."""
        make, words = KINDS[kind]
        weights = _weights(front_copy)
        weights.unlink()
        make(weights)
        _one_line_refusal(cli_process("show", str(front_copy), timeout=TIMEOUT_S), words)
        _one_line_refusal(
            cli_process(
                "select", str(make(tmp_path / "other.front.json")), "--budget", "1GFLOPs", timeout=TIMEOUT_S
            ),
            words,
        )

    @pytest.mark.slow
    def test_fifo_image_in_a_tree(self, tmp_path):
        from PIL import Image

        for c in "ab":
            (tmp_path / "d" / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8)).save(tmp_path / "d" / c / f"{i}.png")
        fifo = _fifo(tmp_path / "d" / "a" / "x.png")
        proc = _run_python(f"from training.data import load_data; load_data({str(tmp_path / 'd')!r}, "
                           f"cache_dir={str(tmp_path / 'cache')!r}, device='cpu')")  # fmt: skip
        assert proc.returncode == 3 and proc.stdout.startswith(f"{fifo}: is a FIFO"), (
            proc.stdout + proc.stderr
        )

    def test_folder_link_loop_in_a_tree(self, tmp_path):
        from PIL import Image

        from training.data import DataError, load_data

        for c in "ab":
            (tmp_path / "d" / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8)).save(tmp_path / "d" / c / f"{i}.png")
        (tmp_path / "d" / "a" / "up").symlink_to("..")
        with pytest.raises(DataError, match=r"d/a/up: a link to a folder above it, so the tree has no end"):
            load_data(str(tmp_path / "d"), cache_dir=str(tmp_path / "cache"), device="cpu")

    def test_oversized_archive_member_is_refused_unread(self, tmp_path):
        """A member whose tar header announces more than an image may take is refused from the header."""
        from training.data import DataError, load_data
        from training.data.folder import MAX_IMAGE_BYTES

        archive = tmp_path / "d.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo("a/huge.png")
            info.size = MAX_IMAGE_BYTES + 1
            tar.addfile(info)  # header only: the body is never read, so it need not exist
        with pytest.raises(DataError, match=f"member 'a/huge.png' is {MAX_IMAGE_BYTES + 1} bytes"):
            load_data(str(archive), cache_dir=str(tmp_path / "cache"), device="cpu")


def test_refusals_leave_the_front_intact(front_copy, tmp_path, cli):
    """A refused load changes no file of the front."""
    before = front_files(front_copy.parent)
    _edit(front_copy, _classes(10**9))
    edited = front_copy.read_bytes()
    _one_line_refusal(_export(cli, front_copy, tmp_path / "exp"), "exceeds")
    after = front_files(front_copy.parent)
    assert after == {**before, front_copy.name: edited}
