"""``pareco train``: train a slimmable model and write its weight file and front manifest."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    arch: str = typer.Option("resnet20", "--arch", help="resnet20/32/44/56, mobilenet_v2, mobilenet_v3_large."),
    data: str = typer.Option("digits", "--data", help="An ImageFolder tree or .tar(.gz) of one, or 'digits'."),
    algorithm: str = typer.Option("slim", "--algorithm", help="pareco | slim | twostage | independent."),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(0.1, "--lr"),
    out: Path = typer.Option(..., "--out", help="Output directory (model.safetensors, model.front.json)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Overwrite a different run in --out."),
    seed: int = typer.Option(0, "--seed"),
    momentum: float = typer.Option(0.9, "--momentum"),
    weight_decay: float = typer.Option(5e-4, "--weight-decay"),
    schedule: str = typer.Option("cosine", "--schedule", help="cosine | linear (after warm-up)."),
    warmup_epochs: float = typer.Option(0.0, "--warmup-epochs"),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing"),
    width_factor: int = typer.Option(1, "--width-factor", help="k of k x ResNet (ResNet only)."),
    image_size: int | None = typer.Option(None, "--image-size", help="Input resolution (default: the data's)."),
    samples_per_iter: int = typer.Option(2, "--samples-per-iter", help="M: sampled configs per iteration."),
    width: float = typer.Option(1.0, "--width", help="Uniform width trained by --algorithm independent."),
    candidates: int = typer.Option(40, "--candidates", help="Slim: uniform widths evaluated for the front."),
    calib_batches: int = typer.Option(8, "--calib-batches", help="Batches for BN recalibration per candidate."),
    calib_batch_size: int = typer.Option(128, "--calib-batch-size"),
    history_size: int = typer.Option(1000, "--history-size", help="PareCO/TwoStage: target |H| over the run."),
    epsilon: float = typer.Option(0.02, "--epsilon", help="PareCO: tolerance of the cost binary search."),
    lambda_sampling: str = typer.Option("pas", "--lambda-sampling", help="PareCO: pas | uniform."),
    cost_model: str = typer.Option("exact", "--cost-model", help="PareCO: exact | gp."),
    probe_batch: int = typer.Option(128, "--probe-batch", help="PareCO: images used to re-measure H's losses."),
    remeasure: int = typer.Option(64, "--remeasure", help="PareCO: configs of H re-measured per BO step (new ones, "
                                  "the front, random others); 0 re-measures all of H (the paper)."),
    distill_warmup: float = typer.Option(0.3, "--distill-warmup", help="Fraction of the run over which in-place "
                                         "distillation ramps in (0: from the first step)."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: cuda when present)."),
    cache_dir: str | None = typer.Option(None, "--cache-dir", help="Decoded-dataset cache (default ~/.cache/pareco)."),
    log_every: int = typer.Option(20, "--log-every", help="Steps between JSON log lines."),
) -> None:
    """Train one slimmable model; writes OUT/model.safetensors and OUT/model.front.json."""
    from training.loop import TrainConfig
    from training.loop import train as run

    cfg = TrainConfig(arch=arch, data=data, algorithm=algorithm, epochs=epochs, batch_size=batch_size, lr=lr,
                      momentum=momentum, weight_decay=weight_decay, schedule=schedule, warmup_epochs=warmup_epochs,
                      label_smoothing=label_smoothing, seed=seed, width_factor=width_factor, image_size=image_size,
                      samples=samples_per_iter, width=width, candidates=candidates, calib_batches=calib_batches,
                      calib_batch_size=calib_batch_size, history_size=history_size, epsilon=epsilon,
                      lambda_sampling=lambda_sampling, cost_model=cost_model, probe_batch=probe_batch,
                      remeasure=remeasure, distill_warmup=distill_warmup)
    run(cfg, out, resume=resume, force=force, device=device, cache_dir=cache_dir, log_every=log_every)
