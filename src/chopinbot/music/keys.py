"""Musical keys: naming, detection (signature + Krumhansl–Schmuckler) and the
shift that takes a piece to C major / A minor.

The files' key-signature events carry only the signature (every event says
"major"; a minor piece carries its relative major's).  The signature is right
24/24 on the Preludes, while a pitch-class profile alone gets 19/24, so the
signature fixes the pair of keys and the profile only chooses between the
major key and its relative minor.  With no signature, the profile picks among
all 24 keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from chopinbot.constants import LOWEST_PITCH
from chopinbot.errors import ConfigError

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

MAJOR_NAMES = ["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
MINOR_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"]
_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


@dataclass(frozen=True)
class Key:
    """A key: tonic pitch class (0 = C) and mode."""

    tonic: int
    minor: bool

    @property
    def name(self) -> str:
        if self.minor:
            return f"{MINOR_NAMES[self.tonic]} minor"
        return f"{MAJOR_NAMES[self.tonic]} major"

    @property
    def short(self) -> str:
        """'C', 'a', 'F#', 'eb': major upper case, minor lower case."""
        return MINOR_NAMES[self.tonic].lower() if self.minor else MAJOR_NAMES[self.tonic]

    def __str__(self) -> str:
        return self.name

    @property
    def home(self) -> Key:
        """The key the model works in: C major or A minor."""
        return Key(9, True) if self.minor else Key(0, False)

    def shift_to(self, other: Key) -> int:
        """Smallest shift in -6..+5 semitones taking this tonic to ``other``'s."""
        return (other.tonic - self.tonic + 6) % 12 - 6

    @property
    def shift_home(self) -> int:
        return self.shift_to(self.home)

    def with_mode(self, minor: bool) -> Key:
        return Key(self.tonic, minor)


ALL_KEYS = [Key(t, m) for m in (False, True) for t in range(12)]


def parse_key(text: str) -> Key:
    """Parse 'C', 'C major', 'a', 'A minor', 'F#m', 'f# minor', 'Eb', 'Bbm', 'c#'.

    A bare lower-case letter means minor (the usual shorthand); otherwise the
    word 'minor' or a trailing 'm' does.
    """
    s = text.strip()
    m = re.fullmatch(r"([A-Ga-g])\s*([#b♯♭]?)\s*(m|min|minor|maj|major|M)?", s)
    if not m:
        raise ConfigError(
            f"unknown key {text!r}: use a tonic and an optional mode, e.g. 'C', 'A minor', 'F#m', 'eb'"
        )
    letter, acc, mode = m.groups()
    tonic = _PC[letter.upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1, "": 0}[acc]
    if mode in ("m", "min", "minor"):
        minor = True
    elif mode in ("maj", "major", "M"):
        minor = False
    else:
        minor = letter.islower()
    return Key(tonic % 12, minor)


PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def pitch_name(pitch: int) -> str:
    """MIDI pitch -> its scientific name (60 = C4, 21 = A0)."""
    return f"{PITCH_NAMES[pitch % 12]}{pitch // 12 - 1}"


def parse_pitch(text: str) -> int:
    """A MIDI pitch from a number ('60') or a scientific name ('C4', 'F#2', 'Bb5'; C4 = 60)."""
    s = str(text).strip()
    if re.fullmatch(r"\d{1,3}", s):
        return int(s)
    m = re.fullmatch(r"([A-Ga-g])([#b♯♭]?)(-?\d)", s)
    if not m:
        raise ConfigError(f"unknown pitch {text!r}: use a MIDI number (60) or a name such as C4, F#2, Bb5")
    letter, acc, octave = m.groups()
    return (int(octave) + 1) * 12 + _PC[letter.upper()] + {"#": 1, "♯": 1, "b": -1, "♭": -1, "": 0}[acc]


def signature_major_tonic(sharps: int) -> int:
    """Tonic pitch class of the major key with ``sharps`` sharps (negative: flats)."""
    return (7 * sharps) % 12


def pitch_class_histogram(keys: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Time each pitch class sounds, in beats (keys: (n, 88) bool)."""
    per_key = (keys.astype(np.float64) * beats.astype(np.float64)[:, None]).sum(axis=0)
    pcs = (np.arange(per_key.size) + LOWEST_PITCH) % 12
    return np.bincount(pcs, weights=per_key, minlength=12)


def profile_score(hist: np.ndarray, key: Key) -> float:
    """Correlation of the histogram with the key's profile (Krumhansl–Schmuckler)."""
    prof = np.roll(MINOR_PROFILE if key.minor else MAJOR_PROFILE, key.tonic)
    if hist.std() == 0:
        return 0.0
    return float(np.corrcoef(hist, prof)[0, 1])


def detect_key(hist: np.ndarray, sharps: int | None = None) -> Key:
    """The key of a passage from its pitch-class histogram.

    With a signature (``sharps``), choose between its major key and the
    relative minor; without, the best of all 24.
    """
    if sharps is not None:
        major = Key(signature_major_tonic(sharps), False)
        minor = Key((major.tonic + 9) % 12, True)
        candidates = [major, minor]
    else:
        candidates = ALL_KEYS
    return max(candidates, key=lambda k: profile_score(hist, k))


# (24, 12): correlation targets in the order of ``ALL_KEYS`` (12 major, then 12 minor), standardised.
_PROFILES = np.array([np.roll(MINOR_PROFILE if k.minor else MAJOR_PROFILE, k.tonic) for k in ALL_KEYS])
_PROFILES_Z = (_PROFILES - _PROFILES.mean(1, keepdims=True)) / _PROFILES.std(1, keepdims=True)


def histogram_key_correlations(hist: np.ndarray) -> np.ndarray:
    """(..., 24) Krumhansl–Schmuckler correlation of pitch-class histograms (..., 12) with
    each key's profile, in the order of ``ALL_KEYS`` (0 for a flat histogram)."""
    h = np.asarray(hist, np.float64)
    sd = h.std(-1, keepdims=True)
    z = np.where(sd > 0, (h - h.mean(-1, keepdims=True)) / np.where(sd > 0, sd, 1.0), 0.0)
    return z @ _PROFILES_Z.T / 12


def fifths_position(key: Key) -> int:
    """Place on the circle of fifths of the key's signature (C major and A minor: 0, G major: 1, F major: 11)."""
    major_tonic = (key.tonic + 3) % 12 if key.minor else key.tonic
    return (7 * major_tonic) % 12


def within_a_fifth(a: Key, b: Key) -> bool:
    """True when the signatures are at most one step apart on the circle of fifths
    (the same key, its relative, and the keys a fifth above and below)."""
    d = abs(fifths_position(a) - fifths_position(b)) % 12
    return min(d, 12 - d) <= 1
