"""The piano-state representation: MIDI notes <-> a sequence of states.

A *state* lasts from one note boundary (any note starting or ending) to the
next.  It holds the set of sounding keys, which of them are struck at its
start, its length in beats (from the score's ticks, so tempo-independent) and
in seconds (from the tempo map), and the mean velocity of its struck keys.

Design decisions (each tested in ``tests/test_states.py``):

* Boundaries are snapped to a grid of ``grid_per_beat`` steps per beat before
  states are built, so a legato overlap of a few ticks does not become a state.
  A note never vanishes: one that snaps to zero length keeps one grid step.
* A key sounds over the *union* of its notes.  A note that starts while the
  same key still sounds is a re-strike (an onset) and the key then sounds until
  the later of the two ends.
* No time is lost: the states tile the piece from its first onset to its last
  note end exactly (in grid steps).  States shorter than ``min_state_beats``
  are merged into their neighbour, never dropped.
* Notes outside A0..C8 are moved by octaves into range (never wrapped round the
  keyboard, never clamped onto the top key) and counted.
* The canonical form never has a state that repeats its predecessor's keys with
  no onset, so states -> MIDI -> states is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import symusic

from chopinbot.constants import GRID_PER_BEAT, HIGHEST_PITCH, LOWEST_PITCH, MAX_STATES_PER_FILE, MIN_STATE_BEATS, N_KEYS
from chopinbot.errors import MidiError
from chopinbot.music.midi import PianoNotes, notes_to_score


@dataclass
class States:
    """A sequence of ``n`` piano states (all arrays have length ``n``)."""

    keys: np.ndarray  # (n, 88) bool: keys sounding
    onsets: np.ndarray  # (n, 88) bool: keys struck at the state's start (subset of keys)
    beats: np.ndarray  # (n,) float32: length in quarter notes
    seconds: np.ndarray  # (n,) float32: length in real time
    velocity: np.ndarray  # (n,) uint8: mean velocity of struck keys (0 when none)

    def __len__(self) -> int:
        return int(self.beats.size)

    def __getitem__(self, idx: slice) -> States:
        return States(self.keys[idx], self.onsets[idx], self.beats[idx], self.seconds[idx], self.velocity[idx])

    @staticmethod
    def concat(parts: list[States]) -> States:
        return States(
            np.concatenate([p.keys for p in parts]),
            np.concatenate([p.onsets for p in parts]),
            np.concatenate([p.beats for p in parts]),
            np.concatenate([p.seconds for p in parts]),
            np.concatenate([p.velocity for p in parts]),
        )

    @staticmethod
    def empty() -> States:
        z = np.zeros((0, N_KEYS), bool)
        return States(z, z.copy(), np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, np.uint8))

    def copy(self) -> States:
        return States(self.keys.copy(), self.onsets.copy(), self.beats.copy(), self.seconds.copy(),
                      self.velocity.copy())

    @property
    def total_beats(self) -> float:
        return float(self.beats.astype(np.float64).sum())

    @property
    def total_seconds(self) -> float:
        return float(self.seconds.astype(np.float64).sum())

    def grid_units(self, grid_per_beat: int = GRID_PER_BEAT) -> np.ndarray:
        """Lengths as whole grid steps (exact; ``beats`` is float32)."""
        return np.round(self.beats.astype(np.float64) * grid_per_beat).astype(np.int64)


def fold_into_range(pitch: np.ndarray) -> tuple[np.ndarray, int]:
    """Move pitches outside A0..C8 by whole octaves into range; return (pitches, moves)."""
    p = np.asarray(pitch, np.int64).copy()
    low, high = p < LOWEST_PITCH, p > HIGHEST_PITCH
    moved = int(low.sum() + high.sum())
    p[low] += 12 * np.ceil((LOWEST_PITCH - p[low]) / 12).astype(np.int64)
    p[high] -= 12 * np.ceil((p[high] - HIGHEST_PITCH) / 12).astype(np.int64)
    return p, moved


@dataclass
class GridNotes:
    """Notes snapped to the grid: start/end in grid steps, pitch as key index 0..87."""

    start: np.ndarray
    end: np.ndarray
    key: np.ndarray
    velocity: np.ndarray
    octave_moves: int


def snap_notes(
    notes: PianoNotes, grid_per_beat: int = GRID_PER_BEAT, pedal: str = "ignore"
) -> GridNotes:
    """Snap note boundaries to the grid (and apply the pedal if asked)."""
    tpq = notes.ticks_per_quarter
    if tpq <= 0:
        raise MidiError("invalid ticks per quarter note")
    step = tpq / grid_per_beat
    end_ticks = notes.end
    if pedal == "apply" and notes.pedals.size:
        end_ticks = _apply_pedal(notes.end, notes.pedals)
    elif pedal not in ("ignore", "apply"):
        raise ValueError(f"pedal must be 'ignore' or 'apply', not {pedal!r}")
    start = np.round(notes.start / step).astype(np.int64)
    end = np.maximum(np.round(end_ticks / step).astype(np.int64), start + 1)
    pitch, moves = fold_into_range(notes.pitch)
    return GridNotes(start, end, pitch - LOWEST_PITCH, notes.velocity.astype(np.int64), moves)


def _apply_pedal(end: np.ndarray, pedals: np.ndarray) -> np.ndarray:
    """A note released while the pedal is down rings until the pedal comes up."""
    order = np.argsort(pedals[:, 0])
    ps, pe = pedals[order, 0], pedals[order, 1]
    # Pedal intervals may overlap (several tracks): the latest release among
    # pedals pressed before `end` decides.
    pe_running = np.maximum.accumulate(pe)
    idx = np.searchsorted(ps, end, side="right") - 1
    out = end.copy()
    down = idx >= 0
    release = np.where(down, pe_running[np.clip(idx, 0, None)], 0)
    ring = down & (release > end)
    out[ring] = release[ring]
    return out


def notes_to_states(
    notes: PianoNotes,
    grid_per_beat: int = GRID_PER_BEAT,
    pedal: str = "ignore",
    min_state_beats: float = MIN_STATE_BEATS,
    max_states: int = MAX_STATES_PER_FILE,
) -> tuple[States, np.ndarray, int]:
    """Build the states of a piece.

    Returns ``(states, boundary_ticks, octave_moves)``: ``boundary_ticks`` has
    ``len(states) + 1`` entries, the (snapped) tick where each state starts and,
    last, where the final one ends.
    """
    if len(notes) == 0:
        raise MidiError("no notes")
    g = snap_notes(notes, grid_per_beat, pedal)
    bounds = np.unique(np.concatenate([g.start, g.end]))
    n = bounds.size - 1
    if n > max_states:  # before anything of size n x 88 is allocated
        raise MidiError(f"too many states ({n:,} note boundaries; limit {max_states:,})")
    si = np.searchsorted(bounds, g.start)
    ei = np.searchsorted(bounds, g.end)
    # Sounding keys: +1 where a note starts, -1 where it ends, then a running sum.
    count = np.zeros((n + 1, N_KEYS), np.int32)
    np.add.at(count, (si, g.key), 1)
    np.add.at(count, (ei, g.key), -1)
    keys = np.cumsum(count, axis=0, dtype=np.int32)[:n] > 0
    onsets = np.zeros((n, N_KEYS), bool)
    onsets[si, g.key] = True
    vel_sum = np.zeros(n, np.float64)
    vel_cnt = np.zeros(n, np.float64)
    np.add.at(vel_sum, si, g.velocity)
    np.add.at(vel_cnt, si, 1)
    units = np.diff(bounds)
    step_ticks = notes.ticks_per_quarter / grid_per_beat
    secs = np.diff(notes.seconds_at(bounds * step_ticks))
    keys, onsets, units, secs, vel_sum, vel_cnt, starts = _canonical(
        keys, onsets, units, secs, vel_sum, vel_cnt, bounds[:-1], min_units=round(min_state_beats * grid_per_beat)
    )
    velocity = np.where(vel_cnt > 0, np.round(vel_sum / np.maximum(vel_cnt, 1)), 0).astype(np.uint8)
    states = States(keys, onsets, (units / grid_per_beat).astype(np.float32), secs.astype(np.float32), velocity)
    boundary_ticks = np.append(starts, starts[-1] + units[-1]) * step_ticks
    return states, boundary_ticks, g.octave_moves


def _canonical(keys, onsets, units, secs, vel_sum, vel_cnt, starts, min_units):
    """Merge too-short states and states that repeat their predecessor unchanged.

    A too-short state's time goes to its predecessor (the first state's to its
    successor); its onsets move to the next state for the keys still sounding
    there, so a struck key is delayed by less than the tolerance, not lost.
    """
    n = units.size
    if min_units > 1 and n > 1:
        # The first kept state: where the leading short states' time adds up to
        # min_units (or the last state); after it, a state is kept when long enough.
        reached = np.flatnonzero(np.cumsum(units) >= min_units)
        first = int(reached[0]) if reached.size else n - 1
        keep = units >= min_units
        keep[:first] = False
        keep[first] = True
        kept = np.flatnonzero(keep)
        # a short state's time goes to the kept state before it (the leading ones' to the first kept)
        group = np.maximum(np.cumsum(keep) - 1, 0)
        new_units = np.bincount(group, weights=units, minlength=kept.size).astype(units.dtype)
        new_secs = np.bincount(group, weights=secs, minlength=kept.size)
        new_starts = starts[kept]
        new_starts[0] = starts[0]
        # its onsets and velocity go to the next kept state (none after the last one); an
        # onset arrives only if its key sounds in every state on the way
        new_onsets, new_vs, new_vc = onsets[kept], vel_sum[kept], vel_cnt[kept]
        short = np.flatnonzero(~keep)
        to = np.searchsorted(kept, short, side="right")
        short, to = short[to < kept.size], to[to < kept.size]
        if short.size:
            off = np.cumsum(np.asfortranarray(~keys), axis=0, dtype=np.int32)
            arrive = onsets[short] & (off[kept[to]] == off[short])
            heads = np.flatnonzero(np.diff(to, prepend=-1))  # `to` is sorted: one run per target
            new_onsets[to[heads]] |= np.logical_or.reduceat(arrive, heads, axis=0)
            new_vs[to[heads]] += np.add.reduceat(vel_sum[short], heads)
            new_vc[to[heads]] += np.add.reduceat(vel_cnt[short], heads)
        keys, onsets, units, secs = keys[kept], new_onsets, new_units, new_secs
        vel_sum, vel_cnt, starts = new_vs, new_vc, new_starts
    # A state equal to its predecessor with nothing struck is the same state.
    same = np.zeros(units.size, bool)
    same[1:] = (keys[1:] == keys[:-1]).all(axis=1) & ~onsets[1:].any(axis=1)
    if same.any():
        group = np.cumsum(~same) - 1
        m = group[-1] + 1
        units = np.bincount(group, weights=units, minlength=m).astype(np.int64)
        secs = np.bincount(group, weights=secs, minlength=m)
        keep = ~same
        keys, onsets, vel_sum, vel_cnt, starts = keys[keep], onsets[keep], vel_sum[keep], vel_cnt[keep], starts[keep]
    return keys, onsets, units, secs, vel_sum, vel_cnt, starts


def states_to_notes(states: States, grid_per_beat: int = GRID_PER_BEAT) -> np.ndarray:
    """The notes the states describe, as an ``(N, 4)`` float array.

    Columns: start beat, end beat, MIDI pitch, velocity.  A key held across
    states is one note; a re-struck key starts a new one; a key that starts
    sounding without an onset flag is treated as struck.
    """
    n = len(states)
    if n == 0:
        return np.zeros((0, 4))
    units = states.grid_units(grid_per_beat)
    t = np.concatenate([[0], np.cumsum(units)]) / grid_per_beat
    keys = states.keys
    prev = np.vstack([np.zeros((1, N_KEYS), bool), keys[:-1]])
    strikes = keys & (states.onsets | ~prev)
    vel = np.where(states.velocity > 0, states.velocity, 80).astype(np.float64)
    out = []
    for k in np.flatnonzero(strikes.any(axis=0)):
        on = keys[:, k]
        s_idx = np.flatnonzero(strikes[:, k])
        # a note ends at the first later state where the key is off or re-struck
        stop = ~on | strikes[:, k]
        stop_idx = np.flatnonzero(np.append(stop, True))
        nxt = stop_idx[np.searchsorted(stop_idx, s_idx, side="right")]
        out.append(np.stack([t[s_idx], t[nxt], np.full(s_idx.size, k + LOWEST_PITCH), vel[s_idx]], axis=1))
    notes = np.concatenate(out) if out else np.zeros((0, 4))
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))]


def states_to_score(states: States, bpm: float | None = None, ticks_per_quarter: int = 480, lead_beats: float = 0.0,
                    time_signatures: Sequence[tuple[float, int, int]] = (),
                    key_signature: tuple[int, int] | None = None):
    """States -> a symusic Score.

    With ``bpm`` the piece plays at that steady tempo; with ``bpm=None`` each
    state gets the tempo that makes it last its ``seconds`` (the expressive
    timing of the source is kept).  The beat grid as the music has it:
    ``lead_beats`` of rest before the first state (a continuation that starts
    mid-beat keeps its place in the beat), ``time_signatures`` as ``(beat,
    numerator, denominator)`` from the file's start (a pickup bar is a short
    first signature, see :mod:`chopinbot.notation.metre`) and ``key_signature``
    as ``(sharps, minor)``: without them every program opens the file in 4/4,
    C major, with its bar lines wherever the first note fell.
    """
    notes = states_to_notes(states)
    lead = float(lead_beats)
    score = notes_to_score(notes[:, 0] + lead, notes[:, 1] + lead, notes[:, 2], notes[:, 3], bpm or 120.0,
                           ticks_per_quarter)
    if bpm is None and len(states):
        score.tempos.clear()
        start = np.concatenate([[0], np.cumsum(states.grid_units())])[:-1] * ticks_per_quarter // GRID_PER_BEAT
        start = start + round(lead * ticks_per_quarter)
        start[0] = 0  # the lead-in plays at the first state's tempo
        qpm = 60.0 * states.beats.astype(np.float64) / np.maximum(states.seconds.astype(np.float64), 1e-6)
        last = None
        for tick, q in zip(start, qpm):
            q = float(np.clip(q, 4.0, 1000.0))
            if last is None or abs(q - last) > 1e-6:
                score.tempos.append(symusic.Tempo(int(tick), q))
                last = q
    for beat, num, den in time_signatures:
        score.time_signatures.append(symusic.TimeSignature(int(round(beat * ticks_per_quarter)), int(num), int(den)))
    if key_signature is not None:
        score.key_signatures.append(symusic.KeySignature(0, int(key_signature[0]), int(key_signature[1])))
    return score


def transpose_states(states: States, shift: int) -> tuple[States, int]:
    """Shift every key by ``shift`` semitones; a key that would leave the
    keyboard moves an octave back instead of wrapping. Returns (states, moves)."""
    if shift == 0:
        return states.copy(), 0
    src = np.arange(N_KEYS)
    dst, _ = fold_into_range(src + shift + LOWEST_PITCH)
    dst = dst - LOWEST_PITCH
    moved_keys = (src + shift < 0) | (src + shift >= N_KEYS)
    moves = int((states.onsets[:, moved_keys]).sum())
    keys = np.zeros_like(states.keys)
    onsets = np.zeros_like(states.onsets)
    # OR-assign: two sources can only meet when one was moved by an octave.
    for s, d in zip(src, dst):
        keys[:, d] |= states.keys[:, s]
        onsets[:, d] |= states.onsets[:, s]
    return States(keys, onsets, states.beats.copy(), states.seconds.copy(), states.velocity.copy()), moves


def held_after(held: np.ndarray, keys: np.ndarray, onsets: np.ndarray, beats) -> np.ndarray:
    """How long each key has sounded since it was last struck (beats; 0 when silent), ``held`` before a state
    and after it: the state's ``keys`` and ``onsets`` (..., 88), lasting ``beats`` (a number, or (..., 1))."""
    return np.where(keys & ~onsets, held + beats, np.where(keys, beats, 0.0))
