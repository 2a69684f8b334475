"""Training core: trainers, BN calibration, front files, resume, NaN guard, out-dir safety, DDP."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pareco_runtime import build_model
from pareco_runtime.manifest import load_manifest
from pareco_runtime.weights_file import load_weights
from training.calibrate import calibrate_bn, evaluate
from training.config import TrainConfig, TrainingError
from training.data import load_data
from training.loop import lr_at, train
from training.strategies import Slim, widths_spread_over_macs

SYN = "synthetic:256:4"


@pytest.mark.slow
def test_slim_run_writes_a_valid_front(tmp_path, small_train_settings):
    manifest_path = train(
        TrainConfig(epochs=2, **small_train_settings), tmp_path, show_progress=False, log_every=1
    )
    manifest = load_manifest(manifest_path)
    pts = manifest["points"]
    assert pts and manifest["training"]["algorithm"] == "slim"
    macs = [p["mflops"] for p in pts]
    chosen_by = [p["selection_top1"] for p in pts]
    assert macs == sorted(macs)
    assert all(b > a for a, b in itertools.pairwise(chosen_by)), "a front's accuracy rises with cost"
    splits = manifest["dataset"]["splits"]
    # synthetic:256:4: 51 validation images, then 10 % of the other 205 held out for selection
    assert splits["top1"] == {"name": "val", "images": 51}
    assert splits["selection"] == {"name": "train-holdout", "images": 20, "fraction": 0.1, "seed": 0}
    wf = load_weights(tmp_path / "model.safetensors")
    assert set(wf.bn_stats) == {p["id"] for p in pts}
    m = build_model("resnet20", num_classes=4, input_size=16)
    assert set(wf.state) == set(m.state_dict())
    for p in pts:
        assert p["mflops"] * 1e6 == pytest.approx(m.macs(p["alpha"]))
    # top1 is each point's figure on the validation split, with its stored statistics
    data = load_data(SYN, image_size=16, device="cpu")
    m.load_state_dict(wf.state)
    for p in pts:
        stats = [wf.bn_stats[p["id"]][name] for name in m.bn_names]
        ev = evaluate(m, p["alpha"], stats, data.val_batches(500))
        assert p["top1"] == round(ev.top1, 4)
    log = [json.loads(line) for line in (tmp_path / "train.log.jsonl").read_text().splitlines()]
    assert any("epoch_time_s" in r for r in log) and any("img_per_s" in r for r in log)


def test_independent_trains_one_config(tmp_path, small_train_settings):
    path = train(
        TrainConfig(epochs=1, algorithm="independent", width=0.5, **small_train_settings),
        tmp_path,
        show_progress=False,
    )
    pts = load_manifest(path)["points"]
    assert len(pts) == 1 and pts[0]["alpha"] == [0.5] * 6


def test_slim_step_uses_sandwich_rule():
    m = build_model("resnet20")
    s = Slim(seed=0, samples=3)
    s.setup(m, 10)
    cfgs = s.step_configs(0, m, None)
    assert cfgs[0] == [1.0] * 6 and cfgs[-1] == [0.316] * 6 and len(cfgs) == 5
    assert all(len(set(c)) == 1 for c in cfgs), "Slim trains uniform widths"


def test_candidates_spread_over_macs():
    m = build_model("resnet20")
    ws = widths_spread_over_macs(m, 40)
    macs = [m.macs(m.space.uniform(w)) for w in ws]
    assert ws[0] == 0.316 and ws[-1] == 1.0 and len(ws) >= 35
    gaps = [b - a for a, b in itertools.pairwise(macs)]
    assert max(gaps) < 3 * (macs[-1] - macs[0]) / 39


def test_bn_calibration_is_cumulative_average():
    torch.manual_seed(0)
    m = build_model("resnet20", input_size=8)
    alpha = m.space.uniform(0.5)
    batches = [torch.randn(4, 3, 8, 8) * (i + 1) for i in range(3)]
    stats = calibrate_bn(m, alpha, batches)
    k = m.channels(alpha)[0]
    assert stats[0][0].shape == (k,)
    # First BN sees conv1's output: its mean is the average of the per-batch means.
    m.set_widths(alpha)
    per_batch = [m.conv1(x).mean(dim=(0, 2, 3)) for x in batches]
    assert torch.allclose(stats[0][0], torch.stack(per_batch).mean(0), atol=1e-5)
    ev = evaluate(m, alpha, stats, [(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))])
    assert 0 <= ev.top1 <= 100 and ev.loss > 0


def test_lr_schedule():
    cfg = TrainConfig(lr=0.1, warmup_epochs=1)
    assert lr_at(cfg, 0, 100, 10) == pytest.approx(0.01)
    assert lr_at(cfg, 9, 100, 10) == pytest.approx(0.1)
    assert lr_at(cfg, 99, 100, 10) < 1e-3
    lin = TrainConfig(lr=0.1, schedule="linear")
    assert lr_at(lin, 50, 100, 10) == pytest.approx(0.05)


@pytest.mark.slow
def test_resume_after_kill_is_bit_identical(tmp_path, cli_process, kill_mid_epoch, train_cli_args):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = cli_process(*train_cli_args(ref, 2))
    assert r.returncode == 0, r.stderr
    kill_mid_epoch(train_cli_args(killed, 2), killed)
    assert not (killed / "model.safetensors").exists()
    r = cli_process(*train_cli_args(killed, 2, extra=("--resume",)))
    assert r.returncode == 0, r.stderr
    a, b = load_file(ref / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        load_manifest(ref / "model.front.json")["points"]
        == load_manifest(killed / "model.front.json")["points"]
    )


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, cli, train_cli_args):
    r = cli(*train_cli_args(tmp_path, 2, extra=("--lr", "1e30")))
    assert r.returncode == 2
    assert "training diverged" in r.stderr and "lower --lr" in r.stderr
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.slow
def test_out_dir_with_another_run_is_refused(tmp_path, small_train_settings):
    train(TrainConfig(epochs=1, **small_train_settings), tmp_path, show_progress=False)
    with pytest.raises(TrainingError, match="already holds a training run"):
        train(TrainConfig(epochs=1, **small_train_settings), tmp_path, show_progress=False)
    with pytest.raises(TrainingError, match="settings that differ"):
        train(TrainConfig(epochs=2, **small_train_settings), tmp_path, resume=True, show_progress=False)
    train(TrainConfig(epochs=1, **small_train_settings), tmp_path, force=True, show_progress=False)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--algorithm", "bogus"], "unknown algorithm 'bogus'"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--data", "/nonexistent/data"], "/nonexistent/data"),
    ],
)
def test_train_bad_input(tmp_path, cli, args, msg):
    r = cli("train", "--out", str(tmp_path / "o"), "--data", SYN, *args)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path, repo_root, train_cli_args):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "pareco_cli.main",
        *train_cli_args(tmp_path, 1),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    extra = load_manifest(tmp_path / "model.front.json")["training"]["extra"]
    assert extra["world_size"] == 2


@pytest.mark.slow
def test_slim_run_leaves_botorch_unimported(tmp_path, small_train_settings, python_process):
    """BoTorch is imported only by PareCO and TwoStage: a Slim run never loads it."""
    code = (
        "import sys; from training.config import TrainConfig; from training.loop import train; "
        f"train(TrainConfig(epochs=1, **{small_train_settings!r}), {str(tmp_path / 'api')!r}, show_progress=False); "
        "heavy = ('botorch', 'gpytorch', 'training.mobo', 'training.pareco'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    r = python_process(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_end_of_run_report_names_weak_points_gaps_and_the_bo_schedule():
    from types import SimpleNamespace as P

    from training.report import bo_line, front_warnings

    good = [P(macs=1e6, top1=60.0), P(macs=2.5e6, top1=70.0), P(macs=5e6, top1=75.0)]
    assert front_warnings(good, 10) == []
    weak = [P(macs=1e6, top1=11.0), P(macs=4e6, top1=70.0)]
    got = front_warnings(weak, 10)
    assert got[0].startswith("1 of 2 front points are at chance level (top-1 <= 11.0%, chance 10.0%)")
    assert "--epochs" in got[0]
    assert got[1] == (
        "the front has no point between 1.00 and 4.00 MFLOPs (4.0x); evaluate more candidates "
        "(--candidates) or train longer"
    )
    rec = {"bo_interval_steps": 11, "history_size": 11, "bo_time_share": 0.25}
    assert bo_line(rec, None) == (
        "BO every 11 step(s), |H| 11 (from the run's length; set --history-size to change it), 25% of the training time"
    )
    assert "set by --history-size" in bo_line(rec, 50)
    assert bo_line({"history_size": None}, None) is None


def test_short_runs_get_a_bo_interval_of_at_least_ten_steps():
    from training.pareco import bo_schedule

    assert bo_schedule(28, 2, None) == (11, 3)
    assert bo_schedule(250_000, 2, None) == bo_schedule(250_000, 2, 1000) == (500, 500)
    assert bo_schedule(28, 2, 1000) == (1, 28), "an explicit --history-size is honoured"


def _image_tree(root, classes: int) -> None:
    from PIL import Image

    for c in range(classes):
        folder = root / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(16):
            Image.new("RGB", (8, 8), (80 * c, 15 * i, 0)).save(folder / f"{i}.png")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("class", "does not fit this run's model"),
        ("rng", "RNG state is damaged"),
        ("epoch", "epoch -1 is outside 0..2"),
    ],
)
def test_a_resume_that_does_not_fit_is_refused_in_one_line(tmp_path, damage: str, message: str) -> None:
    data, out = tmp_path / "data", tmp_path / "run"
    _image_tree(data, 2)
    cfg = TrainConfig(
        data=str(data),
        epochs=2,
        batch_size=8,
        candidates=2,
        calib_batches=1,
        calib_batch_size=8,
        image_size=8,
    )
    train(cfg, out, show_progress=False, cache_dir=str(tmp_path / "cache"))
    (out / "model.front.json").unlink()  # as if stopped after the last epoch's checkpoint
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    if damage == "class":
        _image_tree(data, 3)  # the data gained a class since the checkpoint
    elif damage == "rng":
        ckpt["rng"]["cpu"] = torch.zeros(3, dtype=torch.uint8)
    else:
        ckpt["epoch"] = -1
    torch.save(ckpt, out / "checkpoint.pt")
    with pytest.raises(TrainingError, match=message) as err:
        train(cfg, out, resume=True, show_progress=False, cache_dir=str(tmp_path / "cache"))
    assert "--force" in str(err.value) and "\n" not in str(err.value)


def test_a_run_from_before_a_setting_existed_resumes_and_a_changed_one_is_named(tmp_path) -> None:
    import dataclasses
    import json

    from training.run_dir import prepare_out_dir

    cfg = TrainConfig(data="somewhere", epochs=2)
    saved = dataclasses.asdict(cfg)
    del saved["torchvision_widths"]  # a run.json written before pareco had this setting
    (tmp_path / "run.json").write_text(json.dumps(saved))
    prepare_out_dir(tmp_path, cfg, resume=True, force=False)
    with pytest.raises(TrainingError, match=r"differ from the run there \(torchvision_widths\)"):
        prepare_out_dir(tmp_path, dataclasses.replace(cfg, torchvision_widths=True), resume=True, force=False)
    with pytest.raises(TrainingError, match=r"\(epochs\)"):
        prepare_out_dir(tmp_path, dataclasses.replace(cfg, epochs=3), resume=True, force=False)


def test_new_mobilenet_runs_round_channels_to_8_and_older_runs_resume_unrounded(tmp_path) -> None:
    import dataclasses

    from training.loop import build_for_data
    from training.run_dir import resume_settings

    cfg = TrainConfig(arch="mobilenet_v2", data="somewhere")
    model = build_for_data(cfg, 10, (3, 32, 32))
    assert model.space.divisor == 8
    assert all(c % 8 == 0 for c in model.channels([0.7] * len(model.space.names)))
    unrounded = build_for_data(dataclasses.replace(cfg, divisor=1), 10, (3, 32, 32))
    assert (
        unrounded.space.divisor is None
        and build_for_data(TrainConfig(), 10, (3, 32, 32)).space.divisor is None
    )
    saved = dataclasses.asdict(cfg)
    del saved["divisor"]  # a MobileNet run started before the setting existed trained unrounded widths
    (tmp_path / "run.json").write_text(json.dumps(saved))
    assert resume_settings(tmp_path, dataclasses.asdict(cfg), ()).divisor == 1
