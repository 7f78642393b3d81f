"""Rhythm: voices within a staff, the grid each beat is written on, and note values.

Times here are whole grid steps (``GRID_PER_BEAT`` = 48 a quarter note), so every value is exact:
a sixty-fourth is 3 steps, a triplet eighth 16, a sixty-fourth triplet 2 (the shortest value the
corpus writes).  Within each quarter note, a voice is written either on the plain grid (its note
boundaries at multiples of 3 steps) or on the triplet grid (multiples of 2); a quarter whose
boundaries fit neither (a 5/48-beat note, say) is moved to the nearer grid and the moves are
counted, so the caller can say so: never a 1/48 remnant.

A value is a length in steps with its MusicXML type, dot and whether it is a triplet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chopinbot.constants import GRID_PER_BEAT

G = GRID_PER_BEAT
assert G == 48, "the note values below are written for 48 grid steps a quarter note"
# steps -> (type, dots); plain values, longest first
PLAIN = [(192, "whole", 0), (144, "half", 1), (96, "half", 0), (72, "quarter", 1), (48, "quarter", 0),
         (36, "eighth", 1), (24, "eighth", 0), (18, "16th", 1), (12, "16th", 0), (9, "32nd", 1), (6, "32nd", 0),
         (3, "64th", 0)]
# triplet values (3 in the time of 2): steps written -> (type, dots)
TRIPLET = [(32, "quarter", 0), (24, "eighth", 1), (16, "eighth", 0), (12, "16th", 1), (8, "16th", 0),
           (6, "32nd", 1), (4, "32nd", 0), (2, "64th", 0)]
BEAM_LEVELS = {"eighth": 1, "16th": 2, "32nd": 3, "64th": 4}
MAX_VOICES = 4  # per staff


@dataclass
class Chord:
    """Notes of one voice struck together and released together: [start, end) in steps."""

    start: int
    end: int
    pitches: list[int]
    velocity: float = 0.0
    ids: list[int] = field(default_factory=list)  # indices of the notes, for spelling and checks


@dataclass(frozen=True)
class Piece:
    """A written note or rest: [start, end) in steps, its value, and whether it continues a tie."""

    start: int
    end: int
    type: str
    dots: int
    triplet: bool


def assign_voices(starts: np.ndarray, ends: np.ndarray, pitches: np.ndarray, velocity: np.ndarray,
                  ids: np.ndarray) -> tuple[list[list[Chord]], int]:
    """One staff's notes as voices of chords: notes with the same start and end form a chord; a chord
    goes to the first voice free at its start (the longer first, so a held note keeps a voice and
    the moving notes take another).  Beyond ``MAX_VOICES`` a note is cut short where the voice it
    joins needs it, or joins a chord struck with it and takes its length (counted in the second
    return value); an onset never moves."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(len(starts)):
        groups.setdefault((int(starts[i]), int(ends[i])), []).append(i)
    order = sorted(groups, key=lambda se: (se[0], -(se[1] - se[0])))
    voices: list[list[Chord]] = []
    cut = 0
    for s, e in order:
        idx = groups[(s, e)]
        chord = Chord(s, e, [int(pitches[i]) for i in idx], float(np.mean(velocity[idx])), [int(ids[i]) for i in idx])
        free = [v for v in voices if v[-1].end <= s]
        if free:
            free[0].append(chord)
        elif len(voices) < MAX_VOICES:
            voices.append([chord])
        else:  # no voice free: the one ending soonest is cut short here
            v = min(voices, key=lambda v: v[-1].end)
            if v[-1].start == s:  # struck together: the notes join that chord and take its length
                v[-1].pitches += chord.pitches
                v[-1].ids += chord.ids
                cut += len(chord.pitches)
                continue
            v[-1].end = s
            cut += len(v[-1].pitches)
            v.append(chord)
    return voices, cut


