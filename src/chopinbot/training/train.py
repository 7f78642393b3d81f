"""Training: ``chopinbot train`` and :func:`train`.

Whole-sequence training (every state predicted once per epoch; see
:mod:`chopinbot.dataset.batches`) with the Maestro loss, AdamW or RMSprop, gradient
clipping, warm-up + cosine learning rate, early stopping on the valid loss,
bit-for-bit reproducible on CPU for a given ``seed``, resumable, and
data-parallel under ``torchrun`` (gloo on CPU, NCCL on GPU).

A run folder holds ``metrics.csv`` (one row per epoch), ``grads.csv`` and
``weights.csv`` (per-layer statistics), ``best/`` and ``last/`` checkpoints and
``train_config.json``; every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.features import DurationVocab
from chopinbot.dataset.prepare import load_or_prepare
from chopinbot.dataset.store import Dataset
from chopinbot.device import resolve_device
from chopinbot.errors import ConfigError
from chopinbot.io_utils import atomic_write_json, atomic_write_text
from chopinbot.model.checkpoint import WEIGHTS, read_config, resolve_checkpoint, save_model
from chopinbot.model.formats import load_model
from chopinbot.model.loss import HARSHNESS
from chopinbot.model.metrics import EpochMetrics
from chopinbot.model.network import ChopinLSTM, ModelConfig, apply_max_norm
from chopinbot.model.predict import batch_metrics_update, batch_outputs, compute_losses, evaluate_split
from chopinbot.progress import Progress
from chopinbot.training.finetune import copy_weights, data_styles, fine_tune_config, new_model_styles


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
    lr: float = 2e-3
    weight_decay: float = 0.01  # AdamW only
    clip_grad: float = 1.0  # gradient-norm clipping; 0 = off
    schedule: str = "cosine"  # "cosine" (after warm-up) or "constant"
    warmup: int = 100  # updates of linear warm-up
    patience: int = 8  # epochs without valid-loss improvement before stopping
    select_on: str = "f1"  # best/ = the epoch with the best valid "f1" (at its best threshold) or "loss"
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
            (self.lr > 0 and math.isfinite(self.lr), "lr must be positive"),
            (self.schedule in ("cosine", "constant"), "schedule must be cosine or constant"),
            (self.harshness >= 0, "harshness must be 0 or more"),
            (self.patience >= 1, "patience must be at least 1"),
            (0 <= self.transpose <= 6, "transpose must be 0..6 semitones"),
            (self.select_on in ("f1", "loss"), "select_on must be f1 or loss"),
            (self.clip_grad >= 0 and self.max_norm >= 0, "clip_grad and max_norm must be 0 or more"),
            (self.styles in ("auto", "on", "off"), "styles must be auto, on or off"),
            (self.minutes >= 0 and self.cpu_minutes >= 0, "time budgets must be 0 (none) or more"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass
class RunResult:
    out: Path
    epochs: int
    best_epoch: int
    best: dict[str, float]
    stopped: str  # "early-stop", "max-epochs", "time-budget", "interrupted"
    seconds: float
    predictions_per_s: float
    history: list[dict[str, float]] = field(default_factory=list)


class _Distributed:
    """torchrun support in a few lines: rank/world from the environment."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = device
        if self.world > 1 and device.type == "cuda":
            # one GPU per process: NCCL refuses two ranks on one device
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (so all ranks stop together)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            # every rank reaches the end before any tears the group down: rank 0 writes the checkpoints after
            # the last step, and a rank that destroyed its group meanwhile made gloo abort the other at exit
            # ("terminate called without an active exception", 1 run in 5 of the two-process test)
            dist.barrier()
            dist.destroy_process_group()


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def build_model_config(cfg: TrainConfig, ds: Dataset) -> ModelConfig:
    """The model config of a new run: the flags' shape plus what the data
    decides (the duration vocabulary of the training pieces, the longest state)."""
    grid = ds.settings.grid_per_beat
    units = np.concatenate([np.round(np.asarray(ds.records["beats"][s.start : s.stop], np.float64) * grid)
                            for s in ds.segments("train")])
    vocab = DurationVocab.from_units(units.astype(np.int64), grid)
    max_dur = float(np.asarray(ds.records["beats"]).max())
    base = asdict(cfg.model) if cfg.model else {}
    base.update(duration_classes=list(vocab.values), max_duration=max_dur, grid_per_beat=grid)
    if cfg.styles != "off":
        base.update(new_model_styles(data_styles(ds), cfg.default_style, always=cfg.styles == "on"))
    return ModelConfig(**base)


