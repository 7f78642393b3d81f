"""The settings of a training run, :class:`TrainConfig` (saved as ``train_config.json``),
in one place with their defaults; the epoch (:mod:`chopinbot.training.epoch`) and
the run (:mod:`chopinbot.training.train`) read them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from chopinbot.errors import ConfigError
from chopinbot.model.loss import HARSHNESS
from chopinbot.model.network import ModelConfig

LR = 2e-3  # AdamW's peak learning rate from random weights
# From a trained model (init_from): a quarter of it. Fine-tuning piano-controls on 11 piano pieces it had
# never trained on (a new style; 3 held-out pieces; early stop within 1.5 CPU-minutes), the model kept at
# 2e-3 was worse than the start on the held-out pieces (key NLL 2.722 -> 2.737), at 5e-4 better (2.689),
# and its key NLL moved in a band a third as wide (docs/training.md, "Fine-tune a model on your own music").
FINETUNE_LR = 5e-4


@dataclass
class TrainConfig:
    """Every knob of a training run (saved as ``train_config.json``)."""

    data: str | None = None  # dataset folder; None = the bundled corpus, prepared on the fly
    out: str = "runs/train"  # run folder
    epochs: int = 60  # maximum; early stopping usually ends sooner
    context: int = 64  # states per training chunk (sequence mode)
    window: int = 0  # >0: the original's window mode (one target per window of this many states)
    batch: int = 8  # chunks (or windows) per update: small batches leave the plateau sooner
    optimizer: str = "adamw"  # "adamw" or "rmsprop" (the original's)
    # None = the default for the run: LR from scratch, FINETUNE_LR with init_from (resolved by train())
    lr: float | None = None
    weight_decay: float = 0.01  # AdamW only
    clip_grad: float = 1.0  # gradient-norm clipping; 0 = off
    schedule: str = "cosine"  # "cosine" (after warm-up) or "constant"
    warmup: int = 100  # updates of linear warm-up
    patience: int = 8  # epochs without valid-loss improvement before stopping
    # best/ = the epoch with the best valid "f1" (at its best threshold) or "loss"; None: f1 from scratch, loss
    # when fine-tuning (init_from), where the starting model is a candidate too: in the README walkthrough F1 at a
    # re-tuned threshold rose 0.617 -> 0.620 while the held-out key NLL got worse (4.783 -> 4.830)
    select_on: str | None = None
    harshness: float = HARSHNESS
    loss_clip: bool = True  # the original's min(2*bce, bce + dur)
    dur_ce_weight: float = 0.1  # weight of the duration-class cross-entropy (classes head)
    transpose: int = 5  # augmentation: transpose each chunk by a random -N..+N semitones (0 = off, max 6)
    max_norm: float = 0.0  # max-norm weight constraint (the original used 2-4); 0 = off
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    minutes: float = 0.0  # wall-time budget; 0 = none
    cpu_minutes: float = 0.0  # CPU-time budget (this process's, all threads); 0 = none
    init_from: str | None = None  # start from this trained model's weights and shape (fine-tuning)
    styles: str = "auto"  # style input: "auto" (when the training data has several composers), "on", "off"
    default_style: str | None = None  # the style the model composes in unless told (default: chopin, if present)
    progress: bool = True
    model: ModelConfig | None = None  # filled in from the flags and the data

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.context >= 1, "context must be at least 1"),
            (self.window >= 0, "window must be 0 (off) or positive"),
            (self.batch >= 1, "batch must be at least 1"),
            (self.optimizer in ("adamw", "rmsprop"), "optimizer must be adamw or rmsprop"),
            (self.lr is None or (self.lr > 0 and math.isfinite(self.lr)), "lr must be positive"),
            (self.schedule in ("cosine", "constant"), "schedule must be cosine or constant"),
            (self.harshness >= 0, "harshness must be 0 or more"),
            (self.patience >= 1, "patience must be at least 1"),
            (0 <= self.transpose <= 6, "transpose must be 0..6 semitones"),
            (self.select_on in (None, "f1", "loss"), "select_on must be f1 or loss"),
            (self.clip_grad >= 0 and self.max_norm >= 0, "clip_grad and max_norm must be 0 or more"),
            (self.styles in ("auto", "on", "off"), "styles must be auto, on or off"),
            (self.minutes >= 0 and self.cpu_minutes >= 0, "time budgets must be 0 (none) or more"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)

    def selection(self) -> str:
        """What best/ is chosen on: ``select_on``, or the default for this run when it is None."""
        return self.select_on or ("loss" if self.init_from else "f1")

    def learning_rate(self) -> float:
        """``lr``, or the default for this run when it is None: :data:`FINETUNE_LR` when
        fine-tuning (``init_from``), :data:`LR` otherwise."""
        if self.lr is not None:
            return self.lr
        return FINETUNE_LR if self.init_from else LR
