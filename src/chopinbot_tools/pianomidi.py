"""The Piano-midi.de frame-level benchmark (Boulanger-Lewandowski, Bengio & Vincent, ICML 2012).

Data: 87 / 12 / 25 pieces of 88-key 0/1 frames (``data/piano_midi/Piano_midi.mat``).

Score: the frame-level negative log-likelihood in nats -- for each frame the sum
over the 88 keys of the Bernoulli NLL of the key's true state given all earlier
frames of its piece, totalled over all pieces of a split and divided by the
split's number of frames. The first frame of a piece is predicted from an empty
"previous frame" (nothing sounds before a piece starts).

Frame accuracy (Bay et al. 2009, as used by BL12): sum over frames of TP divided
by the sum over frames of TP + FP + FN, where a model's predicted frame is its
greedy most probable frame (each key in turn, low to high, takes its more
probable state given the earlier frames and the keys already chosen; for
independent keys this is ``p > 0.5``). We also report the accuracy at the
threshold (``p > tau``) that maximises accuracy on valid.

This module holds the data loading, the metrics, the baselines, the training
loop and the report; the models are in :mod:`chopinbot_tools.frame_models`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import torch
from safetensors.torch import load_file, save_file

from chopinbot.constants import PACKAGE_DIR
from chopinbot.errors import ConfigError, DatasetError, ModelFileError
from chopinbot.io_utils import atomic_write, atomic_write_json, atomic_write_text
from chopinbot.model.checkpoint import CONFIG, WEIGHTS
from chopinbot.progress import Progress
from chopinbot_tools.frame_models import FrameModelConfig, build_model, count_parameters, frame_nll

N_KEYS = 88
SPLITS = ("train", "valid", "test")
MAT_KEYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}
PIANO_MIDI_DIR = PACKAGE_DIR / "data" / "piano_midi"
DEFAULT_MAT = PIANO_MIDI_DIR / "Piano_midi.mat"
LN2 = math.log(2.0)

# Published test figures (nats per frame; frame accuracy in % where the issue gives it).
PUBLISHED: list[dict] = [
    {"model": "Random (all keys p = 0.5)", "nll": 61.00, "acc": None, "source": "BL12"},
    {"model": "RNN (SGD)", "nll": 8.37, "acc": None, "source": "BL12"},
    {"model": "MLP", "nll": 8.13, "acc": None, "source": "Johnson 2017"},
    {"model": "RNN (Hessian-free)", "nll": 7.66, "acc": None, "source": "BL12"},
    {"model": "Note N-gram", "nll": 7.50, "acc": None, "source": "BL12"},
    {"model": "RTRBM", "nll": 7.36, "acc": None, "source": "BL12"},
    {"model": "LSTM-NADE", "nll": 7.36, "acc": None, "source": "Johnson 2017"},
    {"model": "RNN-DBN", "nll": 7.15, "acc": None, "source": "Johnson 2017"},
    {"model": "RNN-RBM", "nll": 7.09, "acc": 28.9, "source": "BL12"},
    {"model": "RNN-NADE", "nll": 7.05, "acc": None, "source": "BL12"},
    {"model": "TP-LSTM-NADE", "nll": 5.44, "acc": None, "source": "Johnson 2017"},
    {"model": "BALSTM (bi-axial LSTM)", "nll": 4.90, "acc": None, "source": "Johnson 2017"},
    {"model": "Copy previous frame (accuracy only)", "nll": None, "acc": 25.5, "source": "BL12"},
]
SOURCES = {
    "BL12": "Boulanger-Lewandowski, Bengio & Vincent, ICML 2012, Table 1",
    "Johnson 2017": "D. D. Johnson, 'Generating polyphonic music using tied parallel networks', EvoMUSART 2017, "
                    "Table 1 (which also collects earlier published results)",
    "accuracies": "the two published accuracies (RNN-RBM 28.9 %, copy previous 25.5 %) are as quoted in issue 8",
}


# --- data ----------------------------------------------------------------------
def load_piano_midi(path: str | os.PathLike | None = None, limit: int | None = None) -> dict[str, list[np.ndarray]]:
    """The three splits as lists of (frames, 88) uint8 arrays, in the file's order.

    ``limit`` keeps only the first ``limit`` pieces of each split (for quick tests).
    """
    path = Path(path) if path is not None else DEFAULT_MAT
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (the Piano-midi.de .mat file)")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types on a bad file
        raise DatasetError(f"{path}: not a readable MATLAB file ({e})") from None
    out: dict[str, list[np.ndarray]] = {}
    for split, key in MAT_KEYS.items():
        if key not in mat:
            raise DatasetError(f"{path}: no {key!r} cell in the file")
        cell = np.asarray(mat[key]).ravel()
        pieces = []
        for i, p in enumerate(cell):
            a = np.asarray(p)
            if a.ndim != 2 or a.shape[1] != N_KEYS or a.shape[0] < 1:
                raise DatasetError(f"{path}: {key}[{i}] has shape {a.shape}, expected (frames, 88)")
            if not np.isin(a, (0, 1)).all():
                raise DatasetError(f"{path}: {key}[{i}] holds values other than 0 and 1")
            pieces.append(np.ascontiguousarray(a, dtype=np.uint8))
        if not pieces:
            raise DatasetError(f"{path}: {key} holds no pieces")
        out[split] = pieces[:limit] if limit else pieces
    return out


def previous_frames(piece: np.ndarray) -> np.ndarray:
    """Frame t-1 for every frame t of a piece; an empty frame before the first."""
    return np.concatenate([np.zeros((1, piece.shape[1]), piece.dtype), piece[:-1]])


def split_summary(data: dict[str, list[np.ndarray]]) -> dict:
    return {s: {"pieces": len(p), "frames": int(sum(len(x) for x in p))} for s, p in data.items()}


# --- metrics -------------------------------------------------------------------
def bernoulli_nll(probs: np.ndarray, frames: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """NLL in nats of each frame: sum over keys of -log P(true state). (..., 88) -> (...)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    x = np.asarray(frames, dtype=np.float64)
    return -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(-1)


