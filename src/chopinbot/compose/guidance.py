"""Guidance: composing further in a style, or a key, than the model's own prediction goes.

A model with a style input learns the style from its one-hot column, but the
passage it has heard already tells it most of what a style changes, so the
column barely moves its predictions (docs/corpus.md: key NLL within 0.005
nats whichever style a piece is read as, and pieces in two styles told apart
only 62 % of the time).  Classifier-free guidance (Ho & Salimans 2022, used
for music by e.g. MusicGen) amplifies what the column does: each step is
computed twice, with the style and with the style columns at 0 (no style),
and the sampler reads ``styled + weight * (styled - unstyled)`` for every
output (keys, onsets, durations, loudness, and a joint model's conditionals
given the keys below).  Weight 0 is the model's own prediction.

:class:`GuidedStepper` wraps any stepper (:mod:`chopinbot.compose.stepper`)
run at twice the batch; the sampler sees a stepper of the original batch.

The same works for any input whose 0 means "not asked", and the key of a
model with controls is one (training hid it from a quarter of its chunks, so
the model knows music without it): ``key_guidance`` keeps the key asked for
far better than the key input alone (docs/controls.md).  Guidances nest,
each doubling the rows stepped.

A strong key guidance keeps the key but flattens the music (fewer repeated
figures, more diatonic), and a weak one lets some pieces wander.  So the
weight can follow the music: :class:`KeyDrift` watches the key of the last
few beats composed, and a piece that has left the key (its key more than a
fifth from home) is guided at ``GenerateConfig.key_guidance_drift`` instead
of ``key_guidance`` until it is back.
"""

from __future__ import annotations

import numpy as np

from chopinbot.compose.stepper import ModuleStepper, NumpyStepper, StepOutputs
from chopinbot.constants import LOWEST_PITCH, N_KEYS
from chopinbot.dataset.conditioning import ControlBlock
from chopinbot.dataset.layout import InputLayout
from chopinbot.music.keys import ALL_KEYS, Key, histogram_key_correlations, within_a_fifth

# The style guidance when another style than the model's own is asked for (GenerateConfig.style_guidance None);
# its own (Chopin) is not guided: guided at 4 the shipped Transformer's Chopin was told from real Chopin more
# often (valid realism 0.824 against 0.723).  Chosen on the valid seeds of the style suite (1-6 draws a weight):
# the Mozart style nearer real Mozart than real Chopin by 0.044 +- 0.012 at 1, 0.005 at 2, -0.029 at 4 (it was 4,
# the LSTM's choice; beyond 2 every style moves away from every composer); docs/training-history.md
STYLE_GUIDANCE = 1.0


def key_request_columns(layout: InputLayout) -> np.ndarray:
    """Where the key asked for sits in a row of ``layout`` (a model with controls): the pitch-class
    shares and their present bit for the LSTM, each key's share for the note head.  All 0 is the
    key not asked for, as training hid it from a quarter of its chunks."""
    i = [isinstance(b, ControlBlock) for b in layout.blocks].index(True)
    lstm, note = ControlBlock.key_parts()
    return np.concatenate([layout.lstm_columns(i).start + lstm, layout.note_columns(i).start + note])


