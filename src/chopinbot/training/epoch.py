"""One update and one pass over the training pieces: the only epoch loop.

:func:`train_epoch` is what training (:func:`chopinbot.training.train.train`),
pruning's fine-tuning (:func:`chopinbot.compress.prune.prune_schedule`) and the
speed benchmark (``chopinbot_tools.bench_speed``) run; each adds what it needs
through arguments (a data-parallel shard, a hook before each update, a cap on
the updates) instead of a copy of the loop.  The random draws happen in one
fixed order (the units, their order, then each batch's transposition), so a
run is bit-for-bit reproducible on CPU for a given generator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from chopinbot.dataset.batches import SplitData
from chopinbot.model.metrics import EpochMetrics
from chopinbot.model.network import ChopinLSTM, apply_max_norm
from chopinbot.model.predict import batch_metrics_update, batch_outputs, compute_losses
from chopinbot.training.config import TrainConfig


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor at each update: linear warm-up, then constant or
    a cosine down to 0.1 of ``cfg.lr`` at ``total_steps``."""
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        if cfg.schedule == "constant":
            return 1.0
        prog = min(1.0, (step - cfg.warmup) / max(1, total_steps - cfg.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))

    return f


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate(), weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(model.parameters(), lr=cfg.learning_rate())


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total_steps))


def param_stats(model: torch.nn.Module, grads: bool) -> list[dict[str, Any]]:
    """Per-layer norm, mean, min, max and largest row norm of the weights (or of
    their gradients), and an ``overall`` row (``weights.csv``/``grads.csv``)."""
    rows = []
    all_vals = []
    for name, p in model.named_parameters():
        t = p.grad if grads else p.data
        if t is None:
            continue
        t = t.detach().float()
        all_vals.append(t.flatten())
        row_norm = t.norm(dim=1).max().item() if t.dim() == 2 else t.abs().max().item()
        rows.append(dict(layer=name, norm=t.norm().item(), mean=t.mean().item(), min=t.min().item(),
                         max=t.max().item(), max_row_norm=row_norm))
    if all_vals:
        v = torch.cat(all_vals)
        rows.append(dict(layer="overall", norm=v.norm().item(), mean=v.mean().item(), min=v.min().item(),
                         max=v.max().item(), max_row_norm=max(r["max_row_norm"] for r in rows)))
    return rows


def train_step(model: ChopinLSTM, forward, opt: torch.optim.Optimizer, sched, cfg: TrainConfig, x: torch.Tensor,
               t, grad_stats: dict[str, dict[str, float]] | None = None, where: str = ""):
    """One update on batch ``x``/``t``: forward (through ``forward``, the model or
    its DDP wrapper), the loss, backward, gradient clipping, the gradient
    statistics (summed into ``grad_stats`` when given), the optimiser and
    schedule steps, max-norm.  Returns the outputs and the losses; a non-finite
    loss raises ``FloatingPointError`` (``where`` says where, in the message)."""
    out = batch_outputs(model, x, t, forward)
    losses = compute_losses(model, out, t, cfg.harshness, cfg.loss_clip, cfg.dur_ce_weight)
    if not torch.isfinite(losses["total"]):
        raise FloatingPointError(f"non-finite loss {where}".rstrip())
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
    if grad_stats is not None:
        _accumulate_grads(grad_stats, model)
    opt.step()
    sched.step()
    if cfg.max_norm:
        apply_max_norm(model, cfg.max_norm)
    return out, losses


def _accumulate_grads(acc: dict[str, dict[str, float]], model: torch.nn.Module) -> None:
    for r in param_stats(model, grads=True):
        a = acc.setdefault(r["layer"], {"layer": r["layer"], "norm": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0,
                                         "max_row_norm": 0.0})
        for k in ("norm", "mean", "min", "max", "max_row_norm"):
            a[k] += r[k]


def epoch_units(split: SplitData, cfg: TrainConfig, rng: np.random.Generator) -> list:
    """The training units of one epoch: the original's windows (``cfg.window``)
    or whole-sequence chunks of ``cfg.context`` states at a random offset."""
    return split.windows(cfg.window) if cfg.window else split.chunks(cfg.context, rng)


def updates_per_epoch(split: SplitData, cfg: TrainConfig, world: int = 1) -> int:
    """Full batches per epoch and process (the length of the schedule's epoch)."""
    n = len(split.windows(cfg.window)) if cfg.window else len(split.chunks(cfg.context))
    return max(1, n // (cfg.batch * world))


@dataclass
class EpochResult:
    """What one pass did, per update (so a caller can leave out warm-up updates)."""

    step_seconds: list[float] = field(default_factory=list)  # train_step alone
    batch_seconds: list[float] = field(default_factory=list)  # assembling the batch
    predictions: list[int] = field(default_factory=list)  # state-predictions in each batch
    last_losses: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def updates(self) -> int:
        return len(self.step_seconds)


def train_epoch(model: ChopinLSTM, opt: torch.optim.Optimizer, sched, cfg: TrainConfig, split: SplitData,
                rng: np.random.Generator, *, forward: torch.nn.Module | None = None,
                device: torch.device | None = None, shard: tuple[int, int] | None = None,
                max_updates: int | None = None, before_update: Callable[[int], None] | None = None,
                after_update: Callable[[dict[str, torch.Tensor]], None] | None = None,
                metrics: EpochMetrics | None = None, grad_stats: dict[str, dict[str, float]] | None = None,
                where: str = "") -> EpochResult:
    """One pass over ``split``'s training units in a random order, ``cfg.batch``
    at a time, each transposed by a random -``cfg.transpose``..+``cfg.transpose``
    semitones, one :func:`train_step` per batch.

    ``shard`` = (rank, updates per rank): data-parallel training takes that
    rank's slice of the order, and full batches only (every rank steps the same
    number of times).  ``before_update(i)`` runs before the i-th update of the
    pass (pruning raises the sparsity there), ``after_update(losses)`` after it;
    ``metrics`` collects the training metrics, ``grad_stats`` sums the gradient
    statistics; ``max_updates`` ends the pass early (the speed benchmark).
    """
    units = epoch_units(split, cfg, rng)
    order = rng.permutation(len(units))
    if shard is not None:
        rank, per_rank_updates = shard
        per_rank = per_rank_updates * cfg.batch
        order = order[rank * per_rank : (rank + 1) * per_rank]
    forward = model if forward is None else forward
    forward.train()
    res = EpochResult()
    for i, b in enumerate(range(0, len(order), cfg.batch)):
        if max_updates is not None and i >= max_updates:
            break
        idx = order[b : b + cfg.batch]
        if shard is not None and len(idx) < cfg.batch:
            break
        if before_update is not None:
            before_update(i)
        t_batch = time.perf_counter()
        shifts = rng.integers(-cfg.transpose, cfg.transpose + 1, len(idx)) if cfg.transpose else None
        x, t = split.batch([units[k] for k in idx], shifts, **model.config.input_blocks)
        if device is not None:
            x, t = x.to(device), t.to(device)
        t0 = time.perf_counter()
        out, losses = train_step(model, forward, opt, sched, cfg, x, t, grad_stats, where=f"{where}, update {i}")
        res.step_seconds.append(time.perf_counter() - t0)
        res.batch_seconds.append(t0 - t_batch)
        res.predictions.append(int(t.mask.sum().item()))
        res.last_losses = losses
        if metrics is not None:
            batch_metrics_update(metrics, model, out, t, losses)
        if after_update is not None:
            after_update(losses)
    return res
