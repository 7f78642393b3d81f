"""The model's inputs, declared once: the blocks of an input row.

An input row is made of *blocks*.  Each block (an :class:`InputBlock`)
declares, here and nowhere else:

* its widths: the columns the LSTM reads (``lstm_width``) and the columns only
  the note head reads (``note_width``);
* how it is built for a training batch (:meth:`InputBlock.batch_columns`,
  from a :class:`BatchStates`), and for a whole sequence heard from its first
  state (:meth:`InputBlock.sequence_columns`: the reference the others are
  tested against);
* how it is built from a seed history and then tracked one state at a time
  while composing (:meth:`InputBlock.tracker`);
* what the note head reads of it for each key (:meth:`InputBlock.key_columns`)
  and what the duration head reads of it (:meth:`InputBlock.duration_columns`).

A row is every block's LSTM columns, in block order, then every block's
note-head columns, in block order (:class:`~chopinbot.dataset.layout.InputLayout`;
the registry of optional blocks, :data:`~chopinbot.dataset.layout.OPTIONAL_BLOCKS`,
is there too).  The blocks, in order (a block that is off takes no columns,
so a row without the optional blocks is the row of the first models; shipped
weights depend on this order):

* base (always on): for the LSTM, keys, onsets, ages (3 x 88), the rhythmic
  value (V+1) and the position in the metre (22); per key, the age.
* recency (flag ``key_recency``): for the note head, each key's beats since
  struck and previous interval (2 x 88); per key, both.
* repeats, exact (``repeats``), then transposed (``repeats_transposed``): for
  the LSTM, the continuation's rhythmic value (V+1) and the match length; for
  the note head, its keys and onsets (2 x 88); per key, the key, the onset and
  the match length; for the duration head, the rhythmic value's one-hot, as is
  and times the match length.
* loudness (``loudness``): for the LSTM, the state's velocity / 127 (0 where
  nothing is struck); a model with it also predicts the next state's velocity
  class (:class:`~chopinbot.model.network.ChopinLSTM`'s loudness head).
* style (``style_input``): for the LSTM, a one-hot over the model's styles
  (composers, ``ModelConfig.styles``): whose music a training row is, or
  which style to compose in; all 0 for a composer the model does not know.
* controls (``controls``): for the LSTM, the density, register, loudness and
  pitch-class shares of the 8 beats ahead, each with a present bit; per key,
  inside the register or not, its pitch class's share and the density; for
  the duration head, the density.

The last two steer what is composed and live in :mod:`chopinbot.dataset.conditioning`.

The network (:mod:`chopinbot.model.network`), the training batches
(:mod:`chopinbot.dataset.batches`) and the composing step
(:mod:`chopinbot.compose.stepper`) iterate over a model's blocks
(``ModelConfig.blocks``) and hold no code of any one block.  A block is built
from the states' keys, onsets, lengths (beats) and velocities (the loudness
block brought the velocities into :class:`BatchStates`, :class:`NewStates` and
the blocks' methods).  A new block built from these touches three source files:

1. this module: its :class:`InputBlock` subclass, and its feature function
   when the block computes something new (or :mod:`chopinbot.dataset.conditioning`,
   for a block that steers);
2. :mod:`chopinbot.dataset.layout`: its entry in :data:`~chopinbot.dataset.layout.OPTIONAL_BLOCKS`
   (where the entry sits is where its columns sit; its ``help`` gives
   ``chopinbot train`` its ``--flag on|off``);
3. ``src/chopinbot/model/network.py``: the :class:`~chopinbot.model.network.ModelConfig`
   field (a bool) named by the entry's ``flag`` (validation, loading of
   configs saved before it and switching it off without the note head follow
   from the entry).

A computation shared with other code goes in its music-level module instead
(as :mod:`chopinbot.music.repeats` for the repeats, :mod:`chopinbot.dataset.features`
for ages and recency): then that module is the third file's neighbour, a fourth.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, TypeVar

import numpy as np

from chopinbot.constants import N_KEYS
from chopinbot.dataset.features import (
    N_POSITION,
    AgeTracker,
    DurationVocab,
    RecencyTracker,
    age_features,
    duration_features,
    end_positions,
    key_ages,
    key_recency,
    loudness_feature,
    position_features,
    position_period,
    recency_features,
)
from chopinbot.music.repeats import (
    Continuations,
    ContinuationTracker,
    find_continuations,
    match_length_feature,
    repeat_continuations,
    shift_keys,
)

Table = TypeVar("Table")


class SplitStates(Protocol):
    """What a block reads of a training split (a :class:`~chopinbot.dataset.batches.SplitData`)."""

    records: np.ndarray  # the dataset's packed states
    segments: list[tuple[int, int]]  # the split's key segments, as row ranges
    composers: list[str]  # the composer of each segment
    grid_per_beat: int

    def table(self, name: str, make: Callable[[SplitStates], Table]) -> Table:
        """A table derived from the split's states by ``make``, made once and kept."""
        ...

