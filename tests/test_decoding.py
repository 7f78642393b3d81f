"""The one composing loop (compose.decoding): rules as processors, stopping as a list, the loop breaker."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from chopinbot.compose import decoding, processors
from chopinbot.compose.decoding import Decoder, StepLimit, processors_for
from chopinbot.compose.form import compose_form
from chopinbot.compose.generate import LOOP_BROKEN, GenerateConfig, check_guards, generate, loop_guard
from chopinbot.compose.processors import LoopBreak, LoopBreaker, StepProcessor
from chopinbot.compose.repetition import LONG_PASSAGE, RepeatBoost
from chopinbot.compose.seeds import seed_from_test
from chopinbot.constants import BUNDLED_CORPUS_DIR, N_KEYS
from chopinbot.dataset.store import DEFAULT_SETTINGS as S
from chopinbot.errors import ConfigError
from chopinbot.evaluation.form_measures import CHOPIN_SLIDE_STATES
from chopinbot.model.formats import load_model
from chopinbot.music.midi import read_midi
from chopinbot.music.states import States, notes_to_states


@pytest.fixture(scope="module")
def model():
    return load_model("piano-controls")


def _figure(pitches: list[int], repeats: int) -> States:
    """A one-note figure of ``pitches`` played ``repeats`` times, a quarter beat each."""
    n = len(pitches) * repeats
    keys = np.zeros((n, N_KEYS), bool)
    keys[np.arange(n), np.tile(np.asarray(pitches) - 21, repeats)] = True
    return States(keys, keys.copy(), np.full(n, 0.25, np.float32), np.zeros(n, np.float32),
                  np.full(n, 70, np.uint8))


def test_a_figure_looping_past_the_limit_has_its_next_state_forbidden():
    h = _figure([36, 43, 48, 43, 40], 12)  # a five-note bass figure for 60 states: runs of 55 at period 5
    breaker = LoopBreaker(48, [h])
    go_on = h.keys[-5:-4]  # the cycle's next state: the one five before the next
    assert breaker.reject(go_on, go_on).tolist() == [True]
    other = np.zeros((1, N_KEYS), bool)
    other[0, 50] = True
    assert breaker.reject(other, other).tolist() == [False]
    # with chopin_runs, a figure stops where Chopin's longest of its period does: five states, 20 in a row (op. 18)
    assert processors.LONGEST_RUNS[4] == 20
    assert LoopBreaker(48, [h[:40]]).reject(go_on, go_on).tolist() == [False]  # 35 states: not yet a loop
    assert LoopBreaker(48, [h[:24]], chopin_runs=True).reject(go_on, go_on).tolist() == [False]  # 19: one more
    assert LoopBreaker(48, [h[:25]], chopin_runs=True).reject(go_on, go_on).tolist() == [True]  # 20: no more


def test_with_chopin_runs_a_chord_struck_again_and_again_stops_where_chopin_s_longest_does():
    """One chord struck 12 times in a row, 11 repeats (op. 28 no. 17, the corpus's most): no 13th; after 11, a
    12th is free.  Nothing is held out after it: the chord may come back once something else came between."""
    assert processors.LONGEST_RUNS[0] == 11
    chord = _figure([48], 1).keys | _figure([55], 1).keys
    h = States(np.repeat(chord, 12, 0), np.repeat(chord, 12, 0), np.full(12, 0.5, np.float32),
               np.zeros(12, np.float32), np.full(12, 70, np.uint8))
    assert LoopBreaker(48, [h], chopin_runs=True).reject(chord, chord).tolist() == [True]
    assert LoopBreaker(48, [h]).reject(chord, chord).tolist() == [False]  # off (the default): 48 at any period
    assert LoopBreaker(48, [h[:11]], chopin_runs=True).reject(chord, chord).tolist() == [False]
    breaker = LoopBreaker(48, [h], chopin_runs=True)
    assert breaker.reject(chord, chord).tolist() == [True]  # the 13th strike drawn, and drawn again ...
    assert _feed(breaker, _figure([60], 1)) == [False]  # ... as something else: one loop broken
    assert breaker.loops.tolist() == [1]
    assert breaker.events == [[LoopBreak(0, "chopin", 1, 11)]]  # at the first new state: Chopin's run of chords
    assert _feed(breaker, h[:1]) == [False] and breaker.loops.tolist() == [1]


def _feed(breaker: LoopBreaker, states: States) -> list[bool]:
    """Each state of ``states`` offered to ``breaker`` and then taken: whether it was forbidden."""
    out = []
    for i in range(len(states)):
        k, o = states.keys[i : i + 1], states.onsets[i : i + 1]
        out.append(bool(breaker.reject(k, o)[0]))
        breaker.on_state(decoding.NewStates(k, o, np.zeros(1, int), states.beats[i : i + 1].astype(np.float64)))
    return out


def test_a_broken_loop_is_kept_out_for_a_while():
    """A two-note trill broken once is not let back in after the one state drawn again (a model that
    wants it goes straight back): for ``HOLD`` states, a state repeating the one 2, 4, ... 16 before is
    forbidden; then the trill may come back (and is caught again after 48)."""
    assert LoopBreaker.HOLD == 16
    breaker = LoopBreaker(48, [_figure([76, 78], 25)])  # 50 states: runs of 48 at period 2
    assert _feed(breaker, _figure([60], 1)) == [False]  # the state drawn instead of the cycle's next
    back = _feed(breaker, _figure([76, 78], 2))  # the trill again: shifted by one state, then caught
    assert back == [False, False, True, True]
    other = _feed(breaker, _figure([50, 52, 55], 4))  # a figure of period 3 is free meanwhile ...
    assert other == [False] * 6 + [True] * 6  # ... but not at its multiple, 6, until 16 states have passed
    assert not any(_feed(breaker, _figure([76, 78], 3)))  # then the trill is allowed again


def test_a_chord_repeated_in_varying_lengths_is_a_loop_too():
    h = _figure([48], 60)
    h.beats[:] = np.tile([0.25, 0.5, 0.75], 20)  # the same chord, lengths never repeating at period 1
    assert LoopBreaker(48, [h]).reject(h.keys[:1], h.onsets[:1]).tolist() == [True]


@pytest.mark.parametrize("name", ["chpn_op53.mid", "chpn_op25_e1.mid", "chpn_op66.mid", "chpn-p8.mid", "chpn-p17.mid",
                                  "chp_op18.mid", "chpn_op33_2.mid"])
def test_the_loop_breaker_never_fires_on_real_chopin(name):
    """The pieces of the corpus with the longest exact repetition (39, 37, 24 states) never reach 48,
    nor the most figure-bound (op. 28 no. 8: 76 of 96 states repeating one period) 84 of 96; those that set
    the shorter periods' limits (op. 28 no. 17: one chord 11 times; op. 18: 17 and 20; op. 33 no. 2: 13, 14)
    never pass them."""
    st, _, _ = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / name), S.grid_per_beat, S.pedal, S.min_state_beats,
                               S.max_states)
    breaker = LoopBreaker(48, [st[:16]], chopin_runs=True)
    fired = _feed(breaker, st[16:]).count(True)
    assert fired == 0 and breaker.loops.sum() == 0
    whole = LoopBreaker(48, [st], chopin_runs=True)  # read whole or state by state: the same runs and repeats
    assert (whole.runs == breaker.runs).all() and (whole.counts == breaker.counts).all()


def test_a_scale_is_turned_after_as_many_states_one_way_as_chopin_goes():
    """A chromatic scale down 29 states (28 moves): the next state may not go on down, by any interval;
    up, or a chord, it may; after 27 moves one more is still free; the turn counts as a loop broken."""
    assert LoopBreaker.MAX_SLIDE == CHOPIN_SLIDE_STATES == 28
    scale = _figure(list(range(90, 61, -1)), 1)
    on = _feed(LoopBreaker(48, [scale[:1]]), scale[1:])
    assert not any(on)  # 28 moves down: never forbidden on the way
    breaker = LoopBreaker(48, [scale])
    down, leap_down, up = (_figure([p], 1).keys for p in (61, 40, 63))
    chord = down | up
    assert [bool(breaker.reject(k, k)[0]) for k in (down, leap_down, up, chord)] == [True, True, False, False]
    assert not LoopBreaker(48, [scale[1:]]).reject(down, down)[0]  # 27 moves: one more is allowed
    _feed(breaker, _figure([63], 1))
    assert breaker.loops.tolist() == [1] and breaker.slide.tolist() == [1]  # turned: a new slide, upwards
    assert breaker.events == [[LoopBreak(0, "slide", 1, 28)]]


def test_each_loop_broken_is_kept_with_its_rule_and_period():
    """What the guard line will say: a five-note figure run into the 48-state loop (chopin_runs off), and a
    two-state alternation with a state changed now and then, 88 of its last 96 states repeating (a near loop)."""
    breaker = LoopBreaker(48, [_figure([36, 43, 48, 43, 40], 12)])
    _feed(breaker, _figure([50], 1))
    assert breaker.events == [[LoopBreak(0, "loop", 5, 48)]]
    pitches = [60 if i % 2 == 0 else 64 for i in range(100)]
    for i in (20, 45, 70, 95):
        pitches[i] = 50
    breaker = LoopBreaker(48, [_figure(pitches, 1)])
    assert breaker.counts[0, 1] == 88 and breaker.runs[0, 1] < 48
    _feed(breaker, _figure([30], 1))
    assert breaker.events == [[LoopBreak(0, "near", 2, 84)]]
    _feed(breaker, _figure([60, 64], 1))  # no new loop: the events stay as they were
    assert len(breaker.events[0]) == 1


def test_the_guard_line_says_when_and_which_loop_was_broken():
    """Each loop broken is said with its time in the piece written (the seed's seconds before it, when the
    piece begins with the seed) and the rule in a listener's words; past four, the rest are counted."""
    seconds = np.full(40, 0.5, np.float32)
    line = loop_guard([LoopBreak(4, "chopin", 1, 11), LoopBreak(10, "chopin", 2, 17)], seconds, offset=3.0)
    assert line == (f"{LOOP_BROKEN} 2 times (at the temperature asked): at 5.0 s, a chord struck 12 times in a row "
                    "(Chopin's most) was not struck again; at 8.0 s, a figure of 2 states heard 9.5 times in a row "
                    "(Chopin's most at its length) was not taken round again")
    assert "a figure of 5 states that went round for 48 states was stopped and kept out for 16 more" in loop_guard(
        [LoopBreak(0, "loop", 5, 48)], seconds)
    assert "a figure of 3 states that filled 84 of the last 96 states" in loop_guard([LoopBreak(0, "near", 3, 84)],
                                                                                    seconds)
    many = loop_guard([LoopBreak(i, "slide", 1, 28) for i in range(6)], seconds)
    assert many.startswith(f"{LOOP_BROKEN} 6 times") and many.endswith("; and 2 more")
    assert many.count("a scale that had gone 28 states one way turned") == 4


def test_piano_transformer_s_chromatic_scale_turns_where_chopin_s_would(monkeypatch):
    """The piece that slid down a chromatic scale from C6 to C1 (61 states, three times in a minute):
    `generate --context-states 0 --no-include-seed --seconds 60 --random-seed 11`."""
    from chopinbot.compose.seeds import random_seed_index
    from chopinbot.evaluation.form_measures import longest_slide

    model = load_model("piano-transformer")  # the model that composed it (the shipped one then)
    seed = seed_from_test(random_seed_index(np.random.default_rng(11)), context_states=0)
    cfg = GenerateConfig(seconds=60, random_seed=11, include_seed=False, top_p=0.5, chopin_runs=False)  # as heard
    monkeypatch.setattr(RepeatBoost, "FREE_PERIOD", LONG_PASSAGE)  # the boost as it was: figures helped freely
    with monkeypatch.context() as m:  # the loop breaker as it was: loops only
        m.setattr(LoopBreaker, "MAX_SLIDE", 10**6)
        assert longest_slide(generate(model, seed, cfg).generated) > 2 * CHOPIN_SLIDE_STATES
    turned = generate(model, seed, cfg)
    assert longest_slide(turned.generated) <= CHOPIN_SLIDE_STATES
    assert any(g.startswith(LOOP_BROKEN) and "a scale that had gone 28 states one way turned" in g
               for g in turned.guards)


def test_with_chopin_runs_piano_transformer_s_hammered_chord_stops_where_chopin_s_would(monkeypatch):
    """The piece that struck one G-major chord 45 times in a row, its last 14 s (2026-12-07):
    `generate --context-states 0 --no-include-seed --seconds 45 --random-seed 5` (38 of 50 such pieces went
    round some figure longer than Chopin does at its period); `--chopin-runs` stops it at Chopin's 12 strikes."""
    from chopinbot.compose.seeds import random_seed_index
    from chopinbot.evaluation.form_measures import beyond_chopin_run, loop_runs

    model = load_model("piano-transformer")  # the model that composed it (the shipped one then)
    seed = seed_from_test(random_seed_index(np.random.default_rng(5)), context_states=0)
    then = 60 * seed.states.total_beats / seed.states.total_seconds  # its tempo then: the 16 states' own
    cfg = GenerateConfig(seconds=45, bpm=then, random_seed=5, include_seed=False, chopin_runs=False)  # as heard
    monkeypatch.setattr(RepeatBoost, "FREE_PERIOD", LONG_PASSAGE)  # the boost as it was: figures helped freely
    assert loop_runs(generate(model, seed, cfg).generated)[0] == 44  # repeats after the first strike
    stopped = generate(model, seed, replace(cfg, chopin_runs=True))
    assert beyond_chopin_run(stopped.generated) is None
    said = [g for g in stopped.guards if g.startswith(LOOP_BROKEN)]
    assert len(said) == 1 and "a chord struck 12 times in a row (Chopin's most) was not struck again" in said[0]
    at = float(said[0].split(": at ")[1].split(" s,")[0])  # where the hammering was: its last 14 s
    assert 31.0 <= at <= stopped.generated.seconds.sum()
    free = generate(model, seed, replace(cfg, chopin_runs=True, loop_states=0))  # the limits are the breaker's:
    assert loop_runs(free.generated)[0] == 44 and not free.guards  # with it off, off too


def _held(pitch: int, beats: list[float]) -> States:
    """``pitch`` struck once and held through states of these lengths, a melody note struck in each."""
    n = len(beats)
    keys = np.zeros((n, N_KEYS), bool)
    keys[:, pitch - 21] = True
    keys[np.arange(n), 72 - 21 + np.arange(n) % 5] = True
    onsets = keys.copy()
    onsets[1:, pitch - 21] = False
    return States(keys, onsets, np.asarray(beats, np.float32), np.zeros(n, np.float32), np.full(n, 70, np.uint8))


def test_a_key_held_as_long_as_chopin_ever_holds_one_is_struck_again():
    """A bass note held 12 beats may go on; at 13 (the Scherzo of op. 35, the corpus's longest) it is struck
    again if it goes on (released, it is simply gone); the melody's keys are never touched."""
    assert processors.LONGEST_HOLD == 13.0 and GenerateConfig.max_hold == 0.0  # off by default
    limit = processors.HoldLimit(13.0, [_held(36, [4.0, 4.0, 4.0])])
    state = _held(36, [1.0, 1.0])[1:]  # the bass on, unstruck, a melody note struck
    keys, onsets = limit.settle(state.keys.copy(), state.onsets.copy())  # 12 beats: as drawn
    assert np.array_equal(keys, state.keys) and np.array_equal(onsets, state.onsets)
    limit.on_state(decoding.NewStates(state.keys, state.onsets, np.zeros(1, int), np.ones(1)))
    keys, onsets = limit.settle(state.keys.copy(), state.onsets.copy())  # 13 beats: struck again
    assert np.array_equal(keys, state.keys) and onsets[0, 36 - 21] and (onsets ^ state.onsets).sum() == 1
    assert limit.struck.tolist() == [1]
    limit.on_state(decoding.NewStates(keys, onsets, np.zeros(1, int), np.ones(1)))
    assert limit.held[0, 36 - 21] == 1.0  # its count starts afresh
    released = state.keys.copy()
    released[0, 36 - 21] = False
    assert np.array_equal(limit.settle(released.copy(), state.onsets.copy())[0], released)


@pytest.mark.parametrize("name", ["chpn_op35_2.mid", "chpn_op23.mid", "chpn-p21.mid"])
def test_the_hold_limit_never_fires_on_real_chopin(name):
    """The three pieces holding a key longest (13, 12.4 and 9 beats) never have one struck again by it."""
    st, _, _ = notes_to_states(read_midi(BUNDLED_CORPUS_DIR / name), S.grid_per_beat, S.pedal, S.min_state_beats,
                               S.max_states)
    limit = processors.HoldLimit(processors.LONGEST_HOLD, [st[:1]])
    for i in range(1, len(st)):
        k, o = st.keys[i : i + 1].astype(bool), st.onsets[i : i + 1].astype(bool)
        assert np.array_equal(limit.settle(k.copy(), o.copy())[1], o), i
        limit.on_state(decoding.NewStates(k, o, np.zeros(1, int), st.beats[i : i + 1].astype(np.float64)))
    assert limit.struck.sum() == 0


def test_with_the_hold_limit_the_shipped_model_holds_no_key_longer_than_chopin(monkeypatch):
    """From the seed alone, test seed 0 held a key for 17 beats (2026-12-07; 19 of 50 such minutes held one
    longer than Chopin ever does, up to 33 beats)."""
    from chopinbot.evaluation.form_measures import longest_hold

    monkeypatch.setattr(RepeatBoost, "FREE_PERIOD", LONG_PASSAGE)  # the boost as it was: figures helped freely
    model = load_model("piano-transformer")
    seed = seed_from_test(0, context_states=0)
    cfg = GenerateConfig(seconds=60, random_seed=0, include_seed=False, max_hold=processors.LONGEST_HOLD,
                         chopin_runs=False)  # as it was heard
    assert longest_hold(generate(model, seed, replace(cfg, max_hold=0.0)).generated) > 15
    assert longest_hold(generate(model, seed, cfg).generated) <= processors.LONGEST_HOLD + 1e-6


def test_a_figure_going_round_with_a_state_changed_now_and_then_is_a_loop():
    """A five-note figure, one state in 24 changed: runs never reach 24, but 88 of 96 states repeat."""
    h = _figure([36, 43, 48, 43, 40], 20)
    h.keys[::24] = h.onsets[::24] = False
    h.keys[::24, 70] = h.onsets[::24, 70] = True
    breaker = LoopBreaker(48, [h])
    assert breaker.runs.max() < 48 and breaker.counts.max() >= LoopBreaker.NEAR
    go_on = h.keys[-5:-4]
    assert breaker.reject(go_on, go_on).tolist() == [True]


def test_a_loop_is_broken_where_it_starts_not_by_a_retry():
    """lstm-repeats at threshold 0.95 falls into a cycle of 2; the guard used to compose the whole piece
    again (another decoding than asked); the breaker keeps the asked decoding and no guard fires."""
    m = load_model("lstm-repeats")
    seed = seed_from_test(5)
    old = generate(m, seed, GenerateConfig(steps=80, threshold=0.95, random_seed=3, loop_states=0))
    assert any("looping" in g for g in old.guards)
    new = generate(m, seed, GenerateConfig(steps=80, threshold=0.95, random_seed=3))
    assert not any("retried" in g for g in new.guards) and new.config.threshold == 0.95
    assert any(g.startswith(LOOP_BROKEN) for g in new.guards)  # said, not hidden behind "none fired"
    assert not [p for p in check_guards(new.generated) if p.startswith("looping")]


class _NoKey(StepProcessor):
    """A rule written as one class: key ``k`` never sounds."""

    def __init__(self, k: int) -> None:
        self.k, self.seen = k, 0

    def mask(self, kp, op, prev):
        kp = kp.copy()
        kp[:, self.k] = 0.0
        return kp, op

    def on_state(self, new):
        self.seen += 1


def test_one_loop_runs_any_processor_on_every_state(model):
    seed = seed_from_test(3)
    cfg = GenerateConfig(random_seed=0)
    plain = Decoder(model, [seed.history], cfg, np.random.default_rng(0), seed.history_start_beat)
    k = int(np.argmax(np.stack([n.keys[0] for n in plain.run([StepLimit(40)])]).sum(0)))  # its commonest key
    rule = _NoKey(k)
    dec = Decoder(model, [seed.history], cfg, np.random.default_rng(0), seed.history_start_beat)
    drawn = dec.run([StepLimit(40)], extra=[rule])
    assert len(drawn) == 40 == rule.seen
    assert not any(n.keys[0, k] and not prev[0, k] for n, prev in
                   zip(drawn, [seed.history.keys[-1:]] + [d.keys for d in drawn[:-1]]))


def test_the_cadence_composes_with_the_config_s_rules(model, monkeypatch):
    """Every section and the cadence get their processors from the one factory (key guidance, repeat boost...)."""
    calls = []

    def spy(model, cfg, controls, stepper, histories, start_beat=0.0, inputs=None):
        made = processors_for(model, cfg, controls, stepper, histories, start_beat, inputs)
        calls.append((type(stepper).__name__, [type(p).__name__ for p in made]))
        return made

    monkeypatch.setattr(decoding, "processors_for", spy)
    res = compose_form(model, seed_from_test(5), GenerateConfig(seconds=30.0, random_seed=1), "ABA")
    assert len(calls) == len(res.sections) + 1  # the cadence too
    stepper, rules = calls[-1]
    assert stepper == "GuidedStepper" and "Repeat" in rules and "FollowKeyDrift" in rules


def test_the_app_request_is_a_generate_config_and_one_function_dispatches(model):
    from dataclasses import fields

    from chopinbot.app.request import ComposeRequest
    from chopinbot.compose.request import compose_piece

    library, request = GenerateConfig(), ComposeRequest()
    own = {"seconds": 30.0}  # the app's one default of its own: a length in seconds
    for f in fields(GenerateConfig):
        assert getattr(request, f.name) == own.get(f.name, getattr(library, f.name)), f.name
    made = request.generate_config()
    assert made.steps is None and made.seconds == 30.0 and type(made) is GenerateConfig
    with pytest.raises(ConfigError, match="temperature"):  # checked once, by GenerateConfig.validate
        ComposeRequest(temperature=9.0).check_limits()
    seed, cfg = seed_from_test(2), GenerateConfig(steps=20, random_seed=4)
    pieces = compose_piece(model, cfg, seed, batch=2)
    assert len(pieces) == 2
    assert np.array_equal(pieces[0].states.keys, generate(model, seed, cfg, batch=2)[0].states.keys)
    with pytest.raises(ConfigError):
        compose_piece(model, cfg)  # no seed


def test_max_leap_is_one_processor_that_every_piece_obeys(model):
    """A rule added as one class and one field: with --max-leap 3 no key more than 3 semitones above
    the highest key sounding is ever started; without it the same seed's top voice leaps further."""
    seed = seed_from_test(2, context_states=0)
    assert not any(isinstance(p, processors.MelodyLeap) for p in
                   processors_for(model, GenerateConfig(), None, None, [seed.history]))

    def worst_leap(cfg):
        st = generate(model, seed, cfg).states[len(seed.states) - 1 :]
        worst = 0
        for i in range(1, len(st)):
            prev, new = np.flatnonzero(st.keys[i - 1]), np.flatnonzero(st.keys[i] & ~st.keys[i - 1])
            if len(prev) and len(new):
                worst = max(worst, int(new.max() - prev.max()))
        return worst

    base = GenerateConfig(steps=200, random_seed=3, include_seed=True)
    assert worst_leap(base) > 3
    assert worst_leap(replace(base, max_leap=3)) <= 3
    with pytest.raises(Exception, match="max leap"):
        GenerateConfig(max_leap=0).validate()


def test_notatable_rhythm_keeps_every_boundary_on_the_24th_beat_grid():
    """Boundaries an even number of 48ths from where composing starts (sixteenths, triplets,
    sextuplets): an odd value (a 5/48 or a sixty-fourth, 3/48) is never drawn, whatever came before."""
    units = np.array([3, 5, 8, 12, 16, 32, 43, 48])
    rule = processors.NotatableRhythm(2, units / 48)
    even = (units % 2 == 0).tolist()
    assert rule.allowed().tolist() == [even, even]
    keys = np.zeros((2, N_KEYS), bool)
    rule.on_state(decoding.NewStates(keys, keys, np.zeros(2, int), np.array([16, 8]) / 48))
    assert rule.allowed().tolist() == [even, even]
    logits = rule.tilt_durations(np.zeros((2, 8)), np.ones(2))
    assert np.isneginf(logits[:, 1]).all() and np.isfinite(logits[:, 2]).all()
    only_odd = processors.NotatableRhythm(1, np.array([3, 5]) / 48)
    assert np.isfinite(only_odd.tilt_durations(np.zeros((1, 2)), np.ones(1))).all()  # nothing fits: model's choice


def test_notatable_pieces_are_written_exactly_by_their_score(model):
    """Composed with notatable, the MusicXML read back has every note's pitch and onset where the
    states have them (the score moves no boundary); composed freely, the same seeds need moves."""
    import xml.etree.ElementTree as ET

    from chopinbot.notation.piece import piece_spec
    from chopinbot.notation.score import build_score

    moved = {}
    for notatable in (False, True):
        moved[notatable] = 0
        for rs in range(3):
            res = generate(model, seed_from_test(5 + rs), GenerateConfig(seconds=20, random_seed=rs,
                                                                         include_seed=rs == 1, notatable=notatable))
            text, info = build_score(piece_spec(res))
            moved[notatable] += info.stats.moved_boundaries
            if notatable:  # every written note starts where the states' note does (onsets in divisions)
                ET.fromstring(text)
                assert info.stats.moved_boundaries == 0
    assert moved[True] == 0 < moved[False]
    # a form's sections and cadence keep the seed end's grid, nearly: over six draws of this form 1-2 boundaries
    # move (1-3 with the durations' top-p 0.5 before), where a cadence's one was expected; a known gap at the
    # section joins (2026-12-07), far fewer than composed freely
    form_moved = {}
    for notatable in (False, True):
        piece = compose_form(model, seed_from_test(10), GenerateConfig(seconds=30, random_seed=0, include_seed=False,
                                                                     notatable=notatable), "ABA")
        form_moved[notatable] = build_score(piece_spec(piece))[1].stats.moved_boundaries
    assert form_moved[True] <= 2 < form_moved[False]
