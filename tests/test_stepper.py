"""The fast generation step computes exactly the model's function, and its
inputs are exactly the training inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.sampling import bound_polyphony, filter_logits, softmax
from chopinbot.compose.seeds import seed_from_test
from chopinbot.compose.stepper import InputBuilder, ModuleStepper, NumpyStepper, stepper_for
from chopinbot.dataset.features import key_recency, velocity_class
from chopinbot.dataset.inputs import RepeatsBlock
from chopinbot.dataset.layout import OPTIONAL_BLOCKS
from chopinbot.errors import ConfigError
from chopinbot.model.network import ChopinLSTM, ModelConfig
from chopinbot.music.repeats import KINDS, RepeatTracker, find_repeats, repeat_continuations

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
    {"loudness": True},
    {"joint_keys": True, "loudness": True, "onset_head": False},  # given nothing below: the forward's default
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
    if m.config.loudness:  # the velocity-class logits after the last step
        np.testing.assert_allclose(st.loudness, ref.loudness[:, -1].numpy(), atol=2e-5)
    else:
        assert st.loudness is None and ref.loudness is None
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


@pytest.mark.parametrize("recency,repeats,loudness", [(False, (), False), (True, (), False),
                                                      (False, ("exact",), False), (True, ("transposed",), True),
                                                      (True, ("exact", "transposed"), False), (False, (), True)])
def test_input_builder_equals_training_inputs(recency, repeats, loudness):
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES, key_recency=recency, repeats="exact" in repeats,
                               repeats_transposed="transposed" in repeats, loudness=loudness)).eval()
    assert [b.name for b in m.config.blocks] == (["base"] + ["recency"] * recency + [f"repeats {k}" for k in repeats]
                                                 + ["loudness"] * loudness)
    n, S, start = 80, 10, 7.25
    keys, onsets, cls, beats = _repetitive_states(n)
    velocity = np.where(onsets.any(1), np.arange(n) % 100 + 20, 0).astype(np.uint8)
    lay = m.config.layout
    want = lay.sequence_rows(keys, onsets, beats, start, velocity)
    assert want.shape[1] == m.config.input_dim == m.config.lstm_input_dim + (2 * 88 if recency else 0) + (
        2 * 88 * len(repeats))
    build = InputBuilder(m, keys[None, :S], onsets[None, :S], beats[None, :S], start, velocity[None, :S])
    got = np.stack([build(keys[None, i], onsets[None, i], cls[i : i + 1], velocity[i : i + 1])[0]
                    for i in range(S, n)])
    # the table is exact on the grid; the training path sums float lengths (error ~1e-6)
    np.testing.assert_allclose(build.seed_inputs[0], want[:S], atol=1e-5)
    np.testing.assert_allclose(got, want[S:], atol=1e-5)
    for i, block in enumerate(lay.blocks):  # the figure came back: the repeat blocks are used
        if isinstance(block, RepeatsBlock):
            assert (want[:, lay.lstm_columns(i).stop - 1] > 0).mean() > 0.5


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

    config = ModelConfig(duration_classes=CLASSES, key_recency=False, repeats=kind == "exact",
                         repeats_transposed=kind == "transposed", loudness=False)
    split = SplitData(dataset, "valid", config.vocab)
    a, b = split.segments[0]
    states = dataset.states(dataset.segments("valid")[0])
    chunk = Chunk(a + 100, 50)  # inside the segment: its history is the segment before it
    x, _ = split.batch([chunk], np.array([3]), **config.input_blocks)
    lay = config.layout
    assert [b.name for b in lay.blocks] == ["base", f"repeats {kind}"]
    want = lay.sequence_rows(states.keys, states.onsets, states.beats)[100:150]
    got = x[0].numpy()
    np.testing.assert_array_equal(got[:, lay.lstm_columns(1)], want[:, lay.lstm_columns(1)])
    rk = want[:, lay.note_columns(1)].reshape(50, 2, 88)
    shifted = np.zeros_like(rk)
    shifted[..., 3:] = rk[..., :-3]  # the chunk is transposed up 3 semitones (nothing reaches the top here)
    assert rk[..., -3:].sum() == 0
    np.testing.assert_array_equal(got[:, lay.note_columns(1)].reshape(50, 2, 88), shifted)
    assert (want[:, lay.lstm_columns(1).stop - 1] > 0).mean() > 0.1  # the valid piece repeats itself


def test_the_block_registry_is_the_single_source():
    """Every width and every column the model reads comes from the blocks of
    chopinbot.dataset.inputs, in the order shipped weights depend on."""
    c = ModelConfig(duration_classes=CLASSES, loudness=False)  # every block on but loudness (checked below)
    V, lay = len(CLASSES), c.layout
    assert [b.name for b in c.blocks] == ["base", "recency", "repeats exact", "repeats transposed"]
    assert {b.flag for b in OPTIONAL_BLOCKS} <= {f for f, v in c.to_dict().items() if isinstance(v, bool)}
    assert sum(b.lstm_width + b.note_width for b in c.blocks) == c.input_dim == lay.width
    assert sum(b.lstm_width for b in c.blocks) == c.lstm_input_dim == 3 * 88 + (V + 1) + 22 + 2 * (V + 2)
    # LSTM part: base | per repeat kind (duration V+1, match length); then recency | per kind (keys, onsets)
    base = 3 * 88 + V + 1 + 22
    assert [lay.lstm_columns(i) for i in range(4)] == [slice(0, base), slice(base, base), slice(base, base + V + 2),
                                                     slice(base + V + 2, base + 2 * V + 4)]
    lstm = base + 2 * V + 4
    assert [lay.note_columns(i) for i in range(4)] == [slice(lstm, lstm), slice(lstm, lstm + 176),
                                                     slice(lstm + 176, lstm + 352), slice(lstm + 352, lstm + 528)]
    # per key: age, (since struck, interval), per kind (key, onset, match length)
    k = np.arange(88)
    want = [176 + k, lstm + k, lstm + 88 + k]
    for i in range(2):
        want += [lstm + 176 * (i + 1) + k, lstm + 176 * (i + 1) + 88 + k, np.full(88, base + (V + 2) * i + V + 1)]
    np.testing.assert_array_equal(lay.key_index(), np.stack(want, 1))
    assert c.per_key_inputs == 9
    assert lay.duration_terms() == [(base, base + V, None), (base, base + V, base + V + 1),
                                    (base + V + 2, base + 2 * V + 2, None),
                                    (base + V + 2, base + 2 * V + 2, base + 2 * V + 3)]
    # a block only the note head reads is off without it, and off in configs saved before it
    assert [b.name for b in ModelConfig(duration_classes=CLASSES, note_head=False, loudness=False).blocks] == ["base"]
    assert [b.name for b in ModelConfig.from_dict({"duration_classes": CLASSES}).blocks] == ["base"]
    assert ChopinLSTM(c).lstm.input_size == c.lstm_input_dim
    # the loudness block: one LSTM column, after the repeats' (the LSTM reads it: on without the note head too)
    loud = ModelConfig(duration_classes=CLASSES, loudness=True)
    assert [b.name for b in loud.blocks][-1] == "loudness" and loud.lstm_input_dim == c.lstm_input_dim + 1
    assert loud.layout.lstm_columns(4) == slice(lstm, lstm + 1) and loud.input_dim == c.input_dim + 1
    assert loud.per_key_inputs == c.per_key_inputs and len(loud.layout.duration_terms()) == 4
    assert [b.name for b in ModelConfig(duration_classes=CLASSES, note_head=False, loudness=True).blocks] == [
        "base", "loudness"]


def test_note_head_gather_equals_unfold():
    """The note head's constant-index gather reads what ``unfold`` of the padded keys and onsets read."""
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES))
    x = torch.from_numpy(_inputs(m.config, B=2, T=5))
    got = torch.nn.functional.pad(x, (0, 1))[..., m.note_index]
    w = 2 * 12 + 1
    kon = torch.nn.functional.pad(x[..., : 2 * 88].reshape(10, 2, 88), (12, 12))
    local = kon.unfold(2, w, 1).permute(0, 2, 1, 3).reshape(2, 5, 88, 2 * w)
    key_feats = x[..., m.config.layout.key_index()]
    assert torch.equal(got, torch.cat([local, key_feats], -1))


