"""A fuzzer for the MIDI reading path: ``python -m chopinbot_tools.fuzz --cases 10000``.

Every case is a hostile MIDI file: a bundled corpus file mutated (truncated,
bytes flipped, header fields overwritten with absurd or SMPTE values, track
lengths that lie, giant or over-long delta times, running-status garbage,
meta and sysex events with absurd lengths or values, empty and duplicated
tracks, splices of two files) or a file synthesized from scratch (up to a
quarter of a million notes, floods of tempo and key-signature events,
thousands of tracks, random bytes after a valid header).

Each case runs through the whole path a user's file takes:
:func:`chopinbot.dataset.prepare.process_file` (read, states, key segments,
transposition -- what ``chopinbot prepare`` does) and
:func:`chopinbot.compose.seeds.seed_from_primer` (what ``generate --primer`` and the
web app's upload do).  A case passes when it ends in a valid result (states
whose invariants hold) or in :class:`chopinbot.errors.MidiError` with a
readable one-line message.  Anything else is a failure:

* ``crash``   -- another exception escaped, or the worker process died (signal);
* ``hang``    -- no answer within the watchdog time (the worker is killed);
* ``slow``    -- the case took more CPU time than ``--time-cap``;
* ``memory``  -- it tried to allocate past ``--mem-cap-mb`` (address-space
  limit of the worker, ``RLIMIT_AS``);
* ``invalid`` -- a result that breaks the states' invariants, or an error
  message that is empty, multi-line or too long.

Cases run in worker subprocesses, so a segfault, an endless loop or a memory
blow-up in C++ code is detected, counted and survived.  Case ``i`` of seed
``s`` is always the same bytes: ``--case i`` reruns one case in-process with
its traceback; ``--save-failures DIR`` writes failing inputs.  The exit code
is 0 when no case failed, 1 otherwise (2 for bad flags).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import re
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chopinbot.cli.args import nonneg_int, positive_float, positive_int
from chopinbot.compose.seeds import seed_from_primer
from chopinbot.constants import BUNDLED_CORPUS_DIR, SEED_STATES
from chopinbot.dataset.prepare import process_file
from chopinbot.dataset.store import PrepareSettings
from chopinbot.errors import MidiError
from chopinbot.io_utils import atomic_write_json

FAILURES = ("crash", "hang", "slow", "memory", "invalid")
OUTCOMES = ("ok", "midi_error") + FAILURES
MAX_MESSAGE = 300  # characters: a readable one-line message is shorter

# --------------------------------------------------------------------------------------------
# Building MIDI bytes
# --------------------------------------------------------------------------------------------


def vlq(n: int) -> bytes:
    """A MIDI variable-length quantity (n >= 0; more than 4 bytes when n >= 2**28)."""
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def read_vlq(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= len(data):
            raise ValueError("truncated variable-length quantity")
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos
    raise ValueError("variable-length quantity longer than 4 bytes")


def header(fmt: int, ntracks: int, division: int, length: int = 6) -> bytes:
    return b"MThd" + struct.pack(">IHHH", length, fmt & 0xFFFF, ntracks & 0xFFFF, division & 0xFFFF)


def track(body: bytes, end_of_track: bool = True, length: int | None = None) -> bytes:
    if end_of_track:
        body += b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(body) if length is None else length & 0xFFFFFFFF) + body


@dataclass
class Chunk:
    offset: int  # of the 4-byte type
    kind: bytes
    length: int  # as the length field says
    body_start: int
    body_end: int  # clipped to the data


def parse_chunks(data: bytes) -> list[Chunk]:
    """The chunks of a MIDI file as far as they can be found (never raises)."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        end = min(len(data), pos + 8 + length)
        out.append(Chunk(pos, kind, length, pos + 8, end))
        pos = pos + 8 + length
    return out


@dataclass
class Event:
    start: int  # offset of the delta time within the track body
    status_pos: int  # offset of the status (or first data) byte
    end: int


