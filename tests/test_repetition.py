"""The repeat boost (compose/repetition.py): a passage heard before goes on as it went, with boosted odds."""

from __future__ import annotations

import numpy as np
import pytest

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.repetition import LONG_PASSAGE, RepeatBoost
from chopinbot.compose.seeds import seed_from_test
from chopinbot.errors import ConfigError
from chopinbot.model.formats import load_model
from chopinbot.music.repeats import find_continuations


def _boost(boost: float) -> RepeatBoost:
    keys = np.zeros((1, 2, 88), bool)
    keys[0, :, 40] = True
    return RepeatBoost(boost, keys, keys.copy(), np.ones((1, 2)), np.array([0.5, 1.0, 2.0]))


@pytest.mark.parametrize("boost,p", [(1.0, 0.1), (4.0, 0.1), (4.0, 0.6), (50.0, 0.01)])
def test_take_multiplies_the_odds_of_the_continuation(boost, p):
    rng = np.random.default_rng(0)
    taken = _boost(boost).take(np.full(200_000, np.log(p)), rng).mean()
    assert taken == pytest.approx(boost * p / (1 + (boost - 1) * p), abs=0.005)


def test_an_impossible_continuation_is_never_taken():
    assert not _boost(1000.0).take(np.full(1000, -np.inf), np.random.default_rng(0)).any()


def test_candidate_is_the_longest_match_and_its_rhythmic_value():
    # a figure A B A: after the second A, the continuation is B (one state matched), lasting B's 2 beats
    keys = np.zeros((1, 3, 88), bool)
    keys[0, [0, 2], 40] = True
    keys[0, 1, 44] = True
    rb = RepeatBoost(4.0, keys, keys.copy(), np.array([[1.0, 2.0, 1.0]]), np.array([0.5, 1.0, 2.0]))
    k, o, cls, found = rb.candidates()
    assert found[0] and np.flatnonzero(k[0]).tolist() == [44] and o[0, 44] and cls[0] == 2


def _exact_share(states) -> float:
    _, length, _ = find_continuations("exact", states.keys, states.onsets, states.beats)
    return float(np.mean(length > 0))


def test_boost_makes_continuations_repeat_what_they_heard():
    model = load_model(None)
    seed = seed_from_test(0)
    # one key-guidance weight throughout: a piece that has left its key is pushed back into it harder than
    # the boost pushes it to repeat what it heard there (GenerateConfig.key_guidance_drift)
    one = GenerateConfig().key_guidance
    share = {b: np.mean([_exact_share(generate(model, seed, GenerateConfig(steps=96, random_seed=i, repeat_boost=b,
                                                                          include_seed=False, key_guidance_drift=one)
                                               ).generated)
                         for i in range(3)]) for b in (1.0, 50.0)}
    assert share[50.0] > share[1.0] + 0.3, share


def test_boost_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="repeat boost"):
        GenerateConfig(repeat_boost=0.5).validate()


def _figure(n: int, period: int) -> np.ndarray:
    """(1, n, 88) states going round a figure of ``period`` distinct two-key chords over one bass key (each
    its own shape: no transposed match but the figure's own)."""
    keys = np.zeros((1, n, 88), bool)
    keys[0, :, 30] = True
    keys[0, np.arange(n), 31 + np.arange(n) % period] = True
    return keys


def _candidate(passes: int, heard: int, period: int) -> tuple[bool, list[int]]:
    keys = _figure(heard, period)
    rb = RepeatBoost(4.0, keys, keys.copy(), np.ones((1, heard)), np.array([0.5, 1.0, 2.0]), passes=passes)
    k, _, _, found = rb.candidates()
    return bool(found[0]), np.flatnonzero(k[0]).tolist()


@pytest.mark.parametrize("passes,heard,helped", [
    (0, 60, True),   # no limit: the third time round is helped too
    (1, 20, False),  # a phrase of 20 states heard once: no match yet, nothing to help
    (1, 21, True),   # its second time round is helped
    (1, 40, False),  # it went round once in full (A A): the third time is the model's alone
    (2, 40, True),
    (2, 60, False),
])
def test_the_boost_helps_a_phrase_round_at_most_passes_times(passes, heard, helped):
    found, keys = _candidate(passes, heard, 20)
    assert found == helped
    if helped:  # and what it offers is the phrase's next state
        assert keys == [30, 31 + heard % 20]


@pytest.mark.parametrize("passes,heard,helped",
                         [(2, 11, True), (2, 12, False), (1, 7, True), (1, 8, False), (0, 64, True)])
def test_a_figure_is_helped_round_at_most_passes_times_too(passes, heard, helped):
    # an accompaniment's figure of 4 states, heard once and then helped round twice (12 states in all), then
    # the model's alone; once
    # the boost helped it round at every pass, the model stayed in it far longer than Chopin does
    found, keys = _candidate(passes, heard, 4)
    assert found == helped
    if helped:
        assert keys == [30, 31 + heard % 4]


def test_figures_went_round_freely_before(monkeypatch):
    # the boost as it was until figures were limited too (the tests that replay pieces heard then set it so)
    monkeypatch.setattr(RepeatBoost, "FREE_PERIOD", LONG_PASSAGE)
    assert _candidate(1, 64, 16) == (True, [30, 31])
    assert _candidate(1, 40, 20)[0] is False  # a phrase was limited then too