def test_training_batches_equal_the_composing_inputs(dataset):
    """With every block on, a training batch's rows are the rows the generator
    builds from the same states (seed rows, then one state at a time)."""
    from chopinbot.dataset.batches import Chunk, SplitData

    states = dataset.states(dataset.segments("valid")[0])
    n, S = 60, 20  # the batch's history (AGE_LOOKBACK = 32) reaches back to the segment's start
    values = np.unique(states.beats[:n])
    config = ModelConfig(hidden=16, duration_classes=values.astype(np.float64).tolist(),  # every length a class
                         loudness=True)
    assert len(config.blocks) == 5
    split = SplitData(dataset, "valid", config.vocab)
    a, _ = split.segments[0]
    x, t = split.batch([Chunk(a, S), Chunk(a + S, n - S)], **config.input_blocks)
    build = InputBuilder(ChopinLSTM(config), states.keys[None, :S], states.onsets[None, :S], states.beats[None, :S],
                         velocity=states.velocity[None, :S])
    cls = config.vocab.index(states.beats)
    got = np.stack([build(states.keys[None, i], states.onsets[None, i], cls[i : i + 1], states.velocity[i : i + 1])[0]
                    for i in range(S, n)])
    assert x.shape[-1] == config.input_dim
    assert (x[..., config.layout.lstm_columns(4)] > 0).float().mean() > 0.5  # the corpus has dynamics
    np.testing.assert_array_equal(t.vel_class[1].numpy(), velocity_class(states.velocity[S + 1 : n + 1]))
    np.testing.assert_allclose(build.seed_inputs[0], x[0, :S].numpy(), atol=1e-5)
    np.testing.assert_allclose(got, x[1].numpy(), atol=1e-5)