def track_events(body: bytes) -> list[Event]:
    """The events of a well-formed track body (stops at the first broken one)."""
    events, pos, running = [], 0, None
    try:
        while pos < len(body):
            start = pos
            _, pos = read_vlq(body, pos)
            b = body[pos]
            if b == 0xFF:
                length, p = read_vlq(body, pos + 2)
                end = p + length
                running = None
            elif b in (0xF0, 0xF7):
                length, p = read_vlq(body, pos + 1)
                end = p + length
                running = None
            elif b & 0x80:
                running = b
                end = pos + 1 + (1 if b & 0xF0 in (0xC0, 0xD0) else 2)
            else:
                if running is None:
                    break
                end = pos + (1 if running & 0xF0 in (0xC0, 0xD0) else 2)
            if end > len(body):
                break
            events.append(Event(start, pos, end))
            pos = end
    except (ValueError, IndexError):
        pass
    return events


def _set_track_body(data: bytes, chunk: Chunk, body: bytes) -> bytes:
    """Replace a track's body, fixing its length field."""
    return data[: chunk.offset] + b"MTrk" + struct.pack(">I", len(body)) + body + data[chunk.body_end :]


def _tracks(data: bytes) -> list[Chunk]:
    return [c for c in parse_chunks(data) if c.kind == b"MTrk"]


# --------------------------------------------------------------------------------------------
# Mutators: (rng, data, corpus) -> data
# --------------------------------------------------------------------------------------------

Mutator = Callable[[random.Random, bytes, list], bytes]


def m_truncate(rng, data, corpus):
    choices = [rng.randrange(len(data) + 1), rng.randrange(0, 23), len(data) - 1,
               len(data) - rng.randrange(1, 64), rng.randrange(14, 40)]
    return data[: max(0, rng.choice(choices))]


def m_flip_bits(rng, data, corpus):
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 2, 4, 8, 16, 64])):
        if b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def m_random_bytes(rng, data, corpus):
    b = bytearray(data)
    if not b:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    i = rng.randrange(len(b))
    n = rng.choice([1, 2, 4, 16, 64, 256])
    b[i : i + n] = bytes(rng.getrandbits(8) for _ in range(n))
    return bytes(b)


def m_insert_delete(rng, data, corpus):
    i = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        return data[:i] + bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 2, 3, 7, 100]))) + data[i:]
    return data[:i] + data[i + rng.choice([1, 2, 3, 7, 100, 5000]) :]


def _set16(data: bytes, pos: int, value: int) -> bytes:
    if len(data) < pos + 2:
        return data
    return data[:pos] + struct.pack(">H", value & 0xFFFF) + data[pos + 2 :]


def m_header_format(rng, data, corpus):
    return _set16(data, 8, rng.choice([0, 1, 2, 3, 0x7FFF, 0xFFFF, rng.getrandbits(16)]))


def m_header_ntracks(rng, data, corpus):
    n = int.from_bytes(data[10:12], "big") if len(data) >= 12 else 1
    return _set16(data, 10, rng.choice([0, 1, n - 1, n + 1, n + 100, 0x7FFF, 0xFFFF, rng.getrandbits(16)]))


def m_header_division(rng, data, corpus):
    smpte = [(0x100 - fps) << 8 | tpf for fps in (24, 25, 29, 30) for tpf in (0, 4, 40, 80, 100)]
    return _set16(data, 12, rng.choice([0, 1, 2, 3, 5, 7, 47, 48, 96, 0x7FFF, 0x8000, 0xFFFF,
                                        rng.choice(smpte), rng.getrandbits(16)]))


def m_header_length(rng, data, corpus):
    if len(data) < 8:
        return data
    new = rng.choice([0, 1, 5, 7, 8, 100, 0x7FFFFFFF, 0xFFFFFFFF])
    extra = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 0, 2, 10]))) if new > 6 else b""
    return data[:4] + struct.pack(">I", new) + data[8:14] + extra + data[14:]


def m_track_length_lie(rng, data, corpus):
    tracks = _tracks(data)
    if not tracks:
        return m_flip_bits(rng, data, corpus)
    c = rng.choice(tracks)
    n = c.length
    new = rng.choice([0, 1, 3, n - 1, n + 1, n + 7, n * 2, n + 100_000, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)])
    return data[: c.offset + 4] + struct.pack(">I", max(0, new) & 0xFFFFFFFF) + data[c.offset + 8 :]


