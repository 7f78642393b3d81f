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

The same format and score serve JSB Chorales (``data/piano_midi/JSB_Chorales.mat``,
229 / 76 / 77 chorales), the companion benchmark most papers report.

This module holds the data loading, the metrics, the baselines, the exact
evaluation of a model and its checkpoint; the models are in
:mod:`chopinbot_tools.frame_models`, the repeats input in
:mod:`chopinbot_tools.frame_repeats`, training in
:mod:`chopinbot_tools.frame_training`, the whole benchmark and its report in
:mod:`chopinbot_tools.frame_benchmark` and the published figures in
:mod:`chopinbot_tools.published`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import torch
from safetensors.torch import load_file, save_file

from chopinbot.constants import PACKAGE_DIR
from chopinbot.errors import ConfigError, DatasetError, ModelFileError
from chopinbot.io_utils import atomic_write, atomic_write_json
from chopinbot.model.checkpoint import CONFIG, WEIGHTS
from chopinbot_tools.frame_models import FrameModelConfig, build_model, frame_nll
from chopinbot_tools.frame_repeats import RepeatsBaseline, repeat_inputs

N_KEYS = 88
SPLITS = ("train", "valid", "test")
MAT_KEYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}
PIANO_MIDI_DIR = PACKAGE_DIR / "data" / "piano_midi"
DEFAULT_MAT = PIANO_MIDI_DIR / "Piano_midi.mat"
# Each benchmark's bundled file (same format; credit and licence in the folder's README).
BENCHMARK_FILES = {"piano-midi": DEFAULT_MAT, "jsb-chorales": PIANO_MIDI_DIR / "JSB_Chorales.mat"}
LN2 = math.log(2.0)

# --- data ----------------------------------------------------------------------
def load_piano_midi(path: str | os.PathLike | None = None, limit: int | None = None,
                    benchmark: str = "piano-midi") -> dict[str, list[np.ndarray]]:
    """The three splits as lists of (frames, 88) uint8 arrays, in the file's order.

    ``path`` defaults to the bundled file of ``benchmark`` (a key of ``BENCHMARK_FILES``);
    ``limit`` keeps only the first ``limit`` pieces of each split (for quick tests).
    """
    if benchmark not in BENCHMARK_FILES:
        raise ConfigError(f"unknown benchmark {benchmark!r} (choose from {', '.join(BENCHMARK_FILES)})")
    path = Path(path) if path is not None else BENCHMARK_FILES[benchmark]
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (the benchmark's .mat file)")
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
    """Random, per-key frequency, copy-previous and repeats-lookup baselines, computed by our code."""
    train = data["train"]
    copy = CopyBaseline.fit(train)
    freq = 1.0 / (1.0 + np.exp(-key_log_odds(train)))
    prevs = {s: [previous_frames(x) for x in data[s]] for s in ("train", *splits)}
    lookup = RepeatsBaseline.fit(prevs["train"], train)
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
        {"model": "Repeats lookup, ours",
         "note": ("P(on) from a 32-cell table fitted on train (add-one), indexed by the key's previous state and, "
                  "for the exact and the transposed repeat, whether there is a match and whether the key sounds in "
                  "its continuation; predicted frame: p > 0.5"),
         **{s: {"nll": nll_per_frame([lookup.probs(p) for p in prevs[s]], data[s]),
                "acc": frame_accuracy([lookup.probs(p) > 0.5 for p in prevs[s]], data[s])} for s in splits}},
    ]
    return rows


ACC_THRESHOLDS = (0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)


@dataclass
class EvalResult:
    nll: float
    frames: int
    counts: dict[float, FrameCounts] = field(default_factory=dict)  # threshold -> TP/FP/FN
    # NLL per frame leaving out each piece's first frame (predicted from nothing): the definition of
    # Bai, Kolter & Koltun (2018)'s code (locuslab/TCN, poly_music), for comparing with their figures
    nll_after_first: float | None = None
    # the mean over pieces of each piece's NLL per frame: every piece counts once, however long (the
    # per-frame figure above, the papers', weighs a piece by its length)
    nll_piece_mean: float | None = None

    @property
    def acc(self) -> float | None:
        """Frame accuracy at threshold 0.5 (each key its more probable state)."""
        return self.counts[0.5].accuracy if 0.5 in self.counts else None

    def best_threshold(self) -> float:
        return max(self.counts, key=lambda t: (self.counts[t].accuracy, t == 0.5))

    def to_dict(self) -> dict:
        return {"nll": self.nll, "frames": self.frames, "nll_after_first": self.nll_after_first,
                "nll_piece_mean": self.nll_piece_mean, "acc": self.acc,
                "acc_by_threshold": {f"{t:g}": c.accuracy for t, c in sorted(self.counts.items(), reverse=True)},
                "counts_at_0.5": vars(self.counts[0.5]) if 0.5 in self.counts else None}


def evaluate(model, pieces: list[np.ndarray], window: int = 512, accuracy: bool = True,
             thresholds: tuple[float, ...] = (0.5,)) -> EvalResult:
    """Exact NLL per frame over whole pieces (state carried across windows of ``window`` frames,
    so the result does not depend on the window) and, if ``accuracy``, the frame accuracy of the
    greedy prediction at each threshold."""
    model.eval()
    total, n, first = 0.0, 0, 0.0
    per_piece: list[float] = []
    counts = {float(t): FrameCounts() for t in thresholds} if accuracy else {}
    repeats = getattr(model.cfg, "repeats", False)
    with torch.inference_mode():
        for piece in pieces:
            prev_np = previous_frames(piece)
            prev_all = torch.from_numpy(prev_np.astype(np.float32)).unsqueeze(0)
            x_all = torch.from_numpy(piece.astype(np.float32)).unsqueeze(0)
            rep_all = torch.from_numpy(repeat_inputs(prev_np)).unsqueeze(0) if repeats else None
            state = None
            before = total
            for a in range(0, len(piece), window):
                prev, x = prev_all[:, a:a + window], x_all[:, a:a + window]
                rep = None if rep_all is None else rep_all[:, a:a + window]
                ctx, state = model.encode(prev, state, rep)
                nll = frame_nll(model.logits(ctx, x), x).double()
                total += float(nll.sum())
                if a == 0:
                    first += float(nll[0, 0])
                for t, c in counts.items():
                    c.add(model.greedy(ctx, t)[0].numpy(), piece[a:a + window])
            n += len(piece)
            per_piece.append((total - before) / len(piece))
    after_first = (total - first) / (n - len(pieces)) if n > len(pieces) else None
    return EvalResult(nll=total / n, frames=n, counts=counts, nll_after_first=after_first,
                      nll_piece_mean=float(np.mean(per_piece)) if per_piece else None)


def save_checkpoint(model, cfg_dict: dict, run_dir: Path, extra: dict | None = None) -> None:
    """The selected model: ``model.safetensors`` + ``config.json`` (its settings and ``extra``), atomically."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS, lambda tmp: save_file(state, tmp))
    atomic_write_json(run_dir / CONFIG, {"model": cfg_dict, **(extra or {})})


def load_checkpoint(run_dir: str | os.PathLike):
    """(model, config dict) from a run folder written by
    :func:`chopinbot_tools.frame_benchmark.run_benchmark` (or a committed model folder)."""
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