# A block's columns for n states: its LSTM parts and its note-head parts, (..., n, w) arrays each in
# row order, which InputLayout.rows concatenates (as float32: bool parts count as 0/1).
Columns = tuple[list[np.ndarray], list[np.ndarray]]


class KeyColumn(NamedTuple):
    """A value the note head reads for each key: key ``k`` reads column
    ``at + k`` of the block's ``part`` (``per_key``), or column ``at`` (the
    same value for every key)."""

    part: Literal["lstm", "note"]
    at: int
    per_key: bool = True


class DurationColumns(NamedTuple):
    """Columns ``start:stop`` of the block's ``part`` that the duration head
    reads, each multiplied by column ``scale`` of that part (None: as they are)."""

    part: Literal["lstm", "note"]
    start: int
    stop: int
    scale: int | None = None


class NewStates(NamedTuple):
    """The states just composed, one per sequence of a batch of B."""

    keys: np.ndarray  # (B, 88) bool
    onsets: np.ndarray  # (B, 88) bool
    cls: np.ndarray  # (B,) rhythmic class (index into the duration vocabulary)
    beats: np.ndarray  # (B,) float64: its length, as the dataset stores it (float32)
    velocity: np.ndarray | None = None  # (B,) its velocity (0: nothing struck); None: unknown, read as 0


@dataclass(frozen=True)
class BatchStates:
    """What the blocks of a training batch are built from: for each of ``B``
    chunks, ``lookback`` states of history (rows before the chunk's segment
    are zero, lasting 0 beats), its ``T`` input states and the last target,
    already transposed as the batch is."""

    keys: np.ndarray  # (B, lookback + T + 1, 88) float32
    onsets: np.ndarray  # (B, lookback + T + 1, 88) float32
    beats: np.ndarray  # (B, lookback + T + 1) float32
    velocity: np.ndarray  # (B, lookback + T + 1) float32: mean velocity of the struck keys (0: none)
    lookback: int
    rows: np.ndarray  # (B, T): the dataset row of each input state
    end_pos: np.ndarray  # (B * T,) where each input state ends, in beats from its segment's start
    split: SplitStates  # the dataset rows and tables derived once per split
    transpose: Callable[[np.ndarray], None]  # transposes (B, T, 88) keys in place as the batch's chunks are
    shifts: np.ndarray | None = None  # (B,) the semitones each chunk is transposed by (None: none)

    @property
    def steps(self) -> int:
        """``T``: input states per chunk."""
        return self.rows.shape[1]

    def inputs(self, a: np.ndarray) -> np.ndarray:
        """The input states' rows of a (B, lookback + T + 1, ...) array, as (B * T, ...)."""
        return a[:, self.lookback : self.lookback + self.steps].reshape((-1,) + a.shape[2:])


class BlockTracker(ABC):
    """A block's columns while composing: ``seed`` holds those of the seed
    histories (each part (B, S, w)); :meth:`step` gives those of the next states."""

    seed: Columns

    @abstractmethod
    def step(self, new: NewStates) -> Columns:
        """The columns (each part (B, w)) of the states just composed."""


