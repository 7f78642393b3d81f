"""Key signatures and pitch spelling: which of F♯ and G♭ a note is.

A spelled note is a place on the line of fifths (C = 0, G = 1, F = -1, F♯ = 6, G♭ = -6, ...).
Each pitch class has one place in every twelve; :func:`spell` takes for each note the place
nearest a *centre* that follows the music: the key signature's centre (a major key's tonic + 2,
a minor key's + 2.5, so that A minor's G♯ beats A♭), pulled towards the mean place of the notes
just heard (half-life ``CONTEXT_HALF_LIFE`` beats).  Chords are spelled together, so a chord's
notes agree with each other.  This is the line-of-fifths idea of Temperley (2001), in a few lines;
its accuracy against the NIFC editions is in docs/sheet-music.md.
"""

from __future__ import annotations

import numpy as np

from chopinbot.music.keys import Key

STEPS = "FCGDAEB"  # the letters in fifths order, F = -1
CONTEXT_HALF_LIFE = 4.0  # beats: how fast the spelling centre forgets what it heard
KEY_WEIGHT = 1.0  # the key signature's pull on the centre, against the recent notes' total weight


def key_sharps(key: Key) -> int:
    """The key signature of ``key`` (sharps; negative: flats): D major 2, E♭ minor -6, F♯ major 6."""
    major_tonic = (key.tonic + 3) % 12 if key.minor else key.tonic
    fifths = (7 * major_tonic) % 12
    if fifths == 6:  # F♯ major / D♯ minor, or G♭ major / E♭ minor: the names keys.py uses
        return 6 if not key.minor else -6
    return fifths if fifths < 6 else fifths - 12


def key_centre(sharps: int, minor: bool) -> float:
    """The line-of-fifths centre of a key signature's diatonic set (its major tonic + 2)."""
    return sharps + 2.0 + (0.5 if minor else 0.0)


def fifth_name(fifth: int) -> tuple[str, int]:
    """(letter, alteration) of a place on the line of fifths."""
    return STEPS[(fifth + 1) % 7], (fifth + 1) // 7


def spelled_octave(pitch: int, alter: int) -> int:
    """The octave number of a MIDI pitch spelled with ``alter`` (B♯3 is MIDI 60, C♭4 is 59)."""
    return (pitch - alter) // 12 - 1


def spell(times: np.ndarray, pitches: np.ndarray, key_at) -> np.ndarray:
    """Line-of-fifths places for notes at ``times`` (beats, sorted) of ``pitches`` (MIDI);
    ``key_at(t)`` gives (sharps, minor) in force at time t."""
    n = len(pitches)
    out = np.zeros(n, np.int64)
    if n == 0:
        return out
    sum_w = sum_f = 0.0
    last_t = float(times[0])
    i = 0
    while i < n:
        j = i
        while j < n and times[j] == times[i]:
            j += 1
        t = float(times[i])
        decay = 0.5 ** ((t - last_t) / CONTEXT_HALF_LIFE)
        sum_w, sum_f, last_t = sum_w * decay, sum_f * decay, t
        sharps, minor = key_at(t)
        kc = key_centre(sharps, minor)
        centre = (KEY_WEIGHT * kc + sum_f) / (KEY_WEIGHT + sum_w)
        # the chord's places: for each pitch class the place nearest the centre
        pcs = pitches[i:j] % 12
        base = (7 * pcs) % 12  # 0..11
        cand = base + 12 * np.round((centre - base) / 12.0)
        out[i:j] = cand.astype(np.int64)
        sum_w += (j - i) * 0.5
        sum_f += float(cand.sum()) * 0.5
        i = j
    return out
