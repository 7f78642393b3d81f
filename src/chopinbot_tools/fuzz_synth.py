"""The fuzzer's synthesized files (floods of notes, tempo, key-signature and
other events, thousands of tracks, random bodies) and its cases: case ``i`` of
seed ``s`` is always the same bytes.
"""

from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass
from pathlib import Path

from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot_tools.fuzz_mutate import MUTATORS, _meta, header, track, vlq

# --------------------------------------------------------------------------------------------
# Synthesized files
# --------------------------------------------------------------------------------------------


def synth_notes(rng: random.Random, n: int, pattern: str, tpq: int = 480) -> bytes:
    """A one-track file of ``n`` notes laid out as ``pattern`` (running status, compact)."""
    ev = bytearray()
    if pattern == "chord":  # all at tick 0, all ending at tick 1
        ev += b"\x00\x90"
        for i in range(n):
            ev += (b"\x00" if i else b"") + bytes([21 + i % 88, 64])
        ev += b"\x01\x80" + b"".join((b"\x00" if i else b"") + bytes([21 + i % 88, 0]) for i in range(n))
    elif pattern == "same_pitch":  # one key struck n times while it still sounds, all released at the end
        ev += b"\x00\x90\x3c\x40" + b"\x01\x3c\x40" * (n - 1) + b"\x01\x3c\x00" + b"\x00\x3c\x00" * (n - 1)
    elif pattern == "sequential":  # a new key every tick: as many states as the grid allows
        ev += b"\x00\x90"
        for i in range(n):
            p = 21 + (i * 7) % 88
            ev += (b"" if i == 0 else b"\x00") + bytes([p, 64]) + b"\x01" + bytes([p, 0])
    elif pattern == "staccato":  # note, silence, note...: two states per note
        ev += b"\x00\x90"
        for i in range(n):
            p = 21 + (i * 7) % 88
            ev += (b"" if i == 0 else b"\x01") + bytes([p, 64]) + b"\x01" + bytes([p, 0])
    elif pattern == "random":  # any pitch 0..127, any velocity, random gaps, some never released
        ev += b"\x00\x90"
        for i in range(n):
            ev += (vlq(rng.choice([0, 0, 1, 3, 480])) if i else b"") + bytes([rng.randrange(128), rng.randrange(128)])
    elif pattern == "giant":  # notes hundreds of millions of ticks long, overlapping
        ev += b"\x00\x90"
        for i in range(n):
            ev += (b"" if i == 0 else b"\x00") + bytes([21 + i % 88, 64])
        for i in range(n):
            ev += (vlq(0x0FFFFFFF) if i == 0 else vlq(i % 2)) + bytes([21 + i % 88, 0])
    elif pattern == "unreleased":  # note-ons only
        ev += b"\x00\x90" + b"".join((vlq(rng.choice([1, 2, 10])) if i else b"") + bytes([21 + rng.randrange(88), 100])
                                     for i in range(n))
    return header(0, 1, tpq) + track(bytes(ev))


def synth_tempo_flood(rng, n: int) -> bytes:
    body = bytearray(b"\x00\x90\x3c\x40")
    for _ in range(n):
        body += vlq(rng.choice([0, 1])) + _meta(0x51, struct.pack(">I", rng.choice([1, 500000, 0xFFFFFF, 0]))[1:])
    body += b"\x10\x80\x3c\x00"
    return header(0, 1, 480) + track(bytes(body))


def synth_keysig_flood(rng, n: int, tpq: int = 48) -> bytes:
    """Key signature changes between every pair of notes: one key segment per state."""
    body = bytearray()
    for i in range(n):
        body += b"\x00" + _meta(0x59, bytes([(i * 5) % 15 - 7 & 0xFF, 0]))
        p = 21 + (i * 5) % 88
        body += b"\x00" + bytes([0x90, p, 64]) + vlq(2) + bytes([0x80, p, 0])
    return header(0, 1, tpq) + track(bytes(body))


FLOOD_EVENTS = {
    "tempo": b"\x00" + _meta(0x51, b"\x07\xa1\x20"),
    "keysig": b"\x00" + _meta(0x59, b"\x02\x00"),
    "pedal": b"\x01\xb0\x40\x00\x01\xb0\x40\x7f",  # sustain pedal up, down
    "timesig": b"\x00" + _meta(0x58, b"\x04\x02\x18\x08"),
    "text": b"\x00" + _meta(0x01, b""),
    "notes": b"\x00\x90\x3d\x40\x01\x80\x3d\x00",
}


def synth_event_flood(kind: str, n: int | None = None, size: int = 19_500_000) -> bytes:
    """One note, then ``n`` copies of an event (default: as many as fit in ``size`` bytes)."""
    ev = FLOOD_EVENTS[kind]
    n = (size - 100) // len(ev) if n is None else n
    return header(0, 1, 480) + track(b"\x00\x90\x3c\x40" + ev * n + b"\x10\x80\x3c\x00")


def synth_many_tracks(rng, n: int) -> bytes:
    note = b"\x00\x90\x3c\x40\x60\x80\x3c\x00"
    tracks = b"".join(track(note if rng.random() < 0.5 else b"") for _ in range(n))
    return header(1, n, 480) + tracks