class InputBlock(ABC):
    """One block of an input row (see the module docstring)."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The block's name, for messages and tests."""

    @property
    def lstm_width(self) -> int:
        """Columns the LSTM reads (and the heads may)."""
        return 0

    @property
    def note_width(self) -> int:
        """Columns only the note head (and the duration head) reads."""
        return 0

    def key_columns(self) -> tuple[KeyColumn, ...]:
        """What the note head reads of this block for each key, in order."""
        return ()

    def duration_columns(self) -> tuple[DurationColumns, ...]:
        """What the duration head reads of this block, in order."""
        return ()

    @abstractmethod
    def sequence_columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         start_beat: float = 0.0, velocity: np.ndarray | None = None) -> Columns:
        """The columns of a sequence of ``n`` states ((n, 88) keys and onsets, (n,)
        beats and velocities; None: unknown) heard from its first, which starts
        ``start_beat`` into the metre."""

    @abstractmethod
    def batch_columns(self, batch: BatchStates) -> Columns:
        """The columns (each part (B * T, w)) of a training batch's input states."""

    @abstractmethod
    def tracker(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, start_beat: float,
                velocity: np.ndarray | None = None) -> BlockTracker:
        """Track the columns after seed histories of (B, S, 88) states lasting (B, S) beats (of
        (B, S) ``velocity``; None: unknown) that start ``start_beat`` into the metre."""


# --------------------------------------------------------------------------- the state itself


@dataclass(frozen=True)
class BaseBlock(InputBlock):
    """The state's own features: keys, onsets, each key's age, the rhythmic
    value and where the state ends in the metre (:mod:`chopinbot.dataset.features`)."""

    vocab: DurationVocab
    grid_per_beat: int

    @property
    def name(self) -> str:
        return "base"

    @property
    def lstm_width(self) -> int:
        return 3 * N_KEYS + len(self.vocab) + 1 + N_POSITION

    def key_columns(self) -> tuple[KeyColumn, ...]:
        return (KeyColumn("lstm", 2 * N_KEYS),)  # the key's age

    def columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, end_pos: np.ndarray,
                ages: np.ndarray) -> Columns:
        """The columns of states (..., 88) lasting ``beats`` (...), ending at ``end_pos``, with key ``ages``."""
        lead = np.shape(beats)
        dur = duration_features(np.asarray(beats).reshape(-1), self.vocab).reshape(lead + (len(self.vocab) + 1,))
        pos = position_features(np.asarray(end_pos).reshape(-1)).reshape(lead + (N_POSITION,))
        return [keys, onsets, age_features(ages), dur, pos], []

    def sequence_columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         start_beat: float = 0.0, velocity: np.ndarray | None = None) -> Columns:
        return self.columns(keys, onsets, beats, end_positions(beats, start_beat), key_ages(keys, onsets, beats))

    def batch_columns(self, batch: BatchStates) -> Columns:
        ages = batch.inputs(key_ages(batch.keys, batch.onsets, batch.beats))
        return self.columns(batch.inputs(batch.keys), batch.inputs(batch.onsets), batch.inputs(batch.beats),
                            batch.end_pos, ages)

    def tracker(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, start_beat: float,
                velocity: np.ndarray | None = None) -> BlockTracker:
        return _BaseTracker(self, keys, onsets, beats, start_beat)


class _BaseTracker(BlockTracker):
    """Key ages and the position in the metre (on the model's grid) across steps;
    the duration and position columns are rows of tables made by the very
    functions that make the training inputs, so the two cannot drift apart."""

    def __init__(self, block: BaseBlock, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                 start_beat: float) -> None:
        grid, values = block.grid_per_beat, np.asarray(block.vocab.values)
        self.dur_table = duration_features(values, block.vocab)
        self.period = position_period(grid)
        self.pos_table = position_features(np.arange(self.period) / grid)
        self.class_units = np.round(values * grid).astype(np.int64)
        self.ages = AgeTracker(keys, onsets, beats)
        end = np.round((start_beat + np.asarray(beats, np.float64).sum(-1)) * grid)  # (B,) grid units
        self.pos = end.astype(np.int64).reshape(-1) % self.period
        self.seed = block.columns(keys, onsets, beats, end_positions(beats, start_beat), self.ages.history_ages)

    def step(self, new: NewStates) -> Columns:
        ages = self.ages.step(new.keys, new.onsets, new.beats)
        self.pos = (self.pos + self.class_units[new.cls]) % self.period
        return [new.keys, new.onsets, age_features(ages), self.dur_table[new.cls], self.pos_table[self.pos]], []


# --------------------------------------------------------------------------- key recency


