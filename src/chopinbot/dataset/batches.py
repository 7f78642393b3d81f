"""Cutting a split's states into training batches, on the fly.

Nothing is materialised: a batch is a matrix of row indices into the
memory-mapped dataset, gathered and unpacked only when the batch is built.

* Sequence mode (default): each key segment is cut into consecutive chunks of
  ``context`` predictions, starting at a random offset each epoch; the loss is
  taken at every position, so every state is predicted once per epoch.
* Window mode (``window=16``): the original design's way -- every run of
  ``window`` states is an input with one target, the state after it; each
  state is computed ``window`` times per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from chopinbot.constants import N_KEYS
from chopinbot.dataset.prepare import Dataset
from chopinbot.dataset.features import AGE_LOOKBACK, DurationVocab, end_positions, key_ages, key_recency, state_features
from chopinbot.model.loss import Targets
from chopinbot.music.repeats import Continuations, find_continuations, shift_keys


def _shift_tables() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """For a shift of s semitones: which source key feeds each key, and
    whether any does.  Keys pushed off the keyboard come back an octave
    inside (never wrapped round); for augmentation the fold is approximated
    by gathering, which is exact except where a folded key meets one already
    sounding an octave away."""
    from chopinbot.music.states import fold_into_range

    src_of, valid = {}, {}
    for s in range(-6, 7):
        dst, _ = fold_into_range(np.arange(N_KEYS) + s + 21)
        dst -= 21
        src = np.full(N_KEYS, 0)
        ok = np.zeros(N_KEYS, np.float32)
        for k in range(N_KEYS):
            src[dst[k]] = k
            ok[dst[k]] = 1.0
        src_of[s], valid[s] = src, ok
    return src_of, valid


_SOURCE_OF, _VALID_AFTER = _shift_tables()


@dataclass(frozen=True)
class Chunk:
    start: int  # row of the first input state
    length: int  # number of inputs (= number of predictions in sequence mode)
    last_only: bool = False  # window mode: only the last position has a target


class SplitData:
    """The states of one split of a dataset, ready to batch."""

    def __init__(self, dataset: Dataset, split: str, vocab: DurationVocab) -> None:
        self.records = dataset.records
        self.vocab = vocab
        self.segments = [(s.start, s.stop) for s in dataset.segments(split) if len(s) >= 2]
        self.n_states = sum(b - a for a, b in self.segments)
        # Where each state ends, in beats from its segment's start (8 bytes a
        # state: the one derived array kept in memory; windows never are).
        self._seg_starts = np.array([a for a, _ in self.segments] or [0], np.int64)
        self.end_pos = np.zeros(len(self.records), np.float64)
        for a, b in self.segments:
            self.end_pos[a:b] = end_positions(self.records["beats"][a:b])
        self.n_targets = sum(b - a - 1 for a, b in self.segments)
        self._repeats: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._grid = dataset.settings.grid_per_beat

    def repeats(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every row: the row of the continuation of its passage's longest
        earlier match of this kind within its segment (-1: none), the match's
        length and the semitones to move the continuation by.  Found once per
        split and kind (under a second for the corpus), 10 bytes a state."""
        if kind not in self._repeats:
            cont = np.full(len(self.records), -1, np.int64)
            length = np.zeros(len(self.records), np.uint8)
            shift = np.zeros(len(self.records), np.int8)
            for a, b in self.segments:
                rec = self.records[a:b]
                keys = np.unpackbits(rec["keys"], axis=1, count=N_KEYS).astype(bool)
                onsets = np.unpackbits(rec["onsets"], axis=1, count=N_KEYS).astype(bool)
                c, length[a:b], shift[a:b] = find_continuations(kind, keys, onsets, rec["beats"], self._grid)
                cont[a:b] = np.where(c >= 0, c + a, -1)
            self._repeats[kind] = cont, length, shift
        return self._repeats[kind]

    def chunks(self, context: int, rng: np.random.Generator | None = None) -> list[Chunk]:
        """Sequence mode: consecutive chunks covering every prediction once."""
        out = []
        for a, b in self.segments:
            n_pred = b - a - 1
            off = int(rng.integers(context)) if rng is not None and n_pred > context else 0
            cuts = [0] + list(range(off if off else context, n_pred, context)) + [n_pred]
            cuts = sorted(set(cuts))
            out += [Chunk(a + i, j - i) for i, j in zip(cuts[:-1], cuts[1:]) if j > i]
        return out

    def whole_segments(self) -> list[Chunk]:
        return [Chunk(a, b - a - 1) for a, b in self.segments]

    def windows(self, window: int) -> list[Chunk]:
        """Window mode: every run of ``window`` inputs followed by a target."""
        return [Chunk(p, window, True) for a, b in self.segments for p in range(a, b - window)]

    def batch(self, chunks: list[Chunk], shifts: np.ndarray | None = None,
              recency: bool = False, repeats: Sequence[str] = ()) -> tuple[torch.Tensor, Targets]:
        """Inputs (B, T, F) and targets for a list of chunks (padded, masked),
        with the optional ``recency`` block and a block per repeat kind.

        ``shifts`` (one per chunk, semitones) transposes each chunk as data
        augmentation: the corpus is small (39k training states) and a model
        that has heard a phrase in several keys overfits it less.
        """
        T = max(c.length for c in chunks)
        B = len(chunks)
        L = AGE_LOOKBACK
        starts = np.array([c.start for c in chunks])
        lengths = np.array([c.length for c in chunks])
        seg_start = self._seg_starts[np.searchsorted(self._seg_starts, starts, side="right") - 1]
        steps = np.arange(-L, T + 1)
        # rows: L of history (clamped to the segment), then inputs, then the last target
        raw = starts[:, None] + np.minimum(steps[None, :], lengths[:, None])
        before = raw < seg_start[:, None]
        idx = np.maximum(raw, seg_start[:, None])
        rec = self.records[idx.ravel()]
        S = L + T + 1
        keys = np.unpackbits(rec["keys"], axis=1, count=N_KEYS).astype(np.float32).reshape(B, S, N_KEYS)
        onsets = np.unpackbits(rec["onsets"], axis=1, count=N_KEYS).astype(np.float32).reshape(B, S, N_KEYS)
        beats = np.ascontiguousarray(rec["beats"], np.float32).reshape(B, S)
        keys[before] = 0.0
        onsets[before] = 0.0
        beats[before] = 0.0
        conts = []  # per repeat kind: continuation keys, onsets (B, T, 88), beats, length (B, T)
        for kind in repeats:
            rows, length, move = self.repeats(kind)
            at = idx[:, L : L + T]
            crec = self.records[np.maximum(rows[at], 0).ravel()]
            ck = np.unpackbits(crec["keys"], axis=1, count=N_KEYS).astype(bool)
            co = np.unpackbits(crec["onsets"], axis=1, count=N_KEYS).astype(bool)
            ck, co = (shift_keys(v, move[at].ravel()).astype(np.float32).reshape(B, T, N_KEYS) for v in (ck, co))
            conts.append((ck, co, np.asarray(crec["beats"], np.float32).reshape(B, T), length[at]))
        if shifts is not None:
            for i, sh in enumerate(shifts):
                if sh:
                    src, ok = _SOURCE_OF[int(sh)], _VALID_AFTER[int(sh)]
                    for a in (keys, onsets) + tuple(v for c in conts for v in c[:2]):
                        a[i] = a[i][:, src] * ok
        ages = key_ages(keys, onsets, beats)[:, L : L + T]
        rec = key_recency(keys, onsets, beats)[:, L : L + T].reshape(-1, 2, N_KEYS) if recency else None
        reps = [Continuations(c[0].reshape(-1, N_KEYS), c[1].reshape(-1, N_KEYS), c[2].ravel(), c[3].ravel())
                for c in conts]
        keys, onsets, beats, idx = keys[:, L:], onsets[:, L:], beats[:, L:], idx[:, L:]
        x = state_features(keys[:, :T].reshape(-1, N_KEYS), onsets[:, :T].reshape(-1, N_KEYS), beats[:, :T].ravel(),
                           self.vocab, self.end_pos[idx[:, :T]].ravel(), ages.reshape(-1, N_KEYS),
                           rec, reps).reshape(B, T, -1)
        steps = np.arange(T + 1)
        mask = (steps[None, :T] < lengths[:, None]).astype(np.float32)
        for i, c in enumerate(chunks):
            if c.last_only:
                mask[i, : c.length - 1] = 0.0
        targets = Targets(
            keys=torch.from_numpy(np.ascontiguousarray(keys[:, 1:])),
            onsets=torch.from_numpy(np.ascontiguousarray(onsets[:, 1:])),
            dur_class=torch.from_numpy(self.vocab.index(beats[:, 1:])),
            dur_beats=torch.from_numpy(np.ascontiguousarray(beats[:, 1:])),
            mask=torch.from_numpy(mask),
        )
        return torch.from_numpy(x), targets

    def marginals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Key and onset frequencies, duration-class frequencies and mean length."""
        k = np.zeros(N_KEYS)
        o = np.zeros(N_KEYS)
        cls = np.zeros(len(self.vocab))
        beats_sum, n = 0.0, 0
        for a, b in self.segments:
            rec = self.records[a:b]
            k += np.unpackbits(rec["keys"], axis=1, count=N_KEYS).sum(0)
            o += np.unpackbits(rec["onsets"], axis=1, count=N_KEYS).sum(0)
            cls += np.bincount(self.vocab.index(rec["beats"]), minlength=len(self.vocab))
            beats_sum += float(rec["beats"].astype(np.float64).sum())
            n += b - a
        n = max(n, 1)
        return k / n, o / n, cls / n, beats_sum / n
