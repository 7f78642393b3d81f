"""Hostile MIDI: every input ends in a valid result or a readable MidiError.

The fast version of ``python -m chopinbot_tools.fuzz`` (docs/reliability.md has the
10,000-case figures): a few hundred mutated and synthesized files through the
whole reading path in worker processes (time and memory capped), hypothesis
over the mutators in-process, named hostile files with the error they must
give, and checks that the fuzzer itself notices crashes, dead workers, hangs,
slowness and memory blow-ups.
"""

from __future__ import annotations

import json
import random
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chopinbot.errors import MidiError
from chopinbot.music.midi import read_midi_bytes
from chopinbot_tools import fuzz, fuzz_synth
from chopinbot_tools import fuzz_mutate as mutate

FAST_CASES = 300  # cases 0..299 of seed 0: six of them synthesized files of 100k+ notes or events


@pytest.fixture(scope="module")
def corpus() -> list[bytes]:
    return fuzz_synth.load_corpus()


def assert_passes(data: bytes) -> dict:
    res = fuzz.check_bytes(data)
    assert res["outcome"] in ("ok", "midi_error"), res
    return res


# --- the fuzzer, as `make test` runs it --------------------------------------------------------

@pytest.mark.slow
def test_a_few_hundred_fuzz_cases_pass(tmp_path):
    s = fuzz.run_fuzz(cases=FAST_CASES, seed=0, time_cap=2.0, mem_cap_mb=2048, save_failures=tmp_path / "failures")
    assert s.cases == FAST_CASES and s.large_cases >= 3
    assert s.failed == 0, s.text()
    assert s.counts["ok"] > 0 and s.counts["midi_error"] > 0
    assert s.slowest[0]["cpu"] <= 2.0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_mutated_files_pass_in_process(corpus, seed):
    case = fuzz_synth.make_case(seed, 0, corpus, large=False)
    assert_passes(case.data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=3000), division=st.integers(0, 0xFFFF), fmt=st.integers(0, 3))
def test_random_track_bytes_after_a_valid_header(body, division, fmt):
    data = mutate.header(fmt, 1, division) + mutate.track(body, end_of_track=False)
    try:
        read_midi_bytes(data)
    except MidiError as e:
        assert str(e).strip() and "\n" not in str(e)


@pytest.mark.parametrize("name", sorted(mutate.MUTATORS))
def test_each_mutator_on_real_files(corpus, name):
    rng = random.Random(name)
    for i in range(12):
        assert_passes(mutate.MUTATORS[name](rng, corpus[i * 4 % len(corpus)], corpus))


# --- named hostile files and the errors they give ------------------------------------------------

def midi_error(data: bytes) -> str:
    res = fuzz.check_bytes(data)
    assert res["outcome"] == "midi_error", res
    return res["message"]


def test_empty_and_tiny_files(corpus):
    assert "not a MIDI file" in midi_error(b"")
    assert "not a MIDI file" in midi_error(b"MThd")
    assert "not a MIDI file" in midi_error(b"RIFF" + corpus[0])
    assert "no notes" in midi_error(mutate.header(1, 0, 480))
    assert "no notes" in midi_error(mutate.header(1, 1, 480) + b"MTrk\0\0\0\0")


def test_absurd_header_values(corpus):
    data = corpus[0]
    assert "0 ticks per quarter" in midi_error(mutate._set16(data, 12, 0))
    assert "SMPTE" in midi_error(mutate._set16(data, 12, 0xE728))  # -25 fps, 40 ticks per frame
    assert "MIDI" in midi_error(mutate._set16(data, 8, 0xFFFF))  # format 65535
    assert_passes(mutate._set16(data, 10, 0xFFFF))  # 65,535 tracks announced
    assert_passes(mutate._set16(data, 12, 1))  # one tick per quarter note


def test_truncation_at_every_chunk_boundary(corpus):
    data = corpus[1]
    for c in mutate.parse_chunks(data)[:4]:
        for cut in (c.offset + 3, c.offset + 8, c.body_start + 5, c.body_end - 1):
            assert_passes(data[:cut])


def test_track_length_fields_that_lie(corpus):
    data = corpus[2]
    c = mutate._tracks(data)[1]
    for length in (0, 1, c.length - 1, c.length + 1, 0xFFFFFFFF):
        import struct

        assert_passes(data[: c.offset + 4] + struct.pack(">I", length) + data[c.offset + 8 :])


def test_giant_delta_times_add_up_past_int32():
    body = b"\x00\x90\x3c\x40" + b"".join(mutate.vlq(0x0FFFFFFF) + b"\x3c\x00" + b"\x00\x3c\x40" for _ in range(40))
    assert_passes(mutate.header(0, 1, 480) + mutate.track(body))
    assert_passes(mutate.header(0, 1, 480) + mutate.track(b"\xff\xff\xff\xff\x7f\x90\x3c\x40"))  # 5-byte delta


