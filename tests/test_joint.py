"""The joint key decoder (ModelConfig.joint_keys) and the loudness head (ModelConfig.loudness)."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
import torch

from chopinbot.cli import main
from chopinbot.cli.train import add_arguments, config_from_args
from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.sampling import Sampler
from chopinbot.compose.seeds import seed_from_test
from chopinbot.compose.stepper import ModuleStepper, NumpyStepper, joint_features_np, stepper_for
from chopinbot.compress.export import export_model, verify_export
from chopinbot.constants import N_KEYS
from chopinbot.dataset.features import LOUDNESS_BINS, class_velocity, velocity_class
from chopinbot.errors import ConfigError
from chopinbot.model.formats import load_model, quantize_int8, save_compressed
from chopinbot.model.loss import Targets, maestro_loss
from chopinbot.model.network import ChopinLSTM, ModelConfig, joint_features

CLASSES = [0.25, 0.5, 1.0]


def _model(**kw) -> ChopinLSTM:
    torch.manual_seed(0)
    m = ChopinLSTM(ModelConfig(hidden=32, duration_classes=CLASSES, joint_keys=True, **kw))
    with torch.no_grad():  # the note head's output layer starts at 0: make it speak
        m.note_mlp[2].weight.normal_(0, 0.5)
    return m.eval()


def _given(rng, shape) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.from_numpy((rng.random(shape) < 0.2).astype(np.float32))
    return keys, keys * torch.from_numpy((rng.random(shape) < 0.5).astype(np.float32))


def test_key_k_ignores_keys_at_or_above_k():
    m = _model()
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((2, 3, m.config.input_dim), dtype=np.float32))
    keys, ons = _given(rng, (2, 3, N_KEYS))
    with torch.no_grad():
        base = m(x, None, (keys, ons))[0]
        for k in (0, 5, 40, 87):
            k2, o2 = keys.clone(), ons.clone()
            k2[..., k:] = torch.from_numpy((rng.random((2, 3, N_KEYS - k)) < 0.5).astype(np.float32))
            o2[..., k:] = k2[..., k:]
            out = m(x, None, (k2, o2))[0]
            assert torch.allclose(out.key_logits[..., : k + 1], base.key_logits[..., : k + 1], atol=1e-6)
            assert torch.allclose(out.onset_logits[..., : k + 1], base.onset_logits[..., : k + 1], atol=1e-6)
        k2 = keys.clone()  # ... and does read the keys below it
        k2[..., 30] = 1 - k2[..., 30]
        assert not torch.allclose(m(x, None, (k2, ons))[0].key_logits[..., 31:43], base.key_logits[..., 31:43])


def test_joint_features_values():
    keys = torch.zeros(N_KEYS)
    keys[[10, 20]] = 1
    f = joint_features(keys, keys * 0).numpy()
    assert f[10, -1] == 1 and f[11, -1] == 0  # none below key 10; key 10 below key 11
    assert f[11, 11] == 1  # window slot 11 = key k-1
    assert np.isclose(f[25, 24], 2 / 8) and np.isclose(f[25, 25], 5 / 24) and np.isclose(f[25, 26], 15 / 48)


@pytest.mark.parametrize("stepper", [NumpyStepper, ModuleStepper])
def test_steppers_conditionals_match_the_forward(stepper):
    """NumPy (and the model's own forward through ModuleStepper) give the forward's conditionals and loudness."""
    m = _model(loudness=True)
    rng = np.random.default_rng(1)
    x = rng.random((2, 4, m.config.input_dim), dtype=np.float32)
    keys, ons = (a.numpy() for a in _given(rng, (2, N_KEYS)))
    np.testing.assert_allclose(joint_features_np(keys, ons), joint_features(torch.from_numpy(keys),
                                                                            torch.from_numpy(ons)).numpy())
    given = (torch.zeros(2, 4, N_KEYS), torch.zeros(2, 4, N_KEYS))
    given[0][:, -1], given[1][:, -1] = torch.from_numpy(keys), torch.from_numpy(ons)
    with torch.no_grad():
        ref = m(torch.from_numpy(x), None, given)[0]
        nothing = m(torch.from_numpy(x))[0]
        st = stepper(m)
        kl0, ol0, dur = st.start(x)
        kl, ol = st.conditionals(keys, ons)
        kl1, _ = st.conditionals(keys[1:], ons[1:], np.array([1]))
    np.testing.assert_allclose(kl0, nothing.key_logits[:, -1].numpy(), atol=1e-4)  # given nothing below
    np.testing.assert_allclose(ol0, nothing.onset_logits[:, -1].numpy(), atol=1e-4)
    np.testing.assert_allclose(kl, ref.key_logits[:, -1].numpy(), atol=1e-4)
    np.testing.assert_allclose(ol, ref.onset_logits[:, -1].numpy(), atol=1e-4)
    np.testing.assert_allclose(kl1, kl[1:], atol=1e-5)
    np.testing.assert_allclose(st.loudness, ref.loudness[:, -1].numpy(), atol=1e-4)
    np.testing.assert_allclose(dur, ref.duration[:, -1].numpy(), atol=1e-4)


def test_joint_draw_is_exact():
    """The first-key-that-turns-on scheme draws from the product of the conditionals."""
    live = [10, 11, 12]

    def logits(keys):  # key 11 likes key 10 below it; key 12 dislikes any key below
        kl = np.full(keys.shape, -30.0, np.float32)
        kl[:, 10] = 0.0
        kl[:, 11] = -1.0 + 2.5 * keys[:, 10]
        kl[:, 12] = 0.5 - 2.0 * keys[:, 10:12].sum(-1)
        return kl

    class Fake:
        def conditionals(self, keys, onsets, rows=slice(None)):
            return logits(keys), None

    B = 40000
    cfg = GenerateConfig(key_top_k=0, key_local_p=0.0, min_keys=0, max_keys=10)  # no truncation: the exact draw
    s = Sampler(_model(), cfg, np.random.default_rng(0), Fake())
    kp = 1 / (1 + np.exp(-logits(np.zeros((B, N_KEYS), np.float32))))
    keys, onsets = s._draw_joint(kp, None, np.zeros((B, N_KEYS), bool))
    assert not keys[:, [k for k in range(N_KEYS) if k not in live]].any() and (onsets == keys).all()
    for bits in itertools.product([0, 1], repeat=3):
        k = np.zeros((1, N_KEYS), np.float32)
        p = 1.0
        for key, b in zip(live, bits):
            q = 1 / (1 + np.exp(-logits(k)[0, key]))
            p *= q if b else 1 - q
            k[0, key] = b
        freq = (keys[:, live] == np.array(bits, bool)).all(1).mean()
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / B) + 1e-3, (bits, freq, p)
    assert s.evaluations <= 4  # keys on + 1 evaluations: at most 3 keys turn on


def test_key_nll_is_the_sum_of_the_conditionals():
    """Teacher forcing gives each key's conditional given the target's keys below: its key NLL is the
    joint NLL of the state's keys, as the chain of conditionals (evaluated as the sampler does) gives it."""
    m = _model()
    rng = np.random.default_rng(2)
    x = rng.random((1, 3, m.config.input_dim), dtype=np.float32)
    keys, ons = _given(rng, (1, 3, N_KEYS))
    t = Targets(keys, ons, torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3), torch.ones(1, 3))
    with torch.no_grad():
        out = m(torch.from_numpy(x), None, (keys, ons))[0]
        nll = maestro_loss(out.key_logits, out.onset_logits, torch.ones(1, 3), t)["key_nll"].item()
        chain = 0.0
        for step in range(3):
            st = NumpyStepper(m)
            st.start(x[:, : step + 1])
            k = keys[0, step].numpy()
            decided = np.zeros((1, N_KEYS), np.float32)
            for key in range(N_KEYS):  # key by key, given the keys below decided as in the target
                p = 1 / (1 + np.exp(-st.conditionals(decided, decided * ons[0, step].numpy())[0][0, key]))
                chain -= np.log(p if k[key] else 1 - p)
                decided[0, key] = k[key]
    assert nll == pytest.approx(chain / 3, rel=1e-4)


