"""Magnitude pruning, and the prune schedule that fine-tunes between sparsity steps.

The pruned weights are those :func:`chopinbot.model.formats.prunable` names
(every LSTM and linear weight matrix); a pruned model is stored with
:func:`chopinbot.model.formats.save_compressed` (``format`` sparse).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.store import Dataset
from chopinbot.errors import ConfigError
from chopinbot.model.formats import effective_weight, plain_copy, prunable, sparsity_of
from chopinbot.model.network import ChopinLSTM
from chopinbot.model.predict import evaluate_split
from chopinbot.training.config import TrainConfig
from chopinbot.training.epoch import train_epoch


def prune_model(model: ChopinLSTM, sparsity: float) -> ChopinLSTM:
    """Global magnitude pruning (``torch.nn.utils.prune.global_unstructured``
    with L1 importance) of all :func:`~chopinbot.model.formats.prunable` weights
    until ``sparsity`` of them are zero.  Masks accumulate: calling again with
    a higher sparsity prunes further.  The pruning stays a reparametrization
    (trainable) until :func:`make_permanent`."""
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"sparsity must be in [0, 1), got {sparsity}")
    params = prunable(model)
    # the fraction already masked (global_unstructured counts unmasked entries, zero-valued or not)
    masked = sum(int((getattr(m, n + "_mask") == 0).sum()) for m, n in params if hasattr(m, n + "_mask"))
    current = masked / max(1, sum(getattr(m, n + "_orig", getattr(m, n)).numel() for m, n in params))
    if sparsity <= current + 1e-9:
        for mod, name in params:  # keep every weight reparametrized, so one optimizer serves all steps
            if not hasattr(mod, name + "_orig"):
                prune.identity(mod, name)
        return model
    # global_unstructured prunes ``amount`` of the entries not yet pruned
    amount = (sparsity - current) / (1.0 - current)
    scores = {(m, n): effective_weight(m, n).detach().abs() for m, n in params}  # current weights, never stale ones
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, importance_scores=scores, amount=amount)
    return model


def make_permanent(model: ChopinLSTM) -> ChopinLSTM:
    """Fold the pruning masks into the weights (``prune.remove``) in place."""
    for mod, name in prunable(model):
        if hasattr(mod, name + "_orig"):
            prune.remove(mod, name)
    if isinstance(model.backbone, nn.LSTM):
        model.backbone.flatten_parameters()
    return model


def polynomial_sparsity(s0: float, s1: float, t: float) -> float:
    """Zhu & Gupta's schedule: ``s1 + (s0 - s1) * (1 - t)^3`` for t in [0, 1]
    (fast pruning early, while the network can still recover, slow at the end)."""
    t = min(max(t, 0.0), 1.0)
    return s1 + (s0 - s1) * (1.0 - t) ** 3


@dataclass
class FinetuneSettings:
    """How a pruned model is fine-tuned between sparsity steps."""

    epochs: int = 2  # per sparsity step; 0 = one-shot pruning without fine-tuning
    schedule: str = "polynomial"  # "polynomial" (gradual, Zhu & Gupta) or "oneshot"
    ramp: float = 0.5  # polynomial: the sparsity reaches its target after this fraction of the step's updates
    prune_points: int = 8  # polynomial: pruning events per step
    lr: float = 5e-4  # AdamW, constant
    weight_decay: float = 0.0
    seed: int = 0
    progress: bool = False

    def validate(self) -> None:
        if self.schedule not in ("polynomial", "oneshot"):
            raise ConfigError("schedule must be polynomial or oneshot")
        if self.epochs < 0:
            raise ConfigError("finetune epochs must be 0 or more")
        if not (0 < self.ramp <= 1) or self.prune_points < 1:
            raise ConfigError("ramp must be in (0, 1] and prune_points at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError("lr must be positive")


@dataclass
class PruneStep:
    """One sparsity target reached: the permanent model and how it got there."""

    target: float
    sparsity: float  # measured over the prunable weights
    model: ChopinLSTM  # plain ChopinLSTM, pruning made permanent, eval mode
    epochs: list[dict[str, float]] = field(default_factory=list)  # valid metrics after each fine-tuning epoch
    chosen_epoch: int = 0  # the fine-tuning epoch kept (best valid Maestro loss at the target; 0 = none)
    seconds: float = 0.0


def parse_sparsities(text: str) -> list[float]:
    """``--sparsity``: comma-separated targets, each in (0, 1), increasing."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--sparsity must be comma-separated numbers, got {text!r}") from None
    if not vals or any(not 0 < v < 1 for v in vals):
        raise ConfigError("each sparsity must be strictly between 0 and 1")
    if vals != sorted(vals) or len(set(vals)) != len(vals):
        raise ConfigError("sparsities must increase (each step prunes further)")
    return vals


