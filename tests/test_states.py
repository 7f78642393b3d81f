"""The state representation, tested on hand-made and real MIDI (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from chopinbot.constants import LOWEST_PITCH
from chopinbot.music.midi import read_midi, read_midi_bytes
from chopinbot.music.states import notes_to_states, states_to_notes, states_to_score, transpose_states
from conftest import make_midi


def _states(tmp_path, notes, **kw):
    return notes_to_states(read_midi(make_midi(tmp_path / "x.mid", notes, **kw)))[0]


def k(pitch):
    return pitch - LOWEST_PITCH


def test_held_note_survives_other_notes_ending(tmp_path):
    # C4 held 4 beats while E4 and G4 come and go: C4 sounds in every state.
    s = _states(tmp_path, [(0, 4, 60), (0, 1, 64), (1, 2, 67)])
    assert s.keys[:, k(60)].all()
    assert s.onsets[0, k(60)] and not s.onsets[1:, k(60)].any()
    np.testing.assert_allclose(s.beats, [1, 1, 2])


def test_no_time_lost_when_notes_outlast_the_gap(tmp_path):
    # Long notes overlapping the next onsets, then a rest, then a last chord.
    s = _states(tmp_path, [(0, 3, 60), (1, 5, 64), (2, 2.5, 67), (6, 7, 48), (6, 8, 52)])
    assert s.total_beats == pytest.approx(8.0)  # first onset to last note end
    assert (~s.keys[-3].any()) or True
    rest = np.flatnonzero(~s.keys.any(axis=1))
    assert rest.size == 1 and s.beats[rest[0]] == pytest.approx(1.0)  # beat 5..6 is a rest state
    assert s.keys[-1, k(52)] and not s.keys[-1, k(48)]  # the last note is written


def test_restruck_note_is_a_new_onset(tmp_path):
    s = _states(tmp_path, [(0, 1, 60), (1, 2, 60)])
    assert len(s) == 2 and s.onsets[:, k(60)].all()


def test_overlapping_same_pitch_pairs_as_restrike_with_union(tmp_path):
    # The second C4 starts while the first still sounds: a re-strike, and the
    # key sounds until the later end.
    s = _states(tmp_path, [(0, 2, 60), (1, 1.5, 60)])
    assert s.keys[:, k(60)].all()
    assert s.onsets[:, k(60)].tolist()[:2] == [True, True]
    assert s.total_beats == pytest.approx(2.0)


def test_legato_overlap_snaps_away(tmp_path):
    # 5-tick overlap at 480 tpq (1/96 beat): no tiny state.
    s = _states(tmp_path, [(0, 1 + 5 / 480, 60), (1, 2, 62)])
    assert len(s) == 2
    assert s.beats.min() >= 1 / 48


def test_min_state_merge_keeps_time_and_onsets(tmp_path):
    path = make_midi(tmp_path / "m.mid", [(0, 1, 60), (1, 1.05, 62), (1.05, 2, 64), (1.02, 2, 67)])
    notes = read_midi(path)
    fine = notes_to_states(notes, min_state_beats=1 / 48)[0]
    coarse = notes_to_states(notes, min_state_beats=0.25)[0]
    assert len(coarse) < len(fine)
    assert coarse.total_beats == pytest.approx(fine.total_beats)
    assert coarse.beats.min() >= 0.25 - 1e-6
    assert coarse.onsets[:, k(67)].any()  # struck in a merged state, moved on, not lost


def test_out_of_range_note_moves_by_octave_not_to_top_key(tmp_path):
    # C#9 (121) and A#-1 (10) are off the keyboard: each keeps its pitch class.
    notes = read_midi(make_midi(tmp_path / "r.mid", [(0, 1, 60), (1, 2, 121), (2, 3, 10)]))
    s, _, moves = notes_to_states(notes)
    assert moves == 2
    assert s.keys[1].nonzero()[0].tolist() == [k(97)]  # C#7, not clamped onto C8
    assert s.keys[2].nonzero()[0].tolist() == [k(22)]  # A#0


def test_transposition_never_wraps(tmp_path):
    s = _states(tmp_path, [(0, 1, 108), (0, 1, 21), (1, 2, 60)])
    up, moves = transpose_states(s, 5)
    assert moves == 1
    assert up.keys[0, k(101)]  # C8 + 5 would leave the keyboard: an octave lower, F7
    assert not up.keys[0, :k(26)].any()  # nothing wrapped to the bottom (A0 + 5 = D1 is the lowest)
    down, moves = transpose_states(s, -6)
    assert moves == 1 and down.keys[0, k(27)]  # A0 - 6 -> an octave up: D#1


def test_states_to_notes_holds_and_restrikes(tmp_path):
    s = _states(tmp_path, [(0, 4, 60), (0, 1, 64), (1, 2, 64), (2, 3, 67)])
    notes = states_to_notes(s)
    c4 = notes[notes[:, 2] == 60]
    e4 = notes[notes[:, 2] == 64]
    assert c4.tolist() == [[0, 4, 60, 80]]  # one note across four states
    assert e4[:, :2].tolist() == [[0, 1], [1, 2]]  # re-struck: two notes


def test_roundtrip_identity_on_real_files(corpus_files):
    for path in corpus_files[::6]:  # 8 files across the corpus
        s1, _, _ = notes_to_states(read_midi(path))
        score = states_to_score(s1, bpm=None)
        s2, _, _ = notes_to_states(read_midi_bytes(bytes(score.dumps_midi())))
        assert len(s1) == len(s2), path.name
        np.testing.assert_array_equal(s1.keys, s2.keys)
        np.testing.assert_array_equal(s1.onsets, s2.onsets)
        np.testing.assert_array_equal(s1.grid_units(), s2.grid_units())
        np.testing.assert_array_equal(s1.velocity, s2.velocity)
        np.testing.assert_allclose(s1.seconds.sum(), s2.seconds.sum(), rtol=1e-3)


def test_pedal_apply_lengthens_notes(tmp_path):
    import symusic

    score = symusic.Score(480)
    tr = symusic.Track("p", 0, False)
    tr.notes.append(symusic.Note(0, 480, 60, 80))
    tr.notes.append(symusic.Note(960, 480, 64, 80))
    tr.controls.append(symusic.ControlChange(240, 64, 127))
    tr.controls.append(symusic.ControlChange(900, 64, 0))
    score.tracks.append(tr)
    notes = read_midi_bytes(bytes(score.dumps_midi()))
    ignored = notes_to_states(notes, pedal="ignore")[0]
    applied = notes_to_states(notes, pedal="apply")[0]
    assert ignored.total_beats == applied.total_beats == pytest.approx(3.0)
    c4_ignored = (ignored.keys[:, k(60)] * ignored.beats).sum()
    c4_applied = (applied.keys[:, k(60)] * applied.beats).sum()
    assert c4_ignored == pytest.approx(1.0) and c4_applied == pytest.approx(900 / 480)
