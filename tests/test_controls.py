"""The composer's controls: measuring a window, the control input block, steering generation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.seeds import seed_from_test
from chopinbot.constants import LOWEST_PITCH, N_KEYS
from chopinbot.dataset.conditioning import ControlBlock
from chopinbot.dataset.inputs import NewStates
from chopinbot.errors import ConfigError
from chopinbot.evaluation.figures import piece_figures, result_figures
from chopinbot.model.formats import load_model
from chopinbot.music.controls import (
    CONTROL_WIDTH,
    Controls,
    WindowControls,
    control_features,
    hide,
    key_profile,
    window_controls,
)
from chopinbot.music.keys import Key, parse_pitch, pitch_name
from chopinbot.music.states import States, transpose_states

pytestmark = pytest.mark.usefixtures("one_thread")


def _key(pitch: int) -> int:
    return pitch - LOWEST_PITCH


def _states(strikes: list[list[int]], beats: list[float], velocity: list[int]) -> tuple[np.ndarray, ...]:
    onsets = np.zeros((len(strikes), N_KEYS), bool)
    for i, pitches in enumerate(strikes):
        onsets[i, [_key(p) for p in pitches]] = True
    return onsets, np.asarray(beats, np.float32), np.asarray(velocity, np.float64)


def test_window_counts_the_strikes_of_the_beats_ahead():
    # four 2-beat states: C4+E4 (v 40), G4 (v 80), C5 (v 60), then C2 (v 100) at beat 6
    onsets, beats, vel = _states([[60, 64], [67], [72], [36]], [2, 2, 2, 2], [40, 80, 60, 100])
    w = window_controls(onsets, beats, vel, window=6.0)
    # state 0's window: beats 0..6, states 0-2: 4 notes in 6 beats
    assert w.density[0] == pytest.approx(4 / 6)
    assert (w.low[0], w.high[0]) == (_key(60), _key(72))
    assert w.loudness[0] == pytest.approx((40 * 2 + 80 + 60) / 4)  # a state's velocity counts once per struck key
    assert w.key[0][0] == pytest.approx(2 / 4) and w.key[0][4] == pytest.approx(1 / 4)  # C twice, E once
    assert w.key[0].sum() == pytest.approx(1.0)
    # state 1's window reaches the C2 at beat 6
    assert w.low[1] == _key(36)
    # the last state's window covers 2 beats: still trusted; beyond the piece nothing is invented
    assert w.density[3] == pytest.approx(1 / 2)


def test_a_window_without_dynamics_or_notes_is_absent():
    onsets, beats, _ = _states([[60], [], []], [1, 4, 4], [0, 0, 0])
    w = window_controls(onsets, beats, np.zeros(3), window=4.0)
    assert np.isnan(w.loudness).all()  # velocity 0 = unknown (a score without dynamics)
    assert np.isnan(w.density[1]) and w.low[1] == -1 and np.isnan(w.key[1]).all()  # nothing struck


def test_features_move_with_the_transposition():
    onsets, beats, vel = _states([[60, 64], [67]], [4, 4], [50, 50])
    w = window_controls(onsets, beats, vel)
    g0, n0 = control_features(w.take(np.array([0])), 0)
    g2, n2 = control_features(w.take(np.array([0])), 2)
    assert g0.shape == (1, CONTROL_WIDTH) and n0.shape == (1, 2 * N_KEYS)
    assert g2[0, 1] * (N_KEYS - 1) == pytest.approx(_key(62))  # the register's low end moved up a tone
    assert np.allclose(np.roll(g0[0, 4:16], 2), g2[0, 4:16])  # the pitch-class shares rotate
    inside = np.flatnonzero(n2[0, :N_KEYS] > 0)
    assert (inside.min(), inside.max()) == (_key(62), _key(69))
    assert n2[0, N_KEYS + _key(62)] == pytest.approx(12 / 3)  # D (was C) holds one of the three strikes


def test_hidden_controls_read_zero_with_their_present_bit_off():
    onsets, beats, vel = _states([[60, 64], [67]], [4, 4], [50, 50])
    w = window_controls(onsets, beats, vel)
    g, n = control_features(hide(w, np.array([[True, True, True, True]] * 2)))
    assert not g.any() and not n.any()
    g, _ = control_features(hide(w, np.array([[False, True, True, True]] * 2)))
    assert g[:, 16].all() and not g[:, 17:].any()  # only density present


def test_block_tracker_reads_the_request_from_the_seed_last_state_on():
    onsets, beats, vel = _states([[60], [64], [67], [72]], [1, 1, 1, 1], [50, 50, 50, 50])
    keys = onsets.copy()
    req = Controls(density=2.0, register=(30, 60), loudness=70.0, key=key_profile(False))
    block = ControlBlock(req)
    tracker = block.tracker(keys[None], onsets[None], beats[None], 0.0, vel[None])
    (lstm,), (note,) = tracker.seed
    own = ControlBlock(None).sequence_columns(keys, onsets, beats, 0.0, vel)
    want = control_features(WindowControls.constant(req, 1))
    assert np.allclose(lstm[0, :-1], own[0][0][:-1])  # the seed's own windows ...
    assert np.allclose(lstm[0, -1], want[0][0]) and np.allclose(note[0, -1], want[1][0])  # ... then the request
    one = NewStates(keys[:1], onsets[:1], np.zeros(1, np.int64), np.array([1.0]), np.array([50.0]))
    (step,), (step_note,) = tracker.step(one)
    assert np.allclose(step[0], want[0][0]) and np.allclose(step_note[0], want[1][0])


def test_pitch_names():
    assert [parse_pitch(t) for t in ("60", "C4", "A0", "C8", "Bb5", "F#2")] == [60, 60, 21, 108, 82, 42]
    assert pitch_name(60) == "C4" and pitch_name(21) == "A0"
    with pytest.raises(ConfigError, match="unknown pitch"):
        parse_pitch("H4")


def test_register_is_kept_and_a_model_without_controls_refuses_steering(tiny_model_dir, tiny_controls_model_dir):
    seed = seed_from_test(0, 16)
    plain = load_model(tiny_model_dir / "best")
    with pytest.raises(ConfigError, match="model with controls"):
        generate(plain, seed, GenerateConfig(steps=8, density=5.0))
    model = load_model(tiny_controls_model_dir / "best")
    assert model.config.controls
    res = generate(model, seed, GenerateConfig(seconds=20, register=(60, 72), random_seed=0, key="D major"))
    fig = result_figures(res)
    new_strikes = np.argwhere(res.generated.onsets)
    assert len(new_strikes)
    # every key struck in the new part lies inside the register, in the output key (a key sounding
    # at the seed's end may ring on, but is never struck again)
    pitches = new_strikes[:, 1] + LOWEST_PITCH
    assert ((pitches >= 60) & (pitches <= 72)).all(), sorted(set(pitches) - set(range(60, 73)))
    assert fig.inside_register is not None and fig.inside_register > 0.9


def test_config_validates_the_controls():
    for bad, msg in ((dict(density=0.1), "density"), (dict(register=(60, 62)), "span"),
                     (dict(register=(10, 80)), "register"), (dict(loudness="fff"), "loudness")):
        with pytest.raises(ConfigError, match=msg):
            GenerateConfig(**bad).validate()


def test_figures_measure_what_the_requests_name():
    onsets, beats, vel = _states([[60, 64, 67]] * 20, [1.0] * 20, [80] * 20)
    st = States(onsets.copy(), onsets, beats, beats * 0.5, vel.astype(np.uint8))
    fig = piece_figures(st, bpm=120, key=Key(0, False), register=(60, 64))  # 20 beats at 120 bpm = 10 s
    assert fig.seconds == pytest.approx(10.0)
    assert fig.density == pytest.approx(6.0)  # 60 notes in 10 s
    assert (fig.lowest, fig.highest, fig.register_names) == (60, 67, "C4-G4")
    assert fig.loudness == pytest.approx(80) and fig.loudness_mark == "ff"
    assert fig.key_hold == 1.0 and fig.key_excerpts == 1  # a C major chord, in C major
    assert fig.inside_register == pytest.approx(2 / 3)
    far = piece_figures(st, bpm=120, key=Key(6, False))  # F# major is six fifths away
    assert far.key_hold == 0.0
    # one chord struck 20 times: more than Chopin ever does (12, op. 28 no. 17), and said so; 12 times is his
    assert fig.beyond_chopin_run == (1, 19, 11)
    assert "one chord struck 20 times in a row (Chopin: at most 12)" in fig.summary()
    twelve = piece_figures(st[:12], bpm=120, key=Key(0, False))
    assert twelve.beyond_chopin_run is None and "in a row" not in twelve.summary()
    assert fig.beyond_chopin_phrase is None  # a chord struck again is a figure, not a phrase


def test_figures_say_how_much_of_the_new_music_was_replayed(tiny_model_dir):
    model = load_model(tiny_model_dir)
    res = generate(model, seed_from_test(0), GenerateConfig(steps=40, random_seed=1, include_seed=False))
    composed = result_figures(res)
    assert 0.0 <= composed.replayed <= 1.0 and "composed " in composed.summary()
    # the same new music heard before (a fifth higher): every figure of it is a replay
    copy = dataclasses.replace(res, history=transpose_states(res.generated, 7)[0])
    assert result_figures(copy).replayed == 1.0 and "replayed 100%" in result_figures(copy).summary()
    # nothing kept to compare with: no figure, and the summary says nothing of it
    alone = result_figures(dataclasses.replace(res, history=None))
    assert alone.replayed is None and "replayed" not in alone.summary()


def test_follow_seed_asks_for_the_seed_s_own_character(tiny_controls_model_dir):
    from chopinbot.compose.generate import requested_controls
    from chopinbot.music.controls import passage_controls

    model = load_model(tiny_controls_model_dir / "best")
    seed = seed_from_test(3)
    h = seed.history
    own = passage_controls(h.onsets, h.beats, h.velocity)
    got = requested_controls(model, GenerateConfig(follow_seed=True), seed, seed.key, seed.bpm)
    assert (got.density, got.register, got.loudness) == (own.density, own.register, own.loudness)
    assert own.density > 0 and own.register[0] < own.register[1]
    # what is asked for wins over the seed's own
    got = requested_controls(model, GenerateConfig(follow_seed=True, loudness="pp"), seed, seed.key, seed.bpm)
    assert got.loudness == 35 and got.density == own.density
    plain = requested_controls(model, GenerateConfig(), seed, seed.key, seed.bpm)
    assert plain.density is None and plain.register is None and plain.key is not None  # hold_key by default


def test_held_out_pieces_are_scored_without_their_own_controls(tiny_controls_model_dir, tiny_dataset_dir):
    from chopinbot.dataset.batches import SplitData
    from chopinbot.dataset.store import Dataset

    config = load_model(tiny_controls_model_dir / "best").config
    data = SplitData(Dataset(tiny_dataset_dir), "train", config.vocab)
    chunks = data.whole_segments()[:2]
    i = [type(b) for b in config.layout.blocks].index(ControlBlock)
    lstm_cols, note_cols = config.layout.lstm_columns(i), config.layout.note_columns(i)
    trained, _ = data.batch(chunks, **config.input_blocks)
    scored, _ = data.batch(chunks, **config.scoring_blocks)
    assert trained[..., lstm_cols].abs().sum() > 0 and trained[..., note_cols].abs().sum() > 0
    assert scored[..., lstm_cols].abs().sum() == 0 and scored[..., note_cols].abs().sum() == 0
    other = [c for c in range(config.input_dim) if c not in range(lstm_cols.start, lstm_cols.stop)
             and c not in range(note_cols.start, note_cols.stop)]
    assert (trained[..., other] == scored[..., other]).all()  # everything else read alike


def test_density_steer_tilts_the_mean_length_to_the_one_that_keeps_the_density():
    from chopinbot.compose.sampling import DensitySteer, softmax

    classes = np.array([0.25, 0.5, 1.0, 2.0])
    steer = DensitySteer(2.0, 2, classes)  # 2 notes a beat asked
    steer.update(np.array([[1] * 8 + [0] * 80, [1] * 2 + [0] * 86]), np.array([2.0, 2.0]))
    # so far: 8 notes in 2 beats (too busy), 2 notes in 2 beats (too sparse)
    logits = np.zeros((2, 4))
    tilted = steer.tilt(logits, np.array([2, 2]))
    mean = softmax(tilted) @ classes
    # 10 notes want 5 beats: 3 more (clipped to the longest, 2); 4 notes want 2 beats: none more (the shortest)
    assert mean[0] > 1.9 and mean[1] < 0.27
    order = np.argsort(tilted, axis=-1)
    assert (order[0] == [0, 1, 2, 3]).all() and (order[1] == [3, 2, 1, 0]).all()  # a tilt, not a reshuffle


def test_a_requested_density_is_kept(tiny_controls_model_dir):
    model = load_model(tiny_controls_model_dir / "best")
    seed = seed_from_test(2)
    got = {}
    for want in (None, 2.0, 8.0):
        res = generate(model, seed, GenerateConfig(seconds=30, density=want, random_seed=0, include_seed=False))
        got[want] = result_figures(res).density
    # the tiny model's longest lengths and thick chords cannot go as sparse as 2 a second, but it goes sparser
    assert got[2.0] < 0.7 * got[None] and abs(got[8.0] / 8.0 - 1) < 0.2, got


def test_key_guidance_contrasts_the_key_asked_with_the_key_hidden(tiny_controls_model_dir):
    from chopinbot.compose.decoding import guided_stepper
    from chopinbot.compose.guidance import GuidedStepper, key_request_columns
    from chopinbot.compose.stepper import InputBuilder

    model = load_model(tiny_controls_model_dir / "best")
    layout = model.config.layout
    h = seed_from_test(1).history
    asked = Controls(density=3.0, key=key_profile(False))
    rows = {c: InputBuilder(model, h.keys[None], h.onsets[None], h.beats[None], 0.0, h.velocity[None],
                            controls=c).seed_inputs for c in (asked, Controls(density=3.0))}
    bare = rows[asked].copy()
    bare[..., key_request_columns(layout)] = 0
    np.testing.assert_array_equal(bare[:, -1], rows[Controls(density=3.0)][:, -1])  # zeroed = not asked
    stepper = guided_stepper(model, layout, GenerateConfig(key_guidance=0.5), asked, "auto", 1)
    assert isinstance(stepper, GuidedStepper) and stepper.weight == 0.5
    assert not isinstance(guided_stepper(model, layout, GenerateConfig(key_guidance=0, key_guidance_drift=0),
                                         asked, "auto", 1), GuidedStepper)
    assert isinstance(guided_stepper(model, layout, GenerateConfig(key_guidance=0, key_guidance_drift=3), asked,
                                     "auto", 1), GuidedStepper)  # guided once the music leaves the key
    assert not isinstance(guided_stepper(model, layout, GenerateConfig(), Controls(density=3.0), "auto", 1),
                          GuidedStepper)  # no key asked: nothing to guide towards


def _chords(pitches: list[int], n: int) -> np.ndarray:
    keys = np.zeros((1, n, N_KEYS), bool)
    keys[0, :, [_key(p) for p in pitches]] = True
    return keys


def test_key_drift_sees_the_music_leave_its_key_and_come_back():
    from chopinbot.compose.guidance import KeyDrift

    c_major = [60, 64, 67, 72]  # C E G C, then F# A# C# F#: six steps round the circle of fifths
    drift = KeyDrift(Key(0, False), _chords(c_major, 8), np.ones((1, 8)))
    assert not drift.drifted[0]
    for _ in range(8):  # a beat each: after 8 beats of F# major the last beats are in F#
        drift.update(_chords([66, 70, 73, 78], 1)[:, 0], np.ones(1))
    assert drift.drifted[0]
    for _ in range(16):
        drift.update(_chords(c_major, 1)[:, 0], np.ones(1))
    assert not drift.drifted[0]
    # G major (a fifth up) is still home; nothing heard yet has not drifted
    assert not KeyDrift(Key(0, False), _chords([55, 59, 62, 67], 8), np.ones((1, 8))).drifted[0]
    assert not KeyDrift(Key(0, False), np.zeros((1, 4, N_KEYS), bool), np.ones((1, 4))).drifted[0]


def test_guidance_weight_per_piece_equals_each_pieces_own_weight(tiny_controls_model_dir):
    from chopinbot.compose.decoding import guided_stepper
    from chopinbot.compose.stepper import InputBuilder

    model = load_model(tiny_controls_model_dir / "best")
    h = seed_from_test(1).history
    asked = Controls(density=3.0, key=key_profile(False))
    x = InputBuilder(model, np.stack([h.keys] * 2), np.stack([h.onsets] * 2), np.stack([h.beats] * 2), 0.0,
                     np.stack([h.velocity] * 2), controls=asked).seed_inputs
    outs = {}
    for w in (0.5, 3.0, np.array([0.5, 3.0])):
        stepper = guided_stepper(model, model.config.layout, GenerateConfig(key_guidance=0.5), asked, "numpy", 2)
        stepper.weight = w
        outs[str(w)] = stepper.start(x)
    for i, w in enumerate(("0.5", "3.0")):
        for mixed, alone in zip(outs[str(np.array([0.5, 3.0]))], outs[w]):
            if mixed is not None:
                np.testing.assert_allclose(mixed[i], alone[i], rtol=1e-6)
    assert not np.allclose(outs["0.5"][0], outs["3.0"][0])


def test_key_drift_weight_is_used_only_while_the_music_has_left_the_key(tiny_controls_model_dir, monkeypatch):
    from chopinbot.compose import guidance

    model = load_model(tiny_controls_model_dir / "best")
    seed = seed_from_test(1)
    cfg = dict(seconds=20, random_seed=0, include_seed=False, key_guidance=0.5)
    same = generate(model, seed, GenerateConfig(**cfg, key_guidance_drift=0.5))
    # never drifted: the drift weight changes nothing
    monkeypatch.setattr(guidance.KeyDrift, "drifted", property(lambda self: np.zeros(len(self.hist), bool)))
    calm = generate(model, seed, GenerateConfig(**cfg, key_guidance_drift=5.0))
    np.testing.assert_array_equal(calm.generated.keys, same.generated.keys)
    # always drifted: the piece is composed at the drift weight throughout
    monkeypatch.setattr(guidance.KeyDrift, "drifted", property(lambda self: np.ones(len(self.hist), bool)))
    pushed = generate(model, seed, GenerateConfig(**cfg, key_guidance_drift=5.0))
    fixed = generate(model, seed, GenerateConfig(**{**cfg, "key_guidance": 5.0}, key_guidance_drift=5.0))
    np.testing.assert_array_equal(pushed.generated.keys, fixed.generated.keys)
    assert not np.array_equal(pushed.generated.keys, same.generated.keys)


@pytest.mark.parametrize(("index", "random_seed"), [(208, 24), (141, 7)])
def test_a_copied_passage_keeps_the_density_asked(index, random_seed):
    """The repeat boost's copies are weighed with the density's tilt, as a draw is: these two pieces
    copied a passage at its own pace and played 14.5 and 3.8 notes a second where 3 were asked."""
    res = generate(load_model("piano-controls"), seed_from_test(index),
                   GenerateConfig(seconds=30, density=3.0, random_seed=random_seed, include_seed=False))
    assert abs(result_figures(res).density / 3.0 - 1) <= 0.2
