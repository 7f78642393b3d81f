"""Reading scores (MusicXML, Humdrum) through verovio: the same notes and key signatures as an
independently made MIDI file, clean errors for bad files and verovio crashes, and the bundled
NIFC corpus made from scores."""

from __future__ import annotations

import csv
import shutil
import xml.etree.ElementTree as ET
import zipfile
from fractions import Fraction
from pathlib import Path

import pytest

from chopinbot.constants import PACKAGE_DIR
from chopinbot.errors import MidiError
from chopinbot.music.midi import PianoNotes, read_midi
from chopinbot.music.scores import NOTE_SUFFIXES, SCORE_SUFFIXES, read_notes, read_score
from chopinbot.music.verovio_worker import MEI, signature_of

FIXTURES = Path(__file__).parent / "fixtures" / "scores"
NIFC = PACKAGE_DIR / "data" / "chopin_nifc"
F = Fraction

# The three bars of the fixtures, by hand: (start, end) in quarter notes, MIDI pitch.
LITTLE = sorted([
    (F(0), F(3, 2), 78), (F(3, 2), F(2), 76), (F(2), F(5), 74),  # dotted quarter, eighth, half tied over the bar
    (F(5), F(16, 3), 69), (F(16, 3), F(17, 3), 71), (F(17, 3), F(6), 73),  # eighth-note triplet
    (F(6), F(8), 74), (F(6), F(8), 78), (F(8), F(9), 69), (F(9), F(10), 70), (F(21, 2), F(11), 67), (F(11), F(12), 65),
    (F(0), F(4), 50), (F(0), F(4), 57), (F(4), F(6), 55), (F(6), F(8), 57), (F(8), F(12), 50),  # left hand
])


def in_quarters(notes: PianoNotes) -> list[tuple[Fraction, Fraction, int]]:
    tpq = notes.ticks_per_quarter
    return sorted((F(int(s), tpq), F(int(e), tpq), int(p)) for s, e, p in zip(notes.start, notes.end, notes.pitch))


def keys_in_quarters(notes: PianoNotes) -> list[tuple[Fraction, int, int]]:
    return [(F(tick, notes.ticks_per_quarter), sharps, minor) for tick, sharps, minor in notes.key_signatures]


def test_the_midi_fixture_holds_the_hand_written_notes():
    notes = read_midi(FIXTURES / "little.mid")
    assert in_quarters(notes) == LITTLE
    assert keys_in_quarters(notes) == [(0, 2, 0), (8, -1, 1)]


@pytest.mark.parametrize("name", ["little.musicxml", "little.krn"])
def test_a_score_gives_the_notes_of_its_midi(name):
    notes = read_score(FIXTURES / name)
    assert in_quarters(notes) == in_quarters(read_midi(FIXTURES / "little.mid"))
    assert set(notes.velocity.tolist()) == {90}  # verovio plays no dynamics


def test_key_signatures_come_from_the_score_at_the_start_and_where_they_change():
    # The MIDI verovio writes holds only the opening signature; the change at bar 3 is read from the score.
    # MusicXML names the mode of both; Humdrum's '*d:' at the change does not reach verovio's MEI.
    assert keys_in_quarters(read_score(FIXTURES / "little.musicxml")) == [(0, 2, 0), (8, -1, 1)]
    assert keys_in_quarters(read_score(FIXTURES / "little.krn")) == [(0, 2, 0), (8, -1, 0)]


def test_compressed_musicxml_and_xml_suffix(tmp_path):
    expected = in_quarters(read_score(FIXTURES / "little.musicxml"))
    mxl = tmp_path / "little.mxl"
    with zipfile.ZipFile(mxl, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/container.xml", '<?xml version="1.0"?><container><rootfiles>'
                         '<rootfile full-path="score/little.musicxml"/></rootfiles></container>')
        archive.writestr("score/little.musicxml", (FIXTURES / "little.musicxml").read_bytes())
    assert in_quarters(read_score(mxl)) == expected
    xml = tmp_path / "Little.XML"
    shutil.copyfile(FIXTURES / "little.musicxml", xml)
    assert in_quarters(read_notes(xml)) == expected


def test_read_notes_reads_every_accepted_suffix_and_refuses_others(tmp_path):
    assert set(SCORE_SUFFIXES) < set(NOTE_SUFFIXES) and {".mid", ".midi"} < set(NOTE_SUFFIXES)
    assert in_quarters(read_notes(FIXTURES / "little.mid")) == LITTLE
    assert in_quarters(read_notes(FIXTURES / "little.krn")) == LITTLE
    other = tmp_path / "notes.txt"
    other.write_text("**kern\n4c\n*-\n")
    with pytest.raises(MidiError, match="unsupported file type '.txt'"):
        read_notes(other)