def finetune_config(model: ChopinLSTM, settings: FinetuneSettings) -> TrainConfig:
    """The training settings fine-tuning runs with: those of the run that
    trained ``model`` (its ``meta``), :class:`TrainConfig`'s defaults where
    the model does not record them, and ``settings``' learning rate."""
    meta = getattr(model, "meta", {})
    recorded = meta.get("train") or {}
    known = {f.name for f in fields(TrainConfig)} - {"model"}
    cfg = TrainConfig(**{k: v for k, v in recorded.items() if k in known})
    cfg.harshness = float(meta.get("harshness", cfg.harshness))
    cfg.loss_clip = bool(meta.get("loss_clip", cfg.loss_clip))
    cfg.lr, cfg.weight_decay, cfg.schedule = settings.lr, settings.weight_decay, "constant"
    cfg.max_norm = 0.0  # as fine-tuning has always run: without the max-norm constraint
    cfg.window = 0  # and in sequence mode (whole chunks), whatever mode trained the model
    cfg.validate()
    return cfg


def _prune_points(s: FinetuneSettings, previous: float, target: float, total: int) -> dict[int, float]:
    """update index -> sparsity to prune to before that update, within one step of ``total`` updates."""
    if s.schedule == "oneshot":
        return {0: target}
    ramp_end = max(1, int(round(s.ramp * total)))
    points = {}
    for j in range(s.prune_points):
        u = int(round(j * ramp_end / max(1, s.prune_points - 1))) if s.prune_points > 1 else 0
        points[min(u, total - 1)] = polynomial_sparsity(previous, target, (j + 1) / s.prune_points)
    return points


def prune_schedule(model: ChopinLSTM, targets: list[float], dataset: Dataset,
                   settings: FinetuneSettings | None = None) -> Iterator[PruneStep]:
    """Prune ``model`` (not modified: a copy is pruned) to each of ``targets``
    in turn, fine-tuning on ``dataset``'s train pieces in between, and yield a
    permanent copy at each target.

    Fine-tuning is training's own epoch (:func:`chopinbot.training.epoch.train_epoch`:
    whole-sequence chunks, the Maestro loss, gradient clipping) with the
    transposition, chunk length and batch size of the model's training run
    (:func:`finetune_config`) and AdamW at ``settings.lr``.  After
    each epoch at the target sparsity the valid Maestro loss is measured and
    the best epoch's weights are kept: the original design's pruned model
    lost F1 over five epochs of fine-tuning at a fixed sparsity, which
    selection on the valid pieces prevents.
    """
    s = settings or FinetuneSettings()
    s.validate()
    meta = dict(getattr(model, "meta", {}))
    cfg = finetune_config(model, s)
    work = plain_copy(model)
    vocab = work.config.vocab
    train_split = SplitData(dataset, "train", vocab)
    valid_split = SplitData(dataset, "valid", vocab)
    if s.epochs and (train_split.n_targets == 0 or valid_split.n_targets == 0):
        raise ConfigError("fine-tuning needs train and valid pieces in the dataset")
    torch.manual_seed(s.seed)
    prune_model(work, 0.0)  # reparametrize every weight now: one optimizer for all steps
    opt = torch.optim.AdamW(work.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    constant_lr = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    previous = 0.0
    for i, target in enumerate(targets):
        t0 = time.perf_counter()
        history: list[dict[str, float]] = []
        if s.epochs == 0:
            prune_model(work, target)
            chosen = 0
        else:
            rng = np.random.default_rng([s.seed, i])
            n_chunks = len(train_split.chunks(cfg.context))
            total = s.epochs * max(1, math.ceil(n_chunks / cfg.batch))
            points = _prune_points(s, previous, target, total)
            last_prune = max(points)
            best_loss, best_state, chosen, update = float("inf"), None, 0, 0
            for epoch in range(1, s.epochs + 1):
                def raise_sparsity(i: int, first: int = update, points: dict[int, float] = points) -> None:
                    if first + i in points:  # the schedule counts updates across the step's epochs
                        prune_model(work, points[first + i])

                update += train_epoch(work, opt, constant_lr, cfg, train_split, rng, before_update=raise_sparsity,
                                      where=f"fine-tuning to sparsity {target}, epoch {epoch}").updates
                if epoch == s.epochs and update <= last_prune:  # fewer chunks than planned: finish the ramp
                    prune_model(work, target)
                    update = last_prune + 1
                vsum = evaluate_split(work, valid_split, cfg.harshness, cfg.loss_clip, cfg.dur_ce_weight).summary()
                at_target = update > last_prune
                history.append({"epoch": epoch, "sparsity": sparsity_of(work), "at_target": at_target,
                                **{f"valid_{k}": float(v) for k, v in vsum.items()}})
                if s.progress:
                    print(f"  sparsity {target:.2f} epoch {epoch}: valid loss {vsum['maestro']:.4f} "
                          f"F1 {vsum['f1_best']:.3f} (sparsity now {sparsity_of(work):.3f})", flush=True)
                if at_target and vsum["maestro"] < best_loss:
                    best_loss, chosen = vsum["maestro"], epoch
                    best_state = {k: v.detach().clone() for k, v in work.state_dict().items()}
            prune_model(work, target)  # (a no-op unless the ramp was cut short)
            if best_state is not None:
                work.load_state_dict(best_state)
        snapshot = plain_copy(work)
        snapshot.meta = dict(meta, pruning={"target": target, "schedule": s.schedule, "finetune_epochs": s.epochs,
                                            "chosen_epoch": chosen, "lr": s.lr})
        yield PruneStep(target, sparsity_of(snapshot), snapshot, history, chosen, time.perf_counter() - t0)
        previous = target
