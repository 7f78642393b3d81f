"""Forms (compose/form.py) with the tiny models and real test seeds: the sections, the reprise, the
cadence in several keys, B's contrast, the CLI and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from chopinbot.cli import main
from chopinbot.compose.form import (
    ALIGN_BEATS,
    DOMINANT_BEATS,
    HOLD_BEATS,
    MIN_SECTION_BEATS,
    chord_pitch_classes,
    compose_form,
    fit_beats,
    plan_sections,
)
from chopinbot.compose.generate import GenerateConfig
from chopinbot.compose.seeds import list_seeds, seed_from_test
from chopinbot.constants import BUNDLED_CORPUS_DIR, LOWEST_PITCH, N_KEYS
from chopinbot.dataset.store import DEFAULT_SETTINGS as S
from chopinbot.errors import ConfigError
from chopinbot.evaluation.form_measures import (
    CHOPIN_FIGURE_SHARE,
    CHOPIN_LOOP_RUNS,
    CHOPIN_PHRASE_PASSES,
    CHOPIN_SLIDE_STATES,
    beyond_chopin_phrase,
    beyond_chopin_run,
    ends_on_tonic_chord,
    figure_loop_share,
    longest_phrase,
    longest_slide,
    loop_runs,
    phrase_passes,
    reprise_matches,
    section_profiles,
)
from chopinbot.model.formats import load_model
from chopinbot.music.controls import key_profile
from chopinbot.music.keys import Key, parse_key
from chopinbot.music.midi import read_midi
from chopinbot.music.states import States, notes_to_states

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir / "best")


@pytest.fixture(scope="module")
def controls_model(tiny_controls_model_dir):
    return load_model(tiny_controls_model_dir / "best")


def _seed(minor: bool):
    return seed_from_test(next(i.index for i in list_seeds() if ("minor" in i.key) == minor))


def _pcs(keys: np.ndarray) -> set[int]:
    return set(((np.flatnonzero(keys) + LOWEST_PITCH) % 12).tolist())


def _states(rows: list[list[int]], beats: list[float]) -> States:
    keys = np.zeros((len(rows), N_KEYS), bool)
    for i, r in enumerate(rows):
        keys[i, np.asarray(r) - LOWEST_PITCH] = True
    return States(keys, keys.copy(), np.asarray(beats, np.float32), np.zeros(len(rows), np.float32),
                  np.full(len(rows), 60, np.uint8))


def test_aba_sections_in_order_cover_the_piece(model):
    seed = seed_from_test(0)
    res = compose_form(model, seed, GenerateConfig(seconds=40, bpm=120, random_seed=1))
    assert [s.label for s in res.sections] == ["A", "B", "A'"]
    assert [s.role for s in res.sections] == ["opening", "contrast", "reprise"]
    # contiguous, from the first state (the seed is the opening of A) to the last
    assert res.sections[0].start_state == 0 and res.sections[0].start_beat == 0
    assert [s.end_state for s in res.sections[:-1]] == [s.start_state for s in res.sections[1:]]
    assert res.sections[-1].end_state == len(res.states)
    cum = np.concatenate([[0.0], np.cumsum(res.states.beats.astype(np.float64))])
    for s in res.sections:
        assert s.start_beat == pytest.approx(cum[s.start_state], abs=1e-4)
        assert s.end_beat == pytest.approx(cum[s.end_state], abs=1e-4)
        assert s.start_seconds == pytest.approx(s.start_beat * 0.5) and s.end_beat - s.start_beat >= MIN_SECTION_BEATS
    # where the plan put them: equal shares, the reprise a whole number of 12-beat spans after the opening
    plan = plan_sections("ABA", res.seed_end_beat + 80)
    assert [s.start_beat for s in res.sections] == pytest.approx([p[1] for p in plan], abs=1e-4)
    assert res.sections[2].start_beat % ALIGN_BEATS == pytest.approx(0, abs=1e-4)
    # 40 s of new music at 120 bpm: 80 beats, the cadence's last chord perhaps a little longer
    assert 80 - 1e-3 <= res.generated.total_beats <= 80 + DOMINANT_BEATS + 1
    assert res.seconds == pytest.approx(res.states.total_beats * 0.5)
    assert "Form ABA: A 0.0-" in res.summary() and "B " in res.summary() and "A' " in res.summary()


def test_the_reprise_replays_the_opening_and_the_lookup_finds_it(model):
    res = compose_form(model, seed_from_test(3), GenerateConfig(seconds=40, bpm=100, random_seed=2))
    a, b, r = res.sections
    n = r.replayed_states
    assert n > 0 and a.replayed_states == b.replayed_states == 0
    opening, reprise = res.states[:n], res.states[r.start_state : r.start_state + n]
    assert (reprise.keys == opening.keys).all() and np.array_equal(reprise.beats, opening.beats)
    assert (reprise.onsets[1:] == opening.onsets[1:]).all()  # the first may strike keys held into the opening
    assert 0 < opening.total_beats <= 8.0 + 1e-4  # beats are float32
    match = reprise_matches(res)
    assert match.found and match.states >= n - 4  # every replayed state from the 4th on matches A
    # B is not the opening's material: the lookup does not find it there (the copy makes A' differ from B)
    assert not (res.states[b.start_state : b.start_state + n].keys == opening.keys).all()


def test_aaba_repeats_then_contrasts_then_returns(model):
    res = compose_form(model, seed_from_test(5), GenerateConfig(seconds=60, bpm=120, random_seed=3), form="aaba")
    assert res.form == "AABA"
    assert [s.label for s in res.sections] == ["A", "A'", "B", "A''"]
    assert [s.role for s in res.sections] == ["opening", "repeat", "contrast", "reprise"]
    for s in (res.sections[1], res.sections[3]):
        assert s.replayed_states > 0 and s.start_beat % ALIGN_BEATS == pytest.approx(0, abs=1e-4)
        assert (res.states.keys[s.start_state : s.start_state + s.replayed_states]
                == res.states.keys[: s.replayed_states]).all()
    assert reprise_matches(res).found
    assert ends_on_tonic_chord(res.states, res.key)


@pytest.mark.parametrize("key,minor", [(None, False), (None, True), ("E major", False), ("F minor", True)])
def test_ends_on_the_tonic_chord_after_its_dominant(model, key, minor):
    seed = _seed(minor)
    res = compose_form(model, seed, GenerateConfig(seconds=30, bpm=110, key=key, random_seed=4))
    want = parse_key(key) if key else seed.key
    assert res.key == want
    tonic = {want.tonic, (want.tonic + (3 if want.minor else 4)) % 12, (want.tonic + 7) % 12}
    last = res.states.keys[-1]
    assert (np.flatnonzero(last)[0] + LOWEST_PITCH) % 12 == want.tonic  # the tonic in the bass
    assert _pcs(last) == tonic and res.states.beats[-1] >= HOLD_BEATS
    assert ends_on_tonic_chord(res.states, want)
    # before it, the dominant seventh: only its notes, its root in the bass where it was struck
    dominant = {(want.tonic + d) % 12 for d in (7, 11, 2, 5)}
    before = [i for i in range(res.sections[-1].start_state, len(res.states) - 1)
              if res.states.keys[i].any() and _pcs(res.states.keys[i]) <= dominant]
    assert before and before[-1] == len(res.states) - 2
    assert "Ends on a " + want.name in res.summary()


def test_the_tonic_check_can_fail():
    c = Key(0, False)
    assert ends_on_tonic_chord(_states([[48, 52, 55, 60]], [2.0]), c)
    assert not ends_on_tonic_chord(_states([[52, 55, 60]], [2.0]), c)  # E in the bass: an inversion
    assert not ends_on_tonic_chord(_states([[48, 52, 55, 62]], [2.0]), c)  # a D added
    assert not ends_on_tonic_chord(_states([[48, 55, 60]], [2.0]), c)  # no third
    assert not ends_on_tonic_chord(_states([[48, 52, 55]], [0.5]), c)  # too short
    assert not ends_on_tonic_chord(_states([[48, 52, 55]], [2.0]), Key(0, True))  # C major is not C minor
    assert chord_pitch_classes(Key(9, True)) == ((4, 8, 11, 2), (9, 0, 4))  # A minor: E7 (G#), then A C E


def test_b_contrasts_with_a_model_with_controls(controls_model):
    seed = _seed(False)
    res = compose_form(controls_model, seed, GenerateConfig(seconds=40, bpm=120, random_seed=5))
    a, b, r = res.sections
    assert a.controls.key == key_profile(False) and r.controls == a.controls  # A and A' held in the key
    assert b.key == Key((seed.key.tonic + 7) % 12, False)  # the dominant
    assert b.controls.key == tuple(np.roll(key_profile(False), 7))  # asked for through the key profile
    a_part = res.states[: a.end_state]
    density = a_part.onsets.sum() / a_part.total_beats
    assert (b.controls.density > density) == (density < 6.25) and b.controls.density != pytest.approx(density)
    assert b.controls.loudness is not None
    assert reprise_matches(res).found and ends_on_tonic_chord(res.states, res.key)
    minor = compose_form(controls_model, _seed(True), GenerateConfig(seconds=40, bpm=120, random_seed=5))
    assert minor.sections[1].key == Key((minor.key.tonic + 3) % 12, False)  # the relative major
    assert minor.sections[1].controls.key == key_profile(False)


def test_b_without_controls_is_read_in_the_dominant(model):
    seed = _seed(True)
    res = compose_form(model, seed, GenerateConfig(seconds=40, bpm=120, random_seed=6))
    b = res.sections[1]
    assert b.controls is None and b.key == Key((seed.key.tonic + 7) % 12, True)
    profiles = section_profiles(res)
    assert [p.label for p in profiles] == ["A", "B", "A'"] and all(p.notes_per_second > 0 for p in profiles)


def test_reproducible(model):
    seed = seed_from_test(2)
    a = compose_form(model, seed, GenerateConfig(seconds=30, random_seed=7)).midi_bytes()
    b = compose_form(model, seed, GenerateConfig(seconds=30, random_seed=7)).midi_bytes()
    c = compose_form(model, seed, GenerateConfig(seconds=30, random_seed=8)).midi_bytes()
    assert a == b and a != c


def test_without_the_seed_the_opening_is_the_first_music_composed(model):
    res = compose_form(model, seed_from_test(1), GenerateConfig(seconds=40, bpm=120, random_seed=9,
                                                                include_seed=False))
    assert res.seed_len == 0 and res.sections[0].start_state == 0
    r = res.sections[-1]
    assert (res.states.keys[r.start_state + 1 : r.start_state + r.replayed_states]
            == res.states.keys[1 : r.replayed_states]).all()
    assert res.generated.total_beats >= 80 - 1e-3


def test_errors_are_clear(model, controls_model):
    seed = seed_from_test(0)
    with pytest.raises(ConfigError, match="form must be one of ABA, AABA"):
        compose_form(model, seed, GenerateConfig(seconds=40), form="ABC")
    with pytest.raises(ConfigError, match=r"too short.*ask for \d+ s or more"):
        compose_form(model, seed, GenerateConfig(seconds=5, bpm=120))
    with pytest.raises(ConfigError, match="model with controls"):
        compose_form(model, seed, GenerateConfig(seconds=40, density=4.0))
    with pytest.raises(ConfigError, match="reprise_beats"):
        compose_form(model, seed, GenerateConfig(seconds=40), reprise_beats=0)
    with pytest.raises(ConfigError, match="seconds"):
        compose_form(model, seed, GenerateConfig(seconds=-1))
    # asked for: the user's controls steer the A sections
    res = compose_form(controls_model, seed, GenerateConfig(seconds=40, bpm=120, density=3.0, random_seed=1))
    assert res.sections[0].controls.density == pytest.approx(1.5)  # 3 notes/s at 120 bpm: 1.5 a beat


def test_helpers():
    st = _states([[60], [62], [64], [65]], [1.0, 1.0, 2.0, 1.0])
    cut = fit_beats(st, 3.5)
    assert len(cut) == 3 and cut.total_beats == pytest.approx(3.5) and cut.beats[-1] == pytest.approx(1.5)
    held = fit_beats(st, 7.0)
    assert len(held) == 4 and held.beats[-1] == pytest.approx(3.0)
    assert loop_runs(_states([[60], [64]] * 30, [0.5] * 60))[:4].max() == 58
    assert loop_runs(_states([[60], [62], [64], [65], [67]], [1.0] * 5)).max() == 0


def test_cli_form(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "f.mid"
    args = ["generate", "--model", str(tiny_model_dir), "--seed-index", "0", "--seconds", "30", "--bpm", "120",
            "--random-seed", "1", "--out", str(out)]
    assert main(args + ["--form", "aba"]) == 0
    printed = capsys.readouterr().out
    assert "Form ABA: A 0.0-" in printed and "; B " in printed and "; A' " in printed and "Ends on a" in printed
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit) as bad:
        main(args + ["--form", "ABC", "--force"])
    assert bad.value.code == 2 and "invalid choice: 'ABC'" in capsys.readouterr().err


def test_figure_loop_share_counts_a_figure_with_the_odd_state_changed():
    trill = [[76], [78]] * 48
    assert figure_loop_share(_states(trill, [0.25] * 96)) == pytest.approx(94 / 96)  # the first 2 repeat nothing
    broken = [[76], [78]] * 10 + [[60]] + [[76], [78]] * 38  # the trill with one state changed
    assert loop_runs(_states(broken, [0.25] * 97), max_period=2).max() == 74  # two runs: 18 and 74 states
    assert figure_loop_share(_states(broken, [0.25] * 97)) == pytest.approx(92 / 96)  # one figure: 92 of 96
    assert figure_loop_share(_states([[60 + i % 13] for i in range(96)], [0.25] * 96)) == pytest.approx(83 / 96)
    assert figure_loop_share(_states([[60], [62], [64]], [1.0] * 3)) == 0.0


def test_loop_runs_per_period():
    """A trill: 94 states repeating the one two before (none the one before); a chord struck 12 times: 11 at
    period 1 (and every period after); op. 28 no. 17 strikes one 11 times in a row, the corpus's most."""
    runs = loop_runs(_states([[76], [78]] * 48, [0.25] * 96))
    assert runs[0] == 0 and runs[1] == 94 and runs[3] == 92
    assert loop_runs(_states([[60, 64]] * 12, [0.5] * 12)).tolist()[:3] == [11, 10, 9]
    assert not beyond_chopin_run(_states([[60, 64]] * 12, [0.5] * 12))
    assert beyond_chopin_run(_states([[60, 64]] * 13, [0.5] * 13)) == (1, 12, 11)
    st, _, _ = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / "chpn-p17.mid"), S.grid_per_beat, S.pedal,
                               S.min_state_beats, S.max_states)
    assert loop_runs(st)[0] == CHOPIN_LOOP_RUNS[0] == 11 and beyond_chopin_run(st) is None


