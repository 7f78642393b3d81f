"""States -> model inputs and targets.

A state enters the network as 88 key bits, 88 onset bits, a one-hot of its
rhythmic value (a class of the duration vocabulary), its log-duration, and
where it ends in the metre: the position (in beats from the start of its key
segment) at which the *next* state starts, as a one-hot of the 1/12-beat
within the beat and sine/cosine pairs for periods of 1/2 to 4 beats.  Where
a state ends in the beat says much about what comes next (a state ending a
16th before the beat is usually followed by a 16th; chords change on beats);
the LSTM could count it from the durations, but with 40k training states it
does not learn to.  For the same reason each sounding key also carries its
*age*: log2(1 + beats since it was struck), at the end of the state -- which
held keys are released next depends on how long they have sounded (with it, a
small tree model ranks continuing vs released keys at AUC 0.66 on the valid
pieces; the plain LSTM managed 0.53).
The *duration vocabulary* is the set of rhythmic values (on the 1/48-beat
grid, which holds triplets, 32nds and 64ths) seen at least ``min_count``
times in the training pieces; a rarer value is folded into the nearest kept
one in log space (a 0.98-beat state is closer to 1 beat than to 0.75).

Optional inputs serve the note head and the duration head: every key's
*recency* (:func:`key_recency`) and the *repeat* of the passage just heard (the
state that followed its last occurrence, and the match's length; see
:mod:`chopinbot.music.repeats`).  A model with a loudness head reads each
state's *loudness* (:func:`loudness_feature`) and predicts the next state's
velocity class (:func:`velocity_class`).  How these features make up an input
row, block by block, is declared in :mod:`chopinbot.dataset.inputs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from chopinbot.constants import GRID_PER_BEAT, N_KEYS

DURATION_MIN_COUNT = 10  # below ~10 examples a class cannot be learned; fold it


@dataclass(frozen=True)
class DurationVocab:
    values: tuple[float, ...]  # beats, ascending

    @classmethod
    def from_units(
        cls, units: np.ndarray, grid_per_beat: int = GRID_PER_BEAT, min_count: int = DURATION_MIN_COUNT
    ) -> DurationVocab:
        vals, counts = np.unique(np.asarray(units, np.int64), return_counts=True)
        kept = vals[counts >= min_count]
        if kept.size == 0:  # a tiny corpus: keep everything
            kept = vals
        return cls(tuple(float(v) / grid_per_beat for v in kept))

    def __len__(self) -> int:
        return len(self.values)

    def index(self, beats: np.ndarray) -> np.ndarray:
        """Nearest class (in log space) for each duration in beats."""
        logv = np.log(np.asarray(self.values))
        b = np.log(np.maximum(np.asarray(beats, np.float64), 1e-6))
        return np.abs(b[..., None] - logv).argmin(axis=-1)

    def beats(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.values)[idx]


PHASE_BINS = 12  # positions within a beat (1/12 beat: 16ths and triplet 8ths)
PHASE_PERIODS = (0.5, 1.0, 2.0, 3.0, 4.0)  # beats: half beat, beat, 2/4, 3/4 and 4/4 bars
N_POSITION = PHASE_BINS + 2 * len(PHASE_PERIODS)


AGE_LOOKBACK = 32  # states of history read before a training chunk to know each key's age


RECENCY_CAP = 16.0  # beats: a key struck longer ago than this (or never) counts as this long ago


def key_ages(keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Beats from each sounding key's last strike to the end of each state.

    ``keys``/``onsets``: (..., S, 88), ``beats``: (..., S). A key that starts
    sounding counts as struck; a key already sounding at the first state counts
    from that state's start (the history before is unknown). 0 where silent.
    """
    keys = np.asarray(keys, bool)
    beats = np.asarray(beats, np.float64)
    S = keys.shape[-2]
    prev = np.concatenate([np.zeros_like(keys[..., :1, :]), keys[..., :-1, :]], axis=-2)
    strike = np.asarray(onsets, bool) | (keys & ~prev)
    steps = np.arange(S).reshape((1,) * (keys.ndim - 2) + (S, 1))
    last = np.maximum.accumulate(np.where(strike, steps, 0), axis=-2)
    t_end = np.cumsum(beats, axis=-1)
    t_start = t_end - beats
    last_time = np.take_along_axis(np.broadcast_to(t_start[..., None], keys.shape), last, axis=-2)
    return np.where(keys, t_end[..., None] - last_time, 0.0)


