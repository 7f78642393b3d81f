"""The metre of a piece: its time signature(s) and where its first state lies in the bar.

Our states know the beat (a quarter note, ``GRID_PER_BEAT`` = 48 grid steps) but not the bar.
:class:`Metre` says the rest, in *score time* (quarter notes from the first bar line): the time
signatures, each from the score time where it starts, and ``offset``, the score time of the
first state.  A continuation that starts mid-bar has ``offset`` > 0; the score then opens with
a pickup bar (see :meth:`Metre.pickup`), and the MIDI with the same pickup bar as a short time
signature, so that the MIDI's bar lines and the score's agree.

Where the source does not say the metre, :func:`infer_metre` chooses among 4/4, 3/4, 2/4 and
6/8 from the music itself:

* the beat's phase: the position within the quarter note where the most weight falls (a state's
  weight grows with the keys it strikes, a bass note struck and the time until the next onset:
  long notes and bass notes fall on beats);
* the bar: for 2, 3 and 4 beats a bar, and each phase, how much more weight the downbeats
  carry than the average beat (bass notes and harmony change on the downbeat); the simpler
  metre wins a near tie (4/4 over 2/4);
* 6/8 instead of 3/4 when the middle of the bar (its fourth eighth) carries more than the
  second and third quarter-note beats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chopinbot.constants import GRID_PER_BEAT, LOWEST_PITCH
from chopinbot.errors import ConfigError
from chopinbot.music.states import States

TIME_SIGNATURES = ((4, 4), (3, 4), (2, 4), (6, 8))  # what inference chooses among
MAX_SIGNATURE_NUMERATOR = 32
BASS_PITCH = 55  # G3: a struck note below it is a bass note, for the accent of a beat
# the weights of a state's onset, for the beat and the bar (tuned on 22 NIFC works outside the check set,
# scripts/score_check.py)
# (the beat's phase takes 0.5 a key, 1.5 a bass, 1 a beat to the next onset: long notes and bass notes fall on beats)
W_KEYS, W_BASS, W_NEW_BASS, W_LENGTH = 0.1, 1.5, 3.0, 0.0
NEAR_TIE = 0.05  # a longer bar must beat a shorter one that divides it by this much (of the mean weight)


@dataclass(frozen=True)
class Metre:
    """Time signatures (score time in quarters, numerator, denominator) and the first state's score time."""

    signatures: tuple[tuple[float, int, int], ...] = ((0.0, 4, 4),)
    offset: float = 0.0  # score time of the first state (0: the music starts on a downbeat)
    # a pickup bar is a whole number of these (quarters; None: half the beat unit, an eighth in x/4, as a
    # score's 1.5-beat pickup needs).  Composed music takes whole quarters, so that its MIDI's quarter grid
    # counted from the file's start is the bars' (what a program that ignores the pickup bar shows)
    pickup_unit: float | None = None

    def __post_init__(self) -> None:
        if not self.signatures or self.signatures[0][0] != 0.0:
            raise ConfigError("a metre needs a time signature at score time 0")
        for _, num, den in self.signatures:
            check_signature(num, den)
        if self.offset < 0:
            raise ConfigError("a metre's offset cannot be negative")

    @property
    def first(self) -> tuple[int, int]:
        return self.signatures[0][1], self.signatures[0][2]

    @property
    def label(self) -> str:
        return f"{self.first[0]}/{self.first[1]}"

    def bar_lines(self, end: float) -> list[float]:
        """Score times of every bar line from 0 to (at least) ``end``, the last one >= ``end``."""
        out, t, i = [0.0], 0.0, 0
        sigs = self.signatures
        while t < end - 1e-9:
            while i + 1 < len(sigs) and sigs[i + 1][0] <= t + 1e-9:
                i += 1
            _, num, den = sigs[i]
            t += num * 4.0 / den
            out.append(t)
        return out

    def signature_at(self, t: float) -> tuple[int, int]:
        cur = self.signatures[0]
        for s in self.signatures:
            if s[0] <= t + 1e-9:
                cur = s
        return cur[1], cur[2]

    @property
    def pickup(self) -> float:
        """Score time where the written music starts: the first bar is a pickup bar from here
        (0: a whole first bar): the last half beat unit (an eighth in x/4) at or before the first state;
        what lies between is a rest shorter than that."""
        unit = self.pickup_unit or 2.0 / self.first[1]  # half the beat unit: an eighth and a quarter in 3/4: 3/8
        return float(np.floor(self.offset / unit + 1e-9) * unit)

    def shifted(self, beats: float) -> Metre:
        """The metre of the same music starting ``beats`` quarters later (a part cut from the front)."""
        bars = self.bar_lines(self.offset + beats)
        start = bars[-2] if len(bars) > 1 and bars[-1] > self.offset + beats + 1e-9 else bars[-1]
        sigs = [(max(0.0, t - start), n, d) for t, n, d in self.signatures]
        # keep the last signature at or before the new bar 0, and the later ones
        kept = [s for s in sigs if s[0] > 0]
        first = self.signature_at(start)
        return Metre(((0.0, *first), *kept), self.offset + beats - start, self.pickup_unit)

    def with_signature(self, num: int, den: int) -> Metre:
        return Metre(((0.0, num, den),), self.offset, self.pickup_unit)


