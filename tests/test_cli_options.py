"""Every option of every command, given a bad value, ends in one line ``error: ...`` and exit 2.

The table names a bad value per option; the walk over the CLI's own option list fails when a command
gains an option the table does not cover (flags, which take no value, are exempt).
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer

from pareco_cli.app import app

BO = ("--algorithm", "pareco")
DATA = ("--data", "synthetic:256:4")
WIDTH = ("--width", "0.5", *DATA)
PROFILE = ("--profile", "phone")  # the made-up latency table beside the specialize fixture's front
SPEC = (*PROFILE, *DATA)
IMPORT = ("--from", "/dev/null", "--profile", "pixel7")
# (command, option) -> (bad value, extra arguments, a word the message must contain)
BAD: dict[tuple[str, str], tuple[str, tuple[str, ...], str]] = {
    ("train", "--arch"): ("resnet99", (), "resnet99"),
    ("train", "--task"): ("detection", (), "--task"),
    ("train", "--num-classes"): ("1", ("--task", "segmentation"), "--num-classes"),
    ("train", "--init"): ("/nonexistent/w.safetensors", (), "w.safetensors"),
    ("train", "--low"): ("0", (), "--low"),
    ("train", "--group-low"): ("layer4.*=0.5", (), "--group-low"),
    ("train", "--pin"): ("layer4.*", (), "--pin"),
    ("train", "--data"): ("/nonexistent/data", (), "/nonexistent/data"),
    ("train", "--algorithm"): ("gradient-free", (), "--algorithm"),
    ("train", "--epochs"): ("0", (), "--epochs"),
    ("train", "--batch-size"): ("0", (), "--batch-size"),
    ("train", "--lr"): ("-1", (), "--lr"),
    ("train", "--momentum"): ("1.5", (), "--momentum"),
    ("train", "--weight-decay"): ("-1", (), "--weight-decay"),
    ("train", "--schedule"): ("step", (), "--schedule"),
    ("train", "--warmup-epochs"): ("-1", (), "--warmup-epochs"),
    ("train", "--label-smoothing"): ("1.5", (), "--label-smoothing"),
    ("train", "--seed"): ("abc", (), "--seed"),
    ("train", "--width-factor"): ("0", (), "--width-factor"),
    ("train", "--image-size"): ("0", (), "image"),
    ("train", "--samples-per-iter"): ("-1", (), "--samples-per-iter"),
    ("train", "--width"): ("2", ("--algorithm", "independent"), "width"),
    ("train", "--candidates"): ("0", (), "--candidates"),
    ("train", "--calib-batches"): ("0", (), "--calib-batches"),
    ("train", "--calib-batch-size"): ("0", (), "--calib-batch-size"),
    ("train", "--select-fraction"): ("1", (), "--select-fraction"),
    ("train", "--history-size"): ("0", (), "--history-size"),
    ("train", "--epsilon"): ("0", BO, "--epsilon"),
    ("train", "--lambda-sampling"): ("random", BO, "--lambda-sampling"),
    ("train", "--cost-model"): ("guess", BO, "--cost-model"),
    ("train", "--cost"): ("latency@/nonexistent/t.json", BO, "t.json"),
    ("train", "--warmup-configs"): ("-1", BO, "--warmup-configs"),
    ("train", "--probe-batch"): ("0", BO, "--probe-batch"),
    ("train", "--remeasure"): ("-1", BO, "--remeasure"),
    ("train", "--distill-warmup"): ("2", (), "--distill-warmup"),
    ("train", "--epoch-eval"): ("-1", (), "--epoch-eval"),
    ("train", "--threads"): ("0", (), "--threads"),
    ("train", "--divisor"): ("0", (), "--divisor"),
    ("train", "--device"): ("tpu9", (), "--device"),
    ("train", "--log-every"): ("0", (), "--log-every"),
    ("select", "--budget"): ("5 parsecs", (), "parsecs"),
    ("select", "--fallback"): ("nearest", (), "--fallback"),
    ("select", "--precision"): ("int4", (), "--precision"),
    ("flops", "--arch"): ("resnet99", ("--width", "1"), "resnet99"),
    ("flops", "--width"): ("2", (), "width"),
    ("flops", "--alpha"): ("0.5,x", (), "--alpha"),
    ("flops", "--width-mult"): ("0.5", (), "width_mult"),
    ("flops", "--divisor"): ("0", ("--width", "1"), "--divisor"),
    ("flops", "--num-classes"): ("-3", ("--width", "1"), "--num-classes"),
    ("flops", "--input-size"): ("0", ("--width", "1"), "--input-size"),
    ("export", "--budget"): ("5 parsecs", ("--onnx",), "parsecs"),
    ("export", "--point"): ("p99", ("--onnx",), "p99"),
    ("export", "--fallback"): ("nearest", ("--onnx", "--budget", "1MFLOPs"), "--fallback"),
    ("export", "--batch"): ("dynamic:0", ("--executorch", "--all"), "--batch"),
    ("export", "--atol"): ("abc", ("--onnx", "--all"), "--atol"),
    ("export", "--model"): ("nosuchpkg.mod:f", ("--onnx", "--all"), "nosuchpkg"),
    ("export", "--calib"): ("/nonexistent/data", ("--onnx", "--all", "--int8"), "/nonexistent/data"),
    ("export", "--calib-batches"): (
        "0",
        ("--onnx", "--all", "--int8", "--calib", "digits"),
        "--calib-batches",
    ),
    ("export", "--max-drop"): ("-1", ("--onnx", "--all", "--int8", "--calib", "digits"), "--max-drop"),
    ("export", "--task"): ("rows", ("--onnx", "--all", "--int8", "--calib", "digits"), "--task rows"),
    ("bench", "--backend"): ("tpu", (), "tpu"),
    ("bench", "--threads"): ("0", (), "threads"),
    ("bench", "--batch"): ("0", (), "batch"),
    ("bench", "--points"): ("p99", (), "p99"),
    ("bench", "--warmup"): ("-1", (), "warmup"),
    ("bench", "--runs"): ("0", (), "runs"),
    ("bench", "--profile"): ("!!!", ("--update",), "!!!"),
    ("bench", "--exports"): ("/dev/null", (), "/dev/null"),
    ("bench", "--model"): ("nosuchpkg.mod:f", (), "nosuchpkg"),
    ("bench lut", "--backend"): ("tpu", (), "tpu"),
    ("bench lut", "--threads"): ("0", (), "threads"),
    ("bench lut", "--batch"): ("0", (), "batch"),
    ("bench lut", "--warmup"): ("-1", (), "warmup"),
    ("bench lut", "--runs"): ("0", (), "runs"),
    ("bench lut", "--profile"): ("!!!", (), "!!!"),
    ("bench lut", "--lut-levels"): ("0", (), "lut-levels"),
    ("bench lut", "--lut-validate"): ("-1", (), "lut-validate"),
    ("bench lut", "--lut-calibrate"): ("-1", (), "lut-calibrate"),
    ("bench lut", "--model"): ("nosuchpkg.mod:f", (), "nosuchpkg"),
    # A front is given to every bench row: the flags that describe --arch's network are refused with it.
    ("bench lut", "--arch"): ("resnet20", (), "--arch"),
    ("bench lut", "--classes"): ("0", (), "--classes"),
    ("bench lut", "--image-size"): ("0", (), "--image-size"),
    ("bench lut", "--width-factor"): ("0", (), "--width-factor"),
    ("bench lut", "--low"): ("0", (), "--low"),
    ("bench lut", "--out"): ("t.json", (), "--out"),
    ("bench import", "--from"): ("/nonexistent/pixel7.csv", ("--profile", "pixel7"), "pixel7.csv"),
    ("bench import", "--profile"): ("!!!", ("--from", "/dev/null"), "!!!"),
    ("bench import", "--threads"): ("0", IMPORT, "threads"),
    ("bench import", "--batch"): ("0", IMPORT, "batch"),
    ("eval", "--data"): ("/nonexistent/data", (), "/nonexistent/data"),
    ("eval", "--split"): (" ", DATA, "--split"),
    ("eval", "--model"): ("nosuchpkg.mod:f", DATA, "nosuchpkg"),
    ("eval", "--task"): ("rows", DATA, "--task rows"),
    ("calibrate", "--alpha"): ("0.5,x", DATA, "--alpha"),
    ("calibrate", "--width"): ("2", DATA, "--width"),
    ("calibrate", "--data"): ("/nonexistent/data", ("--width", "0.5"), "/nonexistent/data"),
    ("calibrate", "--calib-batches"): ("0", WIDTH, "--calib-batches"),
    ("calibrate", "--id"): ("a/b", WIDTH, "--id"),
    ("calibrate", "--model"): ("nosuchpkg.mod:f", WIDTH, "nosuchpkg"),
    ("calibrate", "--task"): ("segmentation", WIDTH, "trained by --task classification"),
    ("specialize", "--profile"): ("pixel7", DATA, "'pixel7'"),
    ("specialize", "--data"): ("/nonexistent/data", PROFILE, "/nonexistent/data"),
    ("specialize", "--points"): ("1", SPEC, "--points"),
    ("specialize", "--evals"): ("0", SPEC, "--evals"),
    ("specialize", "--calib-batches"): ("0", SPEC, "--calib-batches"),
    ("specialize", "--seed"): ("abc", SPEC, "--seed"),
    ("specialize", "--model"): ("nosuchpkg.mod:f", SPEC, "nosuchpkg"),
    ("specialize", "--task"): ("detection", SPEC, "trained by --task classification"),
}
# Options whose every value is a place to write to (a bad one is a folder that cannot be made).
OUTPUTS = {("train", "--out"), ("export", "--out"), ("show", "--plot"), ("specialize", "--out")}
# A data cache that cannot be written is a warning, and the run decodes the images again. What ran
# the imported figures, and where, are free text.
EXEMPT = {("train", "--cache-dir"), ("bench import", "--runtime"), ("bench import", "--host")}


def _commands() -> dict[str, click.Command]:
    """Every command by its spelling after ``pareco``, subcommands (``bench lut``) included."""
    group = typer.main.get_command(app)
    found: dict[str, click.Command] = {}
    for name, cmd in group.commands.items():
        found[name] = cmd
        for sub, subcommand in getattr(cmd, "subcommands", {}).items():
            found[f"{name} {sub}"] = subcommand
    return found


def _value_options() -> list[tuple[str, str]]:
    return [
        (name, p.opts[0])
        for name, cmd in _commands().items()
        for p in cmd.params
        if p.param_type_name == "option" and not p.is_flag
    ]


def test_the_table_covers_every_option() -> None:
    missing = sorted(set(_value_options()) - set(BAD) - OUTPUTS - EXEMPT)
    assert not missing, f"options without a bad-value case: {missing}"


@pytest.fixture(scope="module")
def with_table(tiny_front: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny front with a made-up latency table for profile 'phone' (what specialize reads)."""
    import shutil

    from pareco_runtime.latency_table import lut_path
    from pareco_runtime.runtime import SlimmableRuntime

    from .latency_tables import synthetic_table

    folder = tmp_path_factory.mktemp("with_table") / "front"
    shutil.copytree(tiny_front.parent, folder)
    manifest = folder / tiny_front.name
    synthetic_table(SlimmableRuntime.load(manifest).model, "phone").save(lut_path(manifest, "phone"))
    return manifest