def _mutate_events(rng, data, corpus, edit: Callable[[random.Random, bytes, list[Event]], bytes]) -> bytes:
    tracks = [c for c in _tracks(data) if c.body_end > c.body_start]
    if not tracks:
        return m_flip_bits(rng, data, corpus)
    c = rng.choice(tracks)
    body = data[c.body_start : c.body_end]
    events = track_events(body)
    if not events:
        return m_flip_bits(rng, data, corpus)
    return _set_track_body(data, c, edit(rng, body, events))


GIANT_DELTAS = [vlq(0x0FFFFFFF), vlq(0x0FFFFFFF), vlq(0x07FFFFFF), vlq(1 << 27),
                b"\xff\xff\xff\xff\x7f",  # five bytes: longer than the standard allows
                b"\x80" * 8 + b"\x00",  # over-long zero
                b"\xff" * 12]  # never terminated


def m_giant_delta(rng, data, corpus):
    def edit(rng, body, events):
        mode = rng.random()
        if mode < 0.5:  # one event
            ev = rng.choice(events)
            return body[: ev.start] + rng.choice(GIANT_DELTAS) + body[ev.status_pos :]
        # many events: times add up past 2**31
        out, last = bytearray(), 0
        chosen = set(rng.sample(range(len(events)), min(len(events), rng.choice([16, 64, 1000]))))
        for i, ev in enumerate(events):
            out += body[last : ev.start]
            out += vlq(0x0FFFFFFF) if i in chosen else body[ev.start : ev.status_pos]
            out += body[ev.status_pos : ev.end]
            last = ev.end
        return bytes(out + body[last:])

    return _mutate_events(rng, data, corpus, edit)


def m_running_status(rng, data, corpus):
    def edit(rng, body, events):
        ev = rng.choice(events)
        i = ev.status_pos
        choice = rng.randrange(6)
        if choice == 0:  # data bytes where a status is needed (at the track start: no running status)
            return vlq(0) + bytes([rng.randrange(0x80)] * rng.choice([1, 2, 3])) + body
        if choice == 1:  # a status byte replaced by a data byte
            return body[:i] + bytes([body[i] & 0x7F]) + body[i + 1 :]
        if choice == 2:  # system real-time / undefined status bytes in the stream
            status = rng.choice([0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF8, 0xF9, 0xFA, 0xFD, 0xFE])
            return body[:i] + bytes([status]) + body[i:]
        if choice == 3:  # a status with no data bytes, then a new event
            return body[:i] + bytes([rng.choice([0x90, 0x80, 0xB0, 0xE0, 0xC0])]) + body[i:]
        if choice == 4:  # garbage run of data bytes after an event
            return body[: ev.end] + bytes(rng.randrange(0x80) for _ in range(rng.choice([1, 5, 50]))) + body[ev.end :]
        return body[: ev.end] + bytes([0x90]) + body[ev.end :]  # a status byte where a delta belongs

    return _mutate_events(rng, data, corpus, edit)


def _meta(kind: int, payload: bytes, length: int | None = None) -> bytes:
    return b"\xff" + bytes([kind]) + vlq(len(payload) if length is None else length) + payload


