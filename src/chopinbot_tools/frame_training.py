"""Training the frame models: chunk sampling with transposition, AdamW with warm-up and cosine
decay, selection and early stopping on valid, and resumable runs.

A run saves its whole training state -- weights, optimizer moments, random
generators, step, the best valid NLL so far and the history -- every
``checkpoint_minutes`` of its clock (and every ``checkpoint_steps`` steps if
given) to ``train_state.safetensors``: one file, written atomically, the tensors
as safetensors and everything else as JSON in its metadata (no pickles). A run
started again on the same folder with ``resume`` continues from there: the
epoch's sampling is replayed from the generator state saved at the start of the
epoch, so the resumed run draws the same chunks and transpositions, and a run
whose schedule is set by ``epochs`` ends with the same weights as one that was
never interrupted (tested). Under a time budget (``minutes``) the learning-rate
schedule follows the clock, which no two runs read alike; the CPU time already
spent is carried over, so the budget and schedule still hold across the break.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chopinbot.errors import ConfigError, ModelFileError
from chopinbot.io_utils import atomic_write
from chopinbot.progress import Progress
from chopinbot_tools.frame_repeats import repeat_inputs, transpose_repeats
from chopinbot_tools.pianomidi import N_KEYS, evaluate, save_checkpoint

TRAIN_STATE = "train_state.safetensors"
STATE_FORMAT = 1


@dataclass
class TrainSettings:
    minutes: float | None = None  # time budget for training (evaluations included), on ``clock``
    clock: str = "wall"  # "wall": elapsed time; "cpu": this process's CPU time (fair on a shared machine)
    epochs: int | None = None
    batch_size: int = 16
    chunk: int = 128
    lr: float = 2e-3
    min_lr_frac: float = 0.05  # cosine decay to lr * this
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip: float = 1.0
    transpose: int = 6  # random transposition of each training chunk by up to +-N semitones
    patience: int = 5  # evaluations without a better valid NLL before stopping
    eval_every: int | None = None  # steps; default: once per epoch
    threads: int | None = None
    seed: int = 0
    eval_window: int = 512  # frames per forward pass at evaluation (state is carried: exact)
    checkpoint_minutes: float = 3.0  # save the training state this often (on ``clock``)
    checkpoint_steps: int | None = None  # ... and every this many steps, if given
    progress: bool = True

    def validate(self) -> TrainSettings:
        if self.minutes is None and self.epochs is None:
            raise ConfigError("give --minutes or --epochs (or both): training needs a stopping rule")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError("--minutes must be positive")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("--epochs must be at least 1")
        if self.clock not in ("wall", "cpu"):
            raise ConfigError(f"clock must be 'wall' or 'cpu', got {self.clock!r}")
        if self.batch_size < 1 or self.chunk < 2 or self.lr <= 0 or self.transpose < 0:
            raise ConfigError("batch size >= 1, chunk >= 2, lr > 0 and transpose >= 0 are required")
        if not self.checkpoint_minutes > 0 or (self.checkpoint_steps is not None and self.checkpoint_steps < 1):
            raise ConfigError("checkpoint_minutes must be positive and checkpoint_steps at least 1")
        return self

    def schedule(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("threads", "progress", "checkpoint_minutes", "checkpoint_steps")}


def _transpose(frames: np.ndarray, shift: int) -> np.ndarray:
    if shift == 0:
        return frames
    out = np.zeros_like(frames)
    if shift > 0:
        out[:, shift:] = frames[:, :-shift]
    else:
        out[:, :shift] = frames[:, -shift:]
    return out


class ChunkSampler:
    """Cuts every training piece into chunks of ``chunk`` frames at a random offset each epoch.

    Each chunk comes with its previous frames (the frame before a piece is empty), so
    every training frame is predicted exactly once per epoch, from its true history
    within the chunk (the recurrent state starts at zero at each chunk). With
    ``repeats`` each chunk also carries its repeats input, looked up over the whole
    piece's past (not only the chunk's), and transposed with the chunk.
    """

    def __init__(self, pieces: list[np.ndarray], chunk: int, batch_size: int, transpose: int,
                 rng: np.random.Generator, repeats: bool = False) -> None:
        self.pieces = [np.concatenate([np.zeros((1, N_KEYS), np.uint8), p]) for p in pieces]  # row 0: empty
        # row t of a piece's repeats belongs to frame t (its previous frame is row t of self.pieces)
        self.repeats = [repeat_inputs(p[:-1]) for p in self.pieces] if repeats else None
        self.chunk, self.batch_size, self.transpose, self.rng = chunk, batch_size, transpose, rng
        self.frames = sum(len(p) - 1 for p in self.pieces)

    def epoch(self):
        """The epoch's batches ``(prev, x, mask, rep)``; ``rep`` is None without repeats."""
        spans = []
        for i, p in enumerate(self.pieces):
            n = len(p) - 1
            off = int(self.rng.integers(0, self.chunk)) if n > self.chunk else 0
            starts = [0] + list(range(off, n, self.chunk)) if off else list(range(0, n, self.chunk))
            starts = sorted(set(starts))
            for a, b in zip(starts, starts[1:] + [n]):
                if b > a:
                    spans.append((i, a, b))
        order = self.rng.permutation(len(spans))
        for j in range(0, len(order), self.batch_size):
            yield self._batch([spans[k] for k in order[j:j + self.batch_size]])

    def steps_per_epoch(self) -> int:  # an estimate (the offsets vary)
        n = sum(math.ceil((len(p) - 1) / self.chunk) + (len(p) - 1 > self.chunk) for p in self.pieces)
        return max(1, math.ceil(n / self.batch_size))

    def _batch(self, spans):
        L = max(b - a for _, a, b in spans)
        B = len(spans)
        prev = np.zeros((B, L, N_KEYS), np.float32)
        x = np.zeros((B, L, N_KEYS), np.float32)
        mask = np.zeros((B, L), np.float32)
        rep = None if self.repeats is None else np.zeros((B, L, *self.repeats[0].shape[1:]), np.float32)
        for r, (i, a, b) in enumerate(spans):
            seg = self.pieces[i][a:b + 1]  # frames a-1 .. b-1 of the piece (row 0 = empty)
            rseg = None if self.repeats is None else self.repeats[i][a:b]
            if self.transpose:
                on = np.flatnonzero(seg.any(0))
                if len(on):
                    lo = -min(self.transpose, int(on[0]))
                    hi = min(self.transpose, N_KEYS - 1 - int(on[-1]))
                    shift = int(self.rng.integers(lo, hi + 1))
                    seg = _transpose(seg, shift)
                    if rseg is not None:
                        rseg = transpose_repeats(rseg, shift)
            n = b - a
            prev[r, :n] = seg[:-1]
            x[r, :n] = seg[1:]
            mask[r, :n] = 1.0
            if rep is not None:
                rep[r, :n] = rseg
        return prev, x, mask, rep


