"""States -> a score: the decisions a music engraver makes, then MusicXML.

:func:`build_score` takes a :class:`ScoreSpec` (the states and what is known about them: key,
tempo, metre, title, marks) and returns the MusicXML text with what it decided
(:class:`ScoreInfo`: the metre, each note's staff and spelling, what had to be moved).  Each
decision has its module: the bars (:mod:`.metre`), the hands (:mod:`.hands`), the spelling
(:mod:`.spelling`), voices and note values (:mod:`.rhythm`), and the text (:mod:`.musicxml`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from chopinbot.constants import GRID_PER_BEAT
from chopinbot.music.controls import LOUDNESS_LEVELS
from chopinbot.music.keys import Key, detect_key, pitch_class_histogram
from chopinbot.music.states import States, states_to_notes
from chopinbot.notation.hands import split_hands
from chopinbot.notation.metre import Metre, infer_states_metre
from chopinbot.notation.musicxml import Direction, Stats, write_musicxml
from chopinbot.notation.rhythm import tidy_releases
from chopinbot.notation.spelling import key_sharps, spell

log = logging.getLogger(__name__)

G = GRID_PER_BEAT
COMPOSER = "ChopinBot"
# tempo words by quarter notes (compound time: dotted quarters) a minute, upper bounds
TEMPO_WORDS = ((50, "Largo"), (63, "Larghetto"), (76, "Adagio"), (108, "Andante"), (120, "Moderato"),
               (156, "Allegro"), (176, "Vivace"), (1000, "Presto"))
DYNAMIC_HOLD_BARS = 2  # a new dynamic mark only when the level holds this many bars (no flicker)


@dataclass
class ScoreSpec:
    """What a score is written from.  Times in beats from the first state's start."""

    states: States
    key: Key | None = None  # None: detected from the states
    bpm: float | None = None  # None: from the states' seconds
    metre: Metre | None = None  # None: inferred (see time_signature)
    time_signature: tuple[int, int] | None = None  # asked for; the bar's phase is then inferred
    title: str = "ChopinBot"
    composer: str = f"{COMPOSER}, in the style of Chopin"
    subtitle: str = ""  # e.g. the seed it continued
    marks: list[tuple[float, str]] = field(default_factory=list)  # words above the music: (beat, text)
    key_changes: list[tuple[float, int, int]] | None = None  # (beat, sharps, minor) where known (a file's own)
    dynamics: bool = True  # marks from the velocities (off, or none, when every velocity is the same)
    tidy: bool = True  # releases as a pianist reads them (notation.rhythm.tidy_releases); onsets never move
    rights: str = ""


@dataclass
class ScoreInfo:
    """What :func:`build_score` decided (the arrays are per note of ``states_to_notes(states)``)."""

    metre: Metre
    key: Key
    starts: np.ndarray  # score steps (48 a quarter) from the first bar line
    ends: np.ndarray
    pitches: np.ndarray
    staff: np.ndarray  # 1 right hand, 2 left hand
    fifths: np.ndarray  # spelling: places on the line of fifths
    stats: Stats


def tempo_word(bpm: float) -> str:
    return next(word for top, word in TEMPO_WORDS if bpm < top)


def states_bpm(states: States) -> float:
    secs = states.total_seconds
    return float(np.clip(60.0 * states.total_beats / secs, 20, 400)) if secs > 0 else 120.0


def build_score(spec: ScoreSpec) -> tuple[str, ScoreInfo]:
    """MusicXML text of ``spec`` and what was decided (see :class:`ScoreInfo`)."""
    states = spec.states
    key = spec.key or detect_key(pitch_class_histogram(states.keys, states.beats))
    metre = spec.metre or infer_states_metre(states, spec.time_signature)
    if spec.metre is not None and spec.time_signature is not None and metre.first != spec.time_signature:
        metre = infer_states_metre(states, spec.time_signature)
    off = int(round(metre.offset * G))
    notes = states_to_notes(states)
    starts = np.round(notes[:, 0] * G).astype(np.int64) + off
    ends = np.round(notes[:, 1] * G).astype(np.int64) + off
    pitches = notes[:, 2].astype(np.int64)
    velocity = notes[:, 3]
    staff = split_hands(starts, ends, pitches)
    if spec.tidy:
        ends = tidy_releases(starts, ends, pitches, staff)
    if spec.key_changes:
        changes = [(int(round(b * G)) + off, int(s), int(m)) for b, s, m in spec.key_changes]
        changes[0] = (0, changes[0][1], changes[0][2])
    else:
        changes = [(0, key_sharps(key), int(key.minor))]

    def key_at(step: float) -> tuple[int, int]:
        cur = changes[0]
        for c in changes:
            if c[0] <= step:
                cur = c
        return cur[1], bool(cur[2])

    fifths = spell(starts, pitches, key_at)
    bpm = spec.bpm or states_bpm(states)
    pickup = int(round(metre.pickup * G))
    directions = [_tempo(bpm, metre, pickup)]
    directions += [Direction(int(round(b * G)) + off, "words", text) for b, text in spec.marks]
    if spec.dynamics and (states.velocity > 0).any() and np.unique(velocity).size > 1:
        directions += _dynamics(starts, velocity, metre, int(ends.max()))
    text, stats = write_musicxml(starts, ends, pitches, velocity, staff, fifths, metre, changes, directions,
                                 spec.title, spec.composer, spec.subtitle, spec.rights)
    if stats.moved_boundaries or stats.cut_notes or stats.dropped_chords or stats.remnants:
        log.warning("score: %d note boundaries moved to the nearest notatable rhythm (the written values cannot "
                    "take them), %d notes cut short (more than 4 voices in a hand), %d chords left too short "
                    "to write dropped, %d values off the grid", stats.moved_boundaries, stats.cut_notes,
                    stats.dropped_chords, stats.remnants)
    info = ScoreInfo(metre, key, starts, ends, pitches, staff, fifths, stats)
    return text, info


def _tempo(bpm: float, metre: Metre, step: int) -> Direction:
    num, den = metre.first
    if den == 8 and num % 3 == 0 and num > 3:
        return Direction(step, "tempo", tempo_word(bpm / 1.5), bpm / 1.5, "quarter", 1)
    return Direction(step, "tempo", tempo_word(bpm), bpm, "quarter", 0)


def _dynamics(starts: np.ndarray, velocity: np.ndarray, metre: Metre, end: int) -> list[Direction]:
    """pp ... ff at the bars where the composed loudness settles on a new level."""
    bars = [int(round(b * G)) for b in metre.bar_lines(end / G)]
    names = list(LOUDNESS_LEVELS)
    levels = np.array(list(LOUDNESS_LEVELS.values()), np.float64)
    bar_of = np.searchsorted(bars, starts, side="right") - 1
    per_bar = []
    for b in range(len(bars) - 1):
        v = velocity[bar_of == b]
        per_bar.append(float(v.mean()) if v.size else np.nan)
    per_bar = np.array(per_bar)
    out: list[Direction] = []
    current = None
    for b in range(len(per_bar)):
        window = per_bar[b : b + DYNAMIC_HOLD_BARS]
        window = window[~np.isnan(window)]
        if not window.size:
            continue
        idx = np.abs(levels[None, :] - window[:, None]).argmin(axis=1)
        if (idx == idx[0]).all() and names[idx[0]] != current:
            current = names[idx[0]]
            first = starts[bar_of == b]
            out.append(Direction(int(first.min()) if first.size else bars[b], "dynamics", current))
    return out
