"""Reading scores (MusicXML, Humdrum **kern) into :class:`PianoNotes`, and :func:`read_notes`,
which reads every kind of file ``chopinbot prepare`` accepts.

verovio 6.4.1 (the Music Encoding Initiative's engraving library, C++) does the reading: it is
the well-kept library that reads both MusicXML and Humdrum and writes MIDI.  It can crash its
process (a corrupt ``.mxl`` or a broken Humdrum spine makes it abort), so each score is
converted in a child process (:mod:`chopinbot.music.verovio_worker`) and anything that goes
wrong there becomes a :class:`MidiError` with a reason.  Before that, the file is checked here,
so that a truncated or mislabelled file gets a precise reason rather than verovio's partial
reading of it: MusicXML must be well-formed XML with a ``<score-partwise>``/``<score-timewise>``
root, a Humdrum score needs a ``**kern`` spine and its closing ``*-`` line, and ``.mxl`` is
unzipped with :mod:`zipfile`.

What the notes are: the score's, on its beat grid at verovio's 120 ticks per quarter note
(septuplets and the like round to the nearest tick), velocity 90 everywhere (verovio plays no
dynamics), one tempo unless the score marks one, grace notes and ornaments as verovio plays them,
every bar once as printed (repeats not expanded: see the worker).  verovio ends every note one
tick early; :func:`read_score` gives that tick back (then 99 % of note ends fall on the score's
note-offs), so a tied or legato note ends where the next begins, as written.  Key signatures
come from the score itself, at the start and at every change (verovio's MIDI has only the
opening one): see :func:`chopinbot.music.verovio_worker.key_signatures`.  Reading takes about
1 s per NIFC score, against a few ms for a MIDI file (docs/scores.md).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import lzma
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
import xml.parsers.expat as expat
import zipfile
import zlib
from pathlib import Path

import numpy as np

from chopinbot.constants import MAX_NOTES_PER_FILE
from chopinbot.errors import MidiError
from chopinbot.music.midi import PianoNotes, read_midi, read_midi_bytes, sniff_format

MIDI_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".musicxml", ".mxl", ".xml", ".krn")
NOTE_SUFFIXES = MIDI_SUFFIXES + SCORE_SUFFIXES  # every file read_notes (and prepare, --primer, uploads) accepts
ACCEPTED = "MIDI (.mid, .midi), MusicXML (.musicxml, .mxl, .xml) or Humdrum (.krn)"  # for messages
# a format sniffed from the content -> the suffix it is read as (a file whose name says nothing)
_SNIFFED_SUFFIX = {"MIDI": ".mid", "MusicXML": ".musicxml", "compressed MusicXML (.mxl)": ".mxl",
                   "Humdrum **kern": ".krn"}
_FORMAT_NAMES = {".musicxml": "MusicXML score", ".xml": "MusicXML score", ".mxl": "compressed MusicXML (.mxl) score",
                 ".krn": "Humdrum score"}  # named in every message about a score
MUSICXML_ROOTS = ("score-partwise", "score-timewise")
MAX_SCORE_BYTES = 50 * 1024 * 1024  # the largest NIFC Humdrum file is 0.1 MB; big MusicXML ~10 MB
SCORE_TIMEOUT_S = 300.0  # verovio takes up to ~2 s on the largest NIFC files (read at call time: the fuzzer lowers it)
# Humdrum shapes verovio takes minutes over (the score fuzzer's finds: 1,000 spines or a chord of
# 10,000 notes ran past 60 s; 300 spines took 1.8 s), far beyond any piano score (2-8 spines,
# chords of a few notes): refused before verovio sees them.
MAX_HUMDRUM_SPINES = 128
MAX_HUMDRUM_CHORD = 256  # notes in one token
MAX_HUMDRUM_TOKEN = 4000  # characters in one token (a pitch letter repeated 100,000 times is 100,000 octaves)
# 20,000 empty bars took verovio 48 s (loaded machine) and 100,000-210,000 records over 60 s; the
# largest NIFC Humdrum file (0.1 MB) has a few thousand records and a few hundred bars.
MAX_HUMDRUM_RECORDS = 20_000  # data lines and barlines
MAX_HUMDRUM_BARS = 5_000
# verovio's time grows steeply with the notes of one bar (MusicXML, one part: 300 notes 0.3 s,
# 1,000 1.5 s, 2,000 12.7 s, 5,000 over 60 s); a real bar of one part holds at most a few dozen.
MAX_QUARTERS_PER_DURATION = 1024  # a <forward> of 10^9 divisions took verovio 30 s per read (fuzzer find)
MAX_NOTES_PER_BAR = 500  # MusicXML <note>s in one <measure>; Humdrum data records between barlines
MAX_MUSICXML_STAVES = 64  # <staves> of one part: verovio ran past 60 s on 1,000,000 (a piano part has 2)
MAX_CONTAINER_BYTES = 1024 * 1024  # META-INF/container.xml of an .mxl: a few hundred bytes in practice
WORKER_MODULE = "chopinbot.music.verovio_worker"
SRC_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the chopinbot package


def read_notes(path: str | os.PathLike, max_notes: int = MAX_NOTES_PER_FILE) -> PianoNotes:
    """Read a MIDI file or a score, by its suffix (:data:`NOTE_SUFFIXES`, any case).

    Raises :class:`MidiError` with a readable reason for anything unusable.
    """
    suffix = Path(path).suffix.lower()
    if suffix in MIDI_SUFFIXES:
        return read_midi(path, max_notes=max_notes)
    if suffix in SCORE_SUFFIXES:
        return read_score(path, max_notes=max_notes)
    raise MidiError(f"unsupported file type {suffix or '(no suffix)'!r}: use {ACCEPTED}", str(path))


def read_notes_bytes(data: bytes, name: str = "<bytes>", max_notes: int = MAX_NOTES_PER_FILE,
                     timeout_s: float | None = None) -> PianoNotes:
    """Like :func:`read_notes` for a file already in memory (an upload): by the suffix of ``name``,
    or, when ``name`` has none of :data:`NOTE_SUFFIXES`, by what the content looks like.  A score
    goes through the same child-process reader as a score on disk; nothing is written to disk."""
    suffix = Path(name).suffix.lower()
    if suffix not in NOTE_SUFFIXES:
        kind = sniff_format(data)
        if kind is None:
            raise MidiError(f"not a file ChopinBot reads: use {ACCEPTED}", name)
        suffix = _SNIFFED_SUFFIX[kind]
    if suffix in MIDI_SUFFIXES:
        return read_midi_bytes(data, name=name, max_notes=max_notes)
    if len(data) > MAX_SCORE_BYTES:
        raise MidiError(f"file too large (over {MAX_SCORE_BYTES:,} bytes)", name)
    return _score_notes(data, suffix, name, max_notes, timeout_s)


def read_score(
    path: str | os.PathLike, max_notes: int = MAX_NOTES_PER_FILE, timeout_s: float | None = None
) -> PianoNotes:
    """Read a MusicXML (``.musicxml``, ``.mxl``, ``.xml``) or Humdrum (``.krn``) score.

    Raises :class:`MidiError` with a readable reason for anything unusable: not a score of its
    kind, truncated, no notes, too large, or verovio failing, crashing or taking over
    ``timeout_s`` seconds on it (default :data:`SCORE_TIMEOUT_S`).
    """
    path = Path(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in SCORE_SUFFIXES:
        raise MidiError(f"not a score file (expected one of {', '.join(SCORE_SUFFIXES)})", name)
    return _score_notes(_read_bounded(path), suffix, name, max_notes, timeout_s)


def _score_notes(data: bytes, suffix: str, name: str, max_notes: int, timeout_s: float | None) -> PianoNotes:
    """The notes of a score's bytes, read as its ``suffix`` says (checked, then converted in a child)."""
    if suffix == ".krn":
        input_format, text = "humdrum", _humdrum_text(data, name)
    else:
        input_format = "musicxml"
        text = _musicxml_text(_unzip_mxl(data, name) if suffix == ".mxl" else data, name)
    what = _FORMAT_NAMES[suffix]
    timeout_s = SCORE_TIMEOUT_S if timeout_s is None else timeout_s
    midi, signatures, measures = _run_verovio(input_format, text, name, timeout_s, what)
    try:
        notes = read_midi_bytes(midi, name=name, max_notes=max_notes)
    except MidiError as e:  # "no notes in the file" alone would not say which file: the score, converted
        raise MidiError(f"{e.reason} (after converting the {what} to MIDI)", name) from None
    notes.end = notes.end + 1  # verovio's missing last tick
    notes.key_signatures = _signature_ticks(signatures, notes.ticks_per_quarter)
    notes.time_signatures = _bar_signatures(measures, notes.time_signatures, notes.ticks_per_quarter)
    return notes


