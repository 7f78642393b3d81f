"""Hostile scores: every MusicXML, .mxl and Humdrum input ends in a valid result or a MidiError
that names the format.

The fast version of ``python -m chopinbot_tools.fuzz_scores`` (docs/reliability.md has the
figures): 300 mutated scores through the checks made before verovio (in-process, verovio's
conversion replaced by a fixed MIDI file), a dozen cases through the whole path in a worker
process with verovio, and named hostile files (entity bombs, external entities, zip bombs, a
million staves, a thousand Humdrum spines...) with the error each must give.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from chopinbot.errors import MidiError
from chopinbot.music import scores
from chopinbot.music.scores import read_notes_bytes
from chopinbot_tools import fuzz_score_cases as cases
from chopinbot_tools import fuzz_score_xml as xmlm
from chopinbot_tools import fuzz_scores

FIXTURES = Path(__file__).parent / "fixtures" / "scores"
LITTLE_XML = (FIXTURES / "little.musicxml").read_bytes()
LITTLE_KRN = (FIXTURES / "little.krn").read_bytes()
LITTLE_MID = (FIXTURES / "little.mid").read_bytes()


@pytest.fixture(scope="module")
def corpus():
    return cases.load_score_corpus()


def refusal(data: bytes, name: str) -> str:
    with pytest.raises(MidiError) as raised:
        read_notes_bytes(data, name, timeout_s=60)
    reason = raised.value.reason
    assert "\n" not in reason and len(reason) <= 300 and reason.isprintable()
    return reason


# --- many cases ----------------------------------------------------------------------------------

def test_300_mutated_scores_pass_the_checks_before_verovio(corpus, monkeypatch):
    """What the parent process parses itself (XML, zip, Humdrum lines) never raises anything but
    a MidiError naming the format; verovio is replaced by a fixed MIDI file here."""
    monkeypatch.setattr(scores, "_run_verovio", lambda *a, **k: (LITTLE_MID, [], []))
    outcomes = {"ok": 0, "refused": 0}
    for i in range(300):
        case = cases.make_score_case(0, i, corpus, large=False)
        try:
            read_notes_bytes(case.score, case.upload_name or "upload", timeout_s=60)
            outcomes["ok"] += 1
        except MidiError as e:
            assert fuzz_scores.names_format(e.reason, case.suffix, not case.upload_name), (case.name, e.reason)
            assert "\n" not in e.reason and len(e.reason) <= 300, (case.name, e.reason)
            outcomes["refused"] += 1
    assert outcomes["ok"] > 30 and outcomes["refused"] > 30, outcomes


@pytest.mark.slow
def test_a_dozen_cases_through_the_whole_path_in_a_worker(tmp_path):
    s = fuzz_scores.run_score_fuzz(cases=12, seed=3, start=0, save_failures=tmp_path / "failures")
    assert s.cases == 12 and s.failed == 0, s.text()
    assert s.counts["ok"] + s.counts["midi_error"] == 12


def test_cases_are_reproducible_and_cover_the_formats(corpus):
    a, b = cases.make_score_case(5, 17, corpus), cases.make_score_case(5, 17, corpus)
    assert a.data == b.data and a.name == b.name
    assert fuzz_scores.split_payload(a.data) == (a.suffix, a.upload_name, a.score)
    suffixes = {cases.make_score_case(5, i, corpus, large=False).suffix for i in range(60)}
    assert {".musicxml", ".mxl", ".krn"} <= suffixes


@pytest.mark.parametrize("name", sorted(xmlm.XML_MUTATORS))
def test_each_musicxml_mutator_changes_a_real_score(corpus, name):
    xml = next(d for label, s, d in corpus if label.endswith("excerpt4.musicxml"))
    xml = LITTLE_XML if name == "x_voice_staff" else xml  # that excerpt has no <voice> or <staff>
    rng = random.Random(name)
    assert any(xmlm.XML_MUTATORS[name](rng, xml) != xml for _ in range(6))


# --- named hostile files and the errors they give --------------------------------------------------

@pytest.mark.parametrize("kind", ["billion_laughs", "quadratic", "external_file", "external_url", "parameter"])
def test_entity_declarations_are_refused_before_any_expansion(kind):
    data = xmlm.x_entities(random.Random(0), LITTLE_XML, kind)
    t0 = time.process_time()
    assert "declares XML entities" in refusal(data, "bomb.musicxml")
    assert time.process_time() - t0 < 1.0


def test_an_external_dtd_is_never_fetched():
    """The standard MusicXML DOCTYPE names a DTD by URL: nothing fetches it, the score reads."""
    data = xmlm.x_entities(random.Random(0), LITTLE_XML, "external_dtd")
    assert b"127.0.0.1:9/partwise.dtd" in data
    assert len(read_notes_bytes(data, "dtd.musicxml", timeout_s=60).start) == 17


def test_an_external_entity_never_reaches_verovio(monkeypatch):
    """Even if a check were skipped, /etc/passwd must not be read into the score."""
    seen = []
    monkeypatch.setattr(scores, "_run_verovio", lambda fmt, text, *a, **k: seen.append(text) or (LITTLE_MID, [], []))
    with pytest.raises(MidiError):
        read_notes_bytes(xmlm.x_entities(random.Random(0), LITTLE_XML, "external_file"), "x.musicxml")
    assert not seen


@pytest.mark.parametrize("kind, message", [
    ("score", "score inside the .mxl archive too large"),
    ("container", "container.xml is over"),
    ("lying_size", "not a readable compressed MusicXML \\(.mxl\\) file \\(Bad CRC"),
])
def test_zip_bombs_are_refused_without_inflating_them(kind, message):
    t0 = time.process_time()
    assert re.search(message, refusal(cases._bomb(kind, 200 if kind != "lying_size" else 60, "score.musicxml"),
                                      "bomb.mxl"))
    assert time.process_time() - t0 < 2.0


@pytest.mark.parametrize("container, message", [
    (xmlm.BOMB_DTD.replace(b"score-partwise", b"container") + b"<container>&j;</container>",
     "container.xml declares XML entities"),
    (b'<container><rootfiles><rootfile full-path="../../etc/passwd"/></rootfiles></container>',
     None),  # a path that is not in the archive: the archive's own score is read instead
])
def test_container_xml_that_is_hostile(container, message):
    data = cases.zip_mxl(LITTLE_XML, "score.musicxml", container=container)
    if message:
        assert message in refusal(data, "c.mxl")
    else:
        assert len(read_notes_bytes(data, "c.mxl", timeout_s=60).start) == 17


def test_broken_archives_name_the_mxl_format():
    mxl = cases.zip_mxl(LITTLE_XML)
    for kind in ("encrypted", "method", "eocd"):
        rng = random.Random(kind)
        rng.choice = lambda seq, k=kind: k if k in seq else seq[0]
        assert "compressed MusicXML (.mxl)" in refusal(cases.z_headers(rng, mxl), "b.mxl")
    assert "no score inside the .mxl archive" in refusal(cases.z_members(_fixed("empty"), mxl), "e.mxl")
    assert "compressed MusicXML (.mxl)" in refusal(mxl[: len(mxl) // 2], "cut.mxl")


def _fixed(value):
    rng = random.Random(0)
    rng.choice = lambda seq: value if value in seq else seq[0]
    return rng


def test_a_million_staves_is_refused_not_left_to_verovio():
    """verovio ran past 60 s on <staves>1000000</staves> (a fuzzer find)."""
    data = re.sub(rb"<staves>[^<]*<", b"<staves>1000000<", LITTLE_XML)
    assert "<staves>1000000</staves>" in refusal(data, "staves.musicxml")


def test_zero_and_negative_metres_are_refused_before_verovio():
    """<beat-type>0 crashed verovio (SIGFPE); -4/-8 kept it busy past 60 s (fuzzer finds)."""
    data = re.sub(rb"<beat-type>[^<]*<", b"<beat-type>0<", LITTLE_XML)
    assert "time signature of <beat-type>0</beat-type> (zero or negative)" in refusal(data, "metre.musicxml")
    data = re.sub(rb"<beats>[^<]*<", b"<beats>-4<", LITTLE_XML)
    assert "time signature of <beats>-4</beats>" in refusal(data, "metre.musicxml")


def test_absurd_divisions_durations_and_tuplets_still_read_or_refuse_cleanly(corpus):
    for pattern, value in [(rb"<divisions>[^<]*<", b"<divisions>0<"), (rb"<duration>[^<]*<", b"<duration>-1<")]:
        assert len(read_notes_bytes(re.sub(pattern, value, LITTLE_XML), "d.musicxml", timeout_s=60).start) > 0
    tm = b"</type><time-modification><actual-notes>0</actual-notes><normal-notes>0</normal-notes></time-modification>"
    assert len(read_notes_bytes(LITTLE_XML.replace(b"</type>", tm), "t.musicxml", timeout_s=60).start) > 0


@pytest.mark.parametrize("data, message", [
    (b"\t".join([b"**kern"] * 1000) + b"\n" + b"\t".join([b"4c"] * 1000) + b"\n" + b"\t".join([b"*-"] * 1000),
     "Humdrum score with 1,000 spines on line 1 \\(limit 128\\)"),
    (b"**kern\n" + b" ".join([b"4c"] * 1000) + b"\n*-\n", "Humdrum score with a chord of 1,000 notes"),
    (b"**kern\n4" + b"c" * 100_000 + b"\n*-\n", "Humdrum score with a 100,001-character token"),
    (LITTLE_KRN.replace(b"*-\t*-\n", b""), "truncated Humdrum score"),
    (LITTLE_KRN.replace(b"**kern", b"**text"), "not a Humdrum \\*\\*kern score"),
])
def test_hostile_humdrum(data, message):
    t0 = time.perf_counter()
    assert re.search(message, refusal(data, "h.krn"))
    assert time.perf_counter() - t0 < 5.0


def test_the_check_demands_the_format_in_every_message():
    assert fuzz_scores.names_format("no notes in the file (after converting the Humdrum score to MIDI)", ".krn", False)
    assert not fuzz_scores.names_format("no notes in the file", ".krn", False)
    assert not fuzz_scores.names_format("not a readable MusicXML score", ".krn", False)
    assert fuzz_scores.names_format("too many states (200,000; limit 100,000)", ".mxl", False)


def test_a_verovio_past_its_timeout_is_a_hang(monkeypatch):
    monkeypatch.setattr(fuzz_scores, "VEROVIO_TIMEOUT_S", 0.001)
    res = fuzz_scores.check_score(b".krn\0h.krn\0" + LITTLE_KRN)
    assert res["outcome"] == "hang" and "did not finish reading the Humdrum score" in res["message"]
    monkeypatch.setattr(fuzz_scores, "VEROVIO_TIMEOUT_S", 60.0)
    assert fuzz_scores.check_score(b".krn\0h.krn\0" + LITTLE_KRN)["outcome"] == "ok"


def test_command_line_replays_one_case(capsys):
    assert fuzz_scores.main(["--case", "4", "--seed", "0"]) == 0
    assert "case #4 of seed 0" in capsys.readouterr().out


def test_an_unknown_declared_encoding_is_a_clean_refusal():
    """ElementTree raised LookupError (not ParseError) here: prepare crashed (a fuzzer find)."""
    body = re.sub(rb"^<\?xml[^>]*\?>", b"", LITTLE_XML)
    data = b'<?xml version="1.0" encoding="x-chopin-7"?>' + body
    assert "declares an encoding Python does not know" in refusal(data, "enc.musicxml")
    container = b'<?xml version="1.0" encoding="x-chopin-7"?><container/>'
    assert "compressed MusicXML (.mxl)" in refusal(cases.zip_mxl(LITTLE_XML, container=container), "enc.mxl")


@pytest.mark.parametrize("record, what", [(b"=\t=", "bars"), (b".\t.", "records"), (b"16c\t16e", "records")])
def test_humdrum_too_long_for_verovio_is_refused(record, what):
    """210,000 records ran verovio past 60 s, 20,000 empty bars 48 s (fuzzer finds)."""
    bar = (record + b"\n") * (1 if what == "bars" else 9) + (b"" if what == "bars" else b"=\t=\n")
    data = b"**kern\t**kern\n*M4/4\t*M4/4\n4c\t4e\n" + bar * (25_000 if what == "bars" else 2_500) + b"*-\t*-\n"
    t0 = time.perf_counter()
    assert "Humdrum score too long for verovio" in refusal(data, "long.krn")
    assert time.perf_counter() - t0 < 2.0


def test_a_bar_of_thousands_of_notes_is_refused_before_verovio():
    """verovio took over 60 s on a bar of 5,000 notes (a fuzzer find; 2,000: 12.7 s)."""
    note = re.search(rb"<note\b.*?</note>", LITTLE_XML, re.S)
    data = LITTLE_XML[: note.end()] + note.group(0) * 5000 + LITTLE_XML[note.end() :]
    assert "MusicXML score with 5,005 notes in one bar (bar '1'; limit 500)" in refusal(data, "bar.musicxml")
    krn = b"**kern\t**kern\n=1\t=1\n" + b"16c\t16e\n" * 600 + b"=2\t=2\n*-\t*-\n"
    assert "Humdrum score with over 500 records in one bar" in refusal(krn, "bar.krn")


def test_a_duration_of_a_billion_divisions_is_refused_before_verovio():
    """verovio took 30 s per read on a <forward> of 10^9 divisions (a fuzzer find)."""
    data = LITTLE_XML.replace(b"</note>", b"</note><forward><duration>1000000000</duration></forward>", 1)
    assert "MusicXML score with a <duration> of 1,000,000,000 divisions" in refusal(data, "long.musicxml")
    data = LITTLE_XML.replace(b"</note>", b"</note><backup><duration>-1000000000</duration></backup>", 1)
    assert "MusicXML score with a <duration> of -1,000,000,000 divisions" in refusal(data, "back.musicxml")


@pytest.mark.parametrize("index", [5012, 5719])
def test_the_10000_case_run_finds_are_clean_refusals(index):
    """Seed 1's full run: an .mxl member packed as corrupt LZMA crashed `prepare` (LZMAError), and a damaged
    archive's message quoted raw header bytes; both are now one printable line that names the format."""
    case = cases.make_score_case(1, index, cases.load_score_corpus())
    res = fuzz_scores.check_score(case.data)
    assert res["outcome"] == "midi_error", res
    assert "compressed MusicXML (.mxl)" in res["message"] and res["message"].isprintable()
    assert len(res["message"]) <= 300