def test_engines_give_the_same_music(tiny_model_dir):
    from chopinbot.model.formats import load_model

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
    from chopinbot.model.formats import load_model, quantize_int8

    q = quantize_int8(load_model(tiny_model_dir))
    assert isinstance(stepper_for(q), ModuleStepper)
    with pytest.raises(ConfigError, match="float models"):
        stepper_for(q, "numpy")
    assert len(generate(q, seed_from_test(0), GenerateConfig(steps=20, random_seed=0)).generated) == 20


def test_duration_filters_and_polyphony_bounds():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    top2 = filter_logits(logits, 2, 1.0)[0]
    assert np.isinf(top2[2:]).all() and np.isfinite(top2[:2]).all()
    kept = np.isfinite(filter_logits(logits, 0, 0.7)[0])  # 0.5 + 0.3 reach 0.7: the rest goes
    assert kept.tolist() == [True, True, False, False]
    np.testing.assert_allclose(softmax(filter_logits(logits, 0, 0.7))[0, :2], [0.625, 0.375])
    probs = np.linspace(0.01, 0.88, 88)[None]
    many = np.ones((1, 88), bool)
    assert bound_polyphony(many, probs, 0, 10).sum() == 10
    assert bound_polyphony(many, probs, 0, 10)[0, -10:].all()  # the likeliest ten stay
    assert bound_polyphony(np.zeros((1, 88), bool), probs, 3, 10)[0, -3:].all()


def test_key_recency_by_hand():
    keys = np.zeros((1, 6, 88), bool)
    keys[0, 0, 40] = keys[0, 3, 40] = True  # struck at beats 0 and 3, one beat each
    rec = key_recency(keys, keys.copy(), np.ones((1, 6)))
    assert rec[0, :, 0, 40].tolist() == [1, 2, 3, 1, 2, 3]  # beats since struck, at each state's end
    assert rec[0, :, 1, 40].tolist() == [16, 16, 16, 3, 3, 3]  # the previous interval (unknown = the cap)
    assert (rec[0, :, :, 41] == 16).all()  # never struck