def test_no_chopin_piece_goes_round_one_figure_beyond_the_calibration():
    """Op. 28 no. 8, the corpus's most figure-bound piece, sets the bound (76 of 96 states)."""
    st, _, _ = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / "chpn-p8.mid"), S.grid_per_beat, S.pedal,
                               S.min_state_beats, S.max_states)
    assert figure_loop_share(st) == pytest.approx(CHOPIN_FIGURE_SHARE)


def test_phrase_passes_count_how_often_a_phrase_went_round_in_a_row():
    phrase = [[48 + i % 7, 60 + (5 * i) % 12] for i in range(20)]  # 20 states, no figure of 16 or fewer
    assert phrase_passes(_states(phrase * 4, [0.25] * 80)) == pytest.approx(3.0)  # A A A A: round 3 more times
    assert phrase_passes(_states(phrase * 2 + [[30]], [0.25] * 41)) == pytest.approx(1.0)
    assert phrase_passes(_states(phrase + [[30]] + phrase[:10], [0.25] * 31)) == pytest.approx(10 / 21)
    trill = [[60], [62]] * 40  # it repeats at every even period too, but it is a figure going round: not counted
    assert phrase_passes(_states(trill, [0.25] * 80)) == 0.0
    assert phrase_passes(_states((phrase + trill[:6]) * 3, [0.25] * 78)) == pytest.approx(2.0)  # with one inside
    # which phrase, and whether beyond Chopin's 1.62: A A A A is, A A is not
    assert longest_phrase(_states(phrase * 4, [0.25] * 80)) == (20, pytest.approx(3.0))
    assert beyond_chopin_phrase(_states(phrase * 4, [0.25] * 80)) == (20, pytest.approx(3.0))
    assert beyond_chopin_phrase(_states(phrase * 2 + [[30]], [0.25] * 41)) is None
    assert longest_phrase(_states(trill, [0.25] * 80)) == (0, 0.0)


