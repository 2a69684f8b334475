"""The settings of a training run, each declared once: its type, default, ``pareco train`` flag and help.

A field's ``metadata`` holds its ``help`` text, its ``choices`` where it takes one of a few names, a
``flag`` where the flag is not the field's name in dashes, and ``result`` False for the few settings
that change how a run goes but not what it trains (``--resume`` may change those). The CLI builds its
options from these, and validation names the same flags. No torch here: the CLI reads this module to build ``pareco train --help``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

TASKS = ("classification", "segmentation", "detection")
# The --arch a task trains when none is given.
DEFAULT_ARCH = {
    "classification": "resnet20",
    "segmentation": "lraspp_mobilenet_v3_large",
    "detection": "tiny_detector",
}
ALGORITHMS = ("independent", "slim", "pareco", "twostage")
BO_ALGORITHMS = ("pareco", "twostage")
SCHEDULES = ("cosine", "linear")
LAMBDA_SAMPLING = ("pas", "uniform")
COST_MODELS = ("exact", "gp")
COST_LATENCY = "latency@"


# The share of a run over which in-place distillation ramps in: the teacher starts untrained, and
# matching it from the first step slowed short runs markedly in our measurements (README, Training).
DISTILL_WARMUP = 0.3

# The value a setting had before it existed, for a run.json written without it (a resumed run keeps
# training what it started).
BEFORE_SETTING = {"divisor": 1}


class TrainingError(ValueError):
    """A run that cannot start or continue, with what to do about it."""


def _setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    result: bool = True,
) -> Any:
    return dataclasses.field(
        default=default, metadata={"help": help, "flag": flag, "choices": choices, "result": result}
    )


@dataclass
class TrainConfig:
    """Everything that defines a training run (the out directory's ``run.json``). ``arch`` None at
    construction becomes the task's default (:data:`DEFAULT_ARCH`)."""

    task: str = _setting(
        "classification",
        "What the network learns: classification (one label per image, ImageFolder data, fronts ranked "
        "by top-1), segmentation (a class per pixel, images/ + masks/ folders, fronts ranked by mIoU) or "
        "detection (boxes, images/ + YOLO labels/ folders, fronts ranked by mAP@0.5).",
        choices=TASKS,
    )
    arch: str = _setting(
        None,
        "resnet20/32/44/56, mobilenet_v2, mobilenet_v3_large; or any CNN made slimmable from its graph: "
        "torchvision:NAME (e.g. torchvision:resnet18), timm:NAME, or your own pkg.module:factory "
        "(called with num_classes=N). Segmentation: a torchvision segmentation builder "
        "(lraspp_mobilenet_v3_large, deeplabv3_mobilenet_v3_large, fcn_resnet50, ...) or your own "
        "factory returning logits (N, classes, H, W), or a dict with them under 'out'. Detection: "
        "tiny_detector or your own factory returning the raw map (N, 5 + classes, rows, columns). "
        "Default: resnet20; lraspp_mobilenet_v3_large for segmentation; tiny_detector for detection.",
    )
    init: str | None = _setting(
        None,
        "A state_dict the full-width model starts from: a .safetensors file or a torch.save'd "
        "model.state_dict() (read with weights_only=True); keys and shapes must match --arch.",
    )
    low: float = _setting(
        0.25, "Smallest width multiplier of a converted --arch (the zoo keeps the paper's)."
    )
    group_low: str | None = _setting(
        None,
        "Converted --arch: PATTERN=W[,PATTERN=W...] raises --low to W for the width dimensions whose "
        "names match PATTERN (fnmatch; 'pareco flops --arch A' lists them), e.g. 'layer4.*=0.5'.",
    )
    pin: str | None = _setting(
        None,
        "Converted --arch: comma-separated layer-name patterns (fnmatch) whose output channels stay "
        "at full width, e.g. 'layer4.*'.",
    )
    data: str = _setting(
        "digits",
        "An ImageFolder tree or .tar(.gz) of one, 'digits' or 'synthetic[:N:C]'. Segmentation: a folder "
        "of images/ + masks/ (or train/ and val/ each holding both), masks being PNGs of class ids "
        "(255 = ignore), with an optional classes.txt. Detection: a folder of images/ + labels/ (or "
        "train/ and val/ each holding both), YOLO label files of 'class cx cy w h' lines.",
    )
    num_classes: int | None = _setting(
        None,
        "Segmentation and detection: the number of classes (default: the lines of DATA/classes.txt, "
        "else the largest class id in the masks or labels + 1).",
    )
    algorithm: str = _setting("slim", "Training algorithm.", choices=ALGORITHMS)
    epochs: int = _setting(5, "Passes over the training set.")
    batch_size: int = _setting(128, "Images per step (per rank under torchrun).")
    lr: float = _setting(0.1, "Peak learning rate of SGD.")
    momentum: float = _setting(0.9, "SGD momentum (Nesterov when positive).")
    weight_decay: float = _setting(5e-4, "SGD weight decay.")
    schedule: str = _setting("cosine", "Learning-rate decay after warm-up.", choices=SCHEDULES)
    warmup_epochs: float = _setting(0.0, "Epochs of linear learning-rate warm-up.")
    label_smoothing: float = _setting(0.0, "Label smoothing of the cross-entropy.")
    seed: int = _setting(0, "Seed of the weights, the data order and the sampled configs.")
    width_factor: float = _setting(
        1,
        "k of k x ResNet (ResNet only): a whole number, or a fraction making 16k whole (0.5: 8-16-32 channels).",
    )
    # Measured (benchmarks/channel_divisor.py: MobileNetV2 at 32 px, 6 uniform widths, batch 1, one
    # thread): channel counts rounded to multiples of 8 ran 0.89x the time per MAC of unrounded ones on
    # ExecuTorch, 0.94x on torch eager and 0.29x on ONNX Runtime, whose kernels took a 3x slower path
    # for counts that are not multiples of 4; multiples of 4 gave 0.96x / 1.00x / 0.33x.
    divisor: int = _setting(
        8, "MobileNet only: channel counts are rounded to multiples of N (1: no rounding)."
    )
    image_size: int | None = _setting(
        None,
        "Input resolution N: images are resized to N x N px. Default: digits/synthetic 32; a tree "
        "whose first image is at most 64 px on its longer side, that image's shorter side, decoded "
        "into memory (4-px pad-crop + flip, the data's own mean/std); larger images stream from disk at "
        "224 (RandomResizedCrop, ImageNet mean/std; said when it happens). N <= 64 decodes larger "
        "images into memory too; N > 64 streams them at N. Segmentation: images and masks are "
        "decoded into memory at N x N (default: the first image's shorter side; random crop + flip "
        "of image and mask alike, the data's own mean/std).",
    )
    samples: int = _setting(2, "M: sampled configs per iteration.", flag="--samples-per-iter")
    width: float = _setting(1.0, "Uniform width trained by --algorithm independent.")
    torchvision_widths: bool = _setting(
        False,
        "mobilenet_v2: use torchvision's width_mult networks instead of uniform widths (Independent: "
        "--width is the width_mult trained; Slim: the front's candidates), to compare with the models "
        "users know.",
    )
    candidates: int = _setting(
        40,
        "Configs evaluated for the front (Slim: uniform widths; PareCO/TwoStage: "
        "H's approximate front thinned to this many).",
    )
    calib_batches: int = _setting(8, "Batches for BN recalibration per candidate.")
    calib_batch_size: int = _setting(128, "Images per BN recalibration batch.")
    select_fraction: float = _setting(
        0.1,
        "Fraction of the training images held out (seeded, never trained on) to choose the front's "
        "points on, so the top-1 reported on the validation/test split is not the one they were chosen "
        "by; 0 chooses on the validation split itself.",
    )
    history_size: int | None = _setting(
        None,
        "PareCO/TwoStage: target |H| over the run (default 1000, fewer on short runs so that a BO "
        "step comes at most every 10 training steps).",
    )
    epsilon: float = _setting(
        0.02,
        "PareCO/TwoStage: tolerance of the cost binary search, a fraction of the full model's cost "
        "(its MACs, or its latency with --cost latency@FILE).",
    )
    lambda_sampling: str = _setting(
        "pas", "PareCO/TwoStage: how the scalarisation weight lambda is drawn.", choices=LAMBDA_SAMPLING
    )
    cost: str = _setting(
        "macs",
        "PareCO/TwoStage: the cost BO trades top-1 against: macs, or latency@FILE, the latency that a "
        "device's look-up table (from pareco bench, built for this network: the README says how) "
        "predicts; target costs are then drawn over that latency's range and the front is the "
        "non-dominated points by (top-1, that latency).",
    )
    cost_model: str = _setting(
        "exact",
        "PareCO/TwoStage: how BO gets a config's cost: exactly (from the MAC count or the table) or "
        "from a GP fitted to H's costs.",
        choices=COST_MODELS,
    )
    warmup_configs: int = _setting(
        16,
        "PareCO/TwoStage: the first proposals are this many uniform random per-layer configs, "
        "then BO starts (untrained, the smallest config looks best and BO piles onto it).",
    )
    probe_batch: int = _setting(128, "PareCO/TwoStage: images used to measure H's losses.")
    remeasure: int = _setting(
        64,
        "PareCO: configs of H re-measured per BO step (new ones, the front, random "
        "others); 0 re-measures all of H (the paper).",
    )
    distill_warmup: float = _setting(
        DISTILL_WARMUP,
        "Fraction of the run over which in-place distillation ramps in (0: from the first step).",
    )
    epoch_eval: int = _setting(
        1000,
        "Images on which the largest and smallest sub-networks (Independent: the one trained) are "
        "evaluated after each epoch, from the selection split (the validation split with "
        "--select-fraction 0), BN statistics re-estimated for each as for the front; shown and logged "
        "in train.log.jsonl, the run's result unchanged; 0 turns it off.",
        result=False,
    )
    threads: int | None = _setting(
        None,
        "CPU threads of the training process (torch.set_num_threads; default: torch's, one per core). "
        "A --resume may change it; the run then continues, but only at the same count is the result "
        "bit-identical to an uninterrupted run (float sums are split differently).",
        result=False,
    )

    def __post_init__(self) -> None:
        if self.arch is None:
            self.arch = DEFAULT_ARCH.get(self.task, DEFAULT_ARCH["classification"])

    @classmethod
    def changes_result(cls, name: str) -> bool:
        """Whether setting ``name`` changes what the run trains (compared on ``--resume``), or only how
        it runs (threads, what it reports)."""
        return bool(_fields()[name].metadata["result"])

    @classmethod
    def flag(cls, name: str) -> str:
        """The ``pareco train`` flag of field ``name``."""
        return _fields()[name].metadata["flag"] or "--" + name.replace("_", "-")

    def validate(self) -> None:
        """Raise TrainingError naming the flag of the first bad value (BO settings: PareCO/TwoStage only)."""
        self._choose("task")
        self._choose("algorithm")
        self._choose("schedule")
        self._require(
            "num_classes",
            self.num_classes is None or self.task != "classification",
            "applies to --task segmentation and detection (a classification's classes are its folders)",
        )
        fewest = 1 if self.task == "detection" else 2  # one kind of object is a detection
        self._require(
            "num_classes",
            self.num_classes is None or self.num_classes >= fewest,
            f"must be at least {fewest}",
        )
        counts = ("epochs", "batch_size", "calib_batches", "calib_batch_size", "candidates")
        for name in counts:
            self._require(name, getattr(self, name) >= 1, "must be at least 1")
        self._require(
            "history_size", self.history_size is None or self.history_size >= 1, "must be at least 1"
        )
        self._require("lr", self.lr > 0 and math.isfinite(self.lr), "must be a positive number")
        self._require(
            "distill_warmup", 0.0 <= self.distill_warmup <= 1.0, "is a fraction of the run in [0, 1]"
        )
        self._require("samples", self.samples >= 0, "must be >= 0")
        self._require("epoch_eval", self.epoch_eval >= 0, "must be 0 (off) or a number of images")
        self._require(
            "threads", self.threads is None or self.threads >= 1, "must be at least 1 (CPU threads)"
        )
        self._require("select_fraction", 0.0 <= self.select_fraction < 1.0, "must be in [0, 1)")
        self._require(
            "width_factor",
            self.width_factor > 0 and (16 * self.width_factor) % 1 == 0,
            "must be positive with 16 x k whole (0.5, 1, 2, ...)",
        )
        self._require("divisor", self.divisor >= 1, "must be at least 1 (1: no rounding)")
        self._require("warmup_epochs", self.warmup_epochs >= 0, "must be >= 0")
        self._require("label_smoothing", 0.0 <= self.label_smoothing < 1.0, "must be in [0, 1)")
        self._require("momentum", 0.0 <= self.momentum < 1.0, "must be in [0, 1)")
        self._require("weight_decay", 0.0 <= self.weight_decay < math.inf, "must be >= 0")
        self._require(
            "torchvision_widths",
            not self.torchvision_widths or self.algorithm in ("slim", "independent"),
            "applies to --algorithm slim or independent",
        )
        self._require("low", 0.0 < self.low <= 1.0, "must be in (0, 1]")
        for name in ("group_low", "pin"):
            self._require(
                name, getattr(self, name) is None or ":" in self.arch, "applies to a converted --arch only"
            )
        for pattern, value in self.group_lows().items():
            self._require(
                "group_low", self.low <= value <= 1.0, f"width of '{pattern}' must be in [--low, 1]"
            )
        self._require(
            "cost",
            self.cost == "macs"
            or (self.cost.startswith(COST_LATENCY) and len(self.cost) > len(COST_LATENCY)),
            f"must be macs or {COST_LATENCY}FILE (a latency table from `pareco bench lut`)",
        )
        self._require(
            "cost",
            self.cost == "macs" or self.algorithm in BO_ALGORITHMS,
            "applies to --algorithm pareco or twostage (the others choose no configs by cost)",
        )
        if self.algorithm in BO_ALGORITHMS:
            self._choose("lambda_sampling")
            self._choose("cost_model")
            self._require(
                "epsilon", 0.0 < self.epsilon < 1.0, "must be in (0, 1) (a fraction of the full model's cost)"
            )
            self._require("samples", self.samples >= 1, f"must be at least 1 for {self.algorithm}")
            self._require("probe_batch", self.probe_batch >= 1, "must be at least 1")
            self._require("remeasure", self.remeasure >= 0, "must be 0 (all of H) or a positive count")
            self._require("warmup_configs", self.warmup_configs >= 0, "must be 0 or a positive count")

    def latency_table(self) -> str | None:
        """The latency table file of ``--cost latency@FILE``; None for ``--cost macs``."""
        return self.cost.removeprefix(COST_LATENCY) if self.cost.startswith(COST_LATENCY) else None

    def pin_patterns(self) -> list[str]:
        """The layer-name patterns of ``--pin``."""
        return [p.strip() for p in (self.pin or "").split(",") if p.strip()]

    def group_lows(self) -> dict[str, float]:
        """``--group-low`` as ``{dimension-name pattern: lowest width}``; TrainingError if malformed."""
        out: dict[str, float] = {}
        if not self.group_low:
            return out
        for item in self.group_low.split(","):
            pattern, sep, value = item.strip().rpartition("=")
            try:
                width = float(value) if sep and pattern else math.nan
            except ValueError:
                width = math.nan
            if not math.isfinite(width):
                raise TrainingError(
                    f"{self.flag('group_low')}: '{item.strip()}' is not PATTERN=WIDTH; write e.g. 'layer4.*=0.5'"
                )
            out[pattern.strip()] = width
        return out

    def _choose(self, name: str) -> None:
        choices = _fields()[name].metadata["choices"]
        value = getattr(self, name)
        if value not in choices:
            raise TrainingError(
                f"{self.flag(name)}: unknown {name.replace('_', ' ')} '{value}'; "
                f"choose one of: {', '.join(choices)}"
            )

    def _require(self, name: str, ok: bool, requirement: str) -> None:
        if not ok:
            raise TrainingError(f"{self.flag(name)} {requirement}, got {getattr(self, name)}")


def _fields() -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}
