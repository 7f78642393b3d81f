"""The fast generation step computes exactly the model's function, and its
inputs are exactly the training inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chopinbot.dataset.features import InputLayout, key_recency, sequence_features
from chopinbot.errors import ConfigError
from chopinbot.compose.generate import GenerateConfig, _bound_polyphony, _filter_logits, _softmax, generate
from chopinbot.model.network import ChopinLSTM, ModelConfig
from chopinbot.music.repeats import KINDS, RepeatTracker, find_repeats, repeat_continuations
from chopinbot.compose.seeds import seed_from_test
from chopinbot.compose.stepper import InputBuilder, ModuleStepper, NumpyStepper, stepper_for

CLASSES = [1 / 12, 0.125, 0.25, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]


def _inputs(config: ModelConfig, B: int, T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((B, T, config.input_dim)).astype(np.float32)
    x[..., : 2 * 88] = rng.random((B, T, 2 * 88)) < 0.06  # sparse keys and onsets, as real states
    return x


@pytest.mark.parametrize("kw", [
    {},  # the default architecture: skip path, note head, onset head, classes durations
    {"layers": 3, "layer_norm": True, "dense_layers": 2},
    {"onset_head": False, "note_head": False, "skip": False, "duration_head": "seed", "dense_layers": 0},
    {"onset_head": False},
    {"key_recency": False},
    {"repeats": False},
    {"repeats_transposed": False},
    {"repeats": False, "repeats_transposed": False},
    {"key_recency": False, "duration_head": "seed"},
])
def test_numpy_step_equals_forward(kw):
    torch.manual_seed(0)
    m = ChopinLSTM(ModelConfig(hidden=32, duration_classes=CLASSES, **kw)).eval()
    for p in m.parameters():  # make every weight matter (some start at zero)
        p.data += 0.1 * torch.randn_like(p)
    x = _inputs(m.config, B=3, T=12)
    with torch.inference_mode():
        ref, _ = m(torch.from_numpy(x))
        st = NumpyStepper(m)
        first = st.start(x[:, :4])
        steps = [first] + [st.step(x[:, t]) for t in range(4, 12)]
    names = ["key_logits", "onset_logits", "duration"]
    for i, outs in enumerate(steps):
        t = 3 + i
        for name, got in zip(names, outs):
            want = getattr(ref, name)
            if want is None:
                assert got is None
                continue
            np.testing.assert_allclose(got, want[:, t].numpy(), atol=2e-5, err_msg=f"{name} at step {t}")


def test_rerun_reads_the_window_from_scratch():
    torch.manual_seed(1)
    m = ChopinLSTM(ModelConfig(hidden=24, duration_classes=CLASSES)).eval()
    x = _inputs(m.config, B=2, T=20)
    with torch.inference_mode():
        ref, _ = m(torch.from_numpy(x[:, -16:]))  # a fresh state, only the last 16 inputs
        for st in (NumpyStepper(m), ModuleStepper(m)):
            keys, _, dur = st.rerun(x[:, -16:])
            np.testing.assert_allclose(keys, ref.key_logits[:, -1].numpy(), atol=2e-5)
            np.testing.assert_allclose(dur, ref.duration[:, -1].numpy(), atol=2e-5)


def _repetitive_states(n: int, seed: int = 3):
    """States that repeat an 8-state figure, every other time 2 semitones up, with a
    few changes, so exact and transposed repeats are found."""
    rng = np.random.default_rng(seed)
    figure = rng.random((8, 88)) < 0.05
    figure[:, -2:] = False
    keys = np.tile(np.concatenate([figure, np.roll(figure, 2, axis=1)]), (n // 16 + 1, 1))[:n]
    keys[rng.random(n) < 0.2] ^= rng.random(88) < 0.03  # some states differ from the figure
    onsets = keys & np.tile(rng.random((8, 88)) < 0.5, (n // 8 + 1, 1))[:n]
    onsets |= keys & ~np.concatenate([np.zeros((1, 88), bool), keys[:-1]])  # a key that starts is struck
    cls = np.tile(rng.integers(0, len(CLASSES), 8), n // 8 + 1)[:n]
    return keys, onsets, cls, np.asarray(CLASSES, np.float32)[cls]


@pytest.mark.parametrize("recency,repeats", [(False, ()), (True, ()), (False, ("exact",)), (True, ("transposed",)),
                                             (True, ("exact", "transposed"))])
def test_input_builder_equals_training_inputs(recency, repeats):
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES, key_recency=recency, repeats="exact" in repeats,
                               repeats_transposed="transposed" in repeats)).eval()
    assert m.config.repeat_kinds == repeats
    n, S, start = 80, 10, 7.25
    keys, onsets, cls, beats = _repetitive_states(n)
    want = sequence_features(keys, onsets, beats, m.config.vocab, start, recency, repeats)
    assert want.shape[1] == m.config.input_dim == m.config.lstm_input_dim + (2 * 88 if recency else 0) + (
        2 * 88 * len(repeats))
    build = InputBuilder(m, keys[None, :S], onsets[None, :S], beats[None, :S], start)
    got = np.stack([build(keys[None, i], onsets[None, i], cls[i : i + 1])[0] for i in range(S, n)])
    # the table is exact on the grid; the training path sums float lengths (error ~1e-6)
    np.testing.assert_allclose(build.seed_inputs[0], want[:S], atol=1e-5)
    np.testing.assert_allclose(got, want[S:], atol=1e-5)
    for i in range(len(repeats)):  # the figure came back: the repeat blocks are used
        assert (want[:, m.config.layout.repeat_global(i).stop - 1] > 0).mean() > 0.5


def test_repeats_by_hand():
    # A B C A B D A B C: the longest earlier passage ending at each state, and what followed it
    names = "A B C A B D A B C".split()
    cont, length = find_repeats([n.encode() for n in names])
    assert length.tolist() == [0, 0, 0, 1, 2, 0, 1, 2, 3]
    assert cont.tolist() == [-1, -1, -1, 1, 2, -1, 4, 5, 3]  # at the last C: "A B C" first ended at 2 -> 3
    # at the second-to-last B, "A B" ended last at 4 (followed by D), not at 1 (followed by C): the most recent
    t = RepeatTracker(max_match=2)
    assert [t.push(n.encode()) for n in names][-1] == (3, 2)  # capped at 2 states
    # only passages that ended within the last `window` states count: the last A, B and C
    # before the final A B C ended 3, 3 and 6 states earlier
    t = RepeatTracker(window=3)
    assert [t.push(n.encode()) for n in names][-3:] == [(4, 1), (5, 2), (-1, 0)]
    t = RepeatTracker(window=2)
    assert [t.push(n.encode()) for n in names][-3:] == [(-1, 0)] * 3


def test_transposed_repeats_by_hand():
    # single keys 40 44 47 | 42 46 49: the same arpeggio 2 semitones up
    keys = np.zeros((6, 88), bool)
    keys[np.arange(6), [40, 44, 47, 42, 46, 49]] = True
    rep = repeat_continuations(keys, keys.copy(), np.ones(6), kind="transposed")
    assert rep.length.tolist() == [0, 0, 0, 0, 1, 2]  # 42 follows 47 by -5: no earlier step of -5
    assert np.flatnonzero(rep.keys[4]).tolist() == [49]  # after 44 came 47: after 46, 47 + 2
    assert np.flatnonzero(rep.keys[5]).tolist() == [44]  # after 44 47 came 42: after 46 49, 42 + 2
    assert repeat_continuations(keys, keys.copy(), np.ones(6)).length.tolist() == [0] * 6  # nothing exact


@pytest.mark.parametrize("kind", KINDS)
def test_training_batches_carry_the_same_repeats(dataset, kind):
    """The repeat block of a training batch (precomputed per split, gathered per
    chunk, transposed with it) equals the one computed from the segment itself."""
    from chopinbot.dataset.batches import Chunk, SplitData

    split = SplitData(dataset, "valid", ModelConfig(duration_classes=CLASSES).vocab)
    a, b = split.segments[0]
    states = dataset.states(dataset.segments("valid")[0])
    chunk = Chunk(a + 100, 50)  # inside the segment: its history is the segment before it
    x, _ = split.batch([chunk], np.array([3]), repeats=(kind,))
    lay = InputLayout(len(CLASSES), repeats=1)
    want = sequence_features(states.keys, states.onsets, states.beats, split.vocab, repeats=(kind,))[100:150]
    got = x[0].numpy()
    np.testing.assert_array_equal(got[:, lay.repeat_global(0)], want[:, lay.repeat_global(0)])
    rk = want[:, lay.repeat_keys(0)].reshape(50, 2, 88)
    shifted = np.zeros_like(rk)
    shifted[..., 3:] = rk[..., :-3]  # the chunk is transposed up 3 semitones (nothing reaches the top here)
    assert rk[..., -3:].sum() == 0
    np.testing.assert_array_equal(got[:, lay.repeat_keys(0)].reshape(50, 2, 88), shifted)
    assert (want[:, lay.repeat_global(0).stop - 1] > 0).mean() > 0.1  # the valid piece repeats itself


def test_engines_give_the_same_music(tiny_model_dir):
    from chopinbot.model.checkpoint import load_model

    model = load_model(tiny_model_dir)
    seed = seed_from_test(0)
    cfg = GenerateConfig(steps=120, random_seed=4)
    a = generate(model, seed, cfg, engine="numpy")
    b = generate(model, seed, cfg, engine="torch")
    assert np.array_equal(a.states.keys, b.states.keys) and np.array_equal(a.states.beats, b.states.beats)
    assert isinstance(stepper_for(model), NumpyStepper)
    with pytest.raises(ConfigError, match="engine"):
        generate(model, seed, cfg, engine="jax")


def test_exported_and_int8_models_step_through_their_own_forward(tiny_model_dir):
    from chopinbot.model.checkpoint import load_model
    from chopinbot.compress.study import quantize_int8

    q = quantize_int8(load_model(tiny_model_dir))
    assert isinstance(stepper_for(q), ModuleStepper)
    with pytest.raises(ConfigError, match="float models"):
        stepper_for(q, "numpy")
    assert len(generate(q, seed_from_test(0), GenerateConfig(steps=20, random_seed=0)).generated) == 20


def test_duration_filters_and_polyphony_bounds():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isinf(_filter_logits(logits, 2, 1.0)[0, 2:]).all() and np.isfinite(_filter_logits(logits, 2, 1.0)[0, :2]).all()
    kept = np.isfinite(_filter_logits(logits, 0, 0.7)[0])  # 0.5 + 0.3 reach 0.7: the rest goes
    assert kept.tolist() == [True, True, False, False]
    np.testing.assert_allclose(_softmax(_filter_logits(logits, 0, 0.7))[0, :2], [0.625, 0.375])
    probs = np.linspace(0.01, 0.88, 88)[None]
    many = np.ones((1, 88), bool)
    assert _bound_polyphony(many, probs, 0, 10).sum() == 10
    assert _bound_polyphony(many, probs, 0, 10)[0, -10:].all()  # the likeliest ten stay
    assert _bound_polyphony(np.zeros((1, 88), bool), probs, 3, 10)[0, -3:].all()


def test_key_recency_by_hand():
    keys = np.zeros((1, 6, 88), bool)
    keys[0, 0, 40] = keys[0, 3, 40] = True  # struck at beats 0 and 3, one beat each
    rec = key_recency(keys, keys.copy(), np.ones((1, 6)))
    assert rec[0, :, 0, 40].tolist() == [1, 2, 3, 1, 2, 3]  # beats since struck, at each state's end
    assert rec[0, :, 1, 40].tolist() == [16, 16, 16, 3, 3, 3]  # the previous interval (unknown = the cap)
    assert (rec[0, :, :, 41] == 16).all()  # never struck