def synth_random_body(rng, n: int) -> bytes:
    body = bytes(rng.getrandbits(8) for _ in range(n))
    return header(rng.choice([0, 1]), 1, rng.choice([96, 480])) + track(body, end_of_track=rng.random() < 0.5)


def synth_case(rng: random.Random, large: bool) -> tuple[str, bytes]:
    if large:
        kind = rng.choice(["notes", "notes", "notes", "tempo_flood", "keysig_flood", "many_tracks", "over_cap",
                           "event_flood", "event_flood"])
        if kind == "notes":
            n = rng.choice([49_999, 99_999, 100_000, 150_000, 199_999])  # around the caps
            pattern = rng.choice(["chord", "same_pitch", "sequential", "staccato", "random", "giant", "unreleased"])
            tpq = rng.choice([1, 48, 480, 0x7FFF])
            return f"synth_{pattern}_{n // 1000}k_tpq{tpq}", synth_notes(rng, n, pattern, tpq)
        if kind == "event_flood":
            what = rng.choice(list(FLOOD_EVENTS))
            if rng.random() < 0.3:  # a file as large as allowed (20 MB): millions of events
                return f"synth_{what}_flood_20MB", synth_event_flood(what)
            n = rng.choice([199_999, 200_001])
            return f"synth_{what}_flood_{n}", synth_event_flood(what, n)
        if kind == "over_cap":
            return "synth_over_cap_250k", synth_notes(rng, 250_000, rng.choice(["chord", "sequential"]))
        if kind == "tempo_flood":
            return "synth_tempo_flood_100k", synth_tempo_flood(rng, 100_000)
        if kind == "keysig_flood":
            return "synth_keysig_flood_20k", synth_keysig_flood(rng, 20_000)
        return "synth_many_tracks_20k", synth_many_tracks(rng, 20_000)
    kind = rng.choice(["notes", "notes", "tempo", "keysig", "tracks", "random_body", "random_file", "empty"])
    if kind == "notes":
        pattern = rng.choice(["chord", "same_pitch", "sequential", "staccato", "random", "giant", "unreleased"])
        n = rng.choice([1, 2, 3, 17, 300, 3000])
        return f"synth_{pattern}_{n}", synth_notes(rng, n, pattern, rng.choice([1, 2, 48, 480, 0x7FFF]))
    if kind == "tempo":
        return "synth_tempo_flood_1k", synth_tempo_flood(rng, 1000)
    if kind == "keysig":
        return "synth_keysig_flood_300", synth_keysig_flood(rng, 300)
    if kind == "tracks":
        return "synth_many_tracks_300", synth_many_tracks(rng, 300)
    if kind == "random_body":
        return "synth_random_body", synth_random_body(rng, rng.choice([1, 10, 100, 10_000]))
    if kind == "random_file":
        return "random_bytes", bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 13, 14, 100, 1000])))
    return "synth_header_only", header(rng.choice([0, 1]), rng.choice([0, 1, 5]), 480)


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

LARGE_FRACTION = 0.02  # synthesized files of 100k+ notes / events
SYNTH_FRACTION = 0.08  # smaller synthesized files


@dataclass
class Case:
    index: int
    name: str  # what was done, e.g. "chpn-p7.mid+giant_delta+truncate"
    data: bytes
    large: bool = False


def load_corpus(folder: str | os.PathLike | None = None) -> list[bytes]:
    files = sorted(Path(folder or BUNDLED_CORPUS_DIR).glob("*.mid"))
    if not files:
        raise FileNotFoundError(f"no .mid files in {folder or BUNDLED_CORPUS_DIR}")
    _CORPUS_NAMES[:] = [f.name for f in files]
    return [f.read_bytes() for f in files]


_CORPUS_NAMES: list[str] = []  # names of the files load_corpus read last (for case labels)


def make_case(seed: int, index: int, corpus: list[bytes], large: bool | None = True) -> Case:
    """Case ``index`` of run ``seed``: always the same bytes for the same corpus.

    ``large=False`` never picks the 100k-note synthesized files (for quick
    in-process property tests); ``large=True`` picks them with probability
    :data:`LARGE_FRACTION`.
    """
    rng = random.Random(f"chopinbot-fuzz:{seed}:{index}")
    r = rng.random()
    if large and r < LARGE_FRACTION:
        name, data = synth_case(rng, large=True)
        return Case(index, name, data, large=True)
    if r < LARGE_FRACTION + SYNTH_FRACTION:
        name, data = synth_case(rng, large=False)
        if rng.random() < 0.3:  # and mutate it too
            m = rng.choice(list(MUTATORS))
            data = MUTATORS[m](rng, data, corpus)
            name += "+" + m
        return Case(index, name, data)
    src = rng.randrange(len(corpus))
    data = corpus[src]
    names = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        m = rng.choice(list(MUTATORS))
        data = MUTATORS[m](rng, data, corpus)
        names.append(m)
    label = _CORPUS_NAMES[src] if src < len(_CORPUS_NAMES) else f"corpus[{src}]"
    return Case(index, "+".join([label] + names), data)