def test_velocity_classes_round_trip_and_the_loss_leaves_out_unstruck_states():
    centres = class_velocity(np.arange(LOUDNESS_BINS))
    assert (velocity_class(centres) == np.arange(LOUDNESS_BINS)).all()
    assert velocity_class(np.array([0, 1, 127])).tolist() == [-1, 0, LOUDNESS_BINS - 1]
    logits = torch.zeros(1, 2, LOUDNESS_BINS)
    logits[0, 1, 3] = 50.0  # sure of class 3 where nothing is struck: must not count
    z = torch.zeros(1, 2, N_KEYS)
    t = Targets(z, z, torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2), torch.ones(1, 2),
                torch.tensor([[5, -1]]))
    out = maestro_loss(z, None, torch.ones(1, 2), t, loudness_logits=logits)
    assert out["vel_ce"].item() == pytest.approx(np.log(LOUDNESS_BINS), rel=1e-5)


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_generate_joint_loudness(engine):
    m = _model(loudness=True)
    cfg = GenerateConfig(steps=40, random_seed=0, key_top_k=0, key_min_p=0.05, include_seed=False, retry=False)
    g = generate(m, seed_from_test(0), cfg, engine=engine).generated
    struck = g.onsets.any(1)
    assert (g.velocity[~struck] == 0).all() and (g.velocity[struck] > 0).all()
    assert set(g.velocity[struck].tolist()) <= set(class_velocity(np.arange(LOUDNESS_BINS)).tolist())
    assert (g.keys.sum(1) <= cfg.max_keys).all() and (g.keys.sum(1) >= cfg.min_keys).all()
    batch = generate(m, seed_from_test(0), cfg, batch=3, engine=engine)
    assert len(batch) == 3 and all(len(r.generated) == 40 for r in batch)
    threshold = generate(m, seed_from_test(0), GenerateConfig(steps=10, threshold=0.3, retry=False), engine=engine)
    assert len(threshold.generated) == 10


