"""Style prefixes: training chunks that begin with another composer's passage.

`generate --style mozart` from a Chopin seed asks the model to continue one
composer's music in another's style, and nothing in training ever asked that:
every chunk's style is the composer of the very music it holds, so the passage
tells the model all the style column would, and the column is nearly ignored
(docs/corpus.md: two styles from the same seeds were told apart 60 % of the
time).  Here a share of the training batches is preceded by ``PREFIX_STATES``
states of *another* composer's piece, read with the chunk's own style and
with no loss on them: to predict the chunk's music after a foreign passage,
the model has to take the style from the column.
"""

from __future__ import annotations

import numpy as np
import torch

from chopinbot.dataset.batches import Chunk, SplitData
from chopinbot.model.loss import Targets

PREFIX_STATES = 32  # states of the foreign passage before a chunk


def prefix_chunks(split: SplitData, chunks: list[Chunk], rng: np.random.Generator,
                  length: int = PREFIX_STATES) -> list[Chunk] | None:
    """For each chunk, ``length`` consecutive inputs from a piece by another composer (a random
    segment of the split long enough, a random place in it); None when no chunk has one (a
    split of a single composer)."""
    seg_starts = np.array([a for a, _ in split.segments])
    composers = np.array(split.composers, dtype=object)
    long_enough = np.array([b - a - 1 >= length for a, b in split.segments])
    out = []
    for c in chunks:
        own = composers[np.searchsorted(seg_starts, c.start, side="right") - 1]
        pool = np.flatnonzero(long_enough & (composers != own))
        if not len(pool):
            return None
        a, b = split.segments[int(rng.choice(pool))]
        out.append(Chunk(a + int(rng.integers(0, b - a - length)), length))
    return out


def with_prefix(prefix_x: torch.Tensor, prefix_t: Targets, x: torch.Tensor, t: Targets,
                style_columns: slice) -> tuple[torch.Tensor, Targets]:
    """The prefix batch (B, P, F) before the chunks' batch (B, T, F): the prefix reads each chunk's
    style (its ``style_columns``, as the chunk's first row has them: hidden chunks stay hidden),
    and nothing is learnt from its predictions."""
    prefix_x = prefix_x.clone()
    prefix_x[:, :, style_columns] = x[:, :1, style_columns]
    cat = lambda a, b: torch.cat([a, b], 1)  # noqa: E731
    targets = Targets(cat(prefix_t.keys, t.keys), cat(prefix_t.onsets, t.onsets),
                      cat(prefix_t.dur_class, t.dur_class), cat(prefix_t.dur_beats, t.dur_beats),
                      cat(torch.zeros_like(prefix_t.mask), t.mask),
                      None if t.vel_class is None else cat(prefix_t.vel_class, t.vel_class))
    return cat(prefix_x, x), targets
