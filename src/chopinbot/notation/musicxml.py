"""Writing a :class:`~chopinbot.notation.score.ScoreNotes` as MusicXML 4.0 (partwise), by hand.

Why by hand (measured, docs/sheet-music.md): music21 10.5.1 takes ~1.5 s to import and its
``makeNotation`` re-derives what our states already know (and splits a 5/48-beat note into
1/48 remnants); partitura 1.9.0 lost the accidentals.  The notation decisions here (bars, hands,
voices, values, spelling) are ours; what is left is serialising them, a few hundred lines of
string building that runs in ~0.1 s for a minute of music.

One part, two staves (treble and bass), 48 divisions a quarter note.  In each bar and staff the
voices are written highest first (voice 1 stems up, 2 down, as engravers do); voice 1 is filled
with rests where it is silent, the other voices skip silence with ``<forward>``.  Accidentals are
printed where a note's alteration differs from what the key signature and the bar so far say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import numpy as np

from chopinbot.notation.rhythm import (
    BEAM_LEVELS,
    Chord,
    G,
    Piece,
    assign_voices,
    quantize_voice,
    split_values,
    window_is_triplet,
)
from chopinbot.notation.spelling import fifth_name, spelled_octave

ACCIDENTALS = {-2: "flat-flat", -1: "flat", 0: "natural", 1: "sharp", 2: "double-sharp"}


@dataclass
class Direction:
    """Something written above (or, for dynamics, below) the right hand's staff at a score step."""

    step: int
    kind: str  # "words", "dynamics", "tempo"
    text: str
    bpm: float = 0.0  # tempo: the metronome mark (in beat_unit per minute)
    beat_unit: str = "quarter"
    beat_dots: int = 0


@dataclass
class Stats:
    """What writing had to change, for the log."""

    moved_boundaries: int = 0  # note boundaries moved onto a notatable grid
    cut_notes: int = 0  # notes cut short because a staff ran out of voices
    dropped_chords: int = 0  # chords left with no length by those moves
    remnants: int = 0  # values the grid could not take (should stay 0)
    notes: list = field(default_factory=list)


def _bar_steps(bar_lines: list[float]) -> list[int]:
    return [int(round(b * G)) for b in bar_lines]