def _read_bounded(path: Path) -> bytes:
    try:
        if not path.is_file():  # a folder, a device, a pipe
            raise MidiError("not a regular file", str(path))
        with open(path, "rb") as f:
            data = f.read(MAX_SCORE_BYTES + 1)
    except OSError as e:
        raise MidiError(f"cannot open file ({e.strerror})", str(path)) from None
    if len(data) > MAX_SCORE_BYTES:
        raise MidiError(f"file too large (over {MAX_SCORE_BYTES:,} bytes)", str(path))
    return data


def _decode(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _humdrum_text(data: bytes, name: str) -> str:
    text = _decode(data)
    lines = text.splitlines()
    if not any(line.startswith("**") and "**kern" in line.split("\t") for line in lines):
        raise MidiError("not a Humdrum **kern score (no '**kern' spine)", name)
    if not any(line.strip() and set(line.rstrip().split("\t")) == {"*-"} for line in lines):
        raise MidiError("truncated Humdrum score (its spines never end: no '*-' line)", name)
    records = bars = in_bar = 0
    for number, line in enumerate(lines, 1):
        if line.startswith("!"):  # a comment: verovio skips it
            continue
        if not line.startswith("*"):
            records += 1
            bars += line.startswith("=")
            in_bar = 0 if line.startswith("=") else in_bar + 1
            if in_bar > MAX_NOTES_PER_BAR:
                raise MidiError(f"Humdrum score with over {MAX_NOTES_PER_BAR} records in one bar (line {number:,})",
                                name)
            if records > MAX_HUMDRUM_RECORDS or bars > MAX_HUMDRUM_BARS:
                raise MidiError(f"Humdrum score too long for verovio: over {MAX_HUMDRUM_RECORDS:,} records or "
                                f"{MAX_HUMDRUM_BARS:,} bars (line {number:,})", name)
        tokens = line.split("\t")
        if len(tokens) > MAX_HUMDRUM_SPINES:
            raise MidiError(f"Humdrum score with {len(tokens):,} spines on line {number:,} (limit "
                            f"{MAX_HUMDRUM_SPINES})", name)
        for token in tokens:
            if len(token) > MAX_HUMDRUM_TOKEN:
                raise MidiError(f"Humdrum score with a {len(token):,}-character token on line {number:,} (limit "
                                f"{MAX_HUMDRUM_TOKEN:,})", name)
            if token.count(" ") >= MAX_HUMDRUM_CHORD:
                raise MidiError(f"Humdrum score with a chord of {token.count(' ') + 1:,} notes on line {number:,} "
                                f"(limit {MAX_HUMDRUM_CHORD})", name)
    return text


class _EntityDeclared(Exception):
    pass


class _RootReached(Exception):
    pass


def _no_entities(*_args) -> None:
    raise _EntityDeclared


def _root_reached(*_args) -> None:
    raise _RootReached


def parse_xml(data: bytes) -> ET.Element:
    """``ET.fromstring``, refusing entity declarations: a ``<!ENTITY>`` in the document type raises
    :class:`_EntityDeclared`.  expat (2.4+) stops a billion laughs by its amplification factor, but a
    50 MB file expanded 100-fold (the factor it allows) would still be 5 GB; MusicXML needs no
    entities of its own.  Entities can only be declared before the root element, so a first pass
    of expat stops there.  External entities and DTDs are never fetched, by ElementTree nor by
    verovio's pugixml, which expands no entities at all."""
    check = expat.ParserCreate()
    check.EntityDeclHandler = _no_entities  # called for every <!ENTITY ...>, general or parameter
    check.UnparsedEntityDeclHandler = _no_entities
    check.StartElementHandler = _root_reached
    try:
        check.Parse(data, True)
    except (_RootReached, expat.ExpatError, LookupError, ValueError):  # malformed, an unknown encoding...:
        pass  # ElementTree says what and where
    return ET.fromstring(data)


def _musicxml_text(data: bytes, name: str) -> str:
    """The score as text, once it is known to be whole, well-formed MusicXML."""
    try:
        root = parse_xml(data)  # honours the declared encoding; fetches no DTD
    except _EntityDeclared:
        raise MidiError("MusicXML score refused: it declares XML entities (<!ENTITY>), which are not read "
                        "(they can expand to gigabytes or name other files)", name) from None
    except LookupError as e:  # expat hands an encoding it does not know to Python's codecs (a fuzzer find)
        raise MidiError(f"not a readable MusicXML score: it declares an encoding Python does not know ({e})",
                        name) from None
    except ET.ParseError as e:
        raise MidiError(f"not a readable MusicXML score: not well-formed XML ({e}), a truncated or damaged "
                        "file?", name) from None
    if root.tag not in MUSICXML_ROOTS:
        raise MidiError(f"not a MusicXML score (its root element is <{root.tag}>, not <score-partwise>)", name)
    for measure in root.iter("measure"):
        notes = sum(1 for _ in measure.iter("note"))
        if notes > MAX_NOTES_PER_BAR:
            raise MidiError(f"MusicXML score with {notes:,} notes in one bar (bar {measure.get('number', '?')[:20]!r}; "
                            f"limit {MAX_NOTES_PER_BAR})", name)
    divisions = max((int(d.text) for d in root.iter("divisions") if (d.text or "").strip().isdigit()), default=1)
    # negative ones too: a <backup> of -10^9 kept verovio busy as long (MusicXML durations are positive)
    longest = max((int(d.text) for d in root.iter("duration") if re.fullmatch(r"\s*-?\d+\s*", d.text or "")),
                  key=abs, default=0)
    if abs(longest) > MAX_QUARTERS_PER_DURATION * max(1, divisions):
        raise MidiError(f"MusicXML score with a <duration> of {longest:,} divisions (over "
                        f"{MAX_QUARTERS_PER_DURATION:,} quarter notes at {divisions:,} per quarter)", name)
    for tag in ("beats", "beat-type"):  # a -4/-8 metre kept verovio busy past 60 s; 4/0 crashed it (fuzzer finds)
        for element in root.iter(tag):
            numbers = re.findall(r"-?\d+", element.text or "")
            if any(int(n) <= 0 for n in numbers):
                raise MidiError(f"MusicXML score with a time signature of <{tag}>{(element.text or '')[:20]}</{tag}> "
                                "(zero or negative)", name)
    for staves in root.iter("staves"):
        if not (staves.text or "").strip().isdigit() or int(staves.text) > MAX_MUSICXML_STAVES:
            raise MidiError(f"MusicXML score with <staves>{(staves.text or '')[:20]}</staves> (a whole number up "
                            f"to {MAX_MUSICXML_STAVES} is read)", name)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:  # another declared encoding (Latin-1 from old editors): re-serialise
        return ET.tostring(root, encoding="unicode")


def _unzip_mxl(data: bytes, name: str) -> bytes:
    """The score inside a compressed MusicXML file: META-INF/container.xml names it."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = _mxl_rootfile(archive)
            if member is None:
                raise MidiError("no score inside the .mxl archive", name)
            if archive.getinfo(member).file_size > MAX_SCORE_BYTES:
                raise MidiError(f"score inside the .mxl archive too large (over {MAX_SCORE_BYTES:,} bytes)", name)
            return archive.read(member)  # zipfile never reads past the size it declares
    except _EntityDeclared:
        raise MidiError("compressed MusicXML (.mxl) refused: its container.xml declares XML entities", name) from None
    except (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, KeyError, ET.ParseError, NotImplementedError,
            RuntimeError, ValueError, OSError, LookupError) as e:  # LZMA: a member may say it is LZMA-packed
        # zipfile may quote the archive's own bytes: one short printable line
        said = "".join(c if c.isprintable() else "?" for c in str(e))
        said = said if len(said) <= 160 else said[:157] + "..."
        raise MidiError(f"not a readable compressed MusicXML (.mxl) file ({said})", name) from None


def _mxl_rootfile(archive: zipfile.ZipFile) -> str | None:
    names = archive.namelist()
    if "META-INF/container.xml" in names:
        if archive.getinfo("META-INF/container.xml").file_size > MAX_CONTAINER_BYTES:
            raise ValueError(f"its META-INF/container.xml is over {MAX_CONTAINER_BYTES:,} bytes")
        for element in parse_xml(archive.read("META-INF/container.xml")).iter():
            if element.tag.rpartition("}")[2] == "rootfile" and element.get("full-path") in names:
                return element.get("full-path")
    scores = [n for n in names if not n.startswith("META-INF/") and n.lower().endswith((".xml", ".musicxml"))]
    return scores[0] if scores else None


def _run_verovio(input_format: str, text: str, name: str, timeout_s: float, what: str = "score"
                 ) -> tuple[bytes, list, list]:
    """(MIDI bytes, key signatures, bar starts in quarters) from verovio, run in a child (its crashes stay there)."""
    if not sys.executable:
        raise MidiError("cannot convert scores here: no Python executable to run verovio in", name)
    env = dict(os.environ)  # the child imports chopinbot from where this process did, installed or not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_ROOT), env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", WORKER_MODULE, input_format],
            input=text.encode("utf-8", errors="replace"),
            capture_output=True,
            timeout=timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise MidiError(f"verovio did not finish reading the {what} within {timeout_s:g} s", name) from None
    except OSError as e:
        raise MidiError(f"cannot start the score converter for the {what} ({e.strerror})", name) from None
    said = _first_error_line(proc.stderr)
    if proc.returncode < 0:
        raise MidiError(f"verovio crashed on this {what} ({_signal_name(-proc.returncode)}){said}", name)
    try:
        reply = json.loads(proc.stdout)
        if proc.returncode != 0 or not isinstance(reply, dict):
            raise ValueError
        if "error" in reply:
            raise MidiError(f"{reply['error']}{said}", name)
        return (base64.b64decode(reply["midi"], validate=True), list(reply["key_signatures"]),
                [float(q) for q in reply.get("measures", [])])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MidiError(f"the score converter failed on the {what} (exit status {proc.returncode}){said}",
                        name) from None


def _first_error_line(stderr: bytes) -> str:
    """verovio's first error message (its lines up to a blank one, joined), or its last line."""
    paragraphs = [" ".join(p.split()) for p in stderr.decode("utf-8", errors="replace").split("\n\n") if p.strip()]
    errors = [p[p.lower().index("error"):] for p in paragraphs if "error" in p.lower()] or paragraphs[-1:]
    # it may quote the score's own bytes: control characters would break the one-line message
    return f"; it said: {''.join(c if c.isprintable() else '?' for c in errors[0][:200])}" if errors else ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signature_ticks(signatures: list, ticks_per_quarter: int) -> list[tuple[int, int, int]]:
    """(tick, sharps, is_minor) at the start and at each change, as PianoNotes holds them."""
    out: list[tuple[int, int, int]] = []
    for quarter, sharps, minor in signatures:
        tick = int(np.round(float(quarter) * ticks_per_quarter))
        if out and out[-1][0] == tick:
            continue
        if not out or out[-1][1:] != (int(sharps), int(minor)):
            out.append((tick, int(sharps), int(minor)))
    return out


def _bar_signatures(measures: list[float], signatures: list[tuple[int, int, int]], ticks_per_quarter: int
                    ) -> list[tuple[int, int, int]]:
    """The time signatures of verovio's MIDI, with a bar of another length (a pickup, a bar of a
    cadenza) said as a signature of its own, so that the bars counted from the file's start are the
    score's: verovio's MIDI starts counting at its first note, pickup or not."""
    if not signatures or len(measures) < 2:
        return signatures
    tpq = ticks_per_quarter
    out: list[tuple[int, int, int]] = []
    for start, end in zip(measures[:-1], measures[1:]):
        tick = int(round(start * tpq))
        current = [s for s in signatures if s[0] <= tick + 1] or signatures[:1]
        _, num, den = current[-1]
        length, unit = (end - start) * den / 4.0, den
        while abs(length - round(length)) > 1e-6 and unit < 64:  # a pickup of 1.5 quarters in 3/4: 3/8
            length, unit = length * 2, unit * 2
        if abs(length - round(length)) > 1e-6 or round(length) < 1:
            continue
        sig = (tick, int(round(length)), unit) if abs(length - num * unit / den) > 1e-6 else (tick, num, den)
        if not out or out[-1][1:] != sig[1:]:
            out.append(sig)
    return out