@dataclass(frozen=True)
class RecencyBlock(InputBlock):
    """Every key's recency (:func:`~chopinbot.dataset.features.key_recency`):
    beats since it was last struck and the interval before, for the note head."""

    @property
    def name(self) -> str:
        return "recency"

    @property
    def note_width(self) -> int:
        return 2 * N_KEYS

    def key_columns(self) -> tuple[KeyColumn, ...]:
        return KeyColumn("note", 0), KeyColumn("note", N_KEYS)  # beats since struck, previous interval

    def sequence_columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         start_beat: float = 0.0, velocity: np.ndarray | None = None) -> Columns:
        return [], [recency_features(key_recency(keys, onsets, beats))]

    def batch_columns(self, batch: BatchStates) -> Columns:
        return [], [recency_features(batch.inputs(key_recency(batch.keys, batch.onsets, batch.beats)))]

    def tracker(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, start_beat: float,
                velocity: np.ndarray | None = None) -> BlockTracker:
        return _RecencyTracker(keys, onsets, beats)


class _RecencyTracker(BlockTracker):
    def __init__(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> None:
        self.recency = RecencyTracker(keys, onsets, beats)
        self.seed = [], [recency_features(self.recency.history)]

    def step(self, new: NewStates) -> Columns:
        return [], [recency_features(self.recency.step(new.keys, new.onsets, new.beats))]


# --------------------------------------------------------------------------- repeats


@dataclass(frozen=True)
class RepeatsBlock(InputBlock):
    """The state that followed the last occurrence of the passage just heard,
    for one kind of match (:mod:`chopinbot.music.repeats`): its rhythmic value
    and the match's length for the LSTM, its keys and onsets for the note head;
    all 0 where nothing matched."""

    kind: str  # chopinbot.music.repeats.KINDS
    vocab: DurationVocab
    grid_per_beat: int

    @property
    def name(self) -> str:
        return f"repeats {self.kind}"

    @property
    def lstm_width(self) -> int:
        return len(self.vocab) + 2

    @property
    def note_width(self) -> int:
        return 2 * N_KEYS

    def key_columns(self) -> tuple[KeyColumn, ...]:
        # the continuation's key and onset; the match length, the same for every key
        return KeyColumn("note", 0), KeyColumn("note", N_KEYS), KeyColumn("lstm", len(self.vocab) + 1, False)

    def duration_columns(self) -> tuple[DurationColumns, ...]:
        # the continuation's rhythmic value, as is and scaled by the match's length (a long match is trusted more)
        V = len(self.vocab)
        return DurationColumns("lstm", 0, V), DurationColumns("lstm", 0, V, V + 1)

    def global_features(self, rep: Continuations) -> np.ndarray:
        """(..., V+2): the continuation's rhythmic value (one-hot, log-length) and
        the match length feature; all 0 where nothing matched."""
        found = rep.length > 0
        lead = np.shape(rep.length)
        dur = duration_features(np.where(found, rep.beats, 1.0).reshape(-1), self.vocab).reshape(
            lead + (len(self.vocab) + 1,))
        return np.concatenate([dur * found[..., None], match_length_feature(rep.length)[..., None]], axis=-1)

    def columns(self, rep: Continuations) -> Columns:
        found = (rep.length > 0)[..., None]
        return [self.global_features(rep)], [rep.keys * found, rep.onsets * found]

    def sequence_columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         start_beat: float = 0.0, velocity: np.ndarray | None = None) -> Columns:
        return self.columns(repeat_continuations(keys, onsets, beats, self.grid_per_beat, self.kind))

    def batch_columns(self, batch: BatchStates) -> Columns:
        rows, length, move = split_repeats(batch.split, self.kind)
        B, T, at = batch.rows.shape[0], batch.steps, batch.rows
        crec = batch.split.records[np.maximum(rows[at], 0).ravel()]
        ck = np.unpackbits(crec["keys"], axis=1, count=N_KEYS).astype(bool)
        co = np.unpackbits(crec["onsets"], axis=1, count=N_KEYS).astype(bool)
        ck, co = (shift_keys(v, move[at].ravel()).astype(np.float32).reshape(B, T, N_KEYS) for v in (ck, co))
        batch.transpose(ck)
        batch.transpose(co)
        return self.columns(Continuations(ck.reshape(-1, N_KEYS), co.reshape(-1, N_KEYS),
                                          np.asarray(crec["beats"], np.float32).ravel(), length[at].ravel()))

    def tracker(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, start_beat: float,
                velocity: np.ndarray | None = None) -> BlockTracker:
        return _RepeatsTracker(self, keys, onsets, beats)