def test_joint_models_store_compress_and_refuse_export(tmp_path):
    m = _model(loudness=True)
    m.meta = {}
    seed = seed_from_test(0, 8)
    cfg = GenerateConfig(steps=12, random_seed=0, retry=False)
    for values in ("fp16", "int8"):  # stored forms keep the PyTorch forward: they run the joint sampler
        loaded = load_model(save_compressed(tmp_path / values, m, values=values, sparse=values == "int8"))
        assert loaded.config.joint_keys and loaded.config.loudness
        assert len(generate(loaded, seed, cfg).generated) == 12
    q = quantize_int8(m)
    assert isinstance(stepper_for(q), ModuleStepper) and verify_export(m, q) < 0.1
    assert len(generate(q, seed, cfg).generated) == 12
    for fmt in ("onnx", "torchscript"):
        with pytest.raises(ConfigError, match="joint_keys"):
            export_model(m, fmt, tmp_path / fmt)
    assert not (tmp_path / "onnx").exists()


def test_a_loudness_model_exports_its_loudness_head(tmp_path):
    torch.manual_seed(0)
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES, loudness=True, joint_keys=False)).eval()
    m.meta = {}
    info = export_model(m, "torchscript", tmp_path / "t")  # compares every output, loudness too
    loaded = load_model(tmp_path / "t")
    assert info["max_abs_diff"] < 1e-4 and "loudness" in loaded.meta["io"]["outputs"]
    g = generate(loaded, seed_from_test(0, 8), GenerateConfig(steps=12, random_seed=0, retry=False)).generated
    assert (g.velocity[g.onsets.any(1)] > 0).all()


def test_train_flags(tmp_path):
    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args([]))
    assert cfg.model.joint_keys and cfg.model.loudness  # the default since 2026-12-01
    cfg = config_from_args(p.parse_args(["--joint-keys", "off", "--loudness", "off"]))
    assert not cfg.model.joint_keys and not cfg.model.loudness
    assert main(["train", "--joint-keys", "on", "--note-head", "off", "--out", str(tmp_path / "r")]) == 2
    assert not ModelConfig(duration_classes=CLASSES, joint_keys=True, note_head=False).joint_keys
    assert not ModelConfig.from_dict({"duration_classes": CLASSES}).joint_keys  # configs saved before it
