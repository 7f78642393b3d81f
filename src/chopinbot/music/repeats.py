"""Repeats: what followed the last time the passage now heard occurred.

Music repeats itself -- accompaniment figures every beat, sequences every bar,
whole sections at the reprise -- and an LSTM's state forgets the exact notes of
a passage long before it comes back.  So the model is *told*: after each state
it reads the state that followed the most recent earlier occurrence of the
longest passage (up to ``MAX_MATCH`` states, equal in keys, onsets and rhythmic
value) that ends with the state just heard, and that passage's length.  It is
the discrete form of a cache language model (Grave et al., 2017, "Improving
neural language models with a continuous cache") and of the copying that
relative attention gives the Music Transformer; here it is a lookup, computed
in the same way in training and while generating.

Measured on the test pieces (never trained on): predicting the next state as
that continuation (and the current state where nothing matches) scores key F1
0.684 and duration error 0.132, where copying the previous state scores 0.476
and 0.229; about half of all states continue a passage heard before.  The
lookup only ever reads the past of the same sequence -- a key segment of a
piece in training and evaluation, the seed and what has been generated so far
while generating -- so it is as causal as the LSTM.

Two kinds of match (``KINDS``), each its own input block:

* ``exact``: the states are equal in keys, onsets and rhythmic value.
* ``transposed``: the same passage at another pitch -- a sequence, the same
  figure on another degree.  Each state is compared by its *shape* (keys and
  onsets relative to its lowest key), its rhythmic value and the step of its
  lowest key from the previous state's; the continuation is moved by the
  distance between the two passages.  Where the exact match is shorter, it
  raises the lookup's key F1 on the valid pieces from 0.728 to 0.763 (test:
  0.684 to 0.706).

Passages are compared exactly through a rolling hash of state ids, every hit
verified against the states themselves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from chopinbot.constants import GRID_PER_BEAT

KINDS = ("exact", "transposed")  # the kinds of match, in the order of their input blocks
MAX_MATCH = 16  # states; longer matches add nothing measurable (test F1 0.684 at 16 and 0.685 at 32)
# Passages are looked for among the last this many states: more than the corpus's longest key
# segment (3,529), and it bounds what a tracker holds (under 8 MB) however long a piece grows.
MATCH_WINDOW = 4096
_NO_STEP = 1 << 14  # the step code of a state after a silent one (or of the first): no lowest key to step from
_MOD = (1 << 61) - 1  # a Mersenne prime: hash arithmetic stays exact in Python ints
_BASE = 1_000_003


def lowest_keys(keys: np.ndarray) -> np.ndarray:
    """(n,) index of each state's lowest sounding key, -1 where silent."""
    keys = np.asarray(keys, bool)
    return np.where(keys.any(-1), keys.argmax(-1), -1)


