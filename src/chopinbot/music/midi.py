"""Reading MIDI into plain note arrays (via symusic), and writing notes back.

symusic's C++ core reads all 48 bundled files in ~0.1 s (music21 takes ~74 s
on the same machine), so it is the only MIDI library ChopinBot uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import symusic

from chopinbot.constants import HIGHEST_PITCH, LOWEST_PITCH, MAX_MIDI_BYTES, MAX_NOTES_PER_FILE
from chopinbot.errors import MidiError
from chopinbot.io_utils import atomic_write_bytes


@dataclass
class PianoNotes:
    """All notes of a piece, merged from every non-drum track, in ticks.

    ``start``/``end`` are int64 ticks, ``pitch`` and ``velocity`` int16; the
    arrays are sorted by start then pitch.  ``tempo_ticks``/``tempo_qpm`` give
    the tempo map (to turn ticks into seconds), ``key_signatures`` the
    (tick, sharps, is_minor) events, ``time_signatures`` the (tick, numerator,
    denominator) events, ``pedals`` the sustain-pedal intervals.
    """

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    ticks_per_quarter: int
    tempo_ticks: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    tempo_qpm: np.ndarray = field(default_factory=lambda: np.full(1, 120.0))
    key_signatures: list[tuple[int, int, int]] = field(default_factory=list)
    pedals: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    time_signatures: list[tuple[int, int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.start.size)

    def seconds_at(self, ticks: np.ndarray) -> np.ndarray:
        """Real time in seconds at each tick, following the tempo map."""
        ticks = np.asarray(ticks, dtype=np.float64)
        t0 = self.tempo_ticks.astype(np.float64)
        sec_per_tick = 60.0 / (self.tempo_qpm * self.ticks_per_quarter)
        # seconds elapsed at each tempo change
        seg = np.diff(t0) * sec_per_tick[:-1]
        at_change = np.concatenate([[0.0], np.cumsum(seg)])
        idx = np.clip(np.searchsorted(t0, ticks, side="right") - 1, 0, None)
        return at_change[idx] + (ticks - t0[idx]) * sec_per_tick[idx]


def read_midi(path: str | os.PathLike, max_notes: int = MAX_NOTES_PER_FILE) -> PianoNotes:
    """Read a MIDI file into :class:`PianoNotes`.

    Raises :class:`MidiError` with a readable reason for anything unusable:
    not MIDI, truncated, empty, drums only, too large.
    """
    path = Path(path)
    try:
        if not path.is_file():  # a folder, a device (/dev/zero never ends), a pipe
            raise MidiError("not a regular file", str(path))
        with open(path, "rb") as f:
            data = f.read(MAX_MIDI_BYTES + 1)  # bounded, whatever the size says
    except OSError as e:
        raise MidiError(f"cannot open file ({e.strerror})", str(path)) from None
    if len(data) > MAX_MIDI_BYTES:
        raise MidiError(f"file too large (over {MAX_MIDI_BYTES:,} bytes)", str(path))
    return read_midi_bytes(data, name=str(path), max_notes=max_notes)


def read_midi_bytes(data: bytes, name: str = "<bytes>", max_notes: int = MAX_NOTES_PER_FILE) -> PianoNotes:
    """Like :func:`read_midi` for MIDI data already in memory (uploads)."""
    if len(data) < 14 or not data.startswith(b"MThd"):
        raise MidiError("not a MIDI file (no 'MThd' header)", name)
    if len(data) > MAX_MIDI_BYTES:
        raise MidiError(f"file too large ({len(data):,} bytes; limit {MAX_MIDI_BYTES:,})", name)
    # ticks-per-quarter 0 loads without error in symusic: guard it here.
    division = int.from_bytes(data[12:14], "big")
    if division == 0:
        raise MidiError("invalid header: 0 ticks per quarter note", name)
    if division & 0x8000:
        raise MidiError("SMPTE time division is not supported", name)
    try:
        score = symusic.Score.from_midi(data)
    except (RuntimeError, ValueError, IndexError, OverflowError) as e:
        raise MidiError(f"malformed MIDI ({str(e).strip() or type(e).__name__})", name) from None
    return _score_to_notes(score, name, max_notes)


def _score_to_notes(score: symusic.Score, name: str, max_notes: int) -> PianoNotes:
    tracks = [t for t in score.tracks if not t.is_drum]
    if not score.tracks or all(t.note_num() == 0 for t in score.tracks):
        raise MidiError("no notes in the file", name)
    n_total = sum(t.note_num() for t in tracks)
    if n_total == 0:
        raise MidiError("only drum notes (no pitched instrument)", name)
    if n_total > max_notes:
        raise MidiError(f"too many notes ({n_total:,}; limit {max_notes:,})", name)
    n_events = (len(score.tempos) + len(score.key_signatures) + len(score.time_signatures)
                + sum(len(t.pedals) for t in tracks))
    if n_events > max_notes:  # each becomes a Python object below
        raise MidiError(f"too many tempo, signature and pedal events ({n_events:,}; limit {max_notes:,})", name)
    arrays = [t.notes.numpy() for t in tracks if t.note_num()]
    start = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    dur = np.concatenate([a["duration"] for a in arrays]).astype(np.int64)
    pitch = np.concatenate([a["pitch"] for a in arrays]).astype(np.int16)
    vel = np.concatenate([a["velocity"] for a in arrays]).astype(np.int16)
    keep = (dur >= 0) & (start >= 0)
    start, dur, pitch, vel = start[keep], dur[keep], pitch[keep], vel[keep]
    in_range = (pitch >= LOWEST_PITCH) & (pitch <= HIGHEST_PITCH)
    if not in_range.any():
        raise MidiError("no notes in the piano range A0..C8 (MIDI 21..108)", name)
    order = np.lexsort((pitch, start))
    tempos = sorted(((t.time, t.qpm) for t in score.tempos), key=lambda x: x[0])
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, tempos[0][1] if tempos else 120.0))
    tempo_ticks = np.array([t for t, _ in tempos], np.int64)
    tempo_qpm = np.array([q if q > 0 else 120.0 for _, q in tempos], np.float64)
    keysigs = sorted((int(k.time), int(k.key), int(k.tonality)) for k in score.key_signatures)
    timesigs = sorted((int(t.time), int(t.numerator), int(t.denominator)) for t in score.time_signatures)
    pedals = [(p.time, p.time + p.duration) for t in tracks for p in t.pedals]
    pedal_arr = np.array(sorted(pedals), np.int64).reshape(-1, 2)
    return PianoNotes(
        start=start[order],
        end=(start + dur)[order],
        pitch=pitch[order],
        velocity=vel[order],
        ticks_per_quarter=int(score.ticks_per_quarter),
        tempo_ticks=tempo_ticks,
        tempo_qpm=tempo_qpm,
        key_signatures=keysigs,
        pedals=pedal_arr,
        time_signatures=timesigs,
    )


def notes_to_score(
    start_beats: np.ndarray,
    end_beats: np.ndarray,
    pitch: np.ndarray,
    velocity: np.ndarray,
    bpm: float = 120.0,
    ticks_per_quarter: int = 480,
    track_name: str = "Piano",
) -> symusic.Score:
    """Build a one-track piano score from notes timed in beats."""
    score = symusic.Score(ticks_per_quarter)
    score.tempos.append(symusic.Tempo(0, float(bpm)))
    track = symusic.Track(track_name, 0, False)
    s = np.round(np.asarray(start_beats, np.float64) * ticks_per_quarter).astype(np.int32)
    e = np.round(np.asarray(end_beats, np.float64) * ticks_per_quarter).astype(np.int32)
    d = np.maximum(e - s, 1).astype(np.int32)
    if s.size:
        track.notes = symusic.Note.from_numpy(
            time=s, duration=d, pitch=np.asarray(pitch, np.int8), velocity=np.asarray(velocity, np.int8)
        )
    score.tracks.append(track)
    return score


def write_score(score: symusic.Score, path: str | os.PathLike) -> Path:
    """Write a score to a MIDI file atomically."""
    path = Path(path)
    return atomic_write_bytes(path, bytes(score.dumps_midi()))
