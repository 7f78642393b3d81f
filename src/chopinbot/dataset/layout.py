"""Where the model's inputs sit: the registry of optional input blocks and the row layout.

The blocks themselves (what each input is and how it is built and tracked)
are in :mod:`chopinbot.dataset.inputs`.  Here: which optional blocks a model
can have, in row order (:data:`OPTIONAL_BLOCKS`, each switched on by a
:class:`~chopinbot.model.network.ModelConfig` flag), the blocks of a model
(:func:`input_blocks`) and where each block's columns sit in an input row
(:class:`InputLayout`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from chopinbot.constants import N_KEYS
from chopinbot.dataset.conditioning import ControlBlock, StyleBlock
from chopinbot.dataset.features import DurationVocab
from chopinbot.dataset.inputs import (
    BaseBlock,
    BatchStates,
    Columns,
    InputBlock,
    LoudnessBlock,
    RecencyBlock,
    RepeatsBlock,
)


@dataclass(frozen=True)
class BlockContext:
    """What the blocks of a model are made for: its duration vocabulary, grid and styles."""

    vocab: DurationVocab
    grid_per_beat: int
    styles: tuple[str, ...] = ()
    style: str | None = None  # the style sequences and composing read (StyleBlock)
    style_heads: bool = False  # StyleBlock.to_heads


@dataclass(frozen=True)
class OptionalBlock:
    """An optional input block, switched on by a ModelConfig field."""

    flag: str  # the ModelConfig field (a bool) that switches it on
    make: Callable[[BlockContext], InputBlock]  # the block, for a model's context
    needs_note_head: bool = True  # off in a model without the note head (only it reads the block's columns)
    # `chopinbot train --<flag with dashes> on|off` says this (None: no flag; the data decides)
    help: str | None = None


OPTIONAL_BLOCKS: tuple[OptionalBlock, ...] = (  # in row order, after the base block
    OptionalBlock("key_recency", lambda ctx: RecencyBlock(),
                  help="the note head also reads each key's beats since last struck and previous interval"),
    OptionalBlock("repeats", lambda ctx: RepeatsBlock("exact", ctx.vocab, ctx.grid_per_beat),
                  help="read the state that followed the last occurrence of the passage just heard"),
    OptionalBlock("repeats_transposed", lambda ctx: RepeatsBlock("transposed", ctx.vocab, ctx.grid_per_beat),
                  help="... and that of its last occurrence at another pitch"),
    OptionalBlock("loudness", lambda ctx: LoudnessBlock(), needs_note_head=False,
                  help="read each state's loudness and predict the next one's velocity class"),
    OptionalBlock("style_input", lambda ctx: StyleBlock(ctx.styles, ctx.style, to_heads=ctx.style_heads),
                  needs_note_head=False),  # switched by --styles (auto: when the data has several composers)
    OptionalBlock("controls", lambda ctx: ControlBlock(),
                  help="read the density, register, loudness and key of the window ahead, so that generate's "
                       "--density, --register, --loudness and --key steer the music"),
)


def input_blocks(vocab: DurationVocab, grid_per_beat: int, on: Collection[str] = (),
                 styles: tuple[str, ...] = (), style: str | None = None,
                 style_heads: bool = False) -> tuple[InputBlock, ...]:
    """A model's blocks, in row order: the base block and the optional blocks whose flags are ``on``
    (``styles`` and ``style``: those of the style block)."""
    ctx = BlockContext(vocab, grid_per_beat, tuple(styles), style, style_heads)
    return (BaseBlock(vocab, grid_per_beat),) + tuple(b.make(ctx) for b in OPTIONAL_BLOCKS if b.flag in on)


# --------------------------------------------------------------------------- the row


class InputLayout:
    """Where each block's columns sit in an input row: every block's LSTM
    columns in block order (the first ``lstm`` columns, what the LSTM reads),
    then every block's note-head columns in block order."""

    def __init__(self, blocks: tuple[InputBlock, ...]) -> None:
        self.blocks = tuple(blocks)
        lstm = np.cumsum([0] + [b.lstm_width for b in self.blocks])
        self.lstm = int(lstm[-1])
        note = self.lstm + np.cumsum([0] + [b.note_width for b in self.blocks])
        self.width = int(note[-1])
        self._starts = [{"lstm": int(a), "note": int(n)} for a, n in zip(lstm[:-1], note[:-1])]

    def lstm_columns(self, i: int) -> slice:
        """Block ``i``'s LSTM columns."""
        a = self._starts[i]["lstm"]
        return slice(a, a + self.blocks[i].lstm_width)

    def style_columns(self) -> slice:
        """Where the style one-hot (:class:`StyleBlock`) sits in a row."""
        return self.lstm_columns([isinstance(b, StyleBlock) for b in self.blocks].index(True))

    def note_columns(self, i: int) -> slice:
        """Block ``i``'s note-head columns."""
        a = self._starts[i]["note"]
        return slice(a, a + self.blocks[i].note_width)

    def key_index(self) -> np.ndarray:
        """(88, per-key values) int64: the column of the row each key's value is
        read from; ``row[..., key_index]`` is what the note head reads per key."""
        cols = [self._starts[i][c.part] + c.at + (np.arange(N_KEYS) if c.per_key else np.zeros(N_KEYS, np.int64))
                for i, b in enumerate(self.blocks) for c in b.key_columns()]
        return np.stack(cols, 1).astype(np.int64)

    def duration_terms(self) -> list[tuple[int, int, int | None]]:
        """``(start, stop, scale)`` in the row, in order: the duration head reads
        ``row[..., start:stop]``, times ``row[..., scale]`` unless that is None."""
        out = []
        for i, b in enumerate(self.blocks):
            for d in b.duration_columns():
                a = self._starts[i][d.part]
                out.append((a + d.start, a + d.stop, None if d.scale is None else a + d.scale))
        return out

    @property
    def per_key(self) -> int:
        """Values the note head reads per key (besides the neighbourhood)."""
        return sum(len(b.key_columns()) for b in self.blocks)

    @property
    def duration_width(self) -> int:
        """Values the duration head reads of the blocks."""
        return sum(stop - start for start, stop, _ in self.duration_terms())

    def rows(self, columns: list[Columns]) -> np.ndarray:
        """The float32 rows of each block's columns (in block order)."""
        return np.concatenate([p for lstm, _ in columns for p in lstm] + [p for _, note in columns for p in note],
                              axis=-1, dtype=np.float32)

    def sequence_rows(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                      start_beat: float = 0.0, velocity: np.ndarray | None = None) -> np.ndarray:
        """(n, width): the rows of a whole sequence heard from its first state,
        starting ``start_beat`` into the metre (what a model reads of a seed or a piece)."""
        return self.rows([b.sequence_columns(keys, onsets, beats, start_beat, velocity) for b in self.blocks])

    def batch_rows(self, batch: BatchStates) -> np.ndarray:
        """(B, T, width): the rows of a training batch's input states."""
        return self.rows([b.batch_columns(batch) for b in self.blocks]).reshape(batch.rows.shape + (self.width,))