def shift_keys(keys: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Move each row of (n, 88) keys up by its ``shift`` semitones; keys pushed
    off the keyboard are dropped (a continuation is a guess, not a note to keep).
    Rows that do not move may be returned as they are (not copied)."""
    shift = np.asarray(shift, np.int64).reshape(-1)
    if not shift.any():
        return keys
    n, width = keys.shape
    if n <= 4:  # generation: a few rows, where slicing costs a fraction of the gather below
        out = np.zeros_like(keys)
        for i, s in enumerate(shift):
            if s >= 0:
                out[i, s:] = keys[i, : width - s]
            else:
                out[i, :s] = keys[i, -s:]
        return out
    src = np.arange(width)[None, :] - shift[:, None]
    ok = (src >= 0) & (src < width)
    return np.take_along_axis(keys, np.clip(src, 0, width - 1), axis=1) & ok


def moved_by(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(n,) semitones every key of each ``after`` state (n, 88) is the ``before`` state's moved by: the same
    keys, all up or all down one interval; 0 where it is not such a move (or nothing sounds)."""
    before, after = np.asarray(before, bool), np.asarray(after, bool)
    out = np.zeros(len(before), np.int64)
    for i in np.flatnonzero(before.sum(-1) == after.sum(-1)):  # row by row: a state or a few while composing
        step = np.flatnonzero(after[i]) - np.flatnonzero(before[i])
        if len(step) and step[0] and (step == step[0]).all():
            out[i] = step[0]
    return out


def slide_after(run, direction, step):
    """How many states in a row have each moved the one before the same way (a scale: :func:`moved_by`'s sign),
    ``run`` before a state that moved its predecessor ``step`` (-1 down, 1 up, 0 not a move) when the one before
    moved it ``direction``; numbers or arrays alike."""
    return np.where(step == 0, 0, np.where(step == direction, run + 1, 1))


def shape_symbols(keys: np.ndarray, onsets: np.ndarray, units: np.ndarray) -> list[bytes]:
    """One bytes object per state of a sequence, equal for two states of two
    passages that are transpositions of each other (see the module docstring)."""
    keys, onsets = np.asarray(keys, bool), np.asarray(onsets, bool)
    low = lowest_keys(keys)
    shift = -np.maximum(low, 0)
    prev = np.concatenate([[-1], low[:-1]])
    step = np.where((low >= 0) & (prev >= 0), low - prev, _NO_STEP)
    tail = np.stack([np.asarray(units, np.int64), step], 1).astype("<i4").view(np.uint8)
    rows = np.concatenate([np.packbits(shift_keys(keys, shift), axis=1), np.packbits(shift_keys(onsets, shift), axis=1),
                           tail], axis=1)
    return [r.tobytes() for r in rows]


def shape_symbol(keys: np.ndarray, onsets: np.ndarray, units: int, prev_low: int) -> bytes:
    """:func:`shape_symbols` of one state given as (88,) booleans, after a state
    whose lowest key was ``prev_low`` (-1: silent or none)."""
    low = int(keys.argmax()) if keys.any() else -1
    at = max(low, 0)
    k, o = np.zeros(len(keys), bool), np.zeros(len(keys), bool)
    k[: len(keys) - at], o[: len(keys) - at] = keys[at:], onsets[at:]
    step = low - prev_low if low >= 0 and prev_low >= 0 else _NO_STEP
    return (np.packbits(k).tobytes() + np.packbits(o).tobytes() + int(units).to_bytes(4, "little", signed=True)
            + int(step).to_bytes(4, "little", signed=True))


def state_symbols(keys_packed: np.ndarray, onsets_packed: np.ndarray, units: np.ndarray) -> list[bytes]:
    """One bytes object per state (its bit-packed keys and onsets and its
    length in grid units): equal exactly when the states are equal."""
    units = np.asarray(units, "<i4").reshape(-1, 1).view(np.uint8)
    rows = np.concatenate([np.asarray(keys_packed, np.uint8), np.asarray(onsets_packed, np.uint8), units], axis=1)
    return [r.tobytes() for r in rows]


def state_symbol(keys: np.ndarray, onsets: np.ndarray, units: int) -> bytes:
    """:func:`state_symbols` of one state given as (88,) booleans."""
    return np.packbits(keys).tobytes() + np.packbits(onsets).tobytes() + int(units).to_bytes(4, "little", signed=True)


class RepeatTracker:
    """The longest earlier match of the passage ending at each new state,
    among the passages that ended within the last ``window`` states."""

    def __init__(self, max_match: int = MAX_MATCH, window: int = MATCH_WINDOW) -> None:
        self.max_match, self.window = max_match, window
        self.ids: list[int] = []  # each state's id (ids number distinct states in order of appearance)
        self._id_of: dict[bytes, int] = {}
        self._hashes = [0] * max_match  # hash of the passage of length o+1 ending at the last state
        self._last_end: list[dict[int, int]] = [{} for _ in range(max_match)]  # [o-1]: hash -> where it last ended
        self._ended: deque[list[int]] = deque()  # the hashes each state of the window ended, to forget them

    def push(self, symbol: bytes) -> tuple[int, int]:
        """Add the next state; returns ``(continuation, length)``: the index of
        the state that followed the longest earlier match of the passage now
        ending (``-1`` if even this state never occurred before) and its length
        in states (0 if none)."""
        t = len(self.ids)
        sid = self._id_of.setdefault(symbol, len(self._id_of)) + 1  # 0 never appears: no zero hashes
        self.ids.append(sid)
        prev = self._hashes
        hashes = [sid] + [(sid + _BASE * h) % _MOD for h in prev[:-1]]
        self._hashes = hashes
        best, length = -1, 0
        for o in range(1, min(t, self.max_match) + 1):  # a match must end before this state
            j = self._last_end[o - 1].get(hashes[o - 1])
            if j is None or self.ids[j - o + 1 : j + 1] != self.ids[t - o + 1 : t + 1]:
                break  # no earlier passage of length o ends like this one: none longer does
            best, length = j + 1, o
        ended = hashes[: min(t + 1, self.max_match)]
        for table, h in zip(self._last_end, ended):
            table[h] = t
        self._ended.append(ended)
        if len(self._ended) > self.window:  # forget what ended window states ago (unless it ended again since)
            old = t - self.window
            for table, h in zip(self._last_end, self._ended.popleft()):
                if table.get(h) == old:
                    del table[h]
        return best, length


def find_repeats(symbols: list[bytes], max_match: int = MAX_MATCH) -> tuple[np.ndarray, np.ndarray]:
    """For each state of one sequence: the index of the continuation of its
    longest earlier match (-1: none) and the match's length (0: none)."""
    tracker = RepeatTracker(max_match)
    out = np.array([tracker.push(s) for s in symbols], np.int64).reshape(-1, 2)
    return out[:, 0], out[:, 1]


def match_length_feature(length: np.ndarray, max_match: int = MAX_MATCH) -> np.ndarray:
    """log2(1 + length) / log2(1 + max): 0 for no match, 1 for the longest."""
    return (np.log2(1.0 + np.asarray(length, np.float64)) / np.log2(1.0 + max_match)).astype(np.float32)


class Continuations(NamedTuple):
    """For each of ``n`` states, the state that followed the longest earlier
    match of the passage ending there (for a transposed match, moved to this
    passage's pitch); rows with ``length`` 0 (no match) are ignored."""

    keys: np.ndarray  # (n, 88)
    onsets: np.ndarray  # (n, 88)
    beats: np.ndarray  # (n,)
    length: np.ndarray  # (n,) states matched, 0 = none


def repeat_symbols(kind: str, keys: np.ndarray, onsets: np.ndarray, units: np.ndarray) -> list[bytes]:
    """The symbols a repeat ``kind`` compares, for (n, 88) boolean states."""
    if kind == "exact":
        return state_symbols(np.packbits(keys, axis=1), np.packbits(onsets, axis=1), units)
    if kind == "transposed":
        return shape_symbols(keys, onsets, units)
    raise ValueError(f"unknown repeat kind {kind!r}")


def repeat_symbol(kind: str, keys: np.ndarray, onsets: np.ndarray, units: int, prev_low: int) -> bytes:
    """:func:`repeat_symbols` of one (88,) state after one whose lowest key was ``prev_low``."""
    if kind == "exact":
        return state_symbol(keys, onsets, units)
    return shape_symbol(keys, onsets, units, prev_low)


def continuation_shift(kind: str, low_now: np.ndarray, low_end: np.ndarray, cont: np.ndarray) -> np.ndarray:
    """Semitones to move each continuation by: 0 for exact matches; for
    transposed ones, from the lowest key ``low_end`` of the matched passage's
    last state (the one before the continuation ``cont``) to ``low_now``, that
    of the current state (-1: silent, no move)."""
    if kind == "exact":
        return np.zeros(len(cont), np.int64)
    return np.where((cont > 0) & (low_now >= 0) & (low_end >= 0), low_now - low_end, 0)


def find_continuations(kind: str, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                       grid_per_beat: int = GRID_PER_BEAT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of a sequence's ``n`` states (boolean (n, 88) keys and onsets),
    matched against the states before it only: the index of the continuation of
    its longest earlier match of this ``kind`` (-1: none), the match's length (0:
    none) and the semitones to move the continuation by."""
    units = np.round(np.asarray(beats, np.float64) * grid_per_beat).astype(np.int64)
    cont, length = find_repeats(repeat_symbols(kind, keys, onsets, units))
    low = lowest_keys(keys)
    return cont, length, continuation_shift(kind, low, low[np.maximum(cont - 1, 0)], cont)


def repeat_continuations(keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         grid_per_beat: int = GRID_PER_BEAT, kind: str = "exact") -> Continuations:
    """:class:`Continuations` of one sequence of ``n`` states, each matched
    against the states before it only."""
    keys, onsets = np.asarray(keys, bool), np.asarray(onsets, bool)
    cont, length, shift = find_continuations(kind, keys, onsets, beats, grid_per_beat)
    at = np.maximum(cont, 0)
    return Continuations(shift_keys(keys[at], shift), shift_keys(onsets[at], shift), np.asarray(beats)[at], length)


class ContinuationTracker:
    """:func:`repeat_continuations` of each kind for ``B`` sequences, one state
    at a time (for generation)."""

    def __init__(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                 grid_per_beat: int = GRID_PER_BEAT, kinds: Sequence[str] = ("exact",)) -> None:
        """Start from histories of (B, S >= 1, 88) states; ``history`` holds
        their continuations, one :class:`Continuations` per kind, each field (B, S, ...)."""
        self.grid, self.kinds = grid_per_beat, tuple(kinds)
        B = keys.shape[0]
        self.trackers = [[RepeatTracker() for _ in range(B)] for _ in self.kinds]
        self.keys: list[np.ndarray] = []  # every state so far, (B, 88) each
        self.onsets: list[np.ndarray] = []
        self.beats: list[np.ndarray] = []
        self.low: list[np.ndarray] = []
        # per kind, (B,): how far back the longest match's continuation lies (0: no match), and for how
        # many states in a row the music has gone on as it went that far back (the repeat's run so far)
        self.period = [np.zeros(B, np.int64) for _ in self.kinds]
        self.run = [np.zeros(B, np.int64) for _ in self.kinds]
        # per kind, (B,): the semitones the continuation is moved by (a transposed match; 0: in place)
        self.shift = [np.zeros(B, np.int64) for _ in self.kinds]
        steps = [self.step(keys[:, s], onsets[:, s], beats[:, s]) for s in range(keys.shape[1])]
        self.history = [Continuations(*(np.stack(field, 1) for field in zip(*(st[k] for st in steps))))
                        for k in range(len(self.kinds))]
        self.last: list[Continuations] = steps[-1]  # each kind's continuations after the newest state

    def step(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> list[Continuations]:
        """The continuations (B, ...) of each kind after new states
        ``keys``/``onsets`` (B, 88) lasting ``beats`` (B,)."""
        keys, onsets = np.asarray(keys, bool), np.asarray(onsets, bool)
        beats = np.asarray(beats)
        units = np.round(beats.astype(np.float64) * self.grid).astype(np.int64)
        prev_low = self.low[-1] if self.low else np.full(len(keys), -1)
        self.keys.append(keys)
        self.onsets.append(onsets)
        self.beats.append(beats)
        low = lowest_keys(keys)
        self.low.append(low)
        out = []
        for k, (kind, trackers) in enumerate(zip(self.kinds, self.trackers)):
            found = [tr.push(repeat_symbol(kind, keys[b], onsets[b], units[b], prev_low[b]))
                     for b, tr in enumerate(trackers)]
            cont = np.array([c for c, _ in found], np.int64)
            length = np.array([n for _, n in found], np.int64)
            period = np.where(length > 0, len(self.keys) - cont, 0)
            self.run[k] = np.where((period > 0) & (period == self.period[k]), self.run[k] + 1, length)
            self.period[k] = period
            at = np.maximum(cont, 0)
            end = np.array([self.low[max(a - 1, 0)][b] for b, a in enumerate(at)])
            shift = continuation_shift(kind, low, end, cont)
            self.shift[k] = shift
            ck = np.array([self.keys[a][b] for b, a in enumerate(at)])
            co = np.array([self.onsets[a][b] for b, a in enumerate(at)])
            out.append(Continuations(shift_keys(ck, shift), shift_keys(co, shift),
                                     np.array([self.beats[a][b] for b, a in enumerate(at)]), length))
        self.last = out
        return out