def nll_per_frame(probs_per_piece: list[np.ndarray], pieces: list[np.ndarray]) -> float:
    """Total NLL over all pieces divided by the total number of frames."""
    total = sum(float(bernoulli_nll(p, x).sum()) for p, x in zip(probs_per_piece, pieces))
    return total / sum(len(x) for x in pieces)


@dataclass
class FrameCounts:
    """TP / FP / FN summed over frames, and the derived accuracy."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, pred: np.ndarray, true: np.ndarray) -> FrameCounts:
        pred = np.asarray(pred).astype(bool)
        true = np.asarray(true).astype(bool)
        self.tp += int((pred & true).sum())
        self.fp += int((pred & ~true).sum())
        self.fn += int((~pred & true).sum())
        return self

    @property
    def accuracy(self) -> float:
        d = self.tp + self.fp + self.fn
        return self.tp / d if d else 1.0


def frame_accuracy(preds: list[np.ndarray] | np.ndarray, trues: list[np.ndarray] | np.ndarray) -> float:
    """BL12's frame-level accuracy: sum TP / sum (TP + FP + FN), over all frames."""
    if isinstance(preds, np.ndarray):
        preds, trues = [preds], [trues]
    c = FrameCounts()
    for p, t in zip(preds, trues):
        c.add(p, t)
    return c.accuracy


# --- baselines -----------------------------------------------------------------
def key_log_odds(pieces: list[np.ndarray]) -> np.ndarray:
    """Per-key log-odds of sounding, from the frames given (add-one smoothed)."""
    x = np.concatenate(pieces)
    p = (x.sum(0) + 1.0) / (len(x) + 2.0)
    return np.log(p) - np.log1p(-p)