@dataclass
class TrainResult:
    best_valid_nll: float
    best_step: int
    steps: int
    epochs: float
    train_seconds: float  # wall, all sessions of the run
    cpu_seconds: float  # this process's CPU time (all threads), all sessions of the run
    stopped: str
    history: list[dict] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)  # the steps a session started from


@dataclass
class _Progress:
    """Everything of a run's loop that is not a tensor (saved as JSON with the training state)."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (1-based once started)
    epoch_step: int = 0  # batches of that epoch already trained on
    epoch_rng: dict | None = None  # the sampler's generator state when the epoch began
    best: float = math.inf
    best_step: int = 0
    bad: int = 0
    run_loss: float = 0.0
    run_frames: int = 0
    clock_used: float = 0.0  # seconds on the run's clock before this session
    wall_used: float = 0.0
    cpu_used: float = 0.0
    eval_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)


def save_train_state(path: Path, model, opt: torch.optim.Optimizer, prog: _Progress, meta: dict) -> None:
    """The whole training state in one safetensors file (atomic): tensors + JSON metadata."""
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    sd = opt.state_dict()
    for i, st in sd["state"].items():
        for name, v in st.items():
            tensors[f"opt.{i}.{name}"] = torch.as_tensor(v).detach().contiguous().clone()
    tensors["rng.torch"] = torch.get_rng_state()
    info = {"format": STATE_FORMAT, "progress": asdict(prog), "param_groups": sd["param_groups"], **meta}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"state": json.dumps(info)}))


def load_train_state(path: Path, model, opt: torch.optim.Optimizer, meta: dict) -> _Progress:
    """Restore ``model``, ``opt`` and the torch generator from :func:`save_train_state`'s file;
    the run's model and schedule settings (``meta``) must be those it was saved with."""
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads(f.metadata()["state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, ValueError) as e:
        raise ModelFileError(f"{path}: not a readable training state ({e})") from None
    if info.get("format") != STATE_FORMAT:
        raise ModelFileError(f"{path}: training state format {info.get('format')!r}, expected {STATE_FORMAT}")
    for k, v in meta.items():
        if info.get(k) != v:
            raise ConfigError(f"{path}: cannot resume with a different {k} ({info.get(k)} saved, {v} now)")
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return _Progress(**info["progress"])


def train(model, data: dict[str, list[np.ndarray]], settings: TrainSettings, run_dir: Path, cfg_dict: dict,
          resume: bool = False, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """AdamW with warm-up and cosine decay, gradient clipping, transposition augmentation;
    selection and early stopping on the valid NLL; the best model is saved to ``run_dir``.

    With ``resume`` the run continues from ``run_dir``'s training state (a fresh start if there
    is none); ``on_step(step)`` is called after every optimizer step (progress displays, tests)."""
    settings.validate()
    repeats = bool(cfg_dict.get("repeats"))
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    sampler = ChunkSampler(data["train"], settings.chunk, settings.batch_size, settings.transpose, rng, repeats)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = sampler.steps_per_epoch()
    eval_every = settings.eval_every or steps_per_epoch
    budget = settings.minutes * 60.0 if settings.minutes else math.inf
    max_steps = settings.epochs * steps_per_epoch if settings.epochs else None
    state_path = run_dir / TRAIN_STATE
    meta = {"model": cfg_dict, "schedule": settings.schedule(), "train_frames": sampler.frames}

    prog = _Progress()
    if resume and state_path.is_file():
        prog = load_train_state(state_path, model, opt, meta)
        prog.resumed_at.append(prog.step)
    elif state_path.is_file():
        raise ConfigError(f"{run_dir} holds an unfinished run ({TRAIN_STATE}): resume it (--resume) or choose "
                          "another --out")

    clock_cpu = time.process_time
    clock = clock_cpu if settings.clock == "cpu" else time.perf_counter
    t0, w0, c0 = clock(), time.perf_counter(), clock_cpu()
    last_save = prog.clock_used
    last_valid = prog.history[-1]["valid_nll"] if prog.history else float("nan")
    stopped = ""

    def elapsed() -> float:  # on the run's clock, all sessions
        return prog.clock_used + clock() - t0

    def progress_frac() -> float:
        fr = elapsed() / budget if budget < math.inf else 0.0
        if max_steps:
            fr = max(fr, prog.step / max_steps)
        return min(fr, 1.0)

    def lr_now() -> float:
        if prog.step < settings.warmup_steps:
            return settings.lr * (prog.step + 1) / settings.warmup_steps
        m = settings.min_lr_frac
        return settings.lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * progress_frac())))

    def checkpoint() -> None:
        saved = _Progress(**{**asdict(prog), "clock_used": elapsed(),
                             "wall_used": prog.wall_used + time.perf_counter() - w0,
                             "cpu_used": prog.cpu_used + clock_cpu() - c0})
        save_train_state(state_path, model, opt, saved, meta)

    # A bar on a terminal only; in a log the periodic evaluation lines are the progress.
    bar = Progress(max_steps or 0, unit="step", enabled=settings.progress, log_every=0, dynamic_ncols=True,
                   mininterval=1.0)
    try:
        while not stopped:
            if prog.epoch_rng is None:  # a new epoch (else: resume the one in progress)
                prog.epoch += 1
                prog.epoch_step = 0
                prog.epoch_rng = rng.bit_generator.state
            else:
                rng.bit_generator.state = prog.epoch_rng
            for i, (prev, x, mask, rep) in enumerate(sampler.epoch()):
                if i < prog.epoch_step:
                    continue  # trained on before the break: drawn again only to replay the generator
                model.train()
                for g in opt.param_groups:
                    g["lr"] = lr_now()
                prev_t, x_t, mask_t = (torch.from_numpy(a) for a in (prev, x, mask))
                nll, _ = model(prev_t, x_t, rep=None if rep is None else torch.from_numpy(rep))
                loss = (nll * mask_t).sum() / mask_t.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if settings.clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
                opt.step()
                prog.step += 1
                prog.epoch_step += 1
                prog.run_loss += float(loss.detach()) * float(mask_t.sum())
                prog.run_frames += int(mask_t.sum())
                bar.update(1)
                bar.set_postfix_str(f"ep {prog.epoch} train {prog.run_loss / prog.run_frames:.3f} valid "
                                    f"{last_valid:.3f} lr {lr_now():.1e}")  # Progress never forces a redraw for it
                out_of_time = elapsed() + prog.eval_seconds >= budget
                out_of_steps = max_steps is not None and prog.step >= max_steps
                if prog.step % eval_every == 0 or out_of_time or out_of_steps:
                    stopped = _evaluate_step(model, data, settings, run_dir, cfg_dict, prog, clock, clock_cpu,
                                             w0, c0, steps_per_epoch, lr_now(), out_of_time, out_of_steps, bar)
                    last_valid = prog.history[-1]["valid_nll"]
                if stopped:
                    break
                if elapsed() - last_save >= settings.checkpoint_minutes * 60.0 or (
                        settings.checkpoint_steps and prog.step % settings.checkpoint_steps == 0):
                    checkpoint()
                    last_save = elapsed()
                if on_step is not None:
                    on_step(prog.step)
            else:
                prog.epoch_rng = None  # the epoch is done
    except KeyboardInterrupt:  # keep the best model so far and report on it (the training state stays)
        stopped = "interrupted by the user"
        if prog.best == math.inf:
            res = evaluate(model, data["valid"], settings.eval_window, accuracy=False)
            prog.best, prog.best_step = res.nll, prog.step
            save_checkpoint(model, cfg_dict, run_dir, {"step": prog.step, "valid_nll": res.nll})
    bar.close()
    if stopped != "interrupted by the user":
        state_path.unlink(missing_ok=True)  # finished: nothing left to resume
    return TrainResult(best_valid_nll=prog.best, best_step=prog.best_step, steps=prog.step,
                       epochs=prog.step / steps_per_epoch,
                       train_seconds=prog.wall_used + time.perf_counter() - w0,
                       cpu_seconds=prog.cpu_used + clock_cpu() - c0, stopped=stopped, history=prog.history,
                       resumed_at=prog.resumed_at)


