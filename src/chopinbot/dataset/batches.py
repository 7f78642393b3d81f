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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from chopinbot.constants import N_KEYS
from chopinbot.dataset.features import AGE_LOOKBACK, DurationVocab, end_positions, velocity_class
from chopinbot.dataset.inputs import BaseBlock, BatchStates, InputBlock
from chopinbot.dataset.layout import InputLayout
from chopinbot.dataset.store import Dataset, Segment
from chopinbot.music.states import fold_into_range

Table = TypeVar("Table")


@dataclass
class Targets:
    """What a batch asks the model to predict (the loss, :mod:`chopinbot.model.loss`, reads it)."""

    keys: torch.Tensor  # (B, T, 88) float 0/1
    onsets: torch.Tensor  # (B, T, 88) float 0/1
    dur_class: torch.Tensor  # (B, T) long
    dur_beats: torch.Tensor  # (B, T) float
    mask: torch.Tensor  # (B, T) float: 1 where a target exists
    vel_class: torch.Tensor | None = None  # (B, T) long: the velocity class, -1 where none (nothing struck)

    def to(self, device) -> Targets:
        return Targets(*(t.to(device) for t in (self.keys, self.onsets, self.dur_class, self.dur_beats, self.mask)),
                       self.vel_class.to(device) if self.vel_class is not None else None)


def _shift_tables() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """For a shift of s semitones: which source key feeds each key, and
    whether any does.  Keys pushed off the keyboard come back an octave
    inside (never wrapped round); for augmentation the fold is approximated
    by gathering, which is exact except where a folded key meets one already
    sounding an octave away."""
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


def _transposer(shifts: np.ndarray | None) -> Callable[[np.ndarray], None]:
    """Transposes chunk ``i`` of (B, n, 88) keys by ``shifts[i]`` semitones, in place."""

    def transpose(a: np.ndarray) -> None:
        for i, sh in enumerate(shifts if shifts is not None else ()):
            if sh:
                a[i] = a[i][:, _SOURCE_OF[int(sh)]] * _VALID_AFTER[int(sh)]

    return transpose


@dataclass(frozen=True)
class Chunk:
    start: int  # row of the first input state
    length: int  # number of inputs (= number of predictions in sequence mode)
    last_only: bool = False  # window mode: only the last position has a target


class SplitData:
    """The states of one split of a dataset, ready to batch."""

    def __init__(self, dataset: Dataset, split: str, vocab: DurationVocab,
                 keep: Callable[[Segment], bool] | None = None) -> None:
        """``keep``: only the segments it accepts (e.g. one piece's, to score it alone)."""
        self.records = dataset.records
        self.vocab = vocab
        kept = [s for s in dataset.segments(split) if len(s) >= 2 and (keep is None or keep(s))]
        self.segments = [(s.start, s.stop) for s in kept]
        self.composers = [s.composer for s in kept]
        self.n_states = sum(b - a for a, b in self.segments)
        # Where each state ends, in beats from its segment's start (8 bytes a
        # state: the one derived array kept in memory; windows never are).
        self._seg_starts = np.array([a for a, _ in self.segments] or [0], np.int64)
        self.end_pos = np.zeros(len(self.records), np.float64)
        for a, b in self.segments:
            self.end_pos[a:b] = end_positions(self.records["beats"][a:b])
        self.n_targets = sum(b - a - 1 for a, b in self.segments)
        self.grid_per_beat = dataset.settings.grid_per_beat
        self._tables: dict[str, Any] = {}

    def table(self, name: str, make: Callable[[SplitData], Table]) -> Table:
        """A table an input block derives from the split's states (such as
        :func:`chopinbot.dataset.inputs.split_repeats`), made on first use and kept."""
        if name not in self._tables:
            self._tables[name] = make(self)
        return self._tables[name]

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
              blocks: Sequence[InputBlock] | None = None) -> tuple[torch.Tensor, Targets]:
        """Inputs (B, T, F) and targets for a list of chunks (padded, masked),
        with the given input ``blocks`` (default: the base block alone; a
        model's are ``ModelConfig.blocks``, passed by ``**config.input_blocks``).

        ``shifts`` (one per chunk, semitones) transposes each chunk as data
        augmentation: the corpus is small (39k training states) and a model
        that has heard a phrase in several keys overfits it less.
        """
        blocks = tuple(blocks) if blocks is not None else (BaseBlock(self.vocab, self.grid_per_beat),)
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
        velocity = np.asarray(rec["velocity"], np.float32).reshape(B, S)
        keys[before] = 0.0
        onsets[before] = 0.0
        beats[before] = 0.0
        velocity[before] = 0.0
        transpose = _transposer(shifts)
        transpose(keys)
        transpose(onsets)
        rows = idx[:, L : L + T]
        x = InputLayout(blocks).batch_rows(BatchStates(keys, onsets, beats, velocity, L, rows,
                                                       self.end_pos[rows].ravel(), self, transpose, shifts))
        keys, onsets, beats, velocity = keys[:, L:], onsets[:, L:], beats[:, L:], velocity[:, L:]
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
            vel_class=torch.from_numpy(velocity_class(velocity[:, 1:])),
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