ABSURD_EVENTS = [
    lambda rng: _meta(0x51, b"\x00\x00\x00"),  # tempo 0 us per quarter
    lambda rng: _meta(0x51, b"\xff\xff\xff"),  # slowest tempo
    lambda rng: _meta(0x51, b"\x00\x00\x01"),  # 1 us per quarter: 60 million bpm
    lambda rng: _meta(0x51, b""),  # tempo without data
    lambda rng: _meta(0x51, b"\x07"),  # tempo too short
    lambda rng: _meta(0x51, b"\x07\xa1\x20\x00\x00"),  # tempo too long
    lambda rng: _meta(0x59, bytes([rng.choice([0x80, 0x7F, 0x08, 0xF8]), rng.choice([0, 1, 5, 0xFF])])),
    lambda rng: _meta(0x59, b""),  # key signature without data
    lambda rng: _meta(0x58, b"\x00\x00\x00\x00"),  # time signature 0/1
    lambda rng: _meta(0x58, b"\xff\xff\xff\xff"),  # denominator 2**255
    lambda rng: _meta(0x58, b"\x04"),
    lambda rng: _meta(0x2F, b""),  # end of track in the middle
    lambda rng: _meta(rng.choice([0x01, 0x03, 0x04, 0x7F]), b"abc", length=rng.choice([0x0FFFFFFF, 1000, 2**21])),
    lambda rng: _meta(rng.choice([0x01, 0x03, 0x06]), bytes(rng.getrandbits(8) for _ in range(300))),
    lambda rng: _meta(0x03, "\u00e9\u4e2d\ud83c\udfb9".encode("utf-8", "surrogatepass")),  # invalid UTF-8 name
    lambda rng: _meta(0x00, b"\x00"),
    lambda rng: _meta(0x20, b""),
    lambda rng: _meta(0x21, b"\xff"),
    lambda rng: _meta(0x54, b"\xff\xff\xff\xff\xff"),  # SMPTE offset out of range
    lambda rng: b"\xf0" + vlq(0x0FFFFFFF) + b"\x7e\x7f",  # sysex claiming 256 MB
    lambda rng: b"\xf7" + vlq(3) + b"\x01",
    lambda rng: b"\xff" + b"\xff\xff\xff\xff",  # meta with an unterminated length
    lambda rng: bytes([0x90 | rng.randrange(16), rng.randrange(128), rng.randrange(128)]),
    lambda rng: bytes([0xE0, 0x7F, 0x7F]),  # pitch bend
    lambda rng: bytes([0xB0, 64, 127]),  # pedal down and never up
]


def m_absurd_event(rng, data, corpus):
    def edit(rng, body, events):
        ev = rng.choice(events)
        new = vlq(rng.choice([0, 0, 1, 480])) + rng.choice(ABSURD_EVENTS)(rng)
        return body[: ev.start] + new + body[ev.start :]

    return _mutate_events(rng, data, corpus, edit)


def m_empty_track(rng, data, corpus):
    chunks = parse_chunks(data)
    at = rng.choice([c.offset for c in chunks[1:]] + [len(data)]) if len(chunks) > 1 else len(data)
    n = int.from_bytes(data[10:12], "big") if len(data) >= 12 else 0
    empty = rng.choice([b"MTrk\x00\x00\x00\x00", track(b""), track(b"", end_of_track=False)])
    out = data[:at] + empty + data[at:]
    return _set16(out, 10, n + 1) if rng.random() < 0.8 else out


def m_drop_note_tracks(rng, data, corpus):
    """Every track emptied (no notes) or its notes moved off the keyboard / to drums."""
    out = data
    mode = rng.randrange(3)
    for c in reversed(_tracks(data)):
        body = out[c.body_start : c.body_end]
        if mode == 0:
            new = b"\x00\xff\x2f\x00"
        else:
            b = bytearray(body)
            for ev in track_events(body):
                st = b[ev.status_pos]
                if st & 0xF0 in (0x80, 0x90) and ev.end - ev.status_pos == 3:
                    if mode == 1:  # pitches off the piano (0..20, 109..127)
                        b[ev.status_pos + 1] = rng.choice([rng.randrange(0, 21), rng.randrange(109, 128)])
                    else:  # channel 10: drums
                        b[ev.status_pos] = (st & 0xF0) | 9
            new = bytes(b)
        out = _set_track_body(out, c, new)
    return out


def m_duplicate_track(rng, data, corpus):
    tracks = _tracks(data)
    if not tracks:
        return m_flip_bits(rng, data, corpus)
    c = max(tracks, key=lambda t: t.body_end - t.body_start)
    k = rng.choice([2, 10, 100])
    chunk = data[c.offset : c.body_end]
    n = int.from_bytes(data[10:12], "big") if len(data) >= 12 else 0
    return _set16(data + chunk * k, 10, n + k)


def m_splice(rng, data, corpus):
    other = rng.choice(corpus)
    mode = rng.randrange(3)
    if mode == 0:  # a prefix of one file, a suffix of another
        return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]
    if mode == 1:  # two files back to back (a second MThd inside)
        return data + other
    # one file's header with another's tracks
    return data[:14] + other[14:]


def m_unknown_chunk(rng, data, corpus):
    chunks = parse_chunks(data)
    at = rng.choice([c.offset for c in chunks[1:]] + [len(data)]) if len(chunks) > 1 else len(data)
    kind = rng.choice([b"XFIH", b"MThd", b"\x00\x00\x00\x00", b"RIFF"])
    length = rng.choice([0, 4, 0xFFFFFFFF])
    payload = bytes(rng.getrandbits(8) for _ in range(min(length, 4)))
    return data[:at] + kind + struct.pack(">I", length) + payload + data[at:]


