"""States -> model inputs and targets.

A state enters the network as 88 key bits, 88 onset bits, a one-hot of its
rhythmic value (a class of the duration vocabulary) and its log-duration.
The *duration vocabulary* is the set of rhythmic values (on the 1/48-beat
grid, which holds triplets, 32nds and 64ths) seen at least ``min_count``
times in the training pieces; a rarer value is folded into the nearest kept
one in log space (a 0.98-beat state is closer to 1 beat than to 0.75).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import GRID_PER_BEAT, N_KEYS

DURATION_MIN_COUNT = 10  # below ~10 examples a class cannot be learned; fold it


@dataclass(frozen=True)
class DurationVocab:
    values: tuple[float, ...]  # beats, ascending

    @classmethod
    def from_units(
        cls, units: np.ndarray, grid_per_beat: int = GRID_PER_BEAT, min_count: int = DURATION_MIN_COUNT
    ) -> "DurationVocab":
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


def input_dim(n_classes: int) -> int:
    return 2 * N_KEYS + n_classes + 1


def state_features(keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, vocab: DurationVocab) -> np.ndarray:
    """(n, 88+88+V+1) float32 inputs for ``n`` states."""
    n = keys.shape[0]
    x = np.zeros((n, input_dim(len(vocab))), np.float32)
    x[:, :N_KEYS] = keys
    x[:, N_KEYS : 2 * N_KEYS] = onsets
    x[np.arange(n), 2 * N_KEYS + vocab.index(beats)] = 1.0
    # log2 of the length, scaled to about [-1, 1] for 1/16 .. 16 beats
    x[:, -1] = np.log2(np.maximum(beats, 1e-3)) / 4.0
    return x
