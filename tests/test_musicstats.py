"""Musical statistics (muspy definitions) on hand-made cases with known answers,
on real pieces, and the originality measures."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from chopinbot.constants import BUNDLED_CORPUS_DIR, N_KEYS
from chopinbot.evaluation import musicstats as ms
from chopinbot.music.midi import read_midi
from chopinbot.music.states import States, notes_to_states, states_to_notes

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def _notes(rows) -> np.ndarray:
    """(start, end, pitch) rows -> a notes array with velocity 80."""
    a = np.asarray(rows, float).reshape(-1, 3)
    return np.column_stack([a, np.full(len(a), 80.0)])


def _scale() -> np.ndarray:
    return _notes([(i, i + 1, p) for i, p in enumerate(C_MAJOR)])


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, States]]:
    return [(f.stem, notes_to_states(read_midi(f))[0]) for f in sorted(BUNDLED_CORPUS_DIR.glob("*.mid"))]


def test_c_major_scale_pitch_stats():
    notes = _scale()
    assert ms.scale_consistency(notes) == 1.0
    assert ms.n_pitch_classes_used(notes) == 7
    assert ms.n_pitches_used(notes) == 8
    assert ms.pitch_range(notes) == 12
    # C is struck twice, the other six classes once: entropy of (2, 1, 1, 1, 1, 1, 1) / 8
    p = np.array([2, 1, 1, 1, 1, 1, 1]) / 8
    assert ms.pitch_class_entropy(notes) == pytest.approx(-(p * np.log2(p)).sum())
    # adding one F sharp: 8 of 9 notes fit C major (G major fits 8 too, none fits all 9)
    assert ms.scale_consistency(np.vstack([notes, _notes([(8, 9, 66)])])) == pytest.approx(8 / 9)


def test_scale_masks_are_muspys_24_scales():
    assert ms.SCALE_MASKS.shape == (24, 12) and (ms.SCALE_MASKS.sum(axis=1) == 7).all()
    c_major, a_minor = ms.SCALE_MASKS[0], ms.SCALE_MASKS[12 + 9]
    # a natural minor scale has its relative major's notes, so muspy's minor
    # scales never change the maximum; they are kept for fidelity
    assert (c_major == a_minor).all()
    assert c_major.nonzero()[0].tolist() == [0, 2, 4, 5, 7, 9, 11]


def test_entropy_of_twelve_equal_pitch_classes_is_log2_12():
    notes = _notes([(i, i + 1, 48 + i) for i in range(12)] * 3)
    assert ms.pitch_class_entropy(notes) == pytest.approx(math.log2(12))
    assert ms.pitch_class_entropy(_notes([(0, 1, 60), (1, 2, 72)])) == 0.0


def test_sustained_triad():
    chord = _notes([(0, 4, 60), (0, 4, 64), (0, 4, 67)])
    assert ms.polyphony(chord) == 3.0
    assert ms.polyphony_rate(chord) == 1.0
    assert ms.empty_beat_rate(chord) == 0.0


def test_polyphony_follows_muspy():
    # beats 0-2: one note; beats 2-3: two notes; beats 3-4: three notes
    notes = _notes([(0, 4, 48), (2, 4, 52), (3, 4, 55)])
    assert ms.polyphony(notes) == pytest.approx((2 * 1 + 1 * 2 + 1 * 3) / 4)
    # muspy's threshold=2 counts steps with more than two pitches
    assert ms.polyphony_rate(notes) == pytest.approx(1 / 4)
    assert ms.polyphony_rate(notes, threshold=1) == pytest.approx(2 / 4)
    # two overlapping notes of one pitch are one sounding pitch (a boolean roll)
    assert ms.polyphony(_notes([(0, 2, 60), (1, 3, 60)])) == 1.0
    # silent steps count in the rate's denominator but not in polyphony
    gap = _notes([(0, 1, 60), (0, 1, 64), (0, 1, 67), (3, 4, 60)])
    assert ms.polyphony(gap) == pytest.approx((3 + 1) / 2)
    assert ms.polyphony_rate(gap) == pytest.approx(1 / 4)


def test_empty_beat_rate_counts_a_one_beat_rest():
    # four beats, the third one silent (notes end and start exactly on beat lines)
    notes = _notes([(0, 1, 60), (1, 2, 62), (3, 4, 64)])
    assert ms.empty_beat_rate(notes) == pytest.approx(1 / 4)
    # a rest that does not fill a whole beat leaves no beat empty
    assert ms.empty_beat_rate(_notes([(0, 1.5, 60), (2.5, 4, 62)])) == 0.0
    # silence before the first note counts: the piece starts at beat 0
    assert ms.empty_beat_rate(_notes([(2, 4, 60)])) == pytest.approx(2 / 4)


def test_empty_input_gives_nan_not_errors():
    empty = np.zeros((0, 4))
    stats = ms.piece_stats(empty, bpm=120)
    assert stats["pitch_range"] == 0 and stats["n_pitches_used"] == 0
    for key in ("pitch_class_entropy", "scale_consistency", "polyphony", "polyphony_rate", "empty_beat_rate"):
        assert math.isnan(stats[key])


def test_piece_stats_derives_states_from_notes():
    # a beat of C, a beat of rest, two half beats, a beat of F: 4 notes in 2 s at 120 bpm
    notes = _notes([(0, 1, 60), (2, 2.5, 62), (2.5, 3, 64), (3, 4, 65)])
    stats = ms.piece_stats(notes, bpm=120)
    assert stats["notes_per_second"] == pytest.approx(4 / 2.0)
    assert stats["rest_fraction"] == pytest.approx(1 / 5)  # 5 states, one without keys
    states = ms.states_from_notes(notes)
    assert ms.rhythm_distribution(states) == {"1 beat": 0.6, "1/2 beat": 0.4}
    assert stats["rhythm_entropy"] == pytest.approx(-(0.6 * math.log2(0.6) + 0.4 * math.log2(0.4)))


def test_rhythm_distribution_labels_and_other():
    states = ms.states_from_notes(_notes([(i / 3, (i + 1) / 3, 60 + i % 2) for i in range(6)] + [(2, 5.5, 60)]))
    dist = ms.rhythm_distribution(states, top=1)
    assert dist == {"1/3 beat": pytest.approx(6 / 7), "other": pytest.approx(1 / 7)}
    assert ms.rhythm_distribution(states) == {"1/3 beat": pytest.approx(6 / 7), "7/2 beats": pytest.approx(1 / 7)}


def test_real_piece_in_plausible_ranges():
    # the Fantaisie-Impromptu (prelude 15, with its repeated A flat, is an outlier: entropy 2.59)
    states = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / "chpn_op66.mid"))[0]
    notes = states_to_notes(states)
    stats = ms.piece_stats(notes, bpm=None, states=states)
    # the corpus's mean ± 2 sd (measured over all 48 files) or wider
    assert 2.7 < stats["pitch_class_entropy"] < 3.7
    assert 0.65 < stats["scale_consistency"] <= 1.0
    assert 1.5 < stats["polyphony"] < 5.0
    assert 0.05 < stats["polyphony_rate"] < 1.0
    assert 40 <= stats["pitch_range"] <= 85
    assert 0.0 <= stats["empty_beat_rate"] < 0.06
    assert 2 < stats["notes_per_second"] < 25
    assert 0.0 <= stats["rest_fraction"] < 0.25


def test_corpus_statistics_match_the_field_notes(corpus):
    rows = [ms.piece_stats(states_to_notes(s), None, s) for _, s in corpus]
    mean = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
    # field notes (muspy on the 48 files): 3.20, 0.834, 3.18, 0.57, 62
    assert mean["pitch_class_entropy"] == pytest.approx(3.20, abs=0.02)
    assert mean["scale_consistency"] == pytest.approx(0.834, abs=0.005)
    assert mean["polyphony"] == pytest.approx(3.18, abs=0.03)
    assert mean["polyphony_rate"] == pytest.approx(0.57, abs=0.02)
    assert mean["pitch_range"] == pytest.approx(62, abs=1)


def test_compare_stats_and_table():
    real = [{"polyphony": 3.0, "pitch_range": 60.0}, {"polyphony": 4.0, "pitch_range": 64.0}]
    gen = [{"polyphony": 1.0, "pitch_range": 62.0, "extra": 1.0}, {"polyphony": 1.2, "pitch_range": 62.0}]
    rows = ms.compare_stats(gen, real)
    assert [r["stat"] for r in rows] == ["pitch_range", "polyphony"]  # shared keys, label order
    poly = rows[1]
    assert poly["gen_mean"] == pytest.approx(1.1) and poly["real_mean"] == pytest.approx(3.5)
    assert poly["real_sd"] == pytest.approx(np.std([3.0, 4.0], ddof=1))
    assert poly["flagged"] and not rows[0]["flagged"]
    table = ms.format_stats_table(rows)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| statistic |") and len(lines) == 4
    assert "polyphony (pitches sounding)" in table and "**yes**" in lines[3]
    ordered = ms.compare_stats(gen, real, order=["polyphony", "pitch_range"])
    assert [r["stat"] for r in ordered] == ["polyphony", "pitch_range"] and ordered[0] == poly


def _random_states(rng, n: int) -> States:
    """Random chords of random lengths; never a rest, as rests of common lengths
    (which the corpus has) would match."""
    keys = rng.random((n, N_KEYS)) < 0.05
    keys[np.arange(n), rng.integers(0, N_KEYS, n)] = True
    beats = rng.integers(1, 48, n).astype(np.float32) / 48
    return States(keys, keys.copy(), beats, beats / 2, np.full(n, 64, np.uint8))


def test_exact_copy_is_found(corpus):
    name, source = corpus[10]
    copied = source[200:500]
    assert ms.ngram_overlap(copied, corpus, n=8) == 1.0
    run = ms.longest_copied_run(copied, corpus)
    assert run["states"] == 300 and run["piece"] == name
    assert run["position"] == 200 and run["generated_position"] == 0
    assert run["beats"] == pytest.approx(copied.total_beats)
    assert run["seconds"] == pytest.approx(copied.total_seconds)


def test_partial_copy_and_run_boundaries(corpus, rng):
    name, source = corpus[3]
    noise = _random_states(rng, 50)
    piece = States.concat([noise, source[100:140], noise])
    run = ms.longest_copied_run(piece, corpus)
    assert run["piece"] == name and run["states"] == 40 and run["generated_position"] == 50
    # 33 of the 133 8-grams lie inside the copied 40 states
    assert ms.ngram_overlap(piece, corpus, n=8) == pytest.approx(33 / 133, abs=0.02)


def test_a_run_never_spans_two_pieces(rng):
    a, b = _random_states(rng, 30), _random_states(rng, 30)
    run = ms.longest_copied_run(States.concat([a, b]), [("a", a), ("b", b)])
    assert run["states"] == 30 and run["piece"] in ("a", "b")


def test_random_piece_is_original(corpus, rng):
    piece = _random_states(rng, 300)
    assert ms.ngram_overlap(piece, corpus) == 0.0
    run = ms.longest_copied_run(piece, corpus)
    assert run == {"states": 0, "beats": 0.0, "seconds": 0.0, "piece": None, "position": -1, "generated_position": -1}
    assert math.isnan(ms.ngram_overlap(piece[:5], corpus, n=8))  # too short for one 8-gram


def test_originality_is_fast(corpus, rng):
    start = time.perf_counter()
    index = ms.CorpusIndex(corpus)
    pieces = [corpus[i][1][50:350] for i in range(10)] + [_random_states(rng, 300) for _ in range(10)]
    for piece in pieces:
        ms.ngram_overlap(piece, index)
        ms.longest_copied_run(piece, index)
    assert time.perf_counter() - start < 1.0
