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
from chopinbot.model.metrics import EpochMetrics
from chopinbot.model.network import ChopinLSTM, ModelConfig
from chopinbot.model.predict import evaluate_split
from chopinbot.progress import Progress
from chopinbot.training.card import write_model_card
from chopinbot.training.config import TrainConfig
from chopinbot.training.epoch import (
    make_optimizer,
    make_scheduler,
    param_stats,
    seed_everything,
    train_epoch,
    train_step,
    updates_per_epoch,
)
from chopinbot.training.finetune import copy_weights, data_styles, fine_tune_config, new_model_styles

__all__ = ["RunResult", "TrainConfig", "build_model_config", "init_from_model", "train", "train_step"]


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
    start: dict[str, float] = field(default_factory=dict)  # epoch 0: the valid figures before any update
    warnings: list[str] = field(default_factory=list)  # what the run suggests changing (also in the model card)
    card: dict[str, Any] = field(default_factory=dict)  # the model card (model_card.json)


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
        counts = {split: len({seg.piece for seg in ds.segments(split)}) for split in ("train", "valid")}
        raise ConfigError(f"the dataset needs train and valid pieces with at least 2 states each; it has "
                          f"{counts['train']} train and {counts['valid']} valid pieces: prepare more files, or name "
                          f"the pieces to hold out in a splits.json beside them "
                          f"({{\"valid\": [names], \"test\": [names]}}) and prepare again")

    seed_everything(cfg.seed)
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
    if cfg.lr is None:  # the run's default, recorded as a number in train_config.json
        cfg.lr = cfg.learning_rate()
    opt = make_optimizer(cfg, model)
    steps_per_epoch = updates_per_epoch(train_split, cfg, ddp.world)
    sched = make_scheduler(cfg, opt, cfg.epochs * steps_per_epoch)
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
        start_row = state.get("start_summary", {})
        for name in ("metrics.csv", "grads.csv", "weights.csv"):
            _truncate_csv(out / name, state["epoch"])
    else:
        # Epoch 0: the valid figures before any update (for a fine-tuning run, the starting model's).
        t0 = time.perf_counter()
        vsum0 = evaluate_split(model, valid_split, cfg.harshness, cfg.loss_clip, cfg.dur_ce_weight, device).summary()
        start_row = {"epoch": 0, "lr": 0.0, "seconds": round(time.perf_counter() - t0, 3),
                     **{f"train_{k}": float("nan") for k in vsum0}, **{f"valid_{k}": v for k, v in vsum0.items()}}
        if cfg.init_from:  # the starting model is a candidate: an epoch must beat it to replace it in best/
            best_score, best_epoch, best_summary = _selection_score(cfg, vsum0), 0, start_row
        if ddp.main:
            for name in ("metrics.csv", "grads.csv", "weights.csv"):
                (out / name).unlink(missing_ok=True)
            atomic_write_json(out / "train_config.json", _config_json(cfg, ds))
            _append_csv(out / "metrics.csv", [start_row])
            if cfg.init_from:
                save_model(out / "best", model, _meta(cfg, ds, 0, start_row))
            print(f"epoch   0  (before any update{', ' + str(cfg.init_from) if cfg.init_from else ''})  "
                  f"valid loss {vsum0['maestro']:.4f}  valid F1 {vsum0['f1_best']:.3f}  "
                  f"key NLL {vsum0['key_nll']:.3f}", flush=True)

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
            tm = EpochMetrics()
            grad_rows_sum: dict[str, dict[str, float]] = {}

            def after_update(losses: dict[str, torch.Tensor], epoch: int = epoch,
                             best_f1: float = best_summary.get("valid_f1_best", 0)) -> None:
                nonlocal step
                step += 1
                bar.update()
                if step % 10 == 0:
                    bar.set_postfix_str(f"epoch={epoch}, loss={losses['total'].item():.4f}, best_f1={best_f1:.3f}")

            done = train_epoch(model, opt, sched, cfg, train_split, np.random.default_rng([cfg.seed, epoch]),
                               forward=wrapped, device=device,
                               shard=(ddp.rank, steps_per_epoch) if ddp.world > 1 else None,
                               after_update=after_update, metrics=tm, grad_stats=grad_rows_sum,
                               where=f"at epoch {epoch}")
            pred_time += sum(done.step_seconds)
            pred_count += sum(done.predictions)
            train_sum = tm.summary()
            valid_metrics = evaluate_split(model, valid_split, cfg.harshness, cfg.loss_clip, cfg.dur_ce_weight, device)
            vsum = valid_metrics.summary()
            row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t_epoch, 3)}
            row.update({f"train_{k}": v for k, v in train_sum.items()})
            row.update({f"valid_{k}": v for k, v in vsum.items()})
            history.append(row)
            # Early stopping follows the valid Maestro loss; best/ keeps the epoch
            # with the best valid key F1 (the headline metric; the loss keeps
            # improving while F1 swings), or the best loss (cfg.selection(): a
            # fine-tuning run's default, its starting model a candidate).
            improved_loss = vsum["maestro"] < best_loss - 1e-6
            if improved_loss:
                best_loss, bad_epochs = vsum["maestro"], 0
            else:
                bad_epochs += 1
            score = _selection_score(cfg, vsum)
            improved = score > best_score + 1e-9
            if improved:
                best_score, best_epoch, best_summary = score, epoch, row
            elapsed = prior_seconds + time.perf_counter() - t_start
            cpu_used = prior_cpu + time.process_time() - cpu_start
            if ddp.main:
                _append_csv(out / "metrics.csv", [row])
                n_steps = max(1, done.updates)
                _append_csv(out / "grads.csv", [dict(epoch=epoch, **{k: v / n_steps if k != "layer" else v
                                                                     for k, v in r.items()})
                                                for r in grad_rows_sum.values()])
                _append_csv(out / "weights.csv", [dict(epoch=epoch, **r) for r in param_stats(model, grads=False)])
                meta = _meta(cfg, ds, epoch, row)
                if improved:
                    save_model(out / "best", model, meta)
                _save_last(out, model, opt, sched, cfg, ds, epoch, step, best_loss, best_epoch, bad_epochs,
                           best_summary, elapsed, best_score, cpu_used, start_row)
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
    cpu_seconds = prior_cpu + time.process_time() - cpu_start
    res = RunResult(out, epoch, best_epoch, best_summary, stopped, seconds,
                    pred_count / pred_time if pred_time else 0.0, history, start_row)
    res.warnings = run_warnings(cfg, res)
    if ddp.main and best_summary:
        res.card = model_card(cfg, ds, res, cpu_seconds)
        write_model_card(out, res.card)
    return res