MUTATORS: dict[str, Mutator] = {
    "truncate": m_truncate,
    "flip_bits": m_flip_bits,
    "random_bytes": m_random_bytes,
    "insert_delete": m_insert_delete,
    "header_format": m_header_format,
    "header_ntracks": m_header_ntracks,
    "header_division": m_header_division,
    "header_length": m_header_length,
    "track_length_lie": m_track_length_lie,
    "giant_delta": m_giant_delta,
    "running_status": m_running_status,
    "absurd_event": m_absurd_event,
    "empty_track": m_empty_track,
    "drop_note_tracks": m_drop_note_tracks,
    "duplicate_track": m_duplicate_track,
    "splice": m_splice,
    "unknown_chunk": m_unknown_chunk,
}

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


# --------------------------------------------------------------------------------------------
# The path under test
# --------------------------------------------------------------------------------------------


def _one_line_ok(msg: str) -> bool:
    return bool(msg.strip()) and "\n" not in msg and len(msg) <= MAX_MESSAGE and msg.isprintable()


def _check_states(states, max_states: int | None = None) -> str | None:
    """The invariants of a valid result; a description of the first broken one, or None."""
    n = len(states)
    if states.keys.shape != (n, 88) or states.onsets.shape != (n, 88):
        return f"keys/onsets shape {states.keys.shape}/{states.onsets.shape} for {n} states"
    if states.seconds.shape != (n,) or states.velocity.shape != (n,):
        return "array lengths differ"
    if (states.onsets & ~states.keys).any():
        return "an onset on a key that does not sound"
    if not (np.isfinite(states.beats).all() and (states.beats > 0).all()):
        return "a state with a non-positive or non-finite length in beats"
    if not (np.isfinite(states.seconds).all() and (states.seconds >= 0).all()):
        return "a state with a negative or non-finite length in seconds"
    if states.velocity.max(initial=0) > 127:
        return "velocity above 127"
    if max_states is not None and n > max_states:
        return f"{n} states, above the cap {max_states}"
    return None


def check_bytes(data: bytes, name: str = "fuzz.mid", workdir: str | os.PathLike | None = None) -> dict:
    """Run one input through the user's reading path and classify it.

    Returns ``{"outcome": "ok" | "midi_error" | "crash" | "invalid", "message",
    "states", "segments"}`` (``message``: the first MidiError reason, or what
    went wrong).  Memory errors are not caught here (the worker reports them).
    """
    settings = PrepareSettings()
    messages = []
    result = {"outcome": "ok", "message": "", "states": 0, "segments": 0}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        # 1) what `chopinbot prepare` does with the file
        try:
            res = process_file(path, settings)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 -- anything escaping process_file is a crash
            return {"outcome": "crash", "message": f"process_file: {type(e).__name__}: {e}"[:1000], "states": 0}
        if res.error is not None:
            messages.append(res.error)
        else:
            result["states"] = res.n_states
            result["segments"] = len(res.segments)
            total = 0
            for states, _key, _shift, _first in res.segments:
                bad = _check_states(states)
                if bad:
                    return {"outcome": "invalid", "message": f"process_file: {bad}", "states": res.n_states}
                total += len(states)
            if total != res.n_states:
                return {"outcome": "invalid", "message": "segments do not add up to the states", "states": total}
            if res.n_states > settings.max_states:
                return {"outcome": "invalid", "message": f"{res.n_states} states above the cap", "states": total}
    # 2) what `generate --primer` and the app's upload do with it
    try:
        seed = seed_from_primer(data, SEED_STATES, settings, name=name)
    except MidiError as e:
        messages.append(e.reason)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        return {"outcome": "crash", "message": f"seed_from_primer: {type(e).__name__}: {e}"[:1000],
                "states": result["states"]}
    else:
        bad = _check_states(seed.states, SEED_STATES)
        if bad:
            return {"outcome": "invalid", "message": f"seed_from_primer: {bad}", "states": result["states"]}
    for m in messages:
        if not _one_line_ok(m):
            return {"outcome": "invalid", "message": f"unreadable error message: {m[:200]!r}",
                    "states": result["states"]}
    if messages:
        result["outcome"] = "midi_error"
        result["message"] = messages[0]
    return result


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