def quantize_voice(chords: list[Chord]) -> tuple[list[Chord], int]:
    """Move the boundaries of a voice's chords onto the plain or the triplet grid, quarter by
    quarter (see the module docstring); returns the chords (a chord left with no length is
    dropped) and how many boundaries moved."""
    bounds = sorted({c.start for c in chords} | {c.end for c in chords})
    mapping = {b: b for b in bounds}
    moved = 0
    by_window: dict[int, list[int]] = {}
    for b in bounds:
        if b % G:
            by_window.setdefault(b // G, []).append(b)
    for w, bs in by_window.items():
        if all(b % 3 == 0 for b in bs) or all(b % 2 == 0 for b in bs):
            continue
        best = None
        lo, hi, k = w * G, (w + 1) * G, len(bs)
        for unit in (3, 2):
            if (k + 1) * unit > G:
                continue  # more boundaries than this grid has places in the quarter
            snapped, prev = [], lo
            for i, b in enumerate(bs):  # nearest place, one grid step after the previous, room for the rest
                nb = min(max(int(round(b / unit) * unit), prev + unit), hi - unit * (k - i))
                snapped.append(nb)
                prev = nb
            err = sum(abs(a - b) for a, b in zip(snapped, bs))
            if best is None or err < best[0]:
                best = (err, snapped)
        if best is None:  # over 23 note boundaries in one quarter: merge the closest (chords may vanish)
            best = (0, [min(max(int(round(b / 2) * 2), lo), hi) for b in bs])
        for b, nb in zip(bs, best[1]):
            mapping[b] = nb
            moved += nb != b
    out = []
    for c in chords:
        s, e = mapping[c.start], mapping[c.end]
        if e > s:
            out.append(Chord(s, e, c.pitches, c.velocity, c.ids))
    return out, moved


def window_is_triplet(chords: list[Chord], window: int) -> bool:
    """Whether the voice writes quarter ``window`` on the triplet grid."""
    lo, hi = window * G, (window + 1) * G
    bs = [b for c in chords for b in (c.start, c.end) if lo < b < hi]
    return bool(bs) and not all(b % 3 == 0 for b in bs)


def split_values(start: int, end: int, bar_start: int, bar_len: int, beat: int, numerator: int,
                 triplet_windows: set[int]) -> list[Piece]:
    """[start, end) within one bar as a tied chain of written values: a value longer than a beat
    starts and ends on beats (a half note in 4/4 on beat 1 or 3), a shorter one stays within its
    beat; a quarter on the triplet grid is written in triplet values."""
    out: list[Piece] = []
    x = start
    while x < end:
        rel = x - bar_start
        w = x // G
        if w in triplet_windows:
            limit = min(end, (w + 1) * G)
            v = next((v for v in TRIPLET if v[0] <= limit - x), None)
            if v is None:  # not on the triplet grid: cannot happen after quantize_voice
                v = (limit - x, "64th", 0)
            out.append(Piece(x, x + v[0], v[1], v[2], True))
            x += v[0]
            continue
        nxt_trip = min((t * G for t in triplet_windows if t * G > x), default=None)
        limit = end if nxt_trip is None else min(end, nxt_trip)
        chosen = None
        for v, typ, dots in PLAIN:
            if v > limit - x:
                continue
            if v >= beat:
                if rel % beat or rel + v > bar_len:
                    continue
                if (rel + v) % beat and not (v == 72 and beat == G and rel % 96 == 0):
                    continue  # ends off the beat: only a dotted quarter on a strong beat (♩. ♪)
                if numerator == 4 and beat == G and v == 96 and rel % 96:
                    continue  # a half note in 4/4 starts on beat 1 or 3
                if v == 144 and bar_len == 192 and rel not in (0, 48):
                    continue
            elif (rel // beat) != ((rel + v - 1) // beat):
                continue  # a value shorter than a beat does not cross a beat
            chosen = (v, typ, dots)
            break
        if chosen is None:  # a remnant the plain values cannot take (off the grid): the longest that fits
            rem = limit - x
            chosen = next(((v, t, d) for v, t, d in PLAIN if v <= rem), (rem, "64th", 0))
        out.append(Piece(x, x + chosen[0], chosen[1], chosen[2], False))
        x += chosen[0]
    return out


RELEASE_GRIDS = (12, 16)  # a sixteenth, a triplet eighth: where a tidied release may fall
LEGATO_GAP = 12  # steps: a release this close to the hand's next onset (and within a third of the note) joins it


def tidy_releases(starts: np.ndarray, ends: np.ndarray, pitches: np.ndarray, staff: np.ndarray) -> np.ndarray:
    """Releases as a pianist reads them; onsets never move.  A performance (and a model that learned
    from performances) lets go of a chord's notes a few 48ths apart and a little before the next chord:
    written as it is, every such note is a tie to a sixty-fourth and a rest.  So a release within
    ``LEGATO_GAP`` steps (and a third of the note) of the hand's next onset moves to it, and any other
    onto the nearest sixteenth or triplet eighth, never past a new strike of the same key nor onto
    the note's own start."""
    out = ends.copy()
    for s in (1, 2):
        idx = np.flatnonzero(staff == s)
        if not idx.size:
            continue
        onsets = np.unique(starts[idx])
        for i in idx:
            st, en = int(starts[i]), int(ends[i])
            k = np.searchsorted(onsets, st, side="right")
            nxt = int(onsets[k]) if k < onsets.size else None
            room = max(1, (en - st) // 3)
            same = starts[idx][(pitches[idx] == pitches[i]) & (starts[idx] > st)]
            limit = int(same.min()) if same.size else None
            if nxt is not None and abs(nxt - en) <= min(LEGATO_GAP, room):
                new = nxt
            else:
                cands = [round(en / g) * g for g in RELEASE_GRIDS]
                new = min(cands, key=lambda c: (abs(c - en), c))
                if abs(new - en) > min(6, room):
                    new = en
            if new <= st:
                new = en
            if limit is not None and new > limit:
                new = min(en, limit)
            out[i] = new
    return out