def check_signature(num: int, den: int) -> None:
    if not (1 <= num <= MAX_SIGNATURE_NUMERATOR) or den not in (1, 2, 4, 8, 16, 32):
        raise ConfigError(f"not a time signature: {num}/{den}")


def parse_time_signature(text: str) -> tuple[int, int]:
    """'3/4' -> (3, 4); :class:`ConfigError` for anything else."""
    try:
        num, den = (int(x) for x in str(text).strip().split("/"))
    except ValueError:
        raise ConfigError(f"a time signature looks like 3/4 or 6/8, got {text!r}") from None
    check_signature(num, den)
    return num, den


def _onset_weights(keys: np.ndarray, onsets: np.ndarray, units: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start (grid steps) and weight of every state that strikes a key: the keys struck, the time
    to the next onset, and a new bass (the lowest sounding key, struck, below ``BASS_PITCH`` and
    not the bass before it: harmony changes on strong beats)."""
    starts = np.concatenate([[0], np.cumsum(units)])[:-1]
    struck = onsets.any(axis=1)
    idx = np.flatnonzero(struck)
    if idx.size == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    ends = np.append(starts[idx[1:]], starts[-1] + units[-1])
    ioi = np.minimum(ends - starts[idx], 2 * GRID_PER_BEAT)
    n = onsets[idx].sum(axis=1)
    low_struck = np.argmax(onsets[idx], axis=1) + LOWEST_PITCH
    low_sounding = np.argmax(keys[idx], axis=1) + LOWEST_PITCH
    bass = (low_struck < BASS_PITCH) & (low_struck <= low_sounding)
    prev_bass = np.concatenate([[-1], low_struck[:-1]])
    new_bass = bass & (low_struck != prev_bass)
    beat_w = 0.5 * np.minimum(n, 6) + 1.5 * bass + ioi / GRID_PER_BEAT
    bar_w = W_KEYS * np.minimum(n, 6) + W_BASS * bass + W_NEW_BASS * new_bass + W_LENGTH * ioi / GRID_PER_BEAT
    return starts[idx], beat_w, bar_w


def _beat_phase(t: np.ndarray, w: np.ndarray, grid_phase: int | None = None) -> int:
    """Grid steps after the first state's start where beats fall: where the most weight does (with
    ``grid_phase``: among the steps an even number from it)."""
    if not t.size:
        return 0 if grid_phase is None else int(grid_phase) % 2
    weight = np.bincount(t % GRID_PER_BEAT, weights=w, minlength=GRID_PER_BEAT)
    if grid_phase is not None:
        weight = np.where((np.arange(GRID_PER_BEAT) - grid_phase) % 2 == 0, weight, -1.0)
    return int(np.argmax(weight))


def infer_metre(keys: np.ndarray, onsets: np.ndarray, units: np.ndarray,
                signature: tuple[int, int] | None = None, grid_phase: int | None = None) -> Metre:
    """The metre of states given as keys and onsets (n, 88) and lengths in grid steps (n,); with
    ``signature`` only where the bar lies is inferred.  ``grid_phase``: music composed on the 1/24-beat
    grid from this step (:class:`~chopinbot.compose.processors.NotatableRhythm`): its beats fall an even
    number of steps from it, so that every beat is written exactly."""
    t, w, bar_w = _onset_weights(keys, onsets, np.asarray(units, np.int64))
    G = GRID_PER_BEAT
    if t.size == 0:
        return Metre(((0.0, *(signature or (4, 4))),), (-(grid_phase or 0) % 2) / G)
    phi = _beat_phase(t, w, grid_phase)  # grid steps after the first state's start where beats fall
    on = (t - phi) % G == 0
    beat_idx = (t[on] - phi) // G
    bw = np.bincount(beat_idx - beat_idx.min(), weights=bar_w[on]) if on.any() else np.zeros(1)
    base = beat_idx.min() if on.any() else 0
    mean = bw.mean() if bw.size else 0.0
    candidates = [signature] if signature else [(4, 4), (3, 4), (2, 4)]
    best = None
    for num, den in candidates:
        L = max(1, int(round(num * 4 / den)))  # quarter-note beats a bar (6/8: 3)
        for r in range(L):
            sel = (np.arange(bw.size) + base - r) % L == 0
            score = (bw[sel].mean() - mean) if sel.any() else -1e9
            if L == 2 and signature is None:
                score -= NEAR_TIE * mean  # 4/4 unless 2/4 is clearly better
            if best is None or score > best[0] + 1e-12:
                best = (score, num, den, r, L)
    _, num, den, r, L = best
    if signature is None and L == 3:
        # 6/8 or 3/4: compare the middle of the bar (its 4th eighth) with the 2nd and 3rd beats
        rel = (t - phi - (base + r) * G) % (3 * G)
        mid = bar_w[rel == G + G // 2].sum()
        beats23 = bar_w[(rel == G) | (rel == 2 * G)].sum() / 2
        if mid > beats23 and mid > 0:
            num, den = 6, 8
    # score time of the first state: the downbeat before it is at grid step phi + (base + r) * G - k * bar
    bar_q = num * 4 / den
    bar_units = int(round(bar_q * G))
    downbeat = phi + (base + r) * G
    offset_units = (-downbeat) % bar_units
    return Metre(((0.0, num, den),), offset_units / G)


def infer_states_metre(states: States, signature: tuple[int, int] | None = None,
                       grid_phase: int | None = None) -> Metre:
    """:func:`infer_metre` of a :class:`~chopinbot.music.states.States`."""
    return infer_metre(states.keys, states.onsets, states.grid_units(), signature, grid_phase)


def metre_from_signatures(signatures: list[tuple[float, int, int]], first_beat: float) -> Metre:
    """The metre of a file whose time signatures are ``(beat, numerator, denominator)`` in quarters from the
    file's start and whose first state starts at ``first_beat``: bar lines as the file has them (a file
    counts its bars from its start, so a pickup there must be a short first bar)."""
    sigs = sorted((float(b), int(n), int(d)) for b, n, d in signatures if n > 0 and d > 0)
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0.0, *(sigs[0][1:] if sigs else (4, 4))))
    dedup: list[tuple[float, int, int]] = []
    for s in sigs:
        if dedup and abs(dedup[-1][0] - s[0]) < 1e-9:
            dedup[-1] = s
        elif not dedup or dedup[-1][1:] != s[1:]:
            dedup.append(s)
    if len(dedup) >= 2:  # a first bar shorter than the next signature's, and only one: a pickup
        (_, n0, d0), (t1, n1, d1) = dedup[0], dedup[1]
        bar1 = n1 * 4.0 / d1
        if abs(t1 - n0 * 4.0 / d0) < 1e-9 and t1 < bar1 - 1e-9:
            shift = bar1 - t1
            dedup = [(0.0, n1, d1)] + [(t + shift, n, d) for t, n, d in dedup[2:]]
            first_beat += shift
    full = Metre(tuple(dedup), 0.0)
    return full.shifted(first_beat)


def midi_grid(metre: Metre) -> tuple[float, list[tuple[float, int, int]]]:
    """What a MIDI file needs to carry the metre: the rest before the first state (shorter than half
    the metre's beat unit) and the time signatures from the file's start, a pickup bar first as a short
    signature of its own (``(bar - pickup)`` in the signature's unit: 1/4 before 3/4 for a one-beat
    pickup), so that the file's bar lines are the score's."""
    pickup = metre.pickup
    lead = metre.offset - pickup
    num, den = metre.first
    first_bar = num * 4.0 / den - pickup  # the pickup bar's length (a whole bar when pickup is 0)
    sigs: list[tuple[float, int, int]] = []
    if pickup > 0:
        length, unit = first_bar * den / 4.0, den
        while abs(length - round(length)) > 1e-6 and unit < 64:
            length, unit = length * 2, unit * 2
        sigs.append((0.0, int(round(length)), unit))
    for t, n, d in metre.signatures:
        sigs.append((t - pickup if t > 0 else (first_bar if pickup > 0 else 0.0), n, d))
    return lead, sigs


def continuation_metre(history: States, new: States, keep: int, grid_phase: int | None = None) -> Metre:
    """The metre of a continuation whose output is the last ``keep`` states of ``history`` (the seed,
    when it is included; 0: none) and the ``new`` ones.  The time signature is inferred over all the
    model read and wrote; the beat and the bar over the output itself, because the model keeps the
    phase it started in: after a seed that ends 5/48 of a beat before a beat, its onsets stay 5/48
    off the seed's grid, and the output's own grid is the one its score and MIDI must show.
    ``grid_phase``: the output was composed on the 1/24-beat grid from this step after the start of
    ``history`` (:class:`~chopinbot.compose.processors.NotatableRhythm`)."""
    whole = States.concat([history, new]) if len(history) else new
    signature = infer_states_metre(whole).first
    out = States.concat([history[len(history) - keep :], new]) if keep else new
    if grid_phase is not None:  # the output starts this many grid steps into the history
        grid_phase = (grid_phase - int(history.grid_units()[: len(history) - keep].sum())) % GRID_PER_BEAT
    metre = infer_states_metre(out, signature, grid_phase)
    return Metre(metre.signatures, metre.offset, pickup_unit=1.0)