class GuidedStepper:
    """A stepper whose outputs are guided away from those without the style (see the module docstring)."""

    def __init__(self, inner: NumpyStepper | ModuleStepper, style_columns: slice | np.ndarray, weight: float,
                 name: str = "style") -> None:
        """``inner``: a stepper for twice the batch; ``style_columns``: where the style one-hot sits in
        an input row (or any columns whose 0 means "not asked"); ``weight``: the guidance weight (0: none);
        ``name``: what is guided ("style" or "key")."""
        self.inner, self.columns, self.name = inner, style_columns, name
        self.weight: float | np.ndarray = weight  # or (batch,): a weight per piece (see KeyDrift)
        self.batch = 0

    def _pair(self, x: np.ndarray) -> np.ndarray:
        """The rows (B, ...) as they are, then without the style: (2B, ...)."""
        bare = x.copy()
        bare[..., self.columns] = 0.0
        return np.concatenate([x, bare], 0)

    def _mix(self, a: np.ndarray | None, rows: np.ndarray | None = None) -> np.ndarray | None:
        """(2n, ...) outputs, styled then bare -> the guided (n, ...); ``rows``: which pieces the n are."""
        if a is None:
            return None
        n = len(a) // 2
        styled, bare = a[:n], a[n:]
        w = self.weight
        if np.ndim(w):
            w = np.asarray(w)[slice(None) if rows is None else rows].reshape((n,) + (1,) * (a.ndim - 1))
        return styled + w * (styled - bare)

    def _outputs(self, outs: StepOutputs) -> StepOutputs:
        return tuple(self._mix(o) for o in outs)  # type: ignore[return-value]

    @property
    def loudness(self) -> np.ndarray | None:
        return self._mix(self.inner.loudness)

    def start(self, x_seed: np.ndarray) -> StepOutputs:
        self.batch = len(x_seed)
        return self._outputs(self.inner.start(self._pair(x_seed)))

    def step(self, x: np.ndarray) -> StepOutputs:
        return self._outputs(self.inner.step(self._pair(x)))

    def rerun(self, window: np.ndarray) -> StepOutputs:
        return self._outputs(self.inner.rerun(self._pair(window)))

    def conditionals(self, keys: np.ndarray, onsets: np.ndarray, rows: np.ndarray | slice = slice(None)
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        rows = np.arange(self.batch)[rows]
        k, o = self.inner.conditionals(np.concatenate([keys, keys]), np.concatenate([onsets, onsets]),
                                       np.concatenate([rows, rows + self.batch]))
        return self._mix(k, rows), self._mix(o, rows)


class KeyDrift:
    """The key guidance's weight for each piece: ``weight`` while the last few beats are in the key
    asked, ``drift_weight`` while they have left it.

    The music heard is kept as a pitch-class histogram that fades with a half-life of
    ``half_life`` beats (the seed and its context start it); a piece has drifted when the key
    that best fits it (Krumhansl-Schmuckler, of all 24) is more than a fifth from ``home``,
    as the key-hold measure of the evaluation judges a 20-s excerpt."""

    def __init__(self, home: Key, keys: np.ndarray, beats: np.ndarray, weight: float = 0.0,
                 drift_weight: float = 0.0, half_life: float = 8.0) -> None:
        """``keys`` (B, n, 88), ``beats`` (B, n): the seeds, in the frame where ``home`` is the key."""
        self.weight, self.drift_weight, self.half_life = weight, drift_weight, half_life
        self.near = np.array([within_a_fifth(k, home) for k in ALL_KEYS])  # (24,): the keys that count as home
        self.fold = np.eye(12)[(np.arange(N_KEYS) + LOWEST_PITCH) % 12]  # (88, 12): key -> its pitch class
        beats = np.asarray(beats, np.float64)
        after = beats[:, ::-1].cumsum(1)[:, ::-1] - beats  # beats heard since each seed state ended
        faded = beats * 0.5 ** (after / half_life)
        self.hist = np.einsum("bn,bnk,kc->bc", faded, keys.astype(np.float64), self.fold)

    def update(self, keys: np.ndarray, beats: np.ndarray) -> None:
        """One more state per piece: its sounding keys (B, 88) for ``beats`` (B,)."""
        beats = np.asarray(beats, np.float64)
        self.hist = self.hist * 0.5 ** (beats / self.half_life)[:, None] + (keys * beats[:, None]) @ self.fold

    @property
    def drifted(self) -> np.ndarray:
        """(B,) bool: the piece's recent music is in a key more than a fifth from home."""
        best = histogram_key_correlations(self.hist).argmax(-1)
        return ~self.near[best] & (self.hist.sum(-1) > 0)

    @property
    def weights(self) -> np.ndarray:
        """(B,) the key guidance's weight for each piece now."""
        return np.where(self.drifted, self.drift_weight, self.weight)