class _RepeatsTracker(BlockTracker):
    def __init__(self, block: RepeatsBlock, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> None:
        self.block = block
        self.repeats = ContinuationTracker(keys, onsets, beats, block.grid_per_beat, (block.kind,))
        self.seed = block.columns(self.repeats.history[0])
        self._rows: dict = {}  # (beats, match length) -> the global columns

    def step(self, new: NewStates) -> Columns:
        rep = self.repeats.step(new.keys, new.onsets, new.beats)[0]
        found = (rep.length > 0)[:, None]
        return [self._global_features(rep)], [rep.keys & found, rep.onsets & found]

    def _global_features(self, rep: Continuations) -> np.ndarray:
        """:meth:`RepeatsBlock.global_features`, looked up: a piece has few
        distinct (rhythmic value, match length) pairs, and a step is cheaper without the log."""
        rows = []
        for beats, length in zip(rep.beats.tolist(), rep.length.tolist()):
            key = (beats, length) if length else 0
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = self.block.global_features(
                    Continuations(None, None, np.array([beats]), np.array([length])))[0]
            rows.append(row)
        return np.stack(rows)


def continuation_trackers(trackers: list[BlockTracker]) -> dict[str, ContinuationTracker]:
    """The repeats lookups among a model's input trackers, by kind: while composing, the repeat boost
    (compose.repetition.RepeatBoost) reads them rather than keep its own."""
    return {t.block.kind: t.repeats for t in trackers if isinstance(t, _RepeatsTracker)}


def split_repeats(split: SplitStates, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every row of a split: the row of the continuation of its passage's
    longest earlier match of this ``kind`` within its segment (-1: none), the
    match's length and the semitones to move the continuation by.  Found once
    per split and kind (under a second for the corpus), 10 bytes a state."""

    def make(split: SplitStates) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(split.records)
        cont, length, shift = np.full(n, -1, np.int64), np.zeros(n, np.uint8), np.zeros(n, np.int8)
        for a, b in split.segments:
            rec = split.records[a:b]
            keys = np.unpackbits(rec["keys"], axis=1, count=N_KEYS).astype(bool)
            onsets = np.unpackbits(rec["onsets"], axis=1, count=N_KEYS).astype(bool)
            c, length[a:b], shift[a:b] = find_continuations(kind, keys, onsets, rec["beats"], split.grid_per_beat)
            cont[a:b] = np.where(c >= 0, c + a, -1)
        return cont, length, shift

    return split.table(f"repeats {kind}", make)


# --------------------------------------------------------------------------- loudness


@dataclass(frozen=True)
class LoudnessBlock(InputBlock):
    """The state's loudness (:func:`~chopinbot.dataset.features.loudness_feature`),
    for the LSTM: what the loudness head's next velocity class follows from."""

    @property
    def name(self) -> str:
        return "loudness"

    @property
    def lstm_width(self) -> int:
        return 1

    def columns(self, velocity: np.ndarray | None, shape: tuple[int, ...]) -> Columns:
        """The column of states of ``shape`` (...) with ``velocity`` (None: unknown, 0)."""
        v = np.zeros(shape, np.float32) if velocity is None else np.asarray(velocity).reshape(shape)
        return [loudness_feature(v)[..., None]], []

    def sequence_columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         start_beat: float = 0.0, velocity: np.ndarray | None = None) -> Columns:
        return self.columns(velocity, np.shape(beats))

    def batch_columns(self, batch: BatchStates) -> Columns:
        return self.columns(batch.inputs(batch.velocity), (batch.rows.size,))

    def tracker(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, start_beat: float,
                velocity: np.ndarray | None = None) -> BlockTracker:
        return _LoudnessTracker(self, self.columns(velocity, np.shape(beats)))


class _LoudnessTracker(BlockTracker):
    def __init__(self, block: LoudnessBlock, seed: Columns) -> None:
        self.block, self.seed = block, seed

    def step(self, new: NewStates) -> Columns:
        return self.block.columns(new.velocity, np.shape(new.cls))