def _import_target(spec: str) -> Callable[[bytes], dict]:
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn or "check_bytes")


def _worker(target: str, mem_cap_mb: int) -> None:
    """Read cases from stdin (4-byte length + bytes), answer one JSON line each."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if mem_cap_mb:
        cap = mem_cap_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    fn = _import_target(target)
    fn(b"")  # import everything before the first timed case
    stdin, stdout = sys.stdin.buffer, sys.stdout
    stdout.write("ready\n")
    stdout.flush()
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        (n,) = struct.unpack(">I", head)
        data = stdin.read(n)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            res = fn(data)
        except MemoryError:
            res = {"outcome": "memory", "message": "MemoryError"}
        except Exception as e:  # noqa: BLE001 -- the target itself failed
            res = {"outcome": "crash", "message": f"{type(e).__name__}: {e}"[:1000]}
        res["wall"] = time.perf_counter() - t0
        res["cpu"] = time.process_time() - c0
        res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stdout.write(json.dumps(res) + "\n")
        stdout.flush()


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process so far, from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class _Worker:
    """One worker process; started, then ``ready`` once its imports are done."""

    def __init__(self, target: str, mem_cap_mb: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from chopinbot_tools.fuzz import _worker; _worker(sys.argv[1], int(sys.argv[2]))",
             target, str(mem_cap_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        self.buf = b""
        self.ready = False
        self.case: Case | None = None
        self.started = time.perf_counter()
        self.cpu0 = 0.0

    def send(self, case: Case) -> None:
        self.case, self.started, self.cpu0 = case, time.perf_counter(), _cpu_seconds(self.proc.pid)
        self.proc.stdin.write(struct.pack(">I", len(case.data)) + case.data)
        self.proc.stdin.flush()

    def cpu(self) -> float:
        """CPU seconds spent on the current case (or on starting up)."""
        return _cpu_seconds(self.proc.pid) - self.cpu0

    def read_line(self) -> bytes | None:
        """A complete line if one is there; b'' at end of file (the worker died)."""
        if b"\n" not in self.buf:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return b""
            self.buf += chunk
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line
        return None

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        return self.proc.wait()


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


@dataclass
class Summary:
    cases: int = 0
    seed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in OUTCOMES})
    seconds: float = 0.0
    time_cap: float = 0.0
    mem_cap_mb: int = 0
    slowest: list[dict] = field(default_factory=list)  # the 10 slowest cases (CPU time)
    peak_rss_mb: float = 0.0
    failures: list[dict] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)  # MidiError reasons (numbers blanked) -> count
    by_mutator: dict[str, dict[str, int]] = field(default_factory=dict)
    large_cases: int = 0
    worker_restarts: int = 0

    @property
    def failed(self) -> int:
        return sum(self.counts[k] for k in FAILURES)

    def text(self) -> str:
        c = self.counts
        lines = [
            f"fuzzed {self.cases:,} MIDI inputs (seed {self.seed}, {self.large_cases} of 100k+ notes/events) in "
            f"{self.seconds:.1f} s: ok {c['ok']:,}, MidiError {c['midi_error']:,}; "
            f"crash {c['crash']}, hang {c['hang']}, slow {c['slow']}, memory {c['memory']}, invalid {c['invalid']}",
        ]
        if self.slowest:
            s = self.slowest[0]
            lines.append(f"slowest case: #{s['index']} {s['name']}: {s['cpu']:.2f} s CPU, {s['wall']:.2f} s wall "
                         f"(cap {self.time_cap:g} s CPU); peak worker memory {self.peak_rss_mb:.0f} MB "
                         f"(cap {self.mem_cap_mb} MB address space)")
        for f in self.failures[:20]:
            lines.append(f"FAILED #{f['index']} [{f['outcome']}] {f['name']}: {f['message'][:300]}")
        if len(self.failures) > 20:
            lines.append(f"... and {len(self.failures) - 20} more failures")
        lines.append("PASS: no crash, hang or blow-up" if not self.failed else f"FAIL: {self.failed} failing cases")
        return "\n".join(lines)


def _message_key(msg: str) -> str:
    msg = re.sub(r"^.*?\.mid: ", "", msg)
    return re.sub(r"\d[\d,.]*", "N", msg)[:120]


def run_fuzz(
    cases: int = 1000,
    seed: int = 0,
    time_cap: float = 2.0,
    mem_cap_mb: int = 2048,
    jobs: int = 1,
    hang_cpu: float | None = None,
    hang_wall: float | None = None,
    target: str = "chopinbot_tools.fuzz:check_bytes",
    corpus_dir: str | os.PathLike | None = None,
    save_failures: str | os.PathLike | None = None,
    start: int = 0,
    progress: bool = False,
    case_filter: Callable[[Case], bool] | None = None,
) -> Summary:
    """Run cases ``start .. start + cases - 1`` of ``seed`` in ``jobs`` worker processes.

    A case is *slow* when it used more than ``time_cap`` CPU seconds.  The
    watchdog kills a worker as *hung* when its case has used ``hang_cpu`` CPU
    seconds (default ``max(10, 5 * time_cap)``) or ``hang_wall`` wall seconds
    (default ``max(120, 30 * time_cap)``, a backstop for a worker blocked
    without using CPU); CPU time, unlike wall time, does not grow when the
    machine is busy with other work.
    """
    folder = Path(corpus_dir or BUNDLED_CORPUS_DIR)
    corpus = load_corpus(folder)
    hang_cpu = hang_cpu or max(10.0, 5 * time_cap)
    hang_wall = hang_wall or max(120.0, 30 * time_cap)
    summary = Summary(seed=seed, time_cap=time_cap, mem_cap_mb=mem_cap_mb)
    t_start = time.perf_counter()
    pending = (make_case(seed, i, corpus) for i in range(start, start + cases))
    if case_filter is not None:
        pending = (c for c in pending if case_filter(c))
    done = 0

    def record(case: Case, res: dict) -> None:
        nonlocal done
        outcome = res.get("outcome", "crash")
        if outcome in ("ok", "midi_error") and res.get("cpu", 0.0) > time_cap:
            outcome = "slow"
            res["message"] = f"took {res['cpu']:.2f} s CPU (cap {time_cap:g} s); " + res.get("message", "")
        summary.counts[outcome] = summary.counts.get(outcome, 0) + 1
        summary.cases += 1
        summary.large_cases += case.large
        if outcome == "midi_error":
            k = _message_key(res.get("message", ""))
            summary.messages[k] = summary.messages.get(k, 0) + 1
        parts = case.name.split("+")
        for part in parts[1:] if "." in parts[0] else ["synth"] + parts[1:]:
            d = summary.by_mutator.setdefault(part, {})
            d[outcome] = d.get(outcome, 0) + 1
        if "cpu" in res:
            summary.peak_rss_mb = max(summary.peak_rss_mb, res.get("maxrss_mb", 0.0))
            summary.slowest.append(dict(index=case.index, name=case.name, cpu=round(res["cpu"], 3),
                                        wall=round(res["wall"], 3), outcome=outcome, bytes=len(case.data),
                                        states=res.get("states", 0)))
            summary.slowest = sorted(summary.slowest, key=lambda s: -s["cpu"])[:10]
        if outcome in FAILURES:
            summary.failures.append(dict(index=case.index, name=case.name, outcome=outcome,
                                         message=str(res.get("message", ""))[:1000], bytes=len(case.data)))
            if save_failures:
                d = Path(save_failures)
                d.mkdir(parents=True, exist_ok=True)
                (d / f"seed{seed}-case{case.index}.mid").write_bytes(case.data)
        done += 1
        if progress and done % 500 == 0:
            c = summary.counts
            print(f"  {done:,} cases, {time.perf_counter() - t_start:.0f} s: ok {c['ok']:,}, "
                  f"MidiError {c['midi_error']:,}, failures {summary.failed}", file=sys.stderr, flush=True)

    workers = [_Worker(target, mem_cap_mb) for _ in range(max(1, jobs))]
    exhausted = False

    def feed(w: _Worker) -> None:
        nonlocal exhausted
        case = None if exhausted else next(pending, None)
        exhausted = case is None
        if case is None:
            w.case = None
        else:
            w.send(case)

    def replace(w: _Worker) -> _Worker:
        w.kill()
        summary.worker_restarts += 1
        new = _Worker(target, mem_cap_mb)
        workers[workers.index(w)] = new
        return new

    try:
        while True:
            live = [w for w in workers if not w.ready or w.case is not None]
            if not live:
                break
            ready, _, _ = select.select([w.proc.stdout for w in live], [], [], 0.5)
            for w in live:
                if w.proc.stdout in ready:
                    line = w.read_line()
                    if line is None:
                        continue
                    if line == b"":  # the worker died
                        rc = w.proc.wait()
                        why = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
                        if not w.ready:
                            raise RuntimeError(f"fuzz worker for {target} failed to start ({why})")
                        record(w.case, {"outcome": "crash", "message": f"worker process {why}"})
                        replace(w)
                        continue
                    if not w.ready:
                        w.ready = line.strip() == b"ready"
                        feed(w)
                        continue
                    record(w.case, json.loads(line))
                    feed(w)
                elif w.ready and w.case is not None:
                    cpu, wall = w.cpu(), time.perf_counter() - w.started
                    if cpu > hang_cpu or wall > hang_wall:
                        record(w.case, {"outcome": "hang", "message": f"no answer after {cpu:.1f} s CPU / {wall:.1f} s "
                                                                      "wall; worker killed"})
                        replace(w)
    finally:
        for w in workers:
            w.kill()
    summary.seconds = time.perf_counter() - t_start
    summary.messages = dict(sorted(summary.messages.items(), key=lambda kv: -kv[1]))
    return summary


def _reproduce(seed: int, index: int, corpus_dir: str | None, save: str | None) -> int:
    """Run one case in-process, without catching anything, so its traceback shows."""
    case = make_case(seed, index, load_corpus(corpus_dir or BUNDLED_CORPUS_DIR))
    print(f"case #{case.index} of seed {seed}: {case.name} ({len(case.data):,} bytes)")
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        out = Path(save) / f"seed{seed}-case{case.index}.mid"
        out.write_bytes(case.data)
        print(f"input written to {out}")
    t0 = time.process_time()
    res = check_bytes(case.data)
    print(f"{res['outcome']}: {res['message'] or res.get('states', 0)} ({time.process_time() - t0:.3f} s CPU)")
    if res["outcome"] == "crash":  # again, letting the exception through
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "case.mid").write_bytes(case.data)
            process_file(Path(tmp) / "case.mid", PrepareSettings())
        try:
            seed_from_primer(case.data, SEED_STATES, PrepareSettings())
        except MidiError:
            pass
    return 0 if res["outcome"] in ("ok", "midi_error") else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chopinbot_tools.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=positive_int, default=1000, help="number of inputs (default: %(default)s)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="run seed: case i of seed s is always the same bytes")
    p.add_argument("--start", type=nonneg_int, default=0, help="first case index (default: 0)")
    p.add_argument("--case", type=nonneg_int, help="run only this case, in-process, and show its traceback")
    p.add_argument("--time-cap", type=positive_float, default=2.0,
                   help="CPU seconds one input may take, both paths together (default: %(default)s)")
    p.add_argument("--hang-cpu", type=positive_float,
                   help="CPU seconds before a worker is killed as hung (default: max(10, 5 x time cap))")
    p.add_argument("--mem-cap-mb", type=nonneg_int, default=2048,
                   help="address-space limit of a worker in MB; 0 = none (default: %(default)s)")
    p.add_argument("--jobs", type=positive_int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument("--corpus", help="folder of .mid files to mutate (default: the bundled corpus)")
    p.add_argument("--report", help="write the summary as JSON to this file")
    p.add_argument("--save-failures", help="write every failing input into this folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.case is not None:
        return _reproduce(args.seed, args.case, args.corpus, args.save_failures)
    summary = run_fuzz(args.cases, args.seed, args.time_cap, args.mem_cap_mb, args.jobs, args.hang_cpu,
                       corpus_dir=args.corpus, save_failures=args.save_failures, start=args.start,
                       progress=not args.quiet)
    print(summary.text())
    if args.report:
        atomic_write_json(args.report, dict(asdict(summary), failed=summary.failed))
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