@pytest.mark.parametrize(("command", "option"), sorted(BAD))
def test_a_bad_value_is_one_line(
    command: str, option: str, tiny_front: Path, with_table: Path, tmp_path: Path, cli
) -> None:
    value, extra, word = BAD[(command, option)]
    args = command.split()
    if args[0] in ("select", "export", "bench", "eval", "calibrate"):
        args.append(str(tiny_front))
    if command == "specialize":
        args.append(str(with_table))
    if command == "train":
        args += ["--data", "synthetic:64:2", "--image-size", "8", "--epochs", "1", "--batch-size", "16"]
        args += ["--out", str(tmp_path / "run")]
    if command == "export":
        args += ["--out", str(tmp_path / "exports")]
    if command == "select" and option != "--budget":
        args += ["--budget", "1000MFLOPs"]
    if command == "flops" and option != "--arch":
        args += ["--arch", "resnet20"]
    r = cli(*args, *extra, option, value)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-1500:]
    assert word in lines[0], lines[0]


@pytest.mark.parametrize(("command", "option"), sorted(OUTPUTS))
def test_an_output_that_cannot_be_made_is_one_line(
    command: str, option: str, tiny_front: Path, with_table: Path, tmp_path: Path, cli
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = str(blocker / "inside")
    args = {
        "train": ["train", "--data", "synthetic:64:2", "--batch-size", "16", "--epochs", "1"],
        "export": ["export", str(tiny_front), "--all", "--onnx", "--out", str(tmp_path / "e")],
        "show": ["show", str(tiny_front)],
        "specialize": ["specialize", str(with_table), *SPEC],
    }[command]
    r = cli(*args, option, target)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "a-file" in lines[0], r.stderr[-1500:]


def _help(cli, *command: str) -> str:
    r = cli(*command, "--help")
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_every_option_says_what_value_it_takes(cli) -> None:
    """No option shows the type placeholders the CLI framework makes up (<str>, <list[str]>, <bool>)."""
    import re

    for name in _commands():
        heads = re.findall(r"^\s+(--[-\w]+(?: \S+)?)", _help(cli, *name.split()), re.M)
        assert len(heads) > 2, name
        assert not [h for h in heads if "<" in h], name


def test_train_help_groups_its_options_and_gives_examples_that_parse(cli) -> None:
    import shlex

    from pareco_cli.train import EXAMPLES, HELP_SECTIONS

    command = typer.main.get_command(app).commands["train"]
    names = [p.name for p in command.params] + ["help"]
    listed = [n for section in HELP_SECTIONS.values() for n in section]
    assert sorted(listed) == sorted(names), "every option of pareco train is in exactly one section"
    text = _help(cli, "train")
    positions = [text.index(f"\n{title}:\n") for title in HELP_SECTIONS]
    assert positions == sorted(positions)
    assert "--algorithm independent|slim|pareco|twostage" in text
    examples = [
        line.strip()
        for line in EXAMPLES.replace("\\\n", " ").splitlines()
        if line.strip().startswith("pareco")
    ]
    assert len(examples) == 3 and all(e in " ".join(text.replace("\\\n", " ").split()) for e in examples[:1])
    for example in examples:
        args = shlex.split(example)[2:]
        command.make_context("train", args)  # every flag of the example exists and its value parses


# What each of pareco bench's commands takes, and a few options that belong to another one of them.
BENCH_HELP = {
    "bench": (
        {"--backend", "--points", "--int8", "--through-runtime", "--exports"},
        {"--lut-levels", "--arch", "--from", "--build-lut", "--import"},
    ),
    "bench lut": (
        {"--backend", "--lut-levels", "--arch", "--out"},
        {"--points", "--int8", "--from", "--exports"},
    ),
    "bench import": (
        {"--from", "--profile", "--runtime", "--host"},
        {"--backend", "--runs", "--points", "--arch"},
    ),
}


@pytest.mark.parametrize("command", sorted(BENCH_HELP))
def test_each_bench_command_lists_only_its_options(cli, command: str) -> None:
    import re

    mine, others = BENCH_HELP[command]
    listed = set(re.findall(r"^\s+(--[-\w]+)", _help(cli, *command.split()), re.M))
    assert mine <= listed and not others & listed, listed


@pytest.mark.parametrize(
    ("old", "note"),
    [
        (("--build-lut",), "note: `pareco bench --build-lut` is now `pareco bench lut`"),
        (
            ("--import", "x.csv"),
            "note: `pareco bench --import FILE` is now `pareco bench import --from FILE`",
        ),
    ],
)
def test_the_old_bench_spellings_run_the_subcommands_and_say_the_new_one(cli, old, note) -> None:
    r = cli("bench", *old, "--help")
    assert r.returncode == 0 and r.stderr.strip() == note
    assert f"bench {'lut' if '--build-lut' in old else 'import'} [OPTIONS]" in r.stdout.splitlines()[0]