def write_musicxml(starts: np.ndarray, ends: np.ndarray, pitches: np.ndarray, velocity: np.ndarray,
                   staff: np.ndarray, fifths: np.ndarray, metre, key_changes: list[tuple[int, int, int]],
                   directions: list[Direction], title: str, composer: str, subtitle: str = "",
                   rights: str = "") -> tuple[str, Stats]:
    """MusicXML text of notes given in score steps (``starts``/``ends``), MIDI ``pitches``, ``staff``
    (1/2) and line-of-fifths spelling ``fifths``; ``key_changes`` is ``(step, sharps, minor)``."""
    stats = Stats()
    end_step = int(ends.max()) if len(ends) else G
    bars = _bar_steps(metre.bar_lines(max(end_step / G, metre.offset + 1e-6)))
    pickup = int(round(metre.pickup * G))
    # measure spans: the first from the pickup
    spans = [(max(bars[i], pickup if i == 0 else bars[i]), bars[i + 1]) for i in range(len(bars) - 1)]
    if not spans:
        spans = [(0, bars[-1] if bars[-1] > 0 else 4 * G)]
    staff_voices: dict[int, list[list[Chord]]] = {}
    for s in (1, 2):
        sel = np.flatnonzero(staff == s)
        voices, cut = assign_voices(starts[sel], ends[sel], pitches[sel], velocity[sel], sel)
        stats.cut_notes += cut
        qv = []
        for v in voices:
            n_before = len(v)
            q, moved = quantize_voice(v)
            stats.moved_boundaries += moved
            stats.dropped_chords += n_before - len(q)
            if q:
                qv.append(q)
        staff_voices[s] = qv
    lines = [_header(title, composer, subtitle, rights)]
    lines.append('<part id="P1">')
    key_now = None
    time_now = None
    dirs = sorted(directions, key=lambda d: d.step)
    last_numbers: dict[int, dict[int, int]] = {1: {}, 2: {}}  # per staff: voice -> its number in the last measure
    for m, (ms, me) in enumerate(spans):
        implicit = m == 0 and pickup > 0
        number = 0 if implicit else (m if pickup > 0 else m + 1)
        lines.append(f'<measure number="{number}"' + (' implicit="yes"' if implicit else "") + ">")
        attrs = []
        if m == 0:
            attrs.append(f"<divisions>{G}</divisions>")
        sharps, minor = _key_at(key_changes, ms if m else 0)
        if (sharps, minor) != key_now:
            attrs.append(f"<key><fifths>{sharps}</fifths><mode>{'minor' if minor else 'major'}</mode></key>")
            key_now = (sharps, minor)
        sig = metre.signature_at(ms / G) if not implicit else metre.first
        if sig != time_now:
            attrs.append(f"<time><beats>{sig[0]}</beats><beat-type>{sig[1]}</beat-type></time>")
            time_now = sig
        if m == 0:
            attrs.append('<staves>2</staves><clef number="1"><sign>G</sign><line>2</line></clef>'
                         '<clef number="2"><sign>F</sign><line>4</line></clef>')
        if attrs:
            lines.append("<attributes>" + "".join(attrs) + "</attributes>")
        bar_start = bars[0] if implicit else ms
        bar_len = (bars[1] - bars[0]) if implicit else (me - ms)
        beat = _beat_steps(sig)
        m_dirs = [d for d in dirs if ms <= d.step < me or (m == len(spans) - 1 and d.step >= me)]
        first = True
        for s in (1, 2):
            voices, numbers = _measure_voices(staff_voices[s], ms, me, last_numbers[s])
            built = []
            for vi, v in enumerate(voices):
                full = [c for c, _, _ in v]
                windows = {w for w in range(ms // G, (me + G - 1) // G) if window_is_triplet(full, w)}
                items = _pieces(v, ms, me, bar_start, bar_len, beat, sig[0], windows, fill=(vi == 0), stats=stats)
                built.append((items, windows))
            printed = _accidentals([items for items, _ in built], fifths, key_now[0])
            for vi, (items, windows) in enumerate(built):
                if not first:
                    lines.append(f"<backup><duration>{me - ms}</duration></backup>")
                first = False
                voice_no = numbers[vi] + 1 + (4 if s == 2 else 0)
                xml = _voice_xml(items, voice_no, s, windows, printed[vi], fifths,
                                 m_dirs if (s == 1 and vi == 0) else None, bar_start, beat)
                lines.extend(xml)
        lines.append("</measure>")
    lines.append("</part></score-partwise>")
    return "\n".join(lines), stats


def _beat_steps(sig: tuple[int, int]) -> int:
    num, den = sig
    unit = 4 * G // den
    return unit * 3 if den == 8 and num % 3 == 0 and num > 3 else max(unit, G if den >= 4 else unit)


def _key_at(changes: list[tuple[int, int, int]], step: int) -> tuple[int, int]:
    cur = (changes[0][1], changes[0][2]) if changes else (0, 0)
    for t, sh, mi in changes:
        if t <= step:
            cur = (sh, mi)
    return cur


def _measure_voices(staff_voices: list[list[Chord]], ms: int, me: int, last: dict[int, int]
                    ) -> tuple[list[list[tuple[Chord, bool, bool]]], list[int]]:
    """The voices of one staff sounding in measure [ms, me), clipped (:func:`_clip`), and their numbers
    (0-based): the highest voice first, except that a voice tied over the bar line keeps the number
    it had (``last``, updated here): a tie joins two notes of one voice, and verovio (and so a reader
    of its MIDI) does not follow it from one voice into another."""
    present = [(g, c) for g, c in ((g, _clip(v, ms, me)) for g, v in enumerate(staff_voices)) if c]
    present.sort(key=lambda gc: -np.mean([p for c, _, _ in gc[1] for p in c.pitches]))
    numbers: dict[int, int] = {}
    for g, c in present:
        if c[0][1] and g in last and last[g] not in numbers.values():
            numbers[g] = last[g]
    for g, _ in present:
        if g not in numbers:
            numbers[g] = min(n for n in range(len(present) + 1) if n not in numbers.values())
    last.clear()
    last.update(numbers)
    present.sort(key=lambda gc: numbers[gc[0]])
    if not present:
        return [[]], [0]
    return [c for _, c in present], [numbers[g] for g, _ in present]


def _clip(voice: list[Chord], ms: int, me: int) -> list[tuple[Chord, bool, bool]]:
    """The voice's chords within [ms, me): (chord clipped, tied from before, tied on after)."""
    out = []
    for c in voice:
        if c.end <= ms or c.start >= me:
            continue
        out.append((Chord(max(c.start, ms), min(c.end, me), c.pitches, c.velocity, c.ids), c.start < ms, c.end > me))
    return out


def _pieces(v, ms, me, bar_start, bar_len, beat, numerator, windows, fill, stats):
    """(piece, chord or None, tie_from_before, tie_on_after) in time order, rests in the gaps
    (``fill``) or forwards."""
    out = []
    x = ms
    for c, tied_in, tied_out in v:
        if c.start > x:
            out.extend(_gap(x, c.start, bar_start, bar_len, beat, numerator, windows, fill))
        pieces = split_values(c.start, c.end, bar_start, bar_len, beat, numerator, windows)
        for k, p in enumerate(pieces):
            stats.remnants += p.end - p.start not in _VALUE_STEPS[p.triplet]
            out.append((p, c, tied_in or k > 0, tied_out or k < len(pieces) - 1))
        x = c.end
    if x < me:
        out.extend(_gap(x, me, bar_start, bar_len, beat, numerator, windows, fill))
    return out


def _gap(a, b, bar_start, bar_len, beat, numerator, windows, fill):
    if not fill:  # a forward; within a triplet quarter an invisible rest (verovio scales a forward by the tuplet)
        if not any(a < (w + 1) * G and b > w * G for w in windows):
            return [(Piece(a, b, "", 0, False), None, False, False)]
        return [(p, "hidden", False, False) if p.triplet else (Piece(p.start, p.end, "", 0, False), None, False, False)
                for p in split_values(a, b, bar_start, bar_len, beat, numerator, windows)]
    if a == bar_start and b - a == bar_len and not windows:
        return [(Piece(a, b, "whole", 0, False), "measure", False, False)]
    return [(p, None, False, False) for p in split_values(a, b, bar_start, bar_len, beat, numerator, windows)]


def _durations() -> dict[bool, set[int]]:
    from chopinbot.notation.rhythm import PLAIN, TRIPLET
    return {False: {v for v, _, _ in PLAIN}, True: {v for v, _, _ in TRIPLET}}


_VALUE_STEPS = _durations()


def _accidentals(voices: list[list], fifths: np.ndarray, sharps: int) -> list[set[tuple[int, int]]]:
    """Which notes print an accidental, per voice as (item index, note id): in time order across the
    staff's voices, where a note's alteration differs from what the key signature and the bar so far
    say of its letter and octave (a tied continuation prints none and keeps the state it found)."""
    events = sorted((p.start, vi, idx, c) for vi, items in enumerate(voices)
                    for idx, (p, c, _, _) in enumerate(items) if isinstance(c, Chord))
    state: dict[tuple[str, int], int] = {}
    out: list[set[tuple[int, int]]] = [set() for _ in voices]
    for _, vi, idx, c in events:
        tied_in = voices[vi][idx][2]
        for pitch, nid in zip(c.pitches, c.ids):
            step, alter = fifth_name(int(fifths[nid]))
            key = (step, spelled_octave(pitch, alter))
            if tied_in:
                state.setdefault(key, alter)
                continue
            if alter != state.get(key, _key_alter(step, sharps)):
                out[vi].add((idx, nid))
            state[key] = alter
    return out


def _voice_xml(items, voice_no, staff_no, windows, printed, fifths, dirs, bar_start, beat) -> list[str]:
    out: list[str] = []
    beams = _beams(items, bar_start, beat)
    tuplets = _tuplets(items, windows)
    pending = list(dirs or [])
    for idx, (p, c, tied_in, tied_out) in enumerate(items):
        while pending and pending[0].step <= p.start:
            out.append(_direction(pending.pop(0)))
        dur = p.end - p.start
        if c is None and not p.type:
            out.append(f"<forward><duration>{dur}</duration><voice>{voice_no}</voice><staff>{staff_no}</staff>"
                       "</forward>")
            continue
        tm = "<time-modification><actual-notes>3</actual-notes><normal-notes>2</normal-notes></time-modification>" \
            if p.triplet else ""
        dots = "<dot/>" * p.dots
        tup = tuplets.get(idx, "")
        if c is None or isinstance(c, str):  # a rest: a bar's, a value's, or an invisible one
            rest = '<rest measure="yes"/>' if c == "measure" else "<rest/>"
            typ = "" if c == "measure" else f"<type>{p.type}</type>{dots}"
            notations = f"<notations>{tup}</notations>" if tup else ""
            hidden = ' print-object="no"' if c == "hidden" else ""
            out.append(f"<note{hidden}>{rest}<duration>{dur}</duration><voice>{voice_no}</voice>{typ}{tm}"
                       f"<staff>{staff_no}</staff>{notations}</note>")
            continue
        beam = beams.get(idx, "")
        order = np.argsort(c.pitches)
        for k, j in enumerate(order):
            pitch, nid = c.pitches[j], c.ids[j]
            step, alter = fifth_name(int(fifths[nid]))
            octave = spelled_octave(pitch, alter)
            acc = f"<accidental>{ACCIDENTALS.get(alter, 'natural')}</accidental>" if (idx, nid) in printed else ""
            alter_xml = f"<alter>{alter}</alter>" if alter else ""
            ties = ("<tie type=\"stop\"/>" if tied_in else "") + ("<tie type=\"start\"/>" if tied_out else "")
            tied = ("<tied type=\"stop\"/>" if tied_in else "") + ("<tied type=\"start\"/>" if tied_out else "")
            notations = tied + (tup if k == 0 else "")
            out.append(f"<note>{'<chord/>' if k else ''}<pitch><step>{step}</step>{alter_xml}<octave>{octave}</octave>"
                       f"</pitch><duration>{dur}</duration>{ties}<voice>{voice_no}</voice><type>{p.type}</type>{dots}"
                       f"{acc}{tm}<staff>{staff_no}</staff>{beam if k == 0 else ''}"
                       f"{f'<notations>{notations}</notations>' if notations else ''}</note>")
    for d in pending:
        out.append(_direction(d))
    return out


def _key_alter(step: str, sharps: int) -> int:
    order_sharp, order_flat = "FCGDAEB", "BEADGCF"
    if sharps > 0 and step in order_sharp[:sharps]:
        return 1
    if sharps < 0 and step in order_flat[:-sharps]:
        return -1
    return 0


def _beams(items, bar_start: int, beat: int) -> dict[int, str]:
    """Beam elements per item index: notes shorter than a quarter, within one beat (the quarter, or
    the dotted quarter in compound time), no rest between."""
    out: dict[int, str] = {}
    group: list[int] = []

    def flush():
        if len(group) >= 2:
            levels = [BEAM_LEVELS[items[i][0].type] for i in group]
            for pos, i in enumerate(group):
                parts = []
                for lv in range(1, 5):
                    if levels[pos] < lv:
                        break
                    prev_ok = pos > 0 and levels[pos - 1] >= lv
                    next_ok = pos < len(group) - 1 and levels[pos + 1] >= lv
                    if prev_ok and next_ok:
                        kind = "continue"
                    elif next_ok:
                        kind = "begin"
                    elif prev_ok:
                        kind = "end"
                    else:
                        kind = "forward hook" if pos == 0 else "backward hook"
                    parts.append(f'<beam number="{lv}">{kind}</beam>')
                out[i] = "".join(parts)
        group.clear()

    cur_beat = None
    for i, (p, c, _, _) in enumerate(items):
        beamable = isinstance(c, Chord) and p.type in BEAM_LEVELS
        # a beam stays within a beat, and within a tuplet or out of it: a beam across a tuplet's end
        # does not nest with it, and verovio then counts the notes after the tuplet in it
        b = ((p.start - bar_start) // beat, p.triplet, p.start // G if p.triplet else -1)
        if not beamable or b != cur_beat:
            flush()
        if beamable:
            group.append(i)
            cur_beat = b
        else:
            cur_beat = None
    flush()
    return out


def _tuplets(items, windows) -> dict[int, str]:
    """Tuplet brackets: from the first to the last triplet item of each quarter."""
    out: dict[int, str] = {}
    by_window: dict[int, list[int]] = {}
    for i, (p, _c, _, _) in enumerate(items):
        if p.triplet and p.type:
            by_window.setdefault(p.start // G, []).append(i)
    for idx in by_window.values():
        if len(idx) == 1:
            out[idx[0]] = '<tuplet type="start" bracket="yes"/><tuplet type="stop"/>'
        else:
            out[idx[0]] = '<tuplet type="start" bracket="yes"/>'
            out[idx[-1]] = '<tuplet type="stop"/>'
    return out


def _direction(d: Direction) -> str:
    if d.kind == "dynamics":
        return (f'<direction placement="below"><direction-type><dynamics><{d.text}/></dynamics></direction-type>'
                f"<staff>1</staff></direction>")
    if d.kind == "tempo":
        dots = "<beat-unit-dot/>" * d.beat_dots
        return (f'<direction placement="above"><direction-type><words font-weight="bold">{escape(d.text)}</words>'
                f"</direction-type><direction-type><metronome><beat-unit>{d.beat_unit}</beat-unit>{dots}"
                f"<per-minute>{d.bpm:.0f}</per-minute></metronome></direction-type><staff>1</staff>"
                f'<sound tempo="{d.bpm * (1.5 if d.beat_dots else 1.0):.2f}"/></direction>')
    return (f'<direction placement="above"><direction-type><words font-style="italic">{escape(d.text)}</words>'
            f"</direction-type><staff>1</staff></direction>")


def _header(title: str, composer: str, subtitle: str, rights: str) -> str:
    credits = [f'<credit page="1"><credit-type>title</credit-type><credit-words default-x="600" default-y="1600" '
               f'justify="center" valign="top" font-size="22">{escape(title)}</credit-words></credit>']
    if subtitle:
        credits.append(f'<credit page="1"><credit-type>subtitle</credit-type><credit-words default-x="600" '
                       f'default-y="1550" justify="center" valign="top" font-size="12">{escape(subtitle)}'
                       f"</credit-words></credit>")
    credits.append(f'<credit page="1"><credit-type>composer</credit-type><credit-words default-x="1150" '
                   f'default-y="1500" justify="right" valign="top" font-size="12">{escape(composer)}</credit-words>'
                   f"</credit>")
    rights_xml = f"<rights>{escape(rights)}</rights>" if rights else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!DOCTYPE score-partwise PUBLIC "-//Recordare//DTD MusicXML 4.0 Partwise//EN" '
            '"http://www.musicxml.org/dtds/partwise.dtd">\n'
            '<score-partwise version="4.0">'
            f"<work><work-title>{escape(title)}</work-title></work>"
            + (f"<movement-title>{escape(subtitle)}</movement-title>" if False else "")
            + f'<identification><creator type="composer">{escape(composer)}</creator>{rights_xml}'
            "<encoding><software>ChopinBot</software></encoding></identification>"
            + "".join(credits)
            + '<part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>')
