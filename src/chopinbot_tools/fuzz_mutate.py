"""The fuzzer's MIDI bytes (:mod:`chopinbot_tools.fuzz`): building and parsing
chunks, tracks and events, and the mutators that make a corpus file hostile
(truncation, flipped bits, lying lengths, absurd header fields, giant deltas,
running-status garbage, absurd meta and sysex events, splices).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

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