@dataclass
class CopyBaseline:
    """Copy the previous frame, smoothed with two error rates fitted on the training split.

    P(key on) = 1 - eps_off if the key sounded in the previous frame, else eps_on, where
    eps_on = P(off -> on) and eps_off = P(on -> off) are the transition frequencies over
    all 88 keys and all frames of the training pieces (add-one smoothed; the frame before
    a piece is empty). These are the maximum-likelihood values for this two-parameter
    rule, so the smoothing is fitted, not chosen by hand. Its predicted frame is the copy.
    """

    eps_on: float
    eps_off: float

    @classmethod
    def fit(cls, pieces: list[np.ndarray]) -> CopyBaseline:
        on_on = on_off = off_on = off_off = 0
        for x in pieces:
            prev = previous_frames(x).astype(bool)
            cur = x.astype(bool)
            on_on += int((prev & cur).sum())
            on_off += int((prev & ~cur).sum())
            off_on += int((~prev & cur).sum())
            off_off += int((~prev & ~cur).sum())
        return cls(eps_on=(off_on + 1) / (off_on + off_off + 2), eps_off=(on_off + 1) / (on_on + on_off + 2))

    def probs(self, piece: np.ndarray) -> np.ndarray:
        prev = previous_frames(piece).astype(bool)
        return np.where(prev, 1.0 - self.eps_off, self.eps_on)

    def predict(self, piece: np.ndarray) -> np.ndarray:
        return previous_frames(piece)


def baseline_scores(data: dict[str, list[np.ndarray]], splits=("valid", "test")) -> list[dict]:
    """Random, per-key frequency and copy-previous baselines, computed by our code."""
    train = data["train"]
    copy = CopyBaseline.fit(train)
    freq = 1.0 / (1.0 + np.exp(-key_log_odds(train)))
    rows = [
        {"model": "Random (all keys p = 0.5), ours", "note": "88 ln 2",
         **{s: {"nll": N_KEYS * LN2, "acc": None} for s in splits}},
        {"model": "Key frequencies (independent, fitted on train), ours",
         "note": "P(key on) = its frequency in the train frames (add-one); predicted frame: p > 0.5 (always empty)",
         **{s: {"nll": nll_per_frame([np.broadcast_to(freq, x.shape) for x in data[s]], data[s]),
                "acc": frame_accuracy([np.broadcast_to(freq >= 0.5, x.shape) for x in data[s]], data[s])}
            for s in splits}},
        {"model": "Copy previous frame, ours",
         "note": (f"P(on) = 1 - {copy.eps_off:.4f} if on in the previous frame else {copy.eps_on:.4f} "
                  "(transition rates fitted on train, add-one); predicted frame = previous frame"),
         "eps_on": copy.eps_on, "eps_off": copy.eps_off,
         **{s: {"nll": nll_per_frame([copy.probs(x) for x in data[s]], data[s]),
                "acc": frame_accuracy([copy.predict(x) for x in data[s]], data[s])} for s in splits}},
    ]
    return rows


