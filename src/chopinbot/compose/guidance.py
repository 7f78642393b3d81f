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
"""

from __future__ import annotations

import numpy as np

from chopinbot.compose.stepper import ModuleStepper, NumpyStepper, StepOutputs
from chopinbot.dataset.conditioning import ControlBlock
from chopinbot.dataset.layout import InputLayout


def key_request_columns(layout: InputLayout) -> np.ndarray:
    """Where the key asked for sits in a row of ``layout`` (a model with controls): the pitch-class
    shares and their present bit for the LSTM, each key's share for the note head.  All 0 is the
    key not asked for, as training hid it from a quarter of its chunks."""
    i = [isinstance(b, ControlBlock) for b in layout.blocks].index(True)
    lstm, note = ControlBlock.key_parts()
    return np.concatenate([layout.lstm_columns(i).start + lstm, layout.note_columns(i).start + note])


class GuidedStepper:
    """A stepper whose outputs are guided away from those without the style (see the module docstring)."""

    def __init__(self, inner: NumpyStepper | ModuleStepper, style_columns: slice | np.ndarray, weight: float) -> None:
        """``inner``: a stepper for twice the batch; ``style_columns``: where the style one-hot sits in
        an input row (or any columns whose 0 means "not asked"); ``weight``: the guidance weight (0: none)."""
        self.inner, self.columns, self.weight = inner, style_columns, weight
        self.batch = 0

    def _pair(self, x: np.ndarray) -> np.ndarray:
        """The rows (B, ...) as they are, then without the style: (2B, ...)."""
        bare = x.copy()
        bare[..., self.columns] = 0.0
        return np.concatenate([x, bare], 0)

    def _mix(self, a: np.ndarray | None) -> np.ndarray | None:
        """(2n, ...) outputs, styled then bare -> the guided (n, ...)."""
        if a is None:
            return None
        n = len(a) // 2
        styled, bare = a[:n], a[n:]
        return styled + self.weight * (styled - bare)

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
        return self._mix(k), self._mix(o)
