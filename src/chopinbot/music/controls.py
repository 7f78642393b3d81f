"""The composer's controls, measured: density, register, loudness and key of a window of music.

A model with controls (``ModelConfig.controls``, :class:`~chopinbot.dataset.inputs.ControlBlock`)
reads, at every state, the values of the music *about to be played*: the
window of ``WINDOW_BEATS`` beats that starts with the state.  In training the
values are measured from the piece (:func:`window_controls`), so the model
learns what a dense, a high, a loud or a C-major passage does next; when
composing they are the user's requests (:class:`Controls`), held at every
state, and the model composes the music that fits them, as Performance RNN
does with note density and a pitch-class histogram.

Each value may be absent (a control not asked for, or one a window cannot
give: a window without notes has no register, a file without dynamics no
loudness); the model reads a "present" bit beside each, and training hides
each control from a share of its chunks so the model also composes without it.

Values are in the model's frame (every piece transposed to C major or A
minor) and in beats; :func:`requested_controls` converts what a user asks
(notes per second, MIDI pitches of the output key, dynamic marks, the key)
into them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chopinbot.constants import LOWEST_PITCH, N_KEYS

# The window a control describes: two bars of 4/4, long enough to hold a phrase's texture and short enough
# that a piece's sections (a quiet middle, a dense coda) differ in it.
WINDOW_BEATS = 8.0
# A window covering less than this (the last beats of a piece) describes too little to be trusted: absent.
MIN_WINDOW_BEATS = 2.0
# Dynamic marks -> mean velocity of the struck notes.  Chosen from the performed Chopin pieces' 8-beat
# windows (their 10th, 30th, 50th, 70th and 90th percentiles; see
# scripts/measure_controls.py), so that each mark is a level the corpus actually plays at.
LOUDNESS_LEVELS: dict[str, int] = {"pp": 35, "p": 44, "mf": 51, "f": 62, "ff": 74}
N_CONTROLS = 4  # density, register, loudness, key: each with its present bit
# What the LSTM reads: density, register low and high, loudness, the 12 pitch-class shares, 4 present bits.
CONTROL_WIDTH = 1 + 2 + 1 + 12 + N_CONTROLS
KEY_SHARES = slice(4, 16)  # where the pitch-class shares sit among those columns
PRESENT = slice(16, 16 + N_CONTROLS)  # the present bits, in the order density, register, loudness, key
KEY_PRESENT = PRESENT.start + 3
# The pitch-class shares of a window of a piece in C major and in A minor (the model's frame): the mean over
# the 8-beat windows of the bundled Chopin corpus's segments in each mode (scripts/measure_controls.py).
# "Stay in the key" is asking for these.
MAJOR_PROFILE = (0.157, 0.021, 0.111, 0.03, 0.131, 0.091, 0.036, 0.174, 0.035, 0.099, 0.026, 0.089)
MINOR_PROFILE = (0.115, 0.031, 0.101, 0.036, 0.173, 0.093, 0.036, 0.07, 0.056, 0.151, 0.034, 0.104)


# (88, 12): key index -> its pitch class (C = 0), for summing strikes by pitch class
_PITCH_CLASS = (((np.arange(N_KEYS) + LOWEST_PITCH) % 12)[:, None] == np.arange(12)[None, :]).astype(np.int32)


@dataclass(frozen=True)
class Controls:
    """Control values in the model's frame; None = absent (not steered)."""

    density: float | None = None  # struck notes per beat
    register: tuple[int, int] | None = None  # lowest and highest key index (0..87) struck
    loudness: float | None = None  # mean velocity of the struck notes, 1..127
    key: tuple[float, ...] | None = None  # the 12 pitch-class shares of the struck notes (C first), summing to 1

    def __post_init__(self) -> None:
        if self.register is not None:
            lo, hi = self.register
            if not (0 <= lo <= hi < N_KEYS):
                raise ValueError(f"register {self.register} is not a range of key indices 0..87")
        if self.key is not None and len(self.key) != 12:
            raise ValueError("key needs 12 pitch-class shares")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.density, self.register, self.loudness, self.key))


