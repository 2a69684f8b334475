"""A training run talks: progress on logs and terminals, per-epoch top-1, the end-of-run summary, clean
failed starts, ``--resume`` from run.json alone, and ``--threads``."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shlex
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pareco_runtime import build_model
from pareco_runtime.manifest import load_manifest
from training import loop, progress
from training.config import TrainConfig
from training.data import load_data
from training.epoch_eval import epoch_top1
from training.front_builder import evaluate_candidates
from training.run_dir import settings_changed
from training.trainer import Trainer

# synthetic:128:4: 26 validation images, 10 held out for selection, 92 to train on: 2 steps of 32.
STEPS_PER_EPOCH = 2


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train.log.jsonl").read_text().splitlines()]


def _epoch_records(out: Path) -> list[dict]:
    return [r for r in _log(out) if "epoch_time_s" in r]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestProgress:
    @pytest.mark.slow
    def test_a_log_gets_plain_step_and_epoch_lines(self, tmp_path, cli, train_cli_args) -> None:
        r = cli(*train_cli_args(tmp_path, 2))
        assert r.returncode == 0, r.stderr[-2000:]
        steps = re.findall(
            r"^epoch (\d)/2 step (\d)/4 loss \d+\.\d{3} lr \d\.\d{4} \d+ img/s ETA (?:\d+:\d\d|-)$",
            r.stderr,
            re.M,
        )
        assert [int(s) for _, s, *_ in steps] == [1, 2, 3, 4]
        assert [e for e, *_ in steps] == ["1", "1", "2", "2"]
        ends = re.findall(r"^epoch (\d)/2 done in \d+:\d\d: mean loss .*; ETA \d+:\d\d$", r.stderr, re.M)
        assert ends == ["1", "2"]

    @pytest.mark.slow
    def test_the_front_building_reports_each_candidate(self, tmp_path, cli, train_cli_args) -> None:
        r = cli(*train_cli_args(tmp_path, 1))
        assert r.returncode == 0, r.stderr[-2000:]
        counts = re.findall(
            r"^front: (\d+)/(\d+) candidates calibrated and evaluated on held-out training images ETA",
            r.stderr,
            re.M,
        )
        total = int(counts[-1][1])
        assert [int(k) for k, _ in counts] == list(range(1, total + 1))
        assert re.search(r"^front: \d+ points chosen; evaluating them on val$", r.stderr, re.M)

    def test_a_terminal_gets_a_bar_with_the_epoch_and_an_eta(self) -> None:
        screen = _Terminal()
        bar = progress.Reporter(4, every=1, stream=screen)
        for done in range(1, 5):
            bar.update(done, "epoch 1/2", f"step {done}/4")
        bar.say("epoch 1/2 done")
        bar.close()
        text = screen.getvalue()
        assert "\x1b[" in text, "drawn with terminal escapes"
        assert "epoch 1/2" in text and "step 4/4" in text and "ETA 0:00" in text
        assert text.count("epoch 1/2 done") == 1

    def test_the_eta_counts_slow_steps_such_as_bo(self, monkeypatch) -> None:
        clock = iter([100.0, 103.0, 106.0, 146.0])  # the third step ran a 37-second BO iteration
        monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
        log = io.StringIO()
        bar = progress.Reporter(10, every=1, stream=log)
        for done in (1, 2, 3):
            bar.update(done, "epoch 1/1", f"step {done}/10")
        # 46 s for 3 steps, 7 to go: 107 s; a rate from the fast steps alone would say 21 s
        assert log.getvalue().splitlines()[-1] == "epoch 1/1 step 3/10 ETA 1:47"

    def test_a_resumed_run_estimates_from_its_own_steps(self, monkeypatch) -> None:
        clock = iter([0.0, 10.0])
        monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
        log = io.StringIO()
        bar = progress.Reporter(100, done=50, every=1, stream=log)
        assert bar.eta() == "ETA -"
        bar.update(60, "epoch 4/8", "step 60/100")
        assert log.getvalue().strip() == "epoch 4/8 step 60/100 ETA 0:40"

    def test_durations_read_as_clock_times(self) -> None:
        assert progress.format_duration(0.4) == "0:00"
        assert progress.format_duration(754) == "12:34"
        assert progress.format_duration(3723) == "1:02:03"

    @pytest.mark.slow
    def test_a_run_without_progress_prints_nothing(self, tmp_path, small_train_settings, capsys) -> None:
        with warnings.catch_warnings():  # the end-of-run warnings about the front are not progress
            warnings.simplefilter("ignore")
            loop.train(TrainConfig(epochs=1, **small_train_settings), tmp_path, show_progress=False)
        out, err = capsys.readouterr()
        assert out == "" and "epoch" not in err and "front:" not in err


@pytest.mark.slow
class TestEpochEval:
    def test_each_epoch_logs_the_largest_and_smallest_top1(self, tmp_path, cli, train_cli_args) -> None:
        r = cli(*train_cli_args(tmp_path, 2))
        assert r.returncode == 0, r.stderr[-2000:]
        checks = [rec["epoch_eval"] for rec in _epoch_records(tmp_path)]
        assert len(checks) == 2
        for check in checks:
            assert set(check["top1"]) == {"largest", "smallest"}
            assert all(0.0 <= v <= 100.0 for v in check["top1"].values())
            assert (check["split"], check["images"], check["calib_images"]) == ("train-holdout", 10, 64)
        line = re.findall(r"^epoch 2/2 done in .*$", r.stderr, re.M)[0]
        top1 = checks[-1]["top1"]
        assert f"largest {top1['largest']:.1f}%, smallest {top1['smallest']:.1f}%" in line
        assert "on 10 held-out training images, BN re-estimated on 64 training images" in line

    def test_the_figures_are_those_the_front_builder_measures(self, tmp_path, small_train_settings) -> None:
        cfg = TrainConfig(epochs=1, **small_train_settings)
        loop.train(cfg, tmp_path, show_progress=False)
        logged = _epoch_records(tmp_path)[-1]["epoch_eval"]["top1"]
        data = load_data(cfg.data, image_size=cfg.image_size, seed=cfg.seed, device="cpu")
        model = build_model("resnet20", num_classes=4, input_size=16)
        model.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"])
        largest, smallest = model.space.uniform(1.0), model.space.smallest()
        cands = evaluate_candidates(
            model, [largest, smallest], data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed
        )
        assert logged == {
            "largest": round(cands[0].selection["top1"], 2),
            "smallest": round(cands[1].selection["top1"], 2),
        }

    @pytest.mark.slow
    def test_it_changes_no_trained_weight(self, tmp_path, small_train_settings) -> None:
        for name, images in (("on", 1000), ("off", 0)):
            loop.train(
                TrainConfig(epochs=2, epoch_eval=images, **small_train_settings),
                tmp_path / name,
                show_progress=False,
            )
        a, b = (
            load_file(tmp_path / "on" / "model.safetensors"),
            load_file(tmp_path / "off" / "model.safetensors"),
        )
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert all("epoch_eval" not in r for r in _epoch_records(tmp_path / "off"))
        assert all("epoch_eval" in r for r in _epoch_records(tmp_path / "on"))

    def test_it_leaves_the_random_streams_and_the_model_as_they_were(self) -> None:
        # MobileNetV2 has a dropout, which draws random numbers in the train-mode calibration forwards.
        model = build_model("mobilenet_v2", num_classes=4, input_size=16)
        data = load_data("synthetic:64:4", image_size=16, device="cpu")
        before_rng = torch.get_rng_state()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        result = epoch_top1(model, {"smallest": model.space.smallest()}, data, 3, 1, 16, 0)
        assert result["images"] == 3 and result["split"] == "train-holdout"
        assert torch.equal(torch.get_rng_state(), before_rng)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert model.training

    def test_independent_reports_the_config_it_trains(self, tmp_path, small_train_settings) -> None:
        cfg = TrainConfig(epochs=1, algorithm="independent", width=0.5, **small_train_settings)
        loop.train(cfg, tmp_path, show_progress=False)
        assert set(_epoch_records(tmp_path)[0]["epoch_eval"]["top1"]) == {"trained"}

    def test_it_can_be_turned_off(self, tmp_path, cli, train_cli_args) -> None:
        r = cli(*train_cli_args(tmp_path, 1, extra=("--epoch-eval", "0")))
        assert r.returncode == 0, r.stderr[-2000:]
        assert "epoch_eval" not in _epoch_records(tmp_path)[0]
        assert re.search(r"^epoch 1/1 done in \d+:\d\d: mean loss \d+\.\d{3}; ETA", r.stderr, re.M)


@pytest.mark.slow
class TestSummary:
    def test_the_run_ends_with_a_summary_and_commands_that_work(self, tmp_path, cli, train_cli_args) -> None:
        out = tmp_path / "my run"
        r = cli(*train_cli_args(out, 1))
        assert r.returncode == 0, r.stderr[-2000:]
        points = load_manifest(out / "model.front.json")["points"]
        lines = r.stdout.splitlines()
        assert re.match(
            rf"front: {len(points)} points, \d+\.\d\d-\d+\.\d\d MFLOPs, from \d+ candidates", lines[0]
        )
        assert "chosen on 10 held-out training images" in lines[0]
        assert re.match(r"best: p\d\d, top-1 \d+\.\d\d% on val at \d+\.\d\d MFLOPs", lines[1])
        assert lines[2].startswith("time: training ")
        assert lines[3].startswith("files: ") and str(out / "model.front.json") in lines[3]
        commands = [line.strip() for line in lines[lines.index("next:") + 1 :]]
        assert [c.split()[1] for c in commands] == ["show", "select", "export"]
        for command in commands[:2]:  # exporting is tested with the exports
            ran = cli(*shlex.split(command)[1:])
            assert ran.returncode == 0, (command, ran.stderr)
        assert "'" in commands[0], "a folder with a space is quoted"

    @pytest.mark.slow
    def test_json_prints_the_summary_and_nothing_else(self, tmp_path, cli, train_cli_args) -> None:
        r = cli(*train_cli_args(tmp_path, 1, extra=("--json",)))
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads(r.stdout)
        manifest = load_manifest(tmp_path / "model.front.json")
        mflops = [p["mflops"] for p in manifest["points"]]
        assert summary["points"] == len(mflops)
        assert summary["mflops"] == [round(min(mflops), 4), round(max(mflops), 4)]
        best = max(manifest["points"], key=lambda p: p["top1"])
        assert summary["best"] == {
            "id": best["id"],
            "mflops": round(best["mflops"], 4),
            "top1": best["top1"],
            "split": "val",
        }
        assert summary["chosen_on"]["name"] == "train-holdout"
        assert sorted(Path(f).name for f in summary["files"]) == sorted(
            ["model.front.json", "model.safetensors", "checkpoint.pt", "train.log.jsonl", "run.json"]
        )
        assert summary["wall_time_s"]["training"] > 0 and summary["bo"] is None
        budget = summary["next"][1].split("--budget ")[1]
        assert float(budget.removesuffix("MFLOPs")) >= sorted(mflops)[len(mflops) // 2]


class TestFailedStart:
    @pytest.mark.slow
    @pytest.mark.parametrize(
        ("flag", "bad", "word"),
        [
            ("--data", "/nonexistent/data", "/nonexistent/data"),
            ("--arch", "resnet99", "resnet99"),
            ("--batch-size", "4096", "one global batch"),
        ],
    )
    def test_the_corrected_command_runs_without_force(
        self, flag: str, bad: str, word: str, tmp_path, cli, train_cli_args
    ) -> None:
        args = train_cli_args(tmp_path / "run", 1)
        r = cli(*args, flag, bad)  # the last value of an option is the one used
        assert r.returncode == 2 and word in r.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "run" / "run.json").exists()
        r = cli(*args)
        assert r.returncode == 0, r.stderr[-2000:]
        assert (tmp_path / "run" / "model.front.json").exists()

    def test_a_refused_start_writes_no_folder(self, tmp_path, cli, train_cli_args) -> None:
        r = cli(*train_cli_args(tmp_path / "run", 1, extra=("--data", "/nonexistent/data")))
        assert r.returncode == 2 and not (tmp_path / "run").exists()


class TestResume:
    @pytest.mark.slow
    def test_resume_alone_continues_the_run_bit_for_bit(
        self, tmp_path, cli, train_cli_args, monkeypatch
    ) -> None:
        ref, cut = tmp_path / "ref", tmp_path / "cut"
        assert cli(*train_cli_args(ref, 2)).returncode == 0
        real_save = loop.save_checkpoint

        def save_then_stop(path, state):
            real_save(path, state)
            raise KeyboardInterrupt  # Ctrl-C right after the first epoch's checkpoint

        with monkeypatch.context() as m:
            m.setattr(loop, "save_checkpoint", save_then_stop)
            assert cli(*train_cli_args(cut, 2)).returncode == 130  # as a shell reports Ctrl-C
        assert (cut / "run.json").exists() and not (cut / "model.front.json").exists()
        r = cli("train", "--out", str(cut), "--resume")
        assert r.returncode == 0, r.stderr[-2000:]
        assert re.search(r"^epoch 2/2 done in", r.stderr, re.M) and "epoch 1/2 done" not in r.stderr
        a, b = load_file(ref / "model.safetensors"), load_file(cut / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    @pytest.mark.slow
    def test_a_flag_that_differs_from_the_run_is_refused_naming_it(
        self, tmp_path, cli, train_cli_args
    ) -> None:
        assert cli(*train_cli_args(tmp_path, 1)).returncode == 0
        r = cli("train", "--out", str(tmp_path), "--resume", "--epochs", "1", "--lr", "0.5")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1
        assert "settings that differ from the run there (lr)" in lines[0]

    def test_resume_where_there_is_no_run_says_so(self, tmp_path, cli) -> None:
        r = cli("train", "--out", str(tmp_path), "--resume")
        assert r.returncode == 2 and "no run to resume" in r.stderr and "without --resume" in r.stderr

    def test_settings_that_train_the_same_may_change_on_resume(self) -> None:
        saved = dataclasses.asdict(TrainConfig(epochs=3))
        assert settings_changed(saved, TrainConfig(epochs=3, threads=4, epoch_eval=0)) == []
        assert settings_changed(saved, TrainConfig(epochs=4, threads=4)) == ["epochs"]


class TestThreads:
    @pytest.mark.slow
    def test_the_run_trains_on_the_threads_asked_and_gives_them_back(
        self, tmp_path, small_train_settings, monkeypatch
    ) -> None:
        seen = []
        real_step = Trainer.train_step

        def counting_step(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return real_step(*args, **kwargs)

        monkeypatch.setattr(Trainer, "train_step", counting_step)
        before = torch.get_num_threads()
        loop.train(TrainConfig(epochs=1, threads=2, **small_train_settings), tmp_path, show_progress=False)
        assert set(seen) == {2} and torch.get_num_threads() == before
        assert json.loads((tmp_path / "run.json").read_text())["threads"] == 2

    def test_a_bad_count_is_one_line_naming_the_flag(self, tmp_path, cli) -> None:
        r = cli("train", "--out", str(tmp_path / "run"), "--threads", "0")
        assert (
            r.returncode == 2
            and r.stderr.strip() == "error: --threads must be at least 1 (CPU threads), got 0"
        )
        assert not (tmp_path / "run").exists()