def test_meta_event_with_absurd_length():
    ev = b"\x00" + mutate._meta(0x03, b"abc", length=0x0FFFFFFF)
    body = b"\x00\x90\x3c\x40\x10\x80\x3c\x00" + ev
    assert "malformed MIDI" in midi_error(mutate.header(0, 1, 480) + mutate.track(body))


def test_notes_out_of_the_piano_range_only():
    body = b"\x00\x90\x05\x40\x10\x80\x05\x00\x00\x90\x7f\x40\x10\x80\x7f\x00"
    assert "piano range" in midi_error(mutate.header(0, 1, 480) + mutate.track(body))


def test_100k_note_track_is_read_within_the_time_cap():
    import time

    data = fuzz_synth.synth_notes(random.Random(0), 100_000, "sequential", 48)
    t0 = time.process_time()
    assert_passes(data)
    assert time.process_time() - t0 < 2.0


def test_too_many_notes_is_a_clear_error():
    assert "too many notes" in midi_error(fuzz_synth.synth_notes(random.Random(0), 250_000, "chord"))


def test_too_many_states_is_refused_before_building_them():
    """400k note boundaries: refused by the states cap, without building 400k x 88 arrays."""
    import time

    t0 = time.process_time()
    msg = midi_error(fuzz_synth.synth_notes(random.Random(0), 199_999, "staccato", 1))
    assert "too many states" in msg
    assert time.process_time() - t0 < 2.0


@pytest.mark.parametrize("kind", ["tempo", "keysig", "pedal"])
def test_floods_of_tempo_key_and_pedal_events_are_capped(kind):
    """A 20 MB file of one event repeated (millions of Python objects) ends quickly."""
    import time

    t0 = time.process_time()
    res = assert_passes(fuzz_synth.synth_event_flood(kind))
    assert time.process_time() - t0 < 2.0, res


def test_key_signature_change_between_every_note_is_capped():
    """Each key segment costs a key detection and a transposition: 20,000 of them took 20 s."""
    import time

    t0 = time.process_time()
    assert_passes(fuzz_synth.synth_keysig_flood(random.Random(0), 20_000))
    assert time.process_time() - t0 < 2.0


# --- the fuzzer notices what it is there to notice ------------------------------------------------

TARGETS = textwrap.dedent('''
    import os, time

    def ok(data):
        return {"outcome": "ok", "message": ""}

    def crash(data):
        if data:
            raise ValueError("boom")
        return ok(data)

    def die(data):
        if data:
            os.abort()
        return ok(data)

    def spin(data):
        while data:
            pass
        return ok(data)

    def hog(data):
        if data:
            x = bytearray(16 << 30)
        return ok(data)

    def slow(data):
        t = time.process_time()
        while data and time.process_time() - t < 0.3:
            pass
        return ok(data)
''')


@pytest.fixture()
def targets(tmp_path, monkeypatch):
    (tmp_path / "fuzz_targets.py").write_text(TARGETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import os

    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return "fuzz_targets"


@pytest.mark.parametrize("target, outcome", [("ok", "ok"), ("crash", "crash"), ("die", "crash"), ("spin", "hang"),
                                             ("hog", "memory"), ("slow", "slow")])
def test_fuzzer_classifies_failures(targets, target, outcome):
    s = fuzz.run_fuzz(cases=2, seed=0, time_cap=0.1, hang_cpu=0.5, mem_cap_mb=1024, target=f"{targets}:{target}")
    assert s.cases == 2 and s.counts[outcome] == 2, s.counts
    assert (s.failed == 0) == (outcome == "ok")
    if outcome == "crash" and target == "die":
        assert "signal" in s.failures[0]["message"]


def test_fuzz_command_line_writes_report_and_exit_code(tmp_path, capsys):
    report = tmp_path / "r.json"
    assert fuzz.main(["--cases", "20", "--seed", "7", "--report", str(report), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "fuzzed 20 MIDI inputs" in out and "PASS" in out
    data = json.loads(report.read_text())
    assert data["cases"] == 20 and data["failed"] == 0 and sum(data["counts"].values()) == 20
    assert fuzz.main(["--case", "3", "--seed", "7"]) == 0  # one case, in-process


def test_cases_are_reproducible(corpus):
    a = fuzz_synth.make_case(5, 123, corpus)
    b = fuzz_synth.make_case(5, 123, corpus)
    assert a.data == b.data and a.name == b.name
    assert fuzz_synth.make_case(5, 124, corpus).data != a.data