def test_no_chopin_piece_goes_round_a_phrase_beyond_the_calibration():
    """The Mazurka op. 7 no. 1 sets the bound (1.62: a phrase heard twice and most of a third time)."""
    st, _, _ = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / "chpn_op7_1.mid"), S.grid_per_beat, S.pedal,
                               S.min_state_beats, S.max_states)
    assert phrase_passes(st) == pytest.approx(CHOPIN_PHRASE_PASSES, abs=0.005)


def test_longest_slide_counts_a_scale_going_one_way():
    down = [[84 - i] for i in range(40)]  # a chromatic scale down 40 states: 39 moves one way
    assert longest_slide(_states(down, [0.25] * 40)) == 39
    thirds = [[60 + 2 * i, 64 + 2 * i] for i in range(10)]  # a chord moving up whole tones: 9 moves
    assert longest_slide(_states(thirds, [0.25] * 10)) == 9
    turn = [[60 + i] for i in range(6)] + [[64 - i] for i in range(6)]  # up 5, then down: the turn restarts it
    assert longest_slide(_states(turn, [0.25] * 12)) == 6
    chord_then_melody = [[48, 60], [48, 62], [48, 64], [50, 66]]  # the bass held: not every key moves
    assert longest_slide(_states(chord_then_melody, [0.25] * 4)) == 1


def test_no_chopin_piece_slides_beyond_the_calibration():
    """The Polonaise op. 53 sets the bound (28 states moving one way)."""
    st, _, _ = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / "chpn_op53.mid"), S.grid_per_beat, S.pedal,
                               S.min_state_beats, S.max_states)
    assert longest_slide(st) == CHOPIN_SLIDE_STATES


def test_a_section_s_loop_guard_gives_its_time_in_the_whole_piece():
    """A loop broken in B is said at its time in the piece written, inside B, not at its time into B (the
    section is composed as a continuation of its own, which counts from 0)."""
    from chopinbot.compose.generate import LOOP_BROKEN
    from chopinbot.model.formats import load_model

    res = compose_form(load_model("chopin-editions"), seed_from_test(12),  # a two-state figure stopped in B
                       GenerateConfig(steps=None, seconds=40.0, random_seed=3), "ABA")
    said = [g for g in res.guards if g.startswith(f"B: {LOOP_BROKEN}")]
    assert len(said) == 1
    at = float(said[0].split(": at ")[1].split(" s,")[0])
    b = next(s for s in res.sections if s.label == "B")
    assert b.start_seconds + 1.0 < at < b.end_seconds
