"""The input blocks that steer what is composed: whose music it is (style) and what it should be like (controls).

The blocks of :mod:`chopinbot.dataset.inputs` describe the music heard; these two
describe the music wanted.  In training each reads a fact about the piece (its
composer; the density, register, loudness and pitch classes of the beats
ahead); when composing, what the user asks (``--style``; ``--density``,
``--register``, ``--loudness``, ``--key``).  They are blocks like the others
(:class:`~chopinbot.dataset.inputs.InputBlock`), registered in
:data:`~chopinbot.dataset.layout.OPTIONAL_BLOCKS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chopinbot.constants import N_KEYS
from chopinbot.dataset.corpus import style_name
from chopinbot.dataset.inputs import (
    BatchStates,
    BlockTracker,
    Columns,
    DurationColumns,
    InputBlock,
    KeyColumn,
    NewStates,
    SplitStates,
)
from chopinbot.music.controls import (
    CONTROL_WIDTH,
    KEY_PRESENT,
    KEY_SHARES,
    N_CONTROLS,
    Controls,
    WindowControls,
    control_features,
    hide,
    window_controls,
)

# --------------------------------------------------------------------------- style


@dataclass(frozen=True)
class StyleBlock(InputBlock):
    """Whose music it is: a one-hot over ``styles`` for the LSTM, the same for
    every state of a piece.  A training row reads its own file's composer;
    a sequence or a piece being composed reads ``style``.  A composer the
    model does not know (or ``style`` None) reads all 0."""

    styles: tuple[str, ...]
    style: str | None = None
    # training hides the style from this share of the chunks, so that guidance (compose.guidance) contrasts the
    # style with a condition the model was trained on: without it "no style" was never seen, and guidance pushed
    # both styles away from every real composer (docs/corpus.md); scoring shows every row its style (0)
    hide_share: float = 0.25
    # the style also goes straight to the note head (each style a value every key reads, beside its pitch) and to
    # the rhythmic values' logits: the LSTM's state, full of the passage heard, barely passed the style on
    to_heads: bool = False

    @property
    def name(self) -> str:
        return "style"

    @property
    def lstm_width(self) -> int:
        return len(self.styles)

    def key_columns(self) -> tuple[KeyColumn, ...]:
        return tuple(KeyColumn("lstm", i, False) for i in range(len(self.styles))) if self.to_heads else ()

    def duration_columns(self) -> tuple[DurationColumns, ...]:
        return (DurationColumns("lstm", 0, len(self.styles)),) if self.to_heads else ()

    def one_hot(self, index: np.ndarray) -> np.ndarray:
        """(..., len(styles)) float32 rows for style ``index`` (..., -1: none)."""
        index = np.asarray(index)
        eye = np.concatenate([np.eye(len(self.styles), dtype=np.float32),
                              np.zeros((1, len(self.styles)), np.float32)])
        return eye[np.where(index >= 0, index, len(self.styles))]

    def own_index(self) -> int:
        """The index of ``style`` among ``styles`` (-1: not among them, or None)."""
        return self.styles.index(self.style) if self.style in self.styles else -1

    def sequence_columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         start_beat: float = 0.0, velocity: np.ndarray | None = None) -> Columns:
        return [self.one_hot(np.full(np.shape(beats), self.own_index()))], []

    def batch_columns(self, batch: BatchStates) -> Columns:
        index = split_styles(batch.split, self.styles)[batch.rows]  # (B, T)
        if self.hide_share:  # whole chunks read no style: "no style" is then a condition the model knows
            rng = np.random.default_rng(batch.rows[:, 0].astype(np.int64) * 7907 + batch.rows.shape[1])
            index = np.where((rng.random(len(index)) < self.hide_share)[:, None], -1, index)
        return [self.one_hot(index.ravel())], []

    def tracker(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, start_beat: float,
                velocity: np.ndarray | None = None) -> BlockTracker:
        return _StyleTracker(self, np.shape(beats))


class _StyleTracker(BlockTracker):
    """The same row at every step: made once, not once per state composed."""

    def __init__(self, block: StyleBlock, shape: tuple[int, ...]) -> None:
        self.seed = block.sequence_columns(None, None, np.zeros(shape))
        self.row = block.one_hot(np.full(shape[:-1], block.own_index()))  # (B, len(styles))

    def step(self, new: NewStates) -> Columns:
        return [self.row], []


def split_styles(split: SplitStates, styles: tuple[str, ...]) -> np.ndarray:
    """For every row of a split: the index of its composer's style in ``styles`` (-1: not among them)."""

    def make(split: SplitStates) -> np.ndarray:
        out = np.full(len(split.records), -1, np.int16)
        for (a, b), composer in zip(split.segments, split.composers):
            name = style_name(composer)
            out[a:b] = styles.index(name) if name in styles else -1
        return out

    return split.table(f"styles {styles}", make)


# --------------------------------------------------------------------------- controls


HIDE_SHARE = 0.25  # training hides each control from this share of the chunks, so the model composes without it too