def init_from_model(cfg: TrainConfig, ds: Dataset) -> tuple[ChopinLSTM, ModelConfig]:
    """What a fine-tuning run starts from: the model ``cfg.init_from`` and the
    config of the run's model, its shape plus the styles of the new data it
    lacks (:mod:`chopinbot.training.finetune`; its weights are copied in by
    :func:`~chopinbot.training.finetune.copy_weights`)."""
    source = load_model(cfg.init_from)
    if not isinstance(source, ChopinLSTM):
        raise ConfigError(f"{cfg.init_from}: a compressed or exported model cannot be trained; start from its fp32")
    styles = data_styles(ds) if cfg.styles != "off" else []
    return source, fine_tune_config(source.config, styles, cfg.default_style) if styles else source.config


def _lr_lambda(cfg: TrainConfig, total_steps: int):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        if cfg.schedule == "constant":
            return 1.0
        prog = min(1.0, (step - cfg.warmup) / max(1, total_steps - cfg.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog))

    return f


def _make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(model.parameters(), lr=cfg.lr)


def _param_stats(model: torch.nn.Module, grads: bool) -> list[dict[str, Any]]:
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


def _append_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to a CSV, rewriting it atomically (files are small)."""
    old = path.read_text() if path.exists() else ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    if not old:
        w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, old + buf.getvalue())


def _truncate_csv(path: Path, max_epoch: int) -> None:
    """Drop rows after ``max_epoch`` (a resumed run rewrites those epochs)."""
    if not path.exists():
        return
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return
    keep = [r for r in rows if int(r["epoch"]) <= max_epoch]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(keep)
    atomic_write_text(path, buf.getvalue())


def train(cfg: TrainConfig, resume: bool = False) -> RunResult:
    """Train a model as ``cfg`` says; with ``resume``, continue the run in ``cfg.out``."""
    cfg.validate()
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ddp = _Distributed(device)
    device = ddp.device
    if ddp.main:
        _check_writable(out)
    state: dict[str, Any] = {}
    if resume:
        # The run's own dataset, not --data's default: resuming on other data would
        # silently train a different model under the same run folder.
        state, cfg = _load_resume_state(out, cfg)
    ds = load_or_prepare(cfg.data, progress=cfg.progress and ddp.main)
    if resume:
        trained_on = state["train_config"].get("dataset_sha256")
        if trained_on and trained_on != ds.manifest_hash:
            raise ConfigError(f"the dataset in {cfg.data} has changed since this run started; "
                              "start a new run (--force) to train on it")
        mcfg = cfg.model
    elif cfg.init_from:
        started_from, mcfg = init_from_model(cfg, ds)
        cfg.model = mcfg
    else:
        mcfg = build_model_config(cfg, ds)
        cfg.model = mcfg
    vocab = mcfg.vocab
    train_split = SplitData(ds, "train", vocab)
    valid_split = SplitData(ds, "valid", vocab)
    if train_split.n_targets == 0 or valid_split.n_targets == 0:
        raise ConfigError("the dataset needs train and valid pieces with at least 2 states each")

    _seed_everything(cfg.seed)
    model = ChopinLSTM(mcfg)
    if cfg.init_from and not resume:
        copy_weights(model, started_from)
    elif not resume:
        k, o, cls, mean_beats = train_split.marginals()
        if mcfg.duration_head == "classes":
            prior = torch.log(torch.tensor(cls, dtype=torch.float32).clamp(min=1e-6))
        else:
            mean_frac = mean_beats / mcfg.max_duration
            prior = torch.full((mcfg.dur_nodes,), math.log(mean_frac / (1 - mean_frac)))
        model.init_output_biases(torch.tensor(k, dtype=torch.float32), torch.tensor(o, dtype=torch.float32), prior)
    model.to(device)
    wrapped: torch.nn.Module = model
    if ddp.world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ddp.local_rank] if device.type == "cuda" else None)
    opt = _make_optimizer(cfg, model)
    units_per_epoch = len(train_split.windows(cfg.window)) if cfg.window else len(train_split.chunks(cfg.context))
    steps_per_epoch = max(1, units_per_epoch // (cfg.batch * ddp.world))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, cfg.epochs * steps_per_epoch))
    start_epoch, best_loss, best_epoch, bad_epochs, step = 1, float("inf"), 0, 0, 0
    best_score = -float("inf")
    best_summary: dict[str, float] = {}
    if resume:
        _restore(state, model, opt, sched)
        start_epoch = state["epoch"] + 1
        best_loss, best_epoch = state["best_loss"], state["best_epoch"]
        bad_epochs, step = state["bad_epochs"], state["step"]
        best_summary = state.get("best_summary", {})
        best_score = state.get("best_score", -float("inf"))
        for name in ("metrics.csv", "grads.csv", "weights.csv"):
            _truncate_csv(out / name, state["epoch"])
    elif ddp.main:
        for name in ("metrics.csv", "grads.csv", "weights.csv"):
            (out / name).unlink(missing_ok=True)
        atomic_write_json(out / "train_config.json", _config_json(cfg, ds))

    # A bar on a terminal only; in a log the epoch lines below are the progress.
    bar = Progress((cfg.epochs - start_epoch + 1) * steps_per_epoch, unit="step", enabled=cfg.progress and ddp.main,
                   log_every=0, dynamic_ncols=True)
    t_start, cpu_start = time.perf_counter(), time.process_time()
    prior_seconds, prior_cpu = state.get("seconds", 0.0), state.get("cpu_seconds", 0.0)
    stopped = "max-epochs"
    history: list[dict[str, float]] = []
    pred_count, pred_time = 0, 0.0
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t_epoch = time.perf_counter()
            rng = np.random.default_rng([cfg.seed, epoch])
            units = train_split.windows(cfg.window) if cfg.window else train_split.chunks(cfg.context, rng)
            order = rng.permutation(len(units))
            per_rank = steps_per_epoch * cfg.batch
            mine = order[ddp.rank * per_rank : (ddp.rank + 1) * per_rank] if ddp.world > 1 else order
            wrapped.train()
            tm = EpochMetrics()
            grad_rows_sum: dict[str, dict[str, float]] = {}
            for b in range(0, len(mine), cfg.batch):
                idx = mine[b : b + cfg.batch]
                if ddp.world > 1 and len(idx) < cfg.batch:
                    break
                shifts = rng.integers(-cfg.transpose, cfg.transpose + 1, len(idx)) if cfg.transpose else None
                x, t = train_split.batch([units[i] for i in idx], shifts, **model.config.input_blocks)
                x, t = x.to(device), t.to(device)
                t0 = time.perf_counter()
                out_b, losses = train_step(model, wrapped, opt, sched, cfg, x, t, grad_rows_sum,
                                           where=f"at epoch {epoch}, step {step}")
                pred_time += time.perf_counter() - t0
                pred_count += int(t.mask.sum().item())
                step += 1
                batch_metrics_update(tm, model, out_b, t, losses)
                bar.update()
                if step % 10 == 0:
                    bar.set_postfix_str(f"epoch={epoch}, loss={losses['total'].item():.4f}, "
                                        f"best_f1={best_summary.get('valid_f1_best', 0):.3f}")
            train_sum = tm.summary()
            valid_metrics = evaluate_split(model, valid_split, cfg.harshness, cfg.loss_clip, cfg.dur_ce_weight, device)
            vsum = valid_metrics.summary()
            row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t_epoch, 3)}
            row.update({f"train_{k}": v for k, v in train_sum.items()})
            row.update({f"valid_{k}": v for k, v in vsum.items()})
            history.append(row)
            # Early stopping follows the valid Maestro loss; best/ keeps the epoch
            # with the best valid key F1 (the headline metric; the loss keeps
            # improving while F1 swings), or the best loss with select_on="loss".
            improved_loss = vsum["maestro"] < best_loss - 1e-6
            if improved_loss:
                best_loss, bad_epochs = vsum["maestro"], 0
            else:
                bad_epochs += 1
            score = vsum["f1_best"] if cfg.select_on == "f1" else -vsum["maestro"]
            improved = score > best_score + 1e-9
            if improved:
                best_score, best_epoch, best_summary = score, epoch, row
            elapsed = prior_seconds + time.perf_counter() - t_start
            cpu_used = prior_cpu + time.process_time() - cpu_start
            if ddp.main:
                _append_csv(out / "metrics.csv", [row])
                n_steps = max(1, math.ceil(len(mine) / cfg.batch))
                _append_csv(out / "grads.csv", [dict(epoch=epoch, **{k: v / n_steps if k != "layer" else v
                                                                     for k, v in r.items()})
                                                for r in grad_rows_sum.values()])
                _append_csv(out / "weights.csv", [dict(epoch=epoch, **r) for r in _param_stats(model, grads=False)])
                meta = _meta(cfg, ds, epoch, row)
                if improved:
                    save_model(out / "best", model, meta)
                _save_last(out, model, opt, sched, cfg, ds, epoch, step, best_loss, best_epoch, bad_epochs,
                           best_summary, elapsed, best_score, cpu_used)
                bar.write(
                    f"epoch {epoch:3d}  train loss {train_sum['maestro']:.4f}  valid loss {vsum['maestro']:.4f}  "
                    f"valid F1 {vsum['f1_best']:.3f} @{vsum['best_threshold']:.2f}  dur err {vsum['dur_error']:.3f}  "
                    f"{row['seconds']:.1f}s" + ("  *" if improved else "")
                )
            if ddp.any(bad_epochs >= cfg.patience):
                stopped = "early-stop"
                break
            if ddp.any((bool(cfg.minutes) and elapsed > cfg.minutes * 60)
                       or (bool(cfg.cpu_minutes) and cpu_used > cfg.cpu_minutes * 60)):
                stopped = "time-budget"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        if ddp.main:
            bar.write("interrupted: last/ holds the last finished epoch; continue with --resume")
    finally:
        bar.close()
        _dump_for_ddp_check(model, ddp, history)
        ddp.close()
    seconds = prior_seconds + time.perf_counter() - t_start
    return RunResult(out, epoch, best_epoch, best_summary, stopped, seconds,
                     pred_count / pred_time if pred_time else 0.0, history)


def _dump_for_ddp_check(model, ddp: _Distributed, history) -> None:
    """With ``CHOPINBOT_DDP_DUMP=path{rank}.safetensors``, every rank writes its
    final weights and last valid loss, so a test can check that the data-parallel
    ranks stayed identical."""
    pattern = os.environ.get("CHOPINBOT_DDP_DUMP")
    if pattern and history:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        tensors["valid_total"] = torch.tensor([history[-1]["valid_total"]], dtype=torch.float64)
        save_file(tensors, pattern.format(rank=ddp.rank))


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"x" * 1024)
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to the run folder {out}: {e.strerror or e}") from None
    if shutil.disk_usage(out).free < 50 * 1024 * 1024:
        raise ConfigError(f"less than 50 MB free on the disk of {out}")


def train_step(model: ChopinLSTM, forward, opt: torch.optim.Optimizer, sched, cfg: TrainConfig, x: torch.Tensor,
               t, grad_stats: dict[str, dict[str, float]], where: str = ""):
    """One update on batch ``x``/``t``: forward (through ``forward``, the model or
    its DDP wrapper), the loss, backward, gradient clipping, the gradient
    statistics (summed into ``grad_stats``), the optimiser and schedule steps,
    max-norm.  Returns the outputs and the losses; a non-finite loss raises
    ``FloatingPointError`` (``where`` says where, in the message)."""
    out = batch_outputs(model, x, t, forward)
    losses = compute_losses(model, out, t, cfg.harshness, cfg.loss_clip, cfg.dur_ce_weight)
    if not torch.isfinite(losses["total"]):
        raise FloatingPointError(f"non-finite loss {where}".rstrip())
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
    _accumulate_grads(grad_stats, model)
    opt.step()
    sched.step()
    if cfg.max_norm:
        apply_max_norm(model, cfg.max_norm)
    return out, losses


def _accumulate_grads(acc: dict[str, dict[str, float]], model: torch.nn.Module) -> None:
    for r in _param_stats(model, grads=True):
        a = acc.setdefault(r["layer"], {"layer": r["layer"], "norm": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0,
                                         "max_row_norm": 0.0})
        for k in ("norm", "mean", "min", "max", "max_row_norm"):
            a[k] += r[k]


def _config_json(cfg: TrainConfig, ds: Dataset) -> dict[str, Any]:
    d = asdict(cfg)
    d["dataset_sha256"] = ds.manifest_hash
    return d


def _meta(cfg: TrainConfig, ds: Dataset, epoch: int, row: dict[str, float]) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "dataset_sha256": ds.manifest_hash,
        "dataset_settings": ds.manifest["settings"],
        "harshness": cfg.harshness,
        "loss_clip": cfg.loss_clip,
        "valid_threshold": row.get("valid_best_threshold", 0.5),
        "metrics": {k: v for k, v in row.items() if k.startswith("valid_")},
        "train": {k: v for k, v in asdict(cfg).items() if k != "model"},
    }


def _save_last(out, model, opt, sched, cfg, ds, epoch, step, best_loss, best_epoch, bad_epochs, best_summary, seconds,
               best_score, cpu_seconds):
    """``last/``: the model plus everything needed to continue exactly."""
    tensors: dict[str, torch.Tensor] = {"torch_rng": torch.get_rng_state()}
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v
    resume_state = {
        "epoch": epoch, "step": step, "best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
        "best_summary": best_summary, "best_score": best_score, "seconds": seconds, "cpu_seconds": cpu_seconds,
        "param_groups": osd["param_groups"],
        "scheduler": sched.state_dict(),
        "train_config": _config_json(cfg, ds),
    }
    save_model(out / "last", model, _meta(cfg, ds, epoch, best_summary),
               extra_files={"optimizer.safetensors": tensors, "resume.json": resume_state})


def _load_resume_state(out: Path, cfg: TrainConfig) -> tuple[dict[str, Any], TrainConfig]:
    folder = resolve_checkpoint(out / "last")
    state = json.loads((folder / "resume.json").read_text())
    state["folder"] = str(folder)
    saved = dict(state["train_config"])
    saved.pop("dataset_sha256", None)
    model_cfg = ModelConfig.from_dict(read_config(folder)["model"])
    names = {f.name for f in fields(TrainConfig)}
    new = TrainConfig(**{k: v for k, v in saved.items() if k in names and k != "model"})
    if cfg.data is not None and not _same_path(cfg.data, new.data):
        raise ConfigError(f"{out} was trained on {new.data or 'the bundled corpus'}, not {cfg.data}: "
                          "resume it without --data, or start a new run (--force)")
    # What a user may change on resume: the number of epochs, the time budgets,
    # device, threads, progress (the schedule follows the new epoch count).
    new.epochs, new.minutes, new.cpu_minutes, new.device, new.threads, new.progress = (
        cfg.epochs, cfg.minutes, cfg.cpu_minutes, cfg.device, cfg.threads, cfg.progress)
    new.model = model_cfg
    new.out = str(out)
    return state, new


def _same_path(a: str, b: str | None) -> bool:
    return b is not None and Path(a).resolve() == Path(b).resolve()


def _restore(state: dict[str, Any], model, opt, sched) -> None:
    folder = Path(state["folder"])
    weights = load_file(str(folder / WEIGHTS))
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    tensors = load_file(str(folder / "optimizer.safetensors"))
    osd = {"state": {}, "param_groups": state["param_groups"]}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            osd["state"].setdefault(int(pid), {})[name] = v
    opt.load_state_dict(osd)
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(tensors["torch_rng"])
