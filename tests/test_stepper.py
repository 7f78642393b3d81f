"""The fast generation step computes exactly the model's function, and its
inputs are exactly the training inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chopinbot.encoding import end_positions, key_ages, key_recency, state_features
from chopinbot.errors import ConfigError
from chopinbot.generate import GenerateConfig, _bound_polyphony, _filter_logits, _softmax, generate
from chopinbot.model import ChopinLSTM, ModelConfig
from chopinbot.seeds import seed_from_test
from chopinbot.stepper import InputBuilder, ModuleStepper, NumpyStepper, stepper_for

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


def test_input_builder_equals_training_inputs():
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES, key_recency=False)).eval()
    rng = np.random.default_rng(3)
    n, S, start = 60, 10, 7.25
    keys = rng.random((n, 88)) < 0.05
    onsets = keys & (rng.random((n, 88)) < 0.5)
    cls = rng.integers(0, len(CLASSES), n)
    beats = np.asarray(CLASSES, np.float32)[cls]
    want = state_features(keys, onsets, beats, m.config.vocab, end_positions(beats, start), key_ages(keys, onsets, beats))
    build = InputBuilder(m, keys[None, :S], onsets[None, :S], beats[None, :S], start)
    got = np.stack([build(keys[None, i], onsets[None, i], cls[i : i + 1])[0] for i in range(S, n)])
    # the table is exact on the grid; the training path sums float lengths (error ~1e-6)
    np.testing.assert_allclose(got, want[S:], atol=1e-5)
    # with the recency block (a model that reads it): the same, plus every key's recency
    mr = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES, key_recency=True)).eval()
    want_r = state_features(keys, onsets, beats, mr.config.vocab, end_positions(beats, start),
                            key_ages(keys, onsets, beats), key_recency(keys, onsets, beats))
    build = InputBuilder(mr, keys[None, :S], onsets[None, :S], beats[None, :S], start)
    got = np.stack([build(keys[None, i], onsets[None, i], cls[i : i + 1])[0] for i in range(S, n)])
    assert got.shape[1] == mr.config.input_dim == mr.config.lstm_input_dim + 2 * 88
    np.testing.assert_allclose(got, want_r[S:], atol=1e-5)


def test_engines_give_the_same_music(tiny_model_dir):
    from chopinbot.checkpoint import load_model

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
    from chopinbot.checkpoint import load_model
    from chopinbot.compress import quantize_int8

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
