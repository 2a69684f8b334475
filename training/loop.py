"""The shared training loop: one function that trains any strategy and writes the front.

SGD with Nesterov momentum and weight decay, a per-step cosine or linear schedule with linear
warm-up, optional label smoothing, bf16 autocast on GPU, a checkpoint per epoch (bit-exact
resume on CPU), rich progress and the same figures as JSON lines in ``OUT/train.log.jsonl``,
DistributedDataParallel under ``torchrun``, and a refusal to train on a NaN/inf loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pareco_runtime import ConversionError, build_model, make_slimmable
from pareco_runtime.atomic import atomic_write_text, remove_stale_temporaries
from pareco_runtime.fileformat import first_line
from pareco_runtime.filelock import locked
from pareco_runtime.front_file import MANIFEST_NAME
from pareco_runtime.models.base import SlimmableNet
from pareco_runtime.sources import is_converted, original_from_user
from pareco_runtime.untrusted import FormatError, read_json

from . import distributed, report
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .config import TrainConfig, TrainingError
from .front_builder import (
    evaluate_candidates,
    evaluate_chosen,
    pareto_candidates,
    split_record,
    write_outputs,
)
from .init_weights import load_initial_state
from .strategies import Independent, Slim, Strategy

RUN_NAME = "run.json"
LOG_NAME = "train.log.jsonl"


def make_strategy(cfg: TrainConfig) -> Strategy:
    """The strategy object for ``cfg.algorithm``."""
    if cfg.algorithm == "independent":
        return Independent(cfg.seed, width=cfg.width, torchvision_widths=cfg.torchvision_widths)
    if cfg.algorithm == "slim":
        return Slim(
            cfg.seed,
            samples=cfg.samples,
            num_candidates=cfg.candidates,
            torchvision_widths=cfg.torchvision_widths,
        )
    from .pareco import make_bo_strategy  # BoTorch is heavy: imported only when asked for

    return make_bo_strategy(cfg)


def build_for_data(cfg: TrainConfig, num_classes: int, input_size: tuple[int, int, int]) -> SlimmableNet:
    """The slimmable model of ``cfg.arch`` sized for the data's classes and resolution, at ``cfg.init``'s
    weights when given.

    A converted architecture is built as the original module, given the initial weights (the keys a
    user's checkpoint has), then made slimmable; ``pkg.module:factory`` is imported because the user
    named it on the command line.
    """
    if is_converted(cfg.arch):
        try:
            original = original_from_user(cfg.arch, {"num_classes": num_classes})
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if cfg.init:
            load_initial_state(original, cfg.init, cfg.arch, num_classes)
        try:
            return make_slimmable(
                original,
                torch.zeros(1, *input_size),
                low=cfg.low,
                lows=cfg.group_lows(),
                pin=cfg.pin_patterns(),
                arch=cfg.arch,
                model_kwargs={"num_classes": num_classes},
            )
        except ConversionError as exc:
            # The library names its keyword arguments; the user typed flags.
            raise TrainingError(
                f"--arch {cfg.arch}: {exc.cli or str(exc).removeprefix('make_slimmable: ')}"
            ) from None
    kwargs: dict[str, Any] = {"num_classes": num_classes, "input_size": input_size[-1]}
    if cfg.arch.startswith("resnet"):
        kwargs["width"] = cfg.width_factor
    model = build_model(cfg.arch, **kwargs)
    if cfg.init:
        load_initial_state(model, cfg.init, cfg.arch, num_classes)
    return model


def lr_at(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine or linear decay to zero."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
    return cfg.lr * (1 - frac)


def _prepare_out_dir(out: Path, cfg: TrainConfig, resume: bool, force: bool) -> None:
    remove_stale_temporaries(out)  # of writes that a killed run interrupted
    # Checked and written under run.json's lock: of two runs started into one new folder at once,
    # the second finds the first's run.json (and refuses without --resume / --force).
    with locked(out / RUN_NAME):
        _check_and_write_run(out, cfg, resume, force)


def _check_and_write_run(out: Path, cfg: TrainConfig, resume: bool, force: bool) -> None:
    run_file = out / RUN_NAME
    current = dataclasses.asdict(cfg)
    if run_file.exists():
        try:
            previous = read_json(run_file, "run settings file", "move it away or pass --force")
        except FormatError:
            previous = None  # unreadable settings differ from any: --resume refuses, --force overwrites
        if resume:
            diff = _settings_changed(previous, cfg)
            if diff:
                raise TrainingError(
                    f"{out}: --resume with settings that differ from the run there "
                    f"({', '.join(diff)}); use the same settings, or --force to start afresh"
                )
            return
        if not force:
            raise TrainingError(
                f"{out} already holds a training run; pass --resume to continue it or --force to overwrite it"
            )
    elif resume:
        raise TrainingError(f"{out}: no run to resume (no {RUN_NAME}); run without --resume")
    if force:
        for name in (CHECKPOINT_NAME, LOG_NAME):
            (out / name).unlink(missing_ok=True)
    atomic_write_text(run_file, json.dumps(current, indent=2))


def _settings_changed(previous: dict[str, Any] | None, cfg: TrainConfig) -> list[str]:
    """Names of the settings in which ``cfg`` differs from a run's saved ``previous`` ones. A setting
    that a newer pareco added is absent from an older run.json and reads as its default (the value
    that keeps the old behaviour), so a run started before an upgrade still resumes."""
    current = dataclasses.asdict(cfg)
    if previous is None:
        return sorted(current)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return sorted(k for k in current if previous.get(k, defaults[k]) != current[k])


def _restore(
    ckpt: dict[str, Any],
    path: Path,
    cfg: TrainConfig,
    model: SlimmableNet,
    opt: torch.optim.Optimizer,
    strategy: Strategy,
) -> tuple[int, float]:
    """Load a checkpoint into the run; (epoch to continue from, wall time so far). A checkpoint that
    does not fit (the data gained a class, a damaged RNG state or epoch) is a one-line TrainingError."""
    redo = "start afresh with --force, or restore what changed"
    epoch = int(ckpt["epoch"])
    if not 0 <= epoch <= cfg.epochs:
        raise TrainingError(
            f"{path}: epoch {epoch} is outside 0..{cfg.epochs} (--epochs); the checkpoint is damaged; {redo}"
        )
    try:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise TrainingError(
            f"{path}: does not fit this run's model ({first_line(exc).strip()}); the data or the "
            f"architecture changed since it was written (e.g. a class folder was added); {redo}"
        ) from None
    try:
        strategy.load_state_dict(ckpt["strategy"])
        _set_rng_state(ckpt["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"{path}: its strategy or RNG state is damaged ({first_line(exc)}); {redo}"
        ) from None
    return epoch, float(ckpt["wall_time_s"])


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def train_step(
    net: torch.nn.Module,
    model: SlimmableNet,
    opt: torch.optim.Optimizer,
    configs: list[list[float]],
    x: torch.Tensor,
    y: torch.Tensor,
    distill: float,
    label_smoothing: float,
    ddp: bool,
) -> list[float]:
    """One update on the mean of the losses of ``configs``; returns each config's cross-entropy.

    The first config learns from the labels. With ``distill`` = w > 0 it is also the teacher: the
    others learn from ``(1 - w) * CE(labels) + w * CE(teacher's soft predictions)`` (in-place
    distillation). The mean, not the sum, keeps ``--lr`` comparable with a single model's.
    Under DDP, gradients are all-reduced once, on the last backward.
    """
    opt.zero_grad(set_to_none=True)
    teacher = None
    losses = []
    n = len(configs)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if x.is_cuda else contextlib.nullcontext()
    for j, alpha in enumerate(configs):
        model.set_widths(alpha)
        sync = contextlib.nullcontext() if (not ddp or j == n - 1) else net.no_sync()
        with sync:
            with amp:
                out = net(x).float()
            ce = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            loss = ce
            if teacher is not None:
                loss = (1 - distill) * ce + distill * -(teacher * F.log_softmax(out, dim=1)).sum(1).mean()
            (loss / n).backward()
        if distill and teacher is None:
            teacher = out.detach().softmax(1)
        losses.append(ce.item())
    opt.step()
    return losses


def distill_weight(cfg: TrainConfig, step: int, total: int) -> float:
    """Weight of in-place distillation at ``step``: ramps from 0 to 1 over ``cfg.distill_warmup`` of the run.

    The teacher starts untrained; matching it from the first step slowed short runs markedly in
    our measurements (README, Training), so students lean on the labels until it has learned.
    """
    ramp = cfg.distill_warmup * total
    return 1.0 if ramp <= 0 else min(1.0, step / ramp)


class _Progress:
    """rich progress on the main rank plus JSON lines in the log file."""

    def __init__(self, log_path: Path | None, show: bool, total: int, done: int) -> None:
        # Held open for the whole run (closed by close()), one line per record.
        self.log = open(log_path, "a", encoding="utf-8") if log_path is not None else None  # noqa: SIM115
        self.bar = None
        if show:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def update(self, record: dict[str, Any], advance: int = 1) -> None:
        if self.bar is not None:
            info = f"loss {record['loss']:.3f} lr {record['lr']:.4f} {record['img_per_s']:.0f} img/s"
            if record.get("strategy"):
                info += f" {record['strategy']}"
            self.bar.update(self.task, advance=advance, info=info, description=f"epoch {record['epoch']}")

    def write(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.log is not None:
            self.log.close()


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    device: str | None = None,
    cache_dir: str | None = None,
    log_every: int = 20,
    show_progress: bool = True,
) -> Path:
    """Train ``cfg`` into ``out`` and write ``model.safetensors`` + ``model.front.json``; returns the manifest path.

    ``resume`` continues from the last epoch checkpoint bit for bit (CPU); ``force`` discards a
    previous run in ``out``. Under ``torchrun`` every rank trains a shard and rank 0 writes.
    """
    from .data import load_data

    cfg.validate()
    if log_every < 1:
        raise TrainingError(f"--log-every {log_every}: must be at least 1 (steps between log lines)")
    out = Path(out)
    dist = distributed.setup(device)
    try:
        if dist.is_main:
            _prepare_out_dir(out, cfg, resume, force)
        dist.barrier()
        torch.manual_seed(cfg.seed)
        data = load_data(
            cfg.data,
            image_size=cfg.image_size,
            seed=cfg.seed,
            select_fraction=cfg.select_fraction,
            cache_dir=cache_dir,
            device=dist.device,
        )
        model = build_for_data(cfg, len(data.info.class_names), data.info.input_size).to(dist.device)
        strategy = make_strategy(cfg)
        strategy.attach_data(data)
        spe = data.steps_per_epoch(cfg.batch_size, dist.world_size)
        if spe < 1:
            raise TrainingError(
                f"--batch-size {cfg.batch_size} is larger than the training set "
                f"({data.info.num_train} images); lower it"
            )
        total = spe * cfg.epochs
        strategy.setup(model, total)
        opt = torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
        start_epoch, wall = 0, 0.0
        ckpt_path = out / CHECKPOINT_NAME
        if resume and ckpt_path.exists():
            start_epoch, wall = _restore(load_checkpoint(ckpt_path), ckpt_path, cfg, model, opt, strategy)
        net: torch.nn.Module = model
        if dist.enabled:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
            )
        progress = _Progress(
            out / LOG_NAME if dist.is_main else None, dist.is_main and show_progress, total, start_epoch * spe
        )
        try:
            for epoch in range(start_epoch, cfg.epochs):
                t_epoch = time.perf_counter()
                seen = 0
                for i, (x, y) in enumerate(
                    data.train_batches(
                        cfg.batch_size, epoch, cfg.seed, rank=dist.rank, world_size=dist.world_size
                    )
                ):
                    step = epoch * spe + i
                    lr = lr_at(cfg, step, total, spe)
                    for g in opt.param_groups:
                        g["lr"] = lr
                    model.train()
                    configs = strategy.step_configs(step, model, x, y)
                    w = distill_weight(cfg, step, total) if strategy.distill else 0.0
                    losses = train_step(net, model, opt, configs, x, y, w, cfg.label_smoothing, dist.enabled)
                    if not all(math.isfinite(v) for v in losses):
                        bad = next(v for v in losses if not math.isfinite(v))
                        kept = (
                            f"the last good checkpoint (epoch {epoch}) is kept in {ckpt_path}"
                            if epoch
                            else "no checkpoint was written yet"
                        )
                        raise TrainingError(
                            f"loss became {bad} at epoch {epoch + 1} step {step}: training diverged; "
                            f"{kept}; lower --lr (now {cfg.lr}) or add --warmup-epochs and "
                            "start again with --force"
                        )
                    seen += x.shape[0] * dist.world_size
                    elapsed = time.perf_counter() - t_epoch
                    record = {
                        "epoch": epoch + 1,
                        "step": step + 1,
                        "loss": losses[0],
                        "lr": lr,
                        "img_per_s": seen / max(elapsed, 1e-9),
                        "strategy": strategy.progress(),
                    }
                    progress.update(record)
                    if (step + 1) % log_every == 0:
                        progress.write({**record, "time": time.time()})
                epoch_time = time.perf_counter() - t_epoch
                wall += epoch_time
                progress.write(
                    {
                        "epoch": epoch + 1,
                        "epoch_time_s": epoch_time,
                        "steps": spe,
                        "time": time.time(),
                        **strategy.record(),
                    }
                )
                if dist.is_main:
                    save_checkpoint(
                        ckpt_path,
                        {
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(),
                            "strategy": strategy.state_dict(),
                            "rng": _rng_state(),
                            "epoch": epoch + 1,
                            "wall_time_s": wall,
                        },
                    )
                dist.barrier()
        finally:
            progress.close()
        checksum = float(sum(p.double().sum().item() for p in model.parameters()))
        in_sync = dist.same_on_all_ranks(checksum)
        if not in_sync:
            raise TrainingError(
                "ranks finished with different weights; report this as a bug with the command used"
            )
        manifest = out / MANIFEST_NAME
        if dist.is_main:
            manifest = _finish(cfg, out, model, strategy, data, wall, dist.world_size, show_progress)
        dist.barrier()
        return manifest
    finally:
        distributed.teardown()


def _finish(
    cfg: TrainConfig,
    out: Path,
    model: SlimmableNet,
    strategy: Strategy,
    data: Any,
    wall: float,
    world_size: int,
    show_progress: bool,
) -> Path:
    t0 = time.perf_counter()
    configs = strategy.candidates(model)
    cands = evaluate_candidates(model, configs, data, cfg.calib_batches, cfg.calib_batch_size, cfg.seed)
    front = pareto_candidates(cands)
    evaluate_chosen(model, front, data)
    strategy_record = strategy.record()
    record = {
        "algorithm": cfg.algorithm,
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "wall_time_s": round(wall, 3),
        "history_size": strategy_record.get("history_size"),
        "extra": {
            **strategy_record,
            "config": dataclasses.asdict(cfg),
            "world_size": world_size,
            "candidates_evaluated": len(cands),
            "finalize_time_s": round(time.perf_counter() - t0, 3),
        },
    }
    splits = split_record(data.info, cfg.select_fraction, cfg.seed)
    _, manifest = write_outputs(out, model, front, data.info, record, splits)
    for problem in report.front_warnings(front, len(data.info.class_names)):
        warnings.warn(f"{manifest}: {problem}", stacklevel=2)
    if show_progress:
        from rich.console import Console

        best = max(front, key=lambda c: c.val_top1 or 0.0)
        chosen_on = (
            f"chosen on {data.info.num_selection} held-out training images"
            if data.info.num_selection
            else (f"chosen on {data.info.val_split} itself")
        )
        Console().print(
            f"front: {len(front)} points from {len(cands)} candidates ({chosen_on}), "
            f"{front[0].macs / 1e6:.2f}-{front[-1].macs / 1e6:.2f} MFLOPs, "
            f"best {data.info.val_split} top-1 {best.val_top1:.2f}% -> {manifest}"
        )
        bo = report.bo_line(strategy_record, cfg.history_size)
        if bo:
            Console().print(bo)
    return manifest
