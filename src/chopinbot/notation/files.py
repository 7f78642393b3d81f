"""Any prepared piece as a score: a MIDI, MusicXML or Humdrum file -> its states -> MusicXML.

This is how the engraving is tested on real music (``chopinbot score FILE``): the file is read as
``chopinbot prepare`` reads it (:func:`chopinbot.music.scores.read_notes`, then the states at the
default settings), so the score shows exactly what the model would learn from it.  The bars come
from the file's time signatures (``bars="file"``: a MIDI file counts its bars from its start), or
the time signature from the file and where the bar lies inferred from the music
(``bars="infer"``: right for a score with a pickup, whose MIDI starts its first bar at the
pickup), or everything inferred when the file has no time signature.
"""

from __future__ import annotations

import os
from pathlib import Path

from chopinbot.constants import GRID_PER_BEAT, MIN_STATE_BEATS, PEDAL_MODE
from chopinbot.errors import ConfigError
from chopinbot.music.keys import detect_key, pitch_class_histogram
from chopinbot.music.scores import read_notes
from chopinbot.music.states import notes_to_states
from chopinbot.notation.metre import Metre, infer_states_metre, metre_from_signatures
from chopinbot.notation.score import ScoreInfo, ScoreSpec, build_score

BARS = ("file", "infer")


def file_spec(path: str | os.PathLike, time_signature: tuple[int, int] | None = None, bars: str = "file"
              ) -> tuple[ScoreSpec, float]:
    """The :class:`ScoreSpec` of a note file, and the beat (from the file's start) of its first state."""
    if bars not in BARS:
        raise ConfigError(f"bars must be one of {', '.join(BARS)}, got {bars!r}")
    notes = read_notes(path)
    states, bound_ticks, _ = notes_to_states(notes, GRID_PER_BEAT, PEDAL_MODE, MIN_STATE_BEATS)
    tpq = notes.ticks_per_quarter
    first_beat = float(bound_ticks[0]) / tpq
    sigs = [(t / tpq, n, d) for t, n, d in notes.time_signatures]
    metre: Metre | None = None
    if time_signature is None and sigs:
        if bars == "file":
            metre = metre_from_signatures(sigs, first_beat)
        else:
            metre = infer_states_metre(states, main_signature(sigs, first_beat + states.total_beats))
    elif time_signature is not None:
        metre = infer_states_metre(states, time_signature)
    first_sharps = notes.key_signatures[0][1] if notes.key_signatures else None
    key = detect_key(pitch_class_histogram(states.keys, states.beats), first_sharps)
    changes = None
    if notes.key_signatures:
        changes = [(max(0.0, t / tpq - first_beat), int(s), int(m)) for t, s, m in notes.key_signatures]
        changes[0] = (0.0, changes[0][1], int(key.minor))
    name = Path(path).name
    spec = ScoreSpec(states=states, key=key, bpm=None, metre=metre, time_signature=time_signature, title=name,
                     composer="engraved by ChopinBot", key_changes=changes)
    return spec, first_beat


def file_score(path: str | os.PathLike, time_signature: tuple[int, int] | None = None, bars: str = "file"
               ) -> tuple[str, ScoreInfo]:
    """MusicXML of a note file's states, and what was decided."""
    spec, _ = file_spec(path, time_signature, bars)
    return build_score(spec)


def main_signature(signatures: list[tuple[float, int, int]], end: float) -> tuple[int, int]:
    """The time signature that lasts longest among ``(beat, numerator, denominator)`` up to ``end``."""
    span: dict[tuple[int, int], float] = {}
    for (t, n, d), nxt in zip(signatures, [s[0] for s in signatures[1:]] + [end]):
        span[(n, d)] = span.get((n, d), 0.0) + max(0.0, nxt - t)
    return max(span, key=span.get)