class AgeTracker:
    """:func:`key_ages`, one state at a time (for generation)."""

    def __init__(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> None:
        """Start from a history of (B, S, 88) states."""
        ages = key_ages(keys, onsets, beats)
        self.now = np.asarray(beats, np.float64).sum(-1)  # (B,) time at the end of the history
        self.prev = np.asarray(keys[..., -1, :], bool)
        self.last = np.where(self.prev, self.now[:, None] - ages[..., -1, :], 0.0)
        self.history_ages = ages

    def step(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> np.ndarray:
        """Ages (B, 88) at the end of the new states (B, 88) lasting ``beats`` (B,)."""
        keys = np.asarray(keys, bool)
        strike = np.asarray(onsets, bool) | (keys & ~self.prev)
        start = self.now
        self.now = self.now + np.asarray(beats, np.float64)
        self.last = np.where(strike, start[:, None], self.last)
        self.prev = keys
        return np.where(keys, self.now[:, None] - self.last, 0.0)


def key_recency(keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """(..., S, 2, 88): for *every* key at the end of each state, the beats since
    it was last struck (sounding now or not) and the interval between its last
    two strikes, both capped at ``RECENCY_CAP`` (also where unknown).  Figures
    in accompaniments and repeated notes come back at the interval they came
    before: a small tree model ranks which silent keys start next at AUC 0.91
    with these, 0.86 without (``scripts/key_auc.py``)."""
    return RecencyTracker(keys, onsets, beats).history


class RecencyTracker:
    """:func:`key_recency`, one state at a time (for generation)."""

    def __init__(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> None:
        """Start from a history of (..., S, 88) states; ``history`` is its recency (..., S, 2, 88)."""
        self.prev = np.zeros(keys.shape[:-2] + (N_KEYS,), bool)
        self.now = np.zeros(beats.shape[:-1])
        self.last = np.full(self.prev.shape, -np.inf)
        self.last2 = np.full(self.prev.shape, -np.inf)
        self.history = np.empty(keys.shape[:-1] + (2, N_KEYS))
        for s in range(keys.shape[-2]):
            self.history[..., s, :, :] = self.step(keys[..., s, :], onsets[..., s, :], beats[..., s])

    def step(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> np.ndarray:
        """(..., 2, 88) at the end of the new states ``keys``/``onsets`` (..., 88) lasting ``beats``."""
        keys = np.asarray(keys, bool)
        strike = np.asarray(onsets, bool) | (keys & ~self.prev)
        start = self.now[..., None]
        self.last2 = np.where(strike, self.last, self.last2)
        self.last = np.where(strike, start, self.last)
        self.prev = keys
        self.now = self.now + np.asarray(beats, np.float64)
        with np.errstate(invalid="ignore"):  # -inf - -inf where a key was struck at most once
            since = self.now[..., None] - self.last
            interval = self.last - self.last2
        interval = np.where(np.isfinite(interval), np.minimum(interval, RECENCY_CAP), RECENCY_CAP)
        return np.stack([np.minimum(since, RECENCY_CAP), interval], -2)


def recency_features(recency: np.ndarray) -> np.ndarray:
    """(..., 2, 88) -> (..., 176) in [0, 1]: log2(1 + beats) / log2(1 + cap)."""
    r = np.asarray(recency)
    return (np.log2(1.0 + r) / np.log2(1.0 + RECENCY_CAP)).reshape(r.shape[:-2] + (2 * N_KEYS,))


def end_positions(beats: np.ndarray, start: float = 0.0) -> np.ndarray:
    """Position (beats) at which each state of (..., n) ends, from a start position."""
    return start + np.cumsum(np.asarray(beats, np.float64), axis=-1)


LOUDNESS_BINS = 12  # velocity classes of the loudness head, each 128 / 12 wide


def velocity_class(velocity: np.ndarray) -> np.ndarray:
    """Velocity 1..127 -> class 0..LOUDNESS_BINS-1; -1 where nothing is struck
    (velocity 0), which the loudness loss leaves out."""
    v = np.asarray(velocity, np.int64)
    return np.where(v > 0, np.minimum(v * LOUDNESS_BINS // 128, LOUDNESS_BINS - 1), -1)


def class_velocity(cls: np.ndarray) -> np.ndarray:
    """The centre velocity of each class (uint8): ``velocity_class(class_velocity(c)) == c``."""
    return np.round((np.asarray(cls) + 0.5) * 128.0 / LOUDNESS_BINS).astype(np.uint8)


def loudness_feature(velocity: np.ndarray) -> np.ndarray:
    """The loudness input column: a state's velocity / 127 (0 where nothing is struck)."""
    return np.asarray(velocity, np.float32) / np.float32(127.0)


def age_features(ages: np.ndarray) -> np.ndarray:
    """log2(1 + age) / 3: about [0, 1] for ages up to 7 beats."""
    return np.log2(1.0 + np.asarray(ages)) / 3.0


def duration_features(beats: np.ndarray, vocab: DurationVocab) -> np.ndarray:
    """(n, V+1): the one-hot rhythmic value and the log-length."""
    beats = np.asarray(beats)
    n = beats.shape[0]
    x = np.zeros((n, len(vocab) + 1), np.float32)
    x[np.arange(n), vocab.index(beats)] = 1.0
    # log2 of the length, scaled to about [-1, 1] for 1/16 .. 16 beats
    x[:, -1] = np.log2(np.maximum(beats, 1e-3)) / 4.0
    return x


def position_features(end_pos: np.ndarray) -> np.ndarray:
    """(n, 22): where each state ends in the metre (see the module docstring)."""
    pos = np.asarray(end_pos, np.float64)
    n = pos.shape[0]
    x = np.zeros((n, N_POSITION), np.float32)
    phase_bin = np.floor((pos % 1.0) * PHASE_BINS + 1e-6).astype(np.int64) % PHASE_BINS
    x[np.arange(n), phase_bin] = 1.0
    c = PHASE_BINS
    for i, period in enumerate(PHASE_PERIODS):
        ang = 2 * np.pi * (pos % period) / period
        x[:, c + 2 * i] = np.sin(ang)
        x[:, c + 2 * i + 1] = np.cos(ang)
    return x


def position_period(grid_per_beat: int = GRID_PER_BEAT) -> int:
    """Grid units after which :func:`position_features` repeat (12 beats on
    the 1/48 grid): positions on the grid can be looked up in a table."""
    units = [grid_per_beat] + [round(p * grid_per_beat) for p in PHASE_PERIODS]
    return math.lcm(*units)