@dataclass(frozen=True)
class ControlBlock(InputBlock):
    """The composer's controls (:mod:`chopinbot.music.controls`): the density, register,
    loudness and pitch-class shares of the window about to be played, for the LSTM,
    and per key (for the note head) whether it lies inside the register and its
    pitch class's share.  A training row reads its own window, each control hidden
    from ``HIDE_SHARE`` of the chunks; a sequence reads its own windows
    (``requested`` None) or ``requested`` at every state; composing reads the
    seed's own windows, then ``requested`` from the seed's last state on."""

    requested: Controls | None = None

    @property
    def name(self) -> str:
        return "controls"

    @property
    def lstm_width(self) -> int:
        return CONTROL_WIDTH

    @property
    def note_width(self) -> int:
        return 2 * N_KEYS

    def key_columns(self) -> tuple[KeyColumn, ...]:
        # inside the register; the pitch class's share; the density, the same for every key (the LSTM alone
        # barely used it: the passage heard already tells the density, and a request away from it was ignored)
        return KeyColumn("note", 0), KeyColumn("note", N_KEYS), KeyColumn("lstm", 0, False)

    def duration_columns(self) -> tuple[DurationColumns, ...]:
        return (DurationColumns("lstm", 0, 1),)  # the density, straight to the rhythmic values' logits

    @staticmethod
    def key_parts() -> tuple[np.ndarray, np.ndarray]:
        """The block's LSTM and note-head columns (from each part's start) that carry the key asked
        for: the 12 pitch-class shares and their present bit; each key's share
        (:func:`~chopinbot.music.controls.control_features`)."""
        return np.r_[KEY_SHARES, KEY_PRESENT], np.arange(N_KEYS, 2 * N_KEYS)

    def columns(self, w: WindowControls, shifts: np.ndarray | int = 0) -> Columns:
        lstm, note = control_features(w, shifts)
        return [lstm], [note]

    def windows(self, onsets: np.ndarray, beats: np.ndarray, velocity: np.ndarray | None) -> WindowControls:
        """(n,) windows of a sequence: its own, or ``requested`` at every state."""
        if self.requested is not None:
            return WindowControls.constant(self.requested, len(beats))
        return window_controls(onsets, beats, velocity)

    def sequence_columns(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                         start_beat: float = 0.0, velocity: np.ndarray | None = None) -> Columns:
        return self.columns(self.windows(onsets, beats, velocity))

    def batch_columns(self, batch: BatchStates) -> Columns:
        if self.requested is not None:  # scoring: what was requested (e.g. nothing), not the passage's own
            return self.columns(WindowControls.constant(self.requested, batch.rows.size))
        w = split_controls(batch.split).take(batch.rows.ravel())
        B, T = batch.rows.shape
        # which controls each chunk hides: drawn from the chunk's rows, so a batch is built the same every time
        rng = np.random.default_rng(batch.rows[:, 0].astype(np.int64) * 7919 + batch.rows.shape[1])
        hidden = np.repeat(rng.random((B, N_CONTROLS)) < HIDE_SHARE, T, axis=0)
        shifts = np.repeat(batch.shifts, T) if batch.shifts is not None else 0
        return self.columns(hide(w, hidden), shifts)

    def tracker(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, start_beat: float,
                velocity: np.ndarray | None = None) -> BlockTracker:
        return _ControlTracker(self, onsets, beats, velocity)


class _ControlTracker(BlockTracker):
    """The seed's own windows, the last seed state reading the request (it predicts the first new
    state); then the request at every step (its rows made once)."""

    def __init__(self, block: ControlBlock, onsets: np.ndarray, beats: np.ndarray,
                 velocity: np.ndarray | None) -> None:
        B, S = np.shape(beats)
        own = ControlBlock(None)
        lstm, note = [], []
        for b in range(B):
            (l1,), (n1,) = own.sequence_columns(None, onsets[b], beats[b], 0.0,
                                               None if velocity is None else velocity[b])
            lstm.append(l1)
            note.append(n1)
        lstm, note = np.stack(lstm), np.stack(note)
        request = block.requested if block.requested is not None else Controls()
        (row,), (note_row,) = ControlBlock(request).columns(WindowControls.constant(request, 1))
        lstm[:, -1], note[:, -1] = row[0], note_row[0]
        self.seed = [lstm], [note]
        self.lstm_rows, self.note_rows = np.repeat(row, B, 0), np.repeat(note_row, B, 0)

    def step(self, new: NewStates) -> Columns:
        return [self.lstm_rows], [self.note_rows]


def split_controls(split: SplitStates) -> WindowControls:
    """The controls of the window starting at every row of a split (within its segment)."""

    def make(split: SplitStates) -> WindowControls:
        n = len(split.records)
        out = WindowControls(np.full(n, np.nan), np.full(n, -1, np.int16), np.full(n, -1, np.int16),
                             np.full(n, np.nan), np.full((n, 12), np.nan))
        for a, b in split.segments:
            rec = split.records[a:b]
            onsets = np.unpackbits(rec["onsets"], axis=1, count=N_KEYS).astype(bool)
            w = window_controls(onsets, rec["beats"], np.asarray(rec["velocity"], np.float64))
            for name in ("density", "low", "high", "loudness", "key"):
                getattr(out, name)[a:b] = getattr(w, name)
        return out

    return split.table("controls", make)
