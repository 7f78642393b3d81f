"""The repeats input for frame models: what followed the last time the passage just heard occurred.

For every frame ``x_t`` of a piece the model is told, per kind of match
(``exact``, ``transposed``), the frame that followed the most recent earlier
occurrence of the longest passage (up to ``MAX_MATCH`` frames) ending with
``x_{t-1}``, and that passage's length. It is the lookup of
:mod:`chopinbot.music.repeats` (the same code), applied to 0/1 frames: a frame
is a state with no onsets and a constant length, and a transposed match
compares frames by their shape above their lowest key (and the step of the
lowest key from the frame before), moving the continuation by the distance
between the two passages.

Only frames ``x_0 .. x_{t-1}`` are read for ``x_t``: the lookup runs over the
sequence of *previous* frames (an empty frame, then ``x_0 .. x_{n-2}``), in
which a match always ends before the frame it is looked up for, so its
continuation is at most ``x_{t-1}`` itself.
"""

from __future__ import annotations

import numpy as np

from chopinbot.music.repeats import KINDS, MAX_MATCH, find_continuations, match_length_feature, shift_keys

N_KEYS = 88
REPEAT_KINDS = KINDS  # ("exact", "transposed"): one input block each, in this order
REPEAT_WIDTH = N_KEYS + 1  # a block: the continuation frame's 88 keys, then the match-length feature


def repeat_inputs(prev: np.ndarray) -> np.ndarray:
    """(n, len(REPEAT_KINDS), 89) float32 repeats input for a piece whose previous frames are ``prev``.

    ``prev`` is (n, 88) 0/1: row t is the frame before ``x_t`` (row 0 empty, see
    :func:`chopinbot_tools.pianomidi.previous_frames`). Row t of the result is
    computed from rows ``0..t`` of ``prev`` only: per kind, the continuation's
    keys (all 0 where nothing matched) and ``log2(1 + length) / log2(1 + MAX_MATCH)``.
    """
    keys = np.asarray(prev).astype(bool)
    n = len(keys)
    out = np.zeros((n, len(REPEAT_KINDS), REPEAT_WIDTH), np.float32)
    if n == 0:
        return out
    onsets = np.zeros_like(keys)  # frames carry no onsets: only which keys sound
    beats = np.ones(n)  # frames are equally long
    for i, kind in enumerate(REPEAT_KINDS):
        cont, length, shift = find_continuations(kind, keys, onsets, beats)
        found = length > 0
        frames = shift_keys(keys[np.maximum(cont, 0)], shift) & found[:, None]
        out[:, i, :N_KEYS] = frames
        out[:, i, N_KEYS] = match_length_feature(length, MAX_MATCH)
    return out


def transpose_repeats(rep: np.ndarray, shift: int) -> np.ndarray:
    """The repeats input of a piece transposed by ``shift`` semitones, from the untransposed one.

    Matches do not depend on pitch (exact matches move with the piece, transposed ones compare
    shapes), so only the continuation frames move; keys pushed off the keyboard are dropped.
    """
    if shift == 0:
        return rep
    out = rep.copy()
    keys = rep[..., :N_KEYS].reshape(-1, N_KEYS).astype(bool)
    out[..., :N_KEYS] = shift_keys(keys, np.full(len(keys), shift)).reshape(rep[..., :N_KEYS].shape)
    return out


class RepeatsBaseline:
    """A baseline from the repeats input alone: P(key on) is looked up in a table fitted on the
    training frames, by five bits -- the key sounded in the previous frame; there is an exact match;
    the key sounds in its continuation; there is a transposed match; the key sounds in its
    continuation -- add-one smoothed (32 numbers). It says how much the lookup carries by itself."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    @staticmethod
    def codes(prev: np.ndarray) -> np.ndarray:
        """(n, 88) table index of every key of every frame, from the previous frames ``prev``."""
        rep = repeat_inputs(prev)
        e, t = REPEAT_KINDS.index("exact"), REPEAT_KINDS.index("transposed")
        matched = rep[:, :, N_KEYS:] > 0  # (n, kinds, 1)
        return (np.asarray(prev, np.int64) + 2 * matched[:, e] + 4 * rep[:, e, :N_KEYS].astype(np.int64)
                + 8 * matched[:, t] + 16 * rep[:, t, :N_KEYS].astype(np.int64))

    @classmethod
    def fit(cls, prevs: list[np.ndarray], pieces: list[np.ndarray]) -> RepeatsBaseline:
        on = np.ones(32)
        total = np.full(32, 2.0)
        for prev, x in zip(prevs, pieces):
            c = cls.codes(prev).ravel()
            on += np.bincount(c, weights=np.asarray(x, np.float64).ravel(), minlength=32)
            total += np.bincount(c, minlength=32)
        return cls(on / total)

    def probs(self, prev: np.ndarray) -> np.ndarray:
        return self.table[self.codes(prev)]