KRN = (FIXTURES / "little.krn").read_text()
MUSICXML = (FIXTURES / "little.musicxml").read_text()
BAD_SCORES = {
    "prose.krn": ("Dear Frédéric, here is my new mazurka.\n", "not a Humdrum \\*\\*kern score"),
    "cut.krn": (KRN[:300], "truncated Humdrum score"),
    "empty.krn": ("**kern\n*M4/4\n*-\n", "no notes in the file \\(after converting the Humdrum score to MIDI\\)"),
    "cut.musicxml": (MUSICXML[:2000], "not well-formed XML"),
    "page.xml": ("<html><body>a web page</body></html>", "not a MusicXML score .*<html>"),
    "mei.xml": ('<mei xmlns="http://www.music-encoding.org/ns/mei"/>', "not a MusicXML score"),
    "broken.mxl": ("PK\x03\x04 not really a zip", "not a readable compressed MusicXML"),
}


@pytest.mark.parametrize("name", sorted(BAD_SCORES))
def test_a_bad_score_gives_a_clean_reason(tmp_path, name):
    text, reason = BAD_SCORES[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MidiError, match=reason) as raised:
        read_notes(path)
    assert raised.value.path == str(path)


def test_a_folder_is_not_a_score(tmp_path):
    folder = tmp_path / "folder.krn"
    folder.mkdir()
    with pytest.raises(MidiError, match="not a regular file"):
        read_score(folder)


def test_a_verovio_crash_stays_in_its_child_process():
    # verovio aborts its process on this file; the reader survives and says why.
    with pytest.raises(MidiError, match=r"verovio crashed on this Humdrum score \(SIGABRT\); it said: Error on line 4"):
        read_score(FIXTURES / "verovio_crash.krn")
    assert in_quarters(read_score(FIXTURES / "little.krn")) == LITTLE  # and the next file is read as usual


def test_a_score_that_takes_too_long_is_stopped():
    with pytest.raises(MidiError, match="did not finish reading the Humdrum score within 0.001 s"):
        read_score(FIXTURES / "little.krn", timeout_s=0.001)


def _mei(text: str) -> ET.Element:
    """An MEI element from its text: the namespace declared on the outer element, as verovio writes it."""
    return ET.fromstring(text.replace("<keySig", f'<keySig xmlns="{MEI[1:-1]}"', 1))


def test_signatures_in_every_mei_form():
    assert signature_of(_mei('<keySig sig="3f" mode="minor"/>')) == (-3, 1)
    assert signature_of(_mei('<keySig sig="0"/>')) == (0, 0)
    # a change that cancels: naturals, then the new sharps
    assert signature_of(_mei('<keySig><keyAccid pname="b" accid="n"/><keyAccid pname="e" accid="n"/>'
                             '<keyAccid pname="f" accid="s"/><keyAccid pname="c" accid="s"/></keySig>')) == (2, 0)
    # what verovio makes of NIFC op. 56 no. 1's 'fn-cn-gn-dn-an-b-e-a-': no key has 8 flats
    eight = "".join(f'<keyAccid pname="{p}" accid="f"/>' for p in "fcgdabea")
    assert signature_of(_mei(f"<keySig>{eight}</keySig>")) is None


def test_the_bundled_nifc_corpus_is_listed_credited_and_keeps_its_key_changes():
    with open(NIFC / "corpus.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["file", "work", "composer", "source", "title"]
    assert len(rows) - 1 == 187 and all(r[2:4] == ["Chopin", "nifc"] and r[0] == f"{r[1]}.mid" for r in rows[1:])
    assert sorted(p.name for p in NIFC.glob("*.mid")) == sorted(r[0] for r in rows[1:])
    assert "The Fryderyk Chopin Institute (nifc.pl), CC BY 4.0" in (NIFC / "README.md").read_text()
    assert "Fryderyk Chopin Institute" in (NIFC / "LICENSE.txt").read_text()
    # Mazurka op. 33 no. 4 (B minor): D major / B minor, B-flat, back, B-flat, B major, back, as printed
    assert [sharps for _, sharps, _ in read_midi(NIFC / "op033-4.mid").key_signatures] == [2, -2, 2, -2, 5, 2]


def test_the_verovio_child_dies_with_its_caller():
    """A caller killed at a time limit (a fuzzer's worker, a request) takes its verovio child with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    # the score's pipe stays open here, so the child keeps waiting for it: only its caller's death can end it
    read_end, write_end = os.pipe()
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-m', 'chopinbot.music.verovio_worker', 'musicxml'],"
            " stdin=int(sys.argv[1]))\n"
            "print(p.pid, flush=True)\n"
            "time.sleep(60)\n")
    caller = subprocess.Popen([sys.executable, "-c", code, str(read_end)], stdout=subprocess.PIPE, text=True,
                              pass_fds=(read_end,))
    os.close(read_end)
    child = int(caller.stdout.readline())
    time.sleep(2.0)  # the child is up, reading stdin

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/status") as f:
                return "\nState:\tZ" not in f.read()
        except FileNotFoundError:
            return False

    assert alive(child)
    os.kill(caller.pid, signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    gone = not alive(child)
    if not gone:
        os.kill(child, signal.SIGKILL)
    os.close(write_end)
    assert gone