@dataclass
class WindowControls:
    """Control values of many windows (one per state): arrays, with NaN / -1 where absent."""

    density: np.ndarray  # (n,) notes per beat; NaN absent
    low: np.ndarray  # (n,) key index; -1 absent
    high: np.ndarray  # (n,)
    loudness: np.ndarray  # (n,) mean velocity; NaN absent
    key: np.ndarray  # (n, 12) shares; NaN rows absent

    def __len__(self) -> int:
        return len(self.density)

    def take(self, index: np.ndarray) -> WindowControls:
        return WindowControls(self.density[index], self.low[index], self.high[index], self.loudness[index],
                              self.key[index])

    @staticmethod
    def constant(c: Controls, n: int) -> WindowControls:
        """``c`` at each of ``n`` states."""
        lo, hi = c.register if c.register is not None else (-1, -1)
        return WindowControls(np.full(n, np.nan if c.density is None else c.density),
                              np.full(n, lo, np.int16), np.full(n, hi, np.int16),
                              np.full(n, np.nan if c.loudness is None else c.loudness),
                              np.tile(np.asarray(c.key if c.key is not None else [np.nan] * 12, np.float64), (n, 1)))

    def at(self, i: int) -> Controls:
        """The values of window ``i`` as :class:`Controls`."""
        k = self.key[i]
        return Controls(None if np.isnan(self.density[i]) else float(self.density[i]),
                        None if self.low[i] < 0 else (int(self.low[i]), int(self.high[i])),
                        None if np.isnan(self.loudness[i]) else float(self.loudness[i]),
                        None if np.isnan(k).any() else tuple(float(v) for v in k))


def window_controls(onsets: np.ndarray, beats: np.ndarray, velocity: np.ndarray | None = None,
                    window: float = WINDOW_BEATS) -> WindowControls:
    """The controls of the window starting at each of ``n`` states ((n, 88) onsets, (n,) beats and
    velocities of their struck keys, 0 = none or unknown): the states starting within ``window`` beats of it."""
    onsets = np.asarray(onsets, bool)
    n = len(onsets)
    beats = np.asarray(beats, np.float64)
    start = np.concatenate([[0.0], np.cumsum(beats)])  # (n+1,): each state's start, then the end
    end = np.searchsorted(start[:n], start[:n] + window - 1e-9, side="left")  # one past the window's last state
    covered = np.minimum(start[end] if n else start[:0], start[:n] + window) - start[:n]
    counts = np.zeros((n + 1, N_KEYS), np.int32)
    np.cumsum(onsets, axis=0, out=counts[1:])
    per_key = counts[end] - counts[:n]  # (n, 88) strikes of each key in the window
    total = per_key.sum(1)
    ok = (covered >= MIN_WINDOW_BEATS - 1e-9) & (total > 0)
    density = np.where(ok, total / np.maximum(covered, 1e-9), np.nan)
    struck = per_key > 0
    low = np.where(ok, struck.argmax(1), -1).astype(np.int16)
    high = np.where(ok, N_KEYS - 1 - struck[:, ::-1].argmax(1), -1).astype(np.int16)
    pc = per_key @ _PITCH_CLASS  # (n, 12) strikes of each pitch class
    key = np.where(ok[:, None], pc / np.maximum(total, 1)[:, None], np.nan)
    if velocity is None:
        loud = np.full(n, np.nan)
    else:
        v = np.asarray(velocity, np.float64)
        n_struck = onsets.sum(1)
        vsum = np.concatenate([[0.0], np.cumsum(v * n_struck)])
        known = np.concatenate([[0], np.cumsum((v > 0) * n_struck)])
        vs, kn = vsum[end] - vsum[:n], known[end] - known[:n]
        loud = np.where(ok & (kn > 0), vs / np.maximum(kn, 1), np.nan)
    return WindowControls(density, low, high, loud, key)


