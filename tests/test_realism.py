"""Realism: excerpt features on hand-made notes, the classifier test's calibration
on the bundled pieces (real vs real near 0.5, another composer clearly above),
and the realism section end to end with a stand-in generator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chopinbot.constants import PACKAGE_DIR
from chopinbot.dataset.store import Dataset
from chopinbot.evaluation.excerpts import (
    FEATURE_NAMES,
    Excerpt,
    bass_pulse,
    detected_key,
    excerpt_features,
    excerpt_windows,
    feature_matrix,
    state_excerpts,
    steady_tempo,
    time_excerpts,
    timed_notes,
)
from chopinbot.evaluation.figures import key_hold
from chopinbot.evaluation.realism import (
    CALIBRATION_DIR,
    ClassifierSettings,
    RealismSettings,
    classifier_test,
    composer_excerpts,
    evaluate_realism,
    excerpt_stats,
    format_realism_section,
    halves_test,
    held_out_seeds,
    seed_replay,
    two_sets_test,
)
from chopinbot.music.keys import Key, parse_key, within_a_fifth
from chopinbot.music.midi import PianoNotes
from chopinbot.music.states import States, notes_to_states, transpose_states

FAST = ClassifierSettings(repeats=2, folds=4, trees=60)


def _notes(rows) -> np.ndarray:
    """(start s, end s, pitch, velocity) rows."""
    return np.array(rows, np.float64).reshape(-1, 4)


def test_features_of_a_melody_over_a_bass():
    # a bass C3 held 2 s under C5 E5 G5 (0.5 s each): a known range, spread, top voice, velocities
    notes = _notes([(0, 2, 48, 60), (0, 0.5, 72, 80), (0.5, 1.0, 76, 90), (1.0, 1.5, 79, 100)])
    f = excerpt_features(notes, seconds=20)
    assert set(f) == set(FEATURE_NAMES)
    assert f["pitch_range"] == 31 and f["n_pitches"] == 4 and f["pitch_min"] == 48 and f["pitch_max"] == 79
    assert f["spread_mean"] == pytest.approx((24 + 28 + 31) / 3)  # the bass sounds under every melody note
    assert f["struck_span_mean"] == pytest.approx(24 / 3)  # only the first onset strikes two keys
    assert f["top_abs_interval"] == pytest.approx(3.5)  # C-E-G: 4 then 3 semitones
    assert f["top_leap_share"] == 0 and f["top_step_share"] == 0
    assert f["vel_mean"] == pytest.approx(82.5) and f["vel_sd"] == pytest.approx(np.std([60, 80, 90, 100]))
    assert f["notes_per_second"] == pytest.approx(4 / 20) and f["onsets_per_second"] == pytest.approx(3 / 20)
    assert f["silence_share"] == pytest.approx(1 - 2 / 20)
    assert f["poly_at_onsets"] == pytest.approx(2.0) and f["chord_share"] == pytest.approx(1 / 3)
    assert f["bass_abs_interval"] == 0  # one bass note throughout
    assert 0 < f["key_clarity"] <= 1


def test_empty_and_one_note_excerpts_give_nan_not_errors():
    empty = excerpt_features(_notes([]))
    assert empty["notes_per_second"] == 0 and math.isnan(empty["pitch_range"])
    one = excerpt_features(_notes([(0, 1, 60, 64)]))
    assert one["pitch_range"] == 0 and one["vel_sd"] == 0 and math.isnan(one["top_abs_interval"])


def test_bass_pulse_hears_a_march_bass_and_not_a_scatter():
    rng = np.random.default_rng(0)
    beats = np.arange(40) * 0.5  # a bass note every half second, a melody note over each and between
    march = [[t, t + 0.4, 40 + 7 * (i % 2), 60] for i, t in enumerate(beats)]
    melody = [[t, t + 0.2, 72 + int(rng.integers(0, 5)), 70] for t in np.arange(80) * 0.25]
    assert bass_pulse(np.array(march + melody, np.float64)) == 1.0  # the melody between never counts as bass
    scatter = np.sort(rng.uniform(0, 20, 40))
    loose = [[t, t + 0.1, 40, 60] for t in scatter]
    assert bass_pulse(np.array(loose + melody, np.float64)) < 0.3
    assert math.isnan(bass_pulse(np.zeros((0, 4))))


def test_repeated_motif_recurs_and_a_random_walk_does_not():
    motif = [60, 62, 64, 65, 67, 64]
    rows = [(0.25 * i, 0.25 * i + 0.25, motif[i % 6], 70) for i in range(60)]
    assert excerpt_features(_notes(rows))["interval_4gram_recurrence"] > 0.9
    rng = np.random.default_rng(0)
    walk = 60 + np.cumsum(rng.choice([-7, -5, -4, -3, 3, 4, 5, 7], 60))
    rows = [(0.25 * i, 0.25 * i + 0.25, int(np.clip(p, 30, 100)), 70) for i, p in enumerate(walk)]
    assert excerpt_features(_notes(rows))["interval_4gram_recurrence"] < 0.3


def test_key_detection_and_the_circle_of_fifths():
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 7, 4, 0]
    rows = [(0.5 * i, 0.5 * i + 0.5, 60 + p, 70) for i, p in enumerate(scale)] + [(0, 5.5, 48, 60)]
    assert detected_key(_notes(rows)) == Key(0, False)
    c = parse_key("C")
    for near in ("C", "a", "G", "F", "e", "d"):
        assert within_a_fifth(c, parse_key(near)), near
    for far in ("D", "Bb", "b", "F#", "c"):
        assert not within_a_fifth(c, parse_key(far)), far
    stats = excerpt_stats(Excerpt(_notes(rows), "x", parse_key("G")))
    assert stats["key_hold"] == 1.0 and excerpt_stats(Excerpt(_notes(rows), "x", parse_key("E")))["key_hold"] == 0.0


def _states(n: int, seconds_each: np.ndarray) -> States:
    """``n`` one-beat states, each striking one key of a rising scale, lasting the given seconds."""
    keys = np.zeros((n, 88), bool)
    keys[np.arange(n), 39 + np.arange(n) % 12] = True
    return States(keys, keys.copy(), np.ones(n, np.float32), np.asarray(seconds_each, np.float32),
                  np.full(n, 70, np.uint8))


def test_timed_notes_windows_and_steady_tempo():
    st = _states(10, [0.5, 1.5] * 5)  # rubato: alternate states last 0.5 and 1.5 s
    notes = timed_notes(st)
    assert np.allclose(notes[:3, 0], [0, 0.5, 2.0]) and np.allclose(notes[:3, 1], [0.5, 2.0, 2.5])
    assert excerpt_windows(st, 4.0) == [(0, 4), (4, 8)]  # the 2-s remainder is dropped
    assert excerpt_windows(st, 4.0, first=1) == [(1, 5), (5, 9)]
    steady = steady_tempo(st)
    assert np.allclose(steady.seconds, 1.0) and steady.total_seconds == pytest.approx(st.total_seconds)
    ex = state_excerpts(st, "p", None, 4.0)
    assert len(ex) == 2 and all(np.allclose(np.diff(e.notes[:, 0]), 1.0) for e in ex)  # played evenly
    cut = time_excerpts(timed_notes(_states(10, np.full(10, 1.0))), "g", None, 3.0)
    assert len(cut) == 3 and all(e.notes[:, 1].max() <= 3.0 for e in cut)
    ending_in_a_rest = _states(10, np.full(10, 1.0))
    ending_in_a_rest.keys[8:] = ending_in_a_rest.onsets[8:] = False  # its last 2 s are silent
    notes = timed_notes(ending_in_a_rest)
    assert len(time_excerpts(notes, "g", None, 3.0)) == 2  # the last note ends at 8 s
    assert len(time_excerpts(notes, "g", None, 3.0, ending_in_a_rest.total_seconds)) == 3  # the piece, at 10
    # the summary's key hold counts the piece's excerpts the same way
    c_major = Key(0, False)
    assert key_hold(notes, c_major, 3.0)[1] == 2
    assert key_hold(notes, c_major, 3.0, ending_in_a_rest.total_seconds)[1] == 3


def test_classifier_test_sees_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{i}" for i in range(20)], 10)
    X = rng.normal(size=(200, 6))
    same = classifier_test(X, np.repeat(np.arange(20) % 2, 10), groups, FAST, feature_names=list("abcdef"))
    assert 0.3 < same["accuracy_mean"] < 0.7
    X[np.repeat(np.arange(20) % 2, 10) == 1, 2] += 3  # one feature tells the classes apart
    apart = classifier_test(X, np.repeat(np.arange(20) % 2, 10), groups, FAST, feature_names=list("abcdef"))
    assert apart["accuracy_mean"] > 0.9 and apart["top_features"][0][0] == "c"
    one_group = classifier_test(X, np.r_[np.ones(10), np.zeros(190)], groups, FAST)
    assert "skipped" in one_group


@pytest.fixture(scope="module")
def chopin_features():
    """Features of the 48 bundled Chopin pieces' 20-s excerpts, grouped by piece."""
    ex = composer_excerpts(("chopin",), folder=PACKAGE_DIR / "data")
    return feature_matrix(ex), [e.group for e in ex]