def _evaluate_step(model, data, settings: TrainSettings, run_dir: Path, cfg_dict: dict, prog: _Progress, clock,
                   clock_cpu, w0: float, c0: float, steps_per_epoch: int, lr: float, out_of_time: bool,
                   out_of_steps: bool, bar) -> str:
    """Valid NLL now: history row, best checkpoint, and the reason to stop ('' to go on)."""
    te = clock()
    res = evaluate(model, data["valid"], settings.eval_window, accuracy=False)
    prog.eval_seconds = clock() - te
    row = {"step": prog.step, "epoch": round(prog.step / steps_per_epoch, 3),
           "seconds": round(prog.wall_used + time.perf_counter() - w0, 1),
           "cpu_seconds": round(prog.cpu_used + clock_cpu() - c0, 1),
           "train_nll": prog.run_loss / max(prog.run_frames, 1), "valid_nll": res.nll, "lr": lr}
    prog.history.append(row)
    prog.run_loss, prog.run_frames = 0.0, 0
    improved = res.nll < prog.best - 1e-4
    if improved:
        prog.best, prog.best_step, prog.bad = res.nll, prog.step, 0
        save_checkpoint(model, cfg_dict, run_dir, {"step": prog.step, "valid_nll": res.nll})
    else:
        prog.bad += 1
    if settings.progress:
        bar.write(f"step {prog.step} ep {row['epoch']:.2f} {row['seconds']:.0f}s ({row['cpu_seconds']:.0f} CPU-s): "
                  f"train {row['train_nll']:.3f} valid {res.nll:.3f}{' *' if improved else ''}")
    if prog.bad >= settings.patience:
        return f"early stop: no better valid NLL in {settings.patience} evaluations"
    if out_of_time:
        return f"{settings.clock} time budget of {settings.minutes:g} min"
    if out_of_steps:
        return f"{settings.epochs} epochs"
    return ""