def control_features(w: WindowControls, shifts: np.ndarray | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The LSTM columns (n, CONTROL_WIDTH) and the note head's per-key columns (n, 2 * 88) of windows
    ``w``, transposed by ``shifts`` semitones (per window, or one for all; keys moved off the
    keyboard clip to its ends).

    LSTM: log-density, register low and high (0..1), loudness (0..1), the pitch-class shares,
    then a present bit per control (absent values read 0).  Per key: +1 inside the register,
    -1 outside (0 absent); the share of its pitch class, x 12 (1 = an even share; 0 absent)."""
    n = len(w)
    shifts = np.broadcast_to(np.asarray(shifts, np.int64), (n,))
    has_d, has_r = ~np.isnan(w.density), w.low >= 0
    has_l, has_k = ~np.isnan(w.loudness), ~np.isnan(w.key).any(1)
    lo = np.clip(w.low.astype(np.int64) + shifts, 0, N_KEYS - 1)
    hi = np.clip(w.high.astype(np.int64) + shifts, 0, N_KEYS - 1)
    rows = np.arange(n)[:, None]
    key = np.where(has_k[:, None], w.key, 0.0)[rows, (np.arange(12)[None, :] - shifts[:, None]) % 12]
    g = np.zeros((n, CONTROL_WIDTH), np.float32)
    g[:, 0] = np.where(has_d, density_feature(np.nan_to_num(w.density)), 0.0)
    g[:, 1] = np.where(has_r, lo / (N_KEYS - 1), 0.0)
    g[:, 2] = np.where(has_r, hi / (N_KEYS - 1), 0.0)
    g[:, 3] = np.where(has_l, np.nan_to_num(w.loudness) / 127.0, 0.0)
    g[:, KEY_SHARES] = key
    g[:, PRESENT] = np.stack([has_d, has_r, has_l, has_k], 1)
    k = np.arange(N_KEYS)[None, :]
    inside = np.where(has_r[:, None], np.where((k >= lo[:, None]) & (k <= hi[:, None]), 1.0, -1.0), 0.0)
    share = key[:, (np.arange(N_KEYS) + LOWEST_PITCH) % 12] * 12.0
    return g, np.concatenate([inside, share], 1).astype(np.float32)


def passage_controls(onsets: np.ndarray, beats: np.ndarray, velocity: np.ndarray | None = None,
                     last_beats: float = WINDOW_BEATS) -> Controls:
    """The controls of the last ``last_beats`` beats of a passage (the whole of a shorter one):
    what a continuation that keeps the passage's character asks for."""
    b = np.asarray(beats, np.float64)
    if len(b) == 0:
        return Controls()
    from_end = np.cumsum(b[::-1])[::-1]  # beats from each state's start to the passage's end (decreasing)
    first = max(int(np.searchsorted(-from_end, -last_beats, side="right")) - 1, 0)  # the last that far from the end
    v = None if velocity is None else np.asarray(velocity)[first:]
    return window_controls(np.asarray(onsets)[first:], b[first:], v, window=float(from_end[first]) + 1.0).at(0)


def density_feature(notes_per_beat: np.ndarray | float) -> np.ndarray:
    """The LSTM's density column: log(1 + notes per beat) / 2 (the corpus's windows: about 0.3 to 1.2)."""
    return np.log1p(notes_per_beat) / 2.0


def hide(w: WindowControls, which: np.ndarray) -> WindowControls:
    """``w`` with control ``c`` absent where ``which[:, c]`` (n, N_CONTROLS) bool (density, register,
    loudness, key)."""
    return WindowControls(np.where(which[:, 0], np.nan, w.density), np.where(which[:, 1], -1, w.low).astype(np.int16),
                          np.where(which[:, 1], -1, w.high).astype(np.int16), np.where(which[:, 2], np.nan, w.loudness),
                          np.where(which[:, 3, None], np.nan, w.key))


def key_profile(minor: bool) -> tuple[float, ...]:
    """The pitch-class shares that ask for the home key (C major, or A minor) of the model's frame."""
    return MINOR_PROFILE if minor else MAJOR_PROFILE


def loudness_velocity(level: str) -> int:
    """The mean velocity a dynamic mark (pp, p, mf, f, ff) asks for."""
    if level not in LOUDNESS_LEVELS:
        raise ValueError(f"loudness must be one of {', '.join(LOUDNESS_LEVELS)}, got {level!r}")
    return LOUDNESS_LEVELS[level]