def test_real_vs_real_is_near_chance(chopin_features):
    X, groups = chopin_features
    assert len(set(groups)) == 48 and len(X) > 250
    r = halves_test(X, groups, ClassifierSettings(repeats=3, trees=100))
    assert abs(r["accuracy_mean"] - 0.5) < 0.2, r


def test_another_composer_is_told_from_chopin(chopin_features):
    X, groups = chopin_features
    mozart = composer_excerpts(("Mozart",))
    assert len({e.group for e in mozart}) == 21
    r = two_sets_test(feature_matrix(mozart), [e.group for e in mozart], X, groups,
                      ClassifierSettings(repeats=2, trees=100), per_class=150)
    assert r["accuracy_mean"] > 0.75 and r["auc_mean"] > 0.8, r


def test_calibration_pieces_are_shipped_with_their_credit():
    for composer, n in (("Mozart", 21), ("Beethoven", 29), ("Brahms", 10)):
        assert len(list((CALIBRATION_DIR / composer).glob("*.mid"))) == n
    readme = (CALIBRATION_DIR / "README.md").read_text()
    assert "Bernd Krueger, piano-midi.de" in readme and "CC BY-SA 3.0 DE" in readme


def test_realism_section_end_to_end(tiny_dataset_dir):
    """The section runs on a tiny dataset with a stand-in generator that plays a
    scale: it is told from Chopin, and every part of the section is filled."""
    ds = Dataset(tiny_dataset_dir)
    seeds, true = held_out_seeds(ds, "test")
    assert len(seeds) == len(true) > 0 and all(len(s.states) == 16 for s in seeds)
    calls = []

    def scale(seed, index):
        calls.append(index)
        n = 240
        pn = PianoNotes(start=np.arange(n) * 240, end=np.arange(n) * 240 + 240, pitch=(60 + np.arange(n) % 12),
                        velocity=np.full(n, 64), ticks_per_quarter=480, tempo_qpm=np.full(1, 120.0))
        return notes_to_states(pn)[0]  # 240 eighth notes at 120 bpm: 60 s

    rs = RealismSettings(composers=("Brahms",), test=FAST)
    r = evaluate_realism(ds, scale, rs, progress=False)
    assert calls == list(range(len(seeds))) * 2  # the seeds, then the same seeds alone (context 0)
    assert r["n_excerpts"]["generated"] == 3 * len(seeds) and r["n_excerpts"]["chopin_held_out"] == len(true)
    assert r["rows"]["generated vs Chopin"]["accuracy_mean"] > 0.8
    assert {"Brahms vs Chopin", "Chopin vs Chopin (two random halves of the pieces)"} <= set(r["rows"])
    stats = {row["stat"]: row for row in r["statistics"]}
    assert stats["n_pitches"]["gen_mean"] == 12 and stats["vel_sd"]["gen_mean"] == 0
    assert r["seed_fidelity"]["n"] == len(seeds)
    text = format_realism_section(r)
    assert "generated vs Chopin" in text and "Seed fidelity" in text and "key hold" in text
    composed = r["composed"]  # a scale replays nothing: every excerpt is composed, on the generated side
    assert composed["replay"]["generated"]["composed"] == 1.0
    assert composed["n_excerpts"]["generated_composed"] == r["n_excerpts"]["generated"]
    assert composed["rows"]["composed generated vs composed Chopin"]["accuracy_mean"] > 0.8
    phrase = composed["replay_phrase"]  # each whole minute as one: one share a seed, every 60-s window of the pieces
    assert phrase["generated"]["n"] == len(seeds) and phrase["generated"]["composed"] == 1.0
    assert phrase["chopin"]["n"] == composed["n_excerpts"]["phrase_chopin"] > 0
    assert phrase["chopin_same_seeds"]["n"] == len(seeds)
    assert phrase["chopin_every_minute"]["n"] > 0 and "| chopin_every_minute, 60-s excerpts | " in text
    assert "Composed music, apart from what it replays" in text and "| generated, 60-s excerpts | " in text
    voices = composed["voices"]  # the scale's top voice steps by a semitone (and drops an octave once in 12)
    assert voices["generated"]["top_abs_interval"]["mean"] == pytest.approx((11 + 11) / 12, abs=0.1)
    assert set(voices) == {"generated", "seed_alone", "chopin"} and voices["chopin"]["bass_pulse"]["n"] > 0
    assert "bass pulse" in text
    calls.clear()
    assert "composed" not in evaluate_realism(ds, scale, RealismSettings(composers=(), test=FAST, composed=False),
                                              progress=False) and calls == list(range(len(seeds)))
    assert "skipped" in evaluate_realism(ds, scale, RealismSettings(split="valid", excerpt_seconds=600), False)


def test_seed_replay_counts_what_a_continuation_copies_from_its_own_history(tiny_dataset_dir):
    """Continuing with the seed's own context scores 1 (all copied); the true continuation scores its own share."""
    ds = Dataset(tiny_dataset_dir)
    seeds, true = held_out_seeds(ds, "test")
    seed = next(s for s in seeds if s.context is not None and len(s.context) >= 40)
    copied, _ = transpose_states(seed.context[:40], seed.home.shift_to(seed.key))  # in the seed's key, as generated
    gen_share, true_share, gen_moved, true_moved = seed_replay(seed, copied, copied[:20])
    assert gen_share == true_share == gen_moved == true_moved == 1.0
    shifted, _ = transpose_states(copied, 1)  # the same passage a semitone up: not a verbatim copy...
    exact, _, moved, no_true = seed_replay(seed, shifted, None)
    assert exact == 0.0 and moved > 0.9 and np.isnan(no_true)  # ... but a transposed one
