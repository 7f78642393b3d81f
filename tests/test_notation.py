"""Sheet music (chopinbot.notation): metre, hands, spelling, values, the MusicXML read back, the
engraving, the MIDI's beat grid and signatures, and `chopinbot score`."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import symusic

from chopinbot.cli import main as cli_main
from chopinbot.constants import GRID_PER_BEAT as G
from chopinbot.constants import LOWEST_PITCH, N_KEYS
from chopinbot.errors import ConfigError
from chopinbot.music.keys import Key
from chopinbot.music.midi import read_midi_bytes
from chopinbot.music.scores import read_score
from chopinbot.music.states import States, notes_to_states, states_to_notes, states_to_score
from chopinbot.notation.engrave import pdf_bytes, svg_pages, write_score_file
from chopinbot.notation.files import file_spec
from chopinbot.notation.hands import split_hands
from chopinbot.notation.metre import (
    Metre,
    continuation_metre,
    infer_metre,
    metre_from_signatures,
    midi_grid,
    parse_time_signature,
)
from chopinbot.notation.rhythm import Chord, quantize_voice, split_values
from chopinbot.notation.score import ScoreSpec, build_score
from chopinbot.notation.spelling import fifth_name, key_sharps, spell
from conftest import CORPUS


def states_of(events: list[tuple[int, int, list[int]]], velocity: int = 60) -> States:
    """States from (start step, end step, pitches) notes that tile time (no overlaps across events)."""
    bounds = sorted({s for s, _, _ in events} | {e for _, e, _ in events})
    n = len(bounds) - 1
    keys = np.zeros((n, N_KEYS), bool)
    onsets = np.zeros((n, N_KEYS), bool)
    for s, e, ps in events:
        i, j = bounds.index(s), bounds.index(e)
        for p in ps:
            keys[i:j, p - LOWEST_PITCH] = True
            onsets[i, p - LOWEST_PITCH] = True
    beats = (np.diff(bounds) / G).astype(np.float32)
    return States(keys, onsets, beats, beats * 0.5, np.full(n, velocity, np.uint8))


def waltz(bars: int, pickup: int = 0) -> States:
    """A bass note on each downbeat and a chord on beats 2 and 3; ``pickup`` melody beats before."""
    ev = [(i * G, (i + 1) * G, [72]) for i in range(pickup)]
    for b in range(bars):
        t = (pickup + 3 * b) * G
        ev += [(t, t + G, [36 + (b % 2) * 7]), (t + G, t + 2 * G, [55, 60, 64]), (t + 2 * G, t + 3 * G, [55, 60, 64])]
    return states_of(ev)


def test_key_signatures_and_spelling_in_the_key():
    assert key_sharps(Key(2, False)) == 2  # D major
    assert key_sharps(Key(3, True)) == -6  # E-flat minor
    assert key_sharps(Key(6, False)) == 6  # F-sharp major
    assert key_sharps(Key(9, True)) == 0
    d_major = spell(np.zeros(3), np.array([62, 66, 69]), lambda t: (2, False))
    assert [fifth_name(int(f)) for f in d_major] == [("D", 0), ("F", 1), ("A", 0)]
    eb_minor = spell(np.zeros(3), np.array([63, 66, 70]), lambda t: (-6, True))
    assert [fifth_name(int(f)) for f in eb_minor] == [("E", -1), ("G", -1), ("B", -1)]
    # A minor's leading tone is G-sharp, not A-flat
    assert fifth_name(int(spell(np.zeros(1), np.array([68]), lambda t: (0, True))[0])) == ("G", 1)


def test_hands_split_by_register_and_continuity():
    # a left-hand chord around middle C under a held right-hand note stays in the left hand
    starts = np.array([0, 0, 48, 48, 48]) * 1
    ends = np.array([48, 192, 96, 96, 96])
    pitches = np.array([36, 76, 55, 60, 64])
    staff = split_hands(starts, ends, pitches)
    assert staff.tolist() == [2, 1, 2, 2, 2]
    # a wide chord splits at its gap, not at middle C
    staff = split_hands(np.zeros(4, int), np.full(4, 48), np.array([40, 47, 62, 79]))
    assert staff.tolist() == [2, 2, 1, 1]


def test_metre_inferred_with_its_pickup_or_asked_for():
    m = infer_metre(*(lambda s: (s.keys, s.onsets, s.grid_units()))(waltz(8)))
    assert m.first == (3, 4) and m.offset == 0
    m = infer_metre(*(lambda s: (s.keys, s.onsets, s.grid_units()))(waltz(8, pickup=1)))
    assert m.first == (3, 4) and m.offset == 2.0 and m.pickup == 2.0  # one beat before the first downbeat
    s = waltz(8)
    assert infer_metre(s.keys, s.onsets, s.grid_units(), (6, 8)).first == (6, 8)
    assert parse_time_signature("6/8") == (6, 8)
    with pytest.raises(ConfigError):
        parse_time_signature("3/5")


def test_midi_grid_pickup_bar_and_lead_in():
    lead, sigs = midi_grid(Metre(((0.0, 3, 4),), 2.0))
    assert lead == 0 and sigs == [(0.0, 1, 4), (1.0, 3, 4)]
    lead, sigs = midi_grid(Metre(((0.0, 3, 4),), 1.5))  # a pickup of an eighth and a quarter: 3/8
    assert lead == 0 and sigs == [(0.0, 3, 8), (1.5, 3, 4)]
    lead, sigs = midi_grid(Metre(((0.0, 3, 4),), 2.75))  # mid-eighth: a sixteenth's rest in an eighth's pickup
    assert lead == 0.25 and sigs == [(0.0, 1, 8), (0.5, 3, 4)]
    lead, sigs = midi_grid(Metre(((0.0, 3, 4),), 2.75, pickup_unit=1.0))  # composed music: whole quarters
    assert lead == 0.75 and sigs == [(0.0, 1, 4), (1.0, 3, 4)]
    lead, sigs = midi_grid(Metre(((0.0, 4, 4),), 0.0))
    assert lead == 0 and sigs == [(0.0, 4, 4)]
    # a file whose first bar is a one-beat pickup (as read_score says it)
    m = metre_from_signatures([(0.0, 1, 4), (1.0, 3, 4)], 0.0)
    assert m.first == (3, 4) and m.offset == 2.0


def test_states_to_score_writes_the_grid_and_signatures():
    s = waltz(2)
    midi = bytes(states_to_score(s, bpm=100, lead_beats=0.5, time_signatures=[(0.0, 1, 4), (1.0, 3, 4)],
                                 key_signature=(-3, 1)).dumps_midi())
    back = symusic.Score.from_midi(midi)
    assert [(t.time, t.numerator, t.denominator) for t in back.time_signatures] == [(0, 1, 4), (480, 3, 4)]
    assert [(k.key, k.tonality) for k in back.key_signatures] == [(-3, 1)]
    assert back.tracks[0].notes[0].time == 240  # the lead-in
    assert len(read_midi_bytes(midi).time_signatures) == 2


def test_continuation_keeps_its_own_grid():
    # a history on the sixteenth grid that ends 5 steps before a beat, then music that keeps that phase
    hist = states_of([(i * 12, i * 12 + 12, [40 + (i % 4 == 0) * 0, 67 + i % 3]) for i in range(15)]
                     + [(180, 187, [60])])
    new = states_of([(i * 12, i * 12 + 12, [36 if i % 4 == 0 else 70 + i % 5]) for i in range(32)])
    m = continuation_metre(hist, new, keep=0)
    lead, _ = midi_grid(m)
    onsets = lead * G + np.concatenate([[0], np.cumsum(new.grid_units())])[:-1]
    assert np.bincount((np.round(onsets).astype(int)) % G, minlength=G).argmax() == 0


def test_values_dots_triplets_and_no_remnant():
    pieces = split_values(0, 72, 0, 192, 48, 4, set())  # a dotted quarter on beat 1
    assert [(p.type, p.dots) for p in pieces] == [("quarter", 1)]
    pieces = split_values(24, 120, 0, 192, 48, 4, set())  # from the second eighth over beats 2 and 3
    assert [p.end - p.start for p in pieces] == [24, 48, 24]
    triplet = split_values(48, 64, 0, 192, 48, 4, {1})
    assert triplet[0].triplet and triplet[0].type == "eighth"
    # a 5/48-beat note moves onto the grid: never a 1/48 remnant
    chords, moved = quantize_voice([Chord(0, 5, [60]), Chord(5, 48, [62])])
    assert moved == 1 and [(c.start, c.end) for c in chords] == [(0, 6), (6, 48)]


def test_unnotatable_value_still_gives_a_valid_score(caplog, tmp_path):
    keys = np.zeros((4, N_KEYS), bool)
    keys[:, 39] = True
    st = States(keys, keys.copy(), np.array([1, 5 / 48, 43 / 48, 1], np.float32), np.full(4, 0.5, np.float32),
                np.full(4, 60, np.uint8))
    with caplog.at_level(logging.WARNING, logger="chopinbot.notation"):
        text, info = build_score(ScoreSpec(st, Key(0, False), 120.0))
    assert info.stats.moved_boundaries == 1 and "nearest notatable rhythm" in caplog.text
    ET.fromstring(text.encode())
    assert svg_pages(text)
    path = tmp_path / "bad.musicxml"
    path.write_text(text)
    back = states_to_notes(notes_to_states(read_score(path))[0])
    assert np.round(back[:, 0] * G).astype(int).tolist() == [0, 48, 54, 96]  # 5/48 -> a thirty-second


def test_round_trip_of_a_real_piece_and_engraving(tmp_path):
    spec, _ = file_spec(CORPUS / "chpn-p20.mid")
    text, info = build_score(spec)
    assert info.metre.first == (4, 4) and info.key == Key(0, True)
    root = ET.fromstring(text.encode())
    assert root.find(".//staves").text == "2" and root.find(".//key/fifths").text == "-3"
    assert {n.text for n in root.iter("staff")} == {"1", "2"}
    path = tmp_path / "p20.musicxml"
    path.write_text(text)
    mine = states_to_notes(spec.states)
    back = states_to_notes(notes_to_states(read_score(path))[0])
    a = sorted(zip(np.round(mine[:, 0] * G).astype(int) + 0, mine[:, 2].astype(int)))
    b = sorted(zip(np.round(back[:, 0] * G).astype(int), back[:, 2].astype(int)))
    assert len(a) == len(b)
    assert sum(x == y for x, y in zip(a, b)) / len(a) > 0.95  # onsets and pitches (exact where notatable)
    pages = svg_pages(text)
    assert len(pages) >= 1 and "\ueca5" not in pages[0]  # the tempo glyph rewritten for Cairo
    assert pdf_bytes(pages[:1]).startswith(b"%PDF")
    with pytest.raises(ConfigError):
        write_score_file(text, tmp_path / "x.doc")


def test_generated_piece_midi_and_score(tiny_model_dir, tmp_path):
    from chopinbot.compose.generate import GenerateConfig, generate
    from chopinbot.compose.seeds import seed_from_test
    from chopinbot.model.formats import load_model

    model = load_model(tiny_model_dir, "cpu")
    res = generate(model, seed_from_test(3), GenerateConfig(steps=48, random_seed=0, include_seed=False))
    assert res.metre is not None
    midi = symusic.Score.from_midi(res.midi_bytes())
    assert midi.time_signatures and midi.key_signatures
    assert midi.key_signatures[0].key == key_sharps(res.key)
    xml = res.save_score(tmp_path / "piece.musicxml")
    assert "ChopinBot, in the style of Chopin" in xml.read_text()
    assert res.save_score(tmp_path / "piece.pdf").read_bytes().startswith(b"%PDF")


def test_cli_score(tmp_path, capsys):
    out = tmp_path / "p7.musicxml"
    assert cli_main(["score", str(CORPUS / "chpn-p7.mid"), "--out", str(out), "--svg", "--time-signature", "3/4"]) == 0
    assert "3/4" in capsys.readouterr().out
    assert out.exists() and out.with_suffix(".svg").read_text().startswith("<svg")
    assert cli_main(["score", str(CORPUS / "chpn-p7.mid"), "--out", str(out)]) == 2  # exists: --force


def test_engraving_in_a_thread():
    """The app engraves in its script threads, where verovio's default constructor finds no fonts."""
    import threading

    text, _ = build_score(ScoreSpec(waltz(4), Key(0, False), 100.0))
    out = []
    for _ in range(2):
        t = threading.Thread(target=lambda: out.append(len(svg_pages(text))))
        t.start()
        t.join()
    assert out == [1, 1]


def test_a_note_tied_over_the_bar_line_stays_in_its_voice(tmp_path):
    """In the left hand a C3 struck under a held E3 is the lower voice (6) of bar 1 and is tied into
    bar 2, where the other voice moves below it: it keeps voice 6 there (verovio does not follow a
    tie from one voice into another, and the score read back had a note too many)."""
    st = states_of([(0, 4 * G, [52]), (2 * G, 5 * G, [48]), (4 * G, 8 * G, [40])])
    text, info = build_score(ScoreSpec(st, key=Key(0, False), metre=Metre(((0.0, 4, 4),), 0.0), dynamics=False))
    assert set(info.staff.tolist()) == {2}
    voice_of_tie = {}
    for note in ET.fromstring(text).iter("note"):
        ties = {t.get("type") for t in note.findall("tie")}
        if ties and note.find("pitch/step").text == "C":
            voice_of_tie[frozenset(ties)] = note.find("voice").text
    assert voice_of_tie[frozenset({"start"})] == voice_of_tie[frozenset({"stop"})] == "6"
    path = tmp_path / "tied.musicxml"
    path.write_text(text)
    back = read_score(path)
    assert sorted(back.pitch.tolist()) == [40, 48, 52]  # three notes, the tied one read once