def _sequence(n: int) -> np.ndarray:
    """(1, n, 88): a four-note figure (E G# B G#) moved up a whole tone each time round, a sequence."""
    keys = np.zeros((1, n, 88), bool)
    keys[0, np.arange(n), 40 + np.array([0, 4, 7, 4])[np.arange(n) % 4] + 2 * (np.arange(n) // 4)] = True
    return keys


@pytest.mark.parametrize("passes,heard,helped", [(2, 12, True), (2, 13, False), (0, 19, True), (1, 9, False)])
def test_a_figure_moving_as_it_repeats_is_helped_round_at_most_passes_times(passes, heard, helped):
    """A sequence (or a scale) is limited as a phrase or a figure in place is: a scale the boost kept going
    slid down the whole keyboard."""
    keys = _sequence(heard)
    rb = RepeatBoost(4.0, keys, keys.copy(), np.ones((1, heard)), np.array([0.5, 1.0, 2.0]), passes=passes)
    k, _, _, found = rb.candidates()
    assert rb.own.period[1][0] == 4 and rb.own.shift[1][0] == 2
    assert found[0] == helped
    if helped:  # the figure's next note, a whole tone higher than last time round
        assert np.flatnonzero(k[0]).tolist() == np.flatnonzero(_sequence(heard + 1)[0, -1]).tolist()


def test_the_run_restarts_when_the_music_leaves_the_phrase():
    # a 20-state phrase twice, then a new state, then its first two states again: a new run at distance 21,
    # helped again
    keys = _figure(40, 20)
    rb = RepeatBoost(4.0, keys, keys.copy(), np.ones((1, 40)), np.array([0.5, 1.0, 2.0]), passes=1)
    assert not rb.candidates()[3][0]
    for key in (80, 31, 32):
        state = np.zeros((1, 88), bool)
        state[0, [30, key]] = True
        rb.update(state, state.copy(), np.ones(1))
    k, _, _, found = rb.candidates()
    assert found[0] and np.flatnonzero(k[0]).tolist() == [30, 33]


def test_negative_passes_are_refused():
    with pytest.raises(ConfigError, match="repeat passes"):
        GenerateConfig(repeat_passes=-1).validate()
    with pytest.raises(ConfigError, match="repeat span"):
        GenerateConfig(repeat_span=-1).validate()


@pytest.mark.parametrize("span,heard,helped", [
    (0, 39, True),    # no limit: the phrase heard once is helped round to its end
    (10, 29, True),   # 9 states gone on as the phrase went: helped to a 10th
    (10, 30, False),  # 10 already: the model's alone
    (10, 35, False),
])
def test_the_boost_helps_a_repeat_for_at_most_span_states(span, heard, helped):
    keys = _figure(heard, 20)
    rb = RepeatBoost(4.0, keys, keys.copy(), np.ones((1, heard)), np.array([0.5, 1.0, 2.0]), span=span)
    k, _, _, found = rb.candidates()
    assert found[0] == helped
    if helped:
        assert np.flatnonzero(k[0]).tolist() == [30, 31 + heard % 20]


def test_a_primer_s_passage_is_copied_on_only_as_long_as_the_span_helps():
    """From 512 states of the Funeral March (test seed 300), a boost of 100 copies the primer on, all
    96 new states found in it; helped for at most 8 states in a row, the model alone mostly leaves the copy."""
    from chopinbot.evaluation.replay import history_index, replay_share

    model = load_model(None)
    seed = seed_from_test(300)
    index = history_index(seed.history, seed.home.shift_to(seed.key))
    replay = {span: np.mean([replay_share(generate(model, seed, GenerateConfig(
        steps=96, random_seed=i, repeat_boost=100.0, repeat_span=span, include_seed=False)).generated, index)
        for i in range(3)]) for span in (0, 8)}
    assert replay[0] > 0.9 and replay[8] < replay[0] - 0.3, replay


def test_the_boost_reads_the_lookups_the_model_s_inputs_keep():
    """While composing, the repeat boost reads the repeats the model's input blocks look up over the same
    states rather than look them up again (a tenth of the composing time): the same candidates either way."""
    from chopinbot.compose.stepper import InputBuilder
    from chopinbot.dataset.inputs import continuation_trackers

    model = load_model("piano-transformer")
    h = seed_from_test(300).history  # 512 states of context and the seed: repeats to find
    first, later = h[:400], h[400:460]
    args = (first.keys[None].astype(bool), first.onsets[None].astype(bool), first.beats[None])
    classes = np.asarray(model.config.duration_classes)
    inputs = InputBuilder(model, *args, 0.0, first.velocity[None])
    shared = RepeatBoost(16.0, *args, classes, 2, continuation_trackers(inputs.trackers))
    own = RepeatBoost(16.0, *args, classes, 2)
    assert shared.own is None and own.own is not None
    found = 0
    for i in range(len(later) + 1):
        a, b = shared.candidates(), own.candidates()
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), i
        found += int(b[3][0])
        if i == len(later):
            break
        k, o = later.keys[i : i + 1].astype(bool), later.onsets[i : i + 1].astype(bool)
        cls = np.abs(np.log(later.beats[i]) - np.log(classes)).argmin()[None]
        inputs(k, o, cls, later.velocity[i : i + 1])
        shared.update(k, o, classes[cls])
        own.update(k, o, classes[cls])
    assert found > 20  # the passage continues one heard before: candidates to compare