# --- training ------------------------------------------------------------------
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
        return self


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
    within the chunk (the recurrent state starts at zero at each chunk).
    """

    def __init__(self, pieces: list[np.ndarray], chunk: int, batch_size: int, transpose: int,
                 rng: np.random.Generator) -> None:
        self.pieces = [np.concatenate([np.zeros((1, N_KEYS), np.uint8), p]) for p in pieces]  # row 0: empty
        self.chunk, self.batch_size, self.transpose, self.rng = chunk, batch_size, transpose, rng
        self.frames = sum(len(p) - 1 for p in self.pieces)

    def epoch(self):
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
        for r, (i, a, b) in enumerate(spans):
            seg = self.pieces[i][a:b + 1]  # frames a-1 .. b-1 of the piece (row 0 = empty)
            if self.transpose:
                on = np.flatnonzero(seg.any(0))
                if len(on):
                    lo = -min(self.transpose, int(on[0]))
                    hi = min(self.transpose, N_KEYS - 1 - int(on[-1]))
                    seg = _transpose(seg, int(self.rng.integers(lo, hi + 1)))
            n = b - a
            prev[r, :n] = seg[:-1]
            x[r, :n] = seg[1:]
            mask[r, :n] = 1.0
        return prev, x, mask


# Prediction thresholds tried for frame accuracy; the one used on test is chosen on valid.
ACC_THRESHOLDS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)


@dataclass
class EvalResult:
    nll: float
    frames: int
    counts: dict[float, FrameCounts] = field(default_factory=dict)  # threshold -> TP/FP/FN

    @property
    def acc(self) -> float | None:
        """Frame accuracy at threshold 0.5 (each key its more probable state)."""
        return self.counts[0.5].accuracy if 0.5 in self.counts else None

    def best_threshold(self) -> float:
        return max(self.counts, key=lambda t: (self.counts[t].accuracy, t == 0.5))

    def to_dict(self) -> dict:
        return {"nll": self.nll, "frames": self.frames, "acc": self.acc,
                "acc_by_threshold": {f"{t:g}": c.accuracy for t, c in sorted(self.counts.items(), reverse=True)},
                "counts_at_0.5": vars(self.counts[0.5]) if 0.5 in self.counts else None}


def evaluate(model, pieces: list[np.ndarray], window: int = 512, accuracy: bool = True,
             thresholds: tuple[float, ...] = (0.5,)) -> EvalResult:
    """Exact NLL per frame over whole pieces (state carried across windows of ``window`` frames,
    so the result does not depend on the window) and, if ``accuracy``, the frame accuracy of the
    greedy prediction at each threshold."""
    model.eval()
    total, n = 0.0, 0
    counts = {float(t): FrameCounts() for t in thresholds} if accuracy else {}
    with torch.inference_mode():
        for piece in pieces:
            prev_all = torch.from_numpy(previous_frames(piece).astype(np.float32)).unsqueeze(0)
            x_all = torch.from_numpy(piece.astype(np.float32)).unsqueeze(0)
            state = None
            for a in range(0, len(piece), window):
                prev, x = prev_all[:, a:a + window], x_all[:, a:a + window]
                ctx, state = model.encode(prev, state)
                total += float(frame_nll(model.logits(ctx, x), x).double().sum())
                for t, c in counts.items():
                    c.add(model.greedy(ctx, t)[0].numpy(), piece[a:a + window])
            n += len(piece)
    return EvalResult(nll=total / n, frames=n, counts=counts)


@dataclass
class TrainResult:
    best_valid_nll: float
    best_step: int
    steps: int
    epochs: float
    train_seconds: float  # wall
    cpu_seconds: float  # this process's CPU time (all threads)
    stopped: str
    history: list[dict] = field(default_factory=list)


def save_checkpoint(model, cfg_dict: dict, run_dir: Path, extra: dict | None = None) -> None:
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS, lambda tmp: save_file(state, tmp))
    atomic_write_json(run_dir / CONFIG, {"model": cfg_dict, **(extra or {})})


def load_checkpoint(run_dir: str | os.PathLike):
    """(model, config dict) from a run folder written by :func:`run_benchmark`."""
    run_dir = Path(run_dir)
    try:
        cfg = json.loads((run_dir / CONFIG).read_text())
        model = build_model(FrameModelConfig.from_dict(cfg["model"]))
        model.load_state_dict(load_file(str(run_dir / WEIGHTS)))
    except FileNotFoundError as e:
        raise ModelFileError(f"{run_dir}: missing {Path(e.filename).name}") from None
    except (KeyError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{run_dir}: checkpoint does not match its config ({e})") from None
    model.eval()
    return model, cfg


def train(model, data: dict[str, list[np.ndarray]], settings: TrainSettings, run_dir: Path,
          cfg_dict: dict) -> TrainResult:
    """AdamW with warm-up and cosine decay, gradient clipping, transposition augmentation;
    selection and early stopping on the valid NLL; the best model is saved to ``run_dir``."""
    settings.validate()
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)
    sampler = ChunkSampler(data["train"], settings.chunk, settings.batch_size, settings.transpose, rng)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = sampler.steps_per_epoch()
    eval_every = settings.eval_every or steps_per_epoch
    budget = settings.minutes * 60.0 if settings.minutes else math.inf
    max_steps = settings.epochs * steps_per_epoch if settings.epochs else None

    clock_cpu = time.process_time
    clock = clock_cpu if settings.clock == "cpu" else time.perf_counter
    t0, w0, c0 = clock(), time.perf_counter(), clock_cpu()
    step, best, best_step, bad, stopped = 0, math.inf, 0, 0, ""
    history: list[dict] = []
    run_loss, run_frames = 0.0, 0
    last_valid = float("nan")
    eval_seconds = 0.0  # to predict whether one more evaluation fits in the budget

    def progress_frac() -> float:
        fr = (clock() - t0) / budget if budget < math.inf else 0.0
        if max_steps:
            fr = max(fr, step / max_steps)
        return min(fr, 1.0)

    def lr_now() -> float:
        if step < settings.warmup_steps:
            return settings.lr * (step + 1) / settings.warmup_steps
        m = settings.min_lr_frac
        return settings.lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * progress_frac())))

    total = max_steps if max_steps else None
    # A bar on a terminal only; in a log the periodic evaluation lines are the progress.
    bar = Progress(total, unit="step", enabled=settings.progress, log_every=0, dynamic_ncols=True, mininterval=1.0)
    epoch = 0
    done = False
    try:
        while not done:
            epoch += 1
            for prev, x, mask in sampler.epoch():
                model.train()
                for g in opt.param_groups:
                    g["lr"] = lr_now()
                prev_t, x_t, mask_t = (torch.from_numpy(a) for a in (prev, x, mask))
                nll, _ = model(prev_t, x_t)
                loss = (nll * mask_t).sum() / mask_t.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if settings.clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
                opt.step()
                step += 1
                run_loss += float(loss.detach()) * float(mask_t.sum())
                run_frames += int(mask_t.sum())
                bar.update(1)
                bar.set_postfix_str(f"ep {epoch} train {run_loss / run_frames:.3f} valid {last_valid:.3f} "
                                    f"lr {lr_now():.1e}")  # Progress never forces a redraw for it
                elapsed = clock() - t0
                out_of_time = elapsed + eval_seconds >= budget
                out_of_steps = max_steps is not None and step >= max_steps
                if step % eval_every == 0 or out_of_time or out_of_steps:
                    te = clock()
                    res = evaluate(model, data["valid"], settings.eval_window, accuracy=False)
                    eval_seconds = clock() - te
                    last_valid = res.nll
                    row = {"step": step, "epoch": round(step / steps_per_epoch, 3),
                           "seconds": round(time.perf_counter() - w0, 1), "cpu_seconds": round(clock_cpu() - c0, 1),
                           "train_nll": run_loss / run_frames,
                           "valid_nll": res.nll, "lr": lr_now()}
                    history.append(row)
                    run_loss, run_frames = 0.0, 0
                    improved = res.nll < best - 1e-4
                    if improved:
                        best, best_step, bad = res.nll, step, 0
                        save_checkpoint(model, cfg_dict, run_dir, {"step": step, "valid_nll": res.nll})
                    else:
                        bad += 1
                    if settings.progress:
                        bar.write(f"step {step} ep {row['epoch']:.2f} {row['seconds']:.0f}s: train "
                                  f"{row['train_nll']:.3f} valid {res.nll:.3f}{' *' if improved else ''}")
                    if bad >= settings.patience:
                        stopped = f"early stop: no better valid NLL in {settings.patience} evaluations"
                    elif out_of_time:
                        stopped = f"{settings.clock} time budget of {settings.minutes:g} min"
                    elif out_of_steps:
                        stopped = f"{settings.epochs} epochs"
                    if stopped:
                        done = True
                        break
    except KeyboardInterrupt:  # keep the best model so far and report on it
        stopped = "interrupted by the user"
        if best == math.inf:
            res = evaluate(model, data["valid"], settings.eval_window, accuracy=False)
            best, best_step = res.nll, step
            save_checkpoint(model, cfg_dict, run_dir, {"step": step, "valid_nll": res.nll})
    bar.close()
    return TrainResult(best_valid_nll=best, best_step=best_step, steps=step, epochs=step / steps_per_epoch,
                       train_seconds=time.perf_counter() - w0, cpu_seconds=clock_cpu() - c0, stopped=stopped,
                       history=history)


# --- the whole benchmark ---------------------------------------------------------
def run_benchmark(run_dir: str | os.PathLike, model_cfg, settings: TrainSettings, data_path=None,
                  limit: int | None = None, command: str = "", log: Callable[[str], None] = print) -> dict:
    """Train on traindata, select on validdata, report valid and test NLL / accuracy with the
    published table and our baselines. Writes model.safetensors, config.json, history.csv,
    report.json and report.md into ``run_dir``; returns the report dict."""
    settings.validate()
    model_cfg.validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    data = load_piano_midi(data_path, limit)
    torch.manual_seed(settings.seed)
    model = build_model(model_cfg)
    model.init_output_bias(torch.tensor(key_log_odds(data["train"]), dtype=torch.float32))
    n_params = count_parameters(model)
    log(f"{model_cfg.model_type}: {n_params:,} parameters; {split_summary(data)}; "
        f"{torch.get_num_threads()} thread(s)")
    res = train(model, data, settings, run_dir, model_cfg.to_dict())
    _write_history(run_dir / "history.csv", res.history)
    model, _ = load_checkpoint(run_dir)
    report = {
        "benchmark": "Piano-midi.de frame-level NLL (Boulanger-Lewandowski et al. 2012 split)",
        "data": str(data_path or DEFAULT_MAT.name), "pieces_limit": limit, "splits": split_summary(data),
        "model": {"type": model_cfg.model_type, "config": model_cfg.to_dict(), "parameters": n_params},
        "training": {**{k: v for k, v in vars(settings).items() if k != "progress"},
                     "threads_used": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                     "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "steps": res.steps, "epochs": round(res.epochs, 2), "best_step": res.best_step,
                     "wall_seconds": round(res.train_seconds, 2), "cpu_seconds": round(res.cpu_seconds, 2),
                     "load_average_at_end": [round(v, 2) for v in os.getloadavg()], "stopped": res.stopped},
        "command": command,
    }
    return _finish_report(run_dir, model, data, report, settings.eval_window)


def reevaluate(run_dir: str | os.PathLike, data_path=None, threads: int | None = None, window: int = 512) -> dict:
    """Evaluate a finished run's saved (best) model again and rewrite its report, keeping the
    training record. The data slice is the one the run used."""
    run_dir = Path(run_dir)
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except FileNotFoundError:
        raise ModelFileError(f"{run_dir}: no report.json (re-evaluation needs a finished run)") from None
    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(run_dir)
    data = load_piano_midi(data_path, report.get("pieces_limit"))
    return _finish_report(run_dir, model, data, report, window)


def _finish_report(run_dir: Path, model, data: dict, report: dict, window: int) -> dict:
    """Valid and test scores of ``model``, the baselines and the published table -> report.json / report.md."""
    t0 = time.perf_counter()
    valid = evaluate(model, data["valid"], window, thresholds=ACC_THRESHOLDS)
    tau = valid.best_threshold()
    test = evaluate(model, data["test"], window, thresholds=tuple(sorted({0.5, tau})))
    scores = {name: {**r.to_dict(), "threshold": tau, "acc_at_threshold": r.counts[tau].accuracy}
              for name, r in (("valid", valid), ("test", test))}
    report.update({
        "definitions": {
            "nll": "per frame: sum over the 88 keys of the Bernoulli NLL (nats) of the true state given all earlier "
                   "frames of the piece (empty frame before the first); total over all pieces / total frames",
            "accuracy": "sum over frames of TP / sum over frames of (TP + FP + FN); predicted frame: keys low to "
                        "high, each sounding if its probability given the earlier frames and the keys already "
                        "chosen exceeds 0.5 (its more probable state); 'acc. at tau' uses the threshold tau that "
                        "maximises valid accuracy",
        },
        "final_eval_seconds": round(time.perf_counter() - t0, 1),
        "results": scores,
        "baselines": baseline_scores(data),
        "published": PUBLISHED,
        "sources": SOURCES,
    })
    atomic_write_json(run_dir / "report.json", report)
    atomic_write_text(run_dir / "report.md", format_report(report))
    return report


def _write_history(path: Path, rows: list[dict]) -> None:
    cols = ["step", "epoch", "seconds", "cpu_seconds", "train_nll", "valid_nll", "lr"]
    lines = [",".join(cols)] + [",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols)
                                for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _used_settings(cfg: dict) -> dict:
    try:
        return FrameModelConfig.from_dict(cfg).used_settings()
    except Exception:  # an unknown or older config: show it whole
        return cfg


def _f(v, pct: bool = False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.1f} %" if pct else f"{v:.2f}"


def format_report(rep: dict) -> str:
    m, t, r = rep["model"], rep["training"], rep["results"]
    lines = [
        "# Piano-midi.de frame-level benchmark",
        "",
        "Split: " + ", ".join(f"{s} {v['pieces']} pieces / {v['frames']:,} frames" for s, v in rep["splits"].items())
        + (f" (first {rep['pieces_limit']} pieces of each split only)" if rep.get("pieces_limit") else "") + ".",
        "",
        f"- NLL: {rep['definitions']['nll']}.",
        f"- Frame accuracy: {rep['definitions']['accuracy']}.",
        "",
        "| model | valid NLL | test NLL | valid acc. | test acc. | test acc. at τ | params | train time | source |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines.append(f"| **ours: {m['type']}** | {_f(r['valid']['nll'])} | **{_f(r['test']['nll'])}** | "
                 f"{_f(r['valid']['acc'], True)} | {_f(r['test']['acc'], True)} | "
                 f"{_f(r['test']['acc_at_threshold'], True)} (τ = {r['test']['threshold']:g}) | {m['parameters']:,} | "
                 f"{t['wall_seconds'] / 60:.1f} min wall"
                 + (f" / {t['cpu_seconds'] / 60:.1f} CPU-min" if "cpu_seconds" in t else "")
                 + f", {t['threads_used']} thread(s) | this run |")
    for b in rep["baselines"]:
        lines.append(f"| {b['model']} | {_f(b['valid']['nll'])} | {_f(b['test']['nll'])} | "
                     f"{_f(b['valid']['acc'], True)} | {_f(b['test']['acc'], True)} | — | — | — | this run |")
    for p in rep["published"]:
        acc = "—" if p["acc"] is None else f"{p['acc']:.1f} %"
        lines.append(f"| {p['model']} | — | {_f(p['nll'])} | — | {acc} | — | — | — | {p['source']} |")
    lines += [
        "",
        "Baseline notes: " + "; ".join(f"{b['model']}: {b['note']}" for b in rep["baselines"]) + ".",
        "",
        f"Training: {t['steps']} steps ({t['epochs']} epochs), best at step {t['best_step']}, stopped by "
        f"{t['stopped']}; {t['wall_seconds']:.0f} s wall"
        + (f", {t['cpu_seconds']:.0f} s CPU" if "cpu_seconds" in t else "")
        + f" on {t['threads_used']} thread(s) of a {t['cpu_count']}-core CPU (torch {t['torch']})"
        + (f", load average {t['load_average_at_end'][1]:g} at the end" if "load_average_at_end" in t else "")
        + f"; final evaluation {rep['final_eval_seconds']:.0f} s wall.",
        f"Settings: batch {t['batch_size']}, chunk {t['chunk']}, lr {t['lr']:g} (warm-up {t['warmup_steps']}, "
        f"cosine to ×{t['min_lr_frac']:g}), weight decay {t['weight_decay']:g}, clip {t['clip']:g}, "
        f"transpose ±{t['transpose']}, seed {t['seed']}.",
        f"Model: `{json.dumps(_used_settings(m['config']))}`.",
        "",
        "Sources: " + "; ".join(f"{k}: {v}" for k, v in rep["sources"].items()) + ".",
    ]
    if rep.get("command"):
        lines += ["", f"Command: `{rep['command']}`"]
    return "\n".join(lines) + "\n"