def _selection_score(cfg: TrainConfig, summary: dict[str, float]) -> float:
    """Higher is better: the valid key F1, or minus the valid Maestro loss (:meth:`TrainConfig.selection`)."""
    return summary["f1_best"] if cfg.selection() == "f1" else -summary["maestro"]


def run_warnings(cfg: TrainConfig, res: RunResult) -> list[str]:
    """What a finished run suggests changing: its best epoch was the first (later
    epochs only lost ground on the valid pieces), or a fine-tuning run never
    beat its starting model's held-out key NLL."""
    out = []
    lr = cfg.learning_rate()
    if res.best_epoch == 1 and res.epochs >= 2:
        out.append(f"the best epoch was the first: every later epoch did worse on the valid pieces. Try a lower "
                   f"--lr (this run: {lr:g}; e.g. {lr / 4:g}), more music in the dataset (the model may be "
                   f"learning the few training pieces by heart), or fewer --epochs")
    start, best = res.start.get("valid_key_nll"), res.best.get("valid_key_nll")
    if cfg.init_from and res.best_epoch == 0:
        out.append(f"no epoch beat the starting model ({cfg.init_from}) on the valid pieces ({cfg.selection()}): "
                   f"best/ is the starting model itself. Try a lower --lr (this run: {lr:g}; e.g. {lr / 4:g}) or "
                   f"more music in the dataset")
    elif cfg.init_from and start is not None and best is not None and best >= start:
        out.append(f"the kept epoch ({res.best_epoch}) is better on the valid {cfg.selection()} but not on the "
                   f"held-out key NLL: {start:.3f} before, {best:.3f} after. Compare the two on your own pieces, "
                   f"or try a lower --lr (this run: {lr:g})")
    return out


def model_card(cfg: TrainConfig, ds: Dataset, res: RunResult, cpu_seconds: float) -> dict[str, Any]:
    """The run's model card (:mod:`chopinbot.training.card`): data, composers, time, held-out figures."""
    segs = {split: ds.segments(split) for split in ("train", "valid")}
    mcfg = cfg.model
    return {
        "name": res.out.name,
        "data": {"dataset": cfg.data, "dataset_sha256": ds.manifest_hash,
                 "train_pieces": len({s.piece for s in segs["train"]}),
                 "valid_pieces": len({s.piece for s in segs["valid"]}),
                 "train_states": int(sum(s.stop - s.start for s in segs["train"]))},
        "composers": sorted({s.composer for s in segs["train"]}),
        "styles": list(mcfg.styles) if mcfg and mcfg.style_input else [],
        "init_from": cfg.init_from,
        "lr": cfg.learning_rate(),
        "epochs": res.epochs, "best_epoch": res.best_epoch, "stopped": res.stopped,
        "cpu_minutes": round(cpu_seconds / 60, 4), "wall_minutes": round(res.seconds / 60, 2),
        "held_out": {"split": "valid",
                     "start_key_nll": res.start.get("valid_key_nll"), "start_f1": res.start.get("valid_f1_best"),
                     "key_nll": res.best.get("valid_key_nll"), "f1": res.best.get("valid_f1_best")},
        "warnings": res.warnings,
    }


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
               best_score, cpu_seconds, start_summary):
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
        "start_summary": start_summary,
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
