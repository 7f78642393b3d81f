"""The model's shape and config, and checkpoints that trust nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from chopinbot.errors import ConfigError, ModelFileError
from chopinbot.model.checkpoint import save_model
from chopinbot.model.formats import load_model
from chopinbot.model.network import ChopinLSTM, ModelConfig

CLASSES = [0.25, 0.5, 1.0]


@pytest.mark.parametrize("head, n_dur", [("classes", 3), ("seed", 20)])
def test_outputs_are_logits_of_the_right_shape(head, n_dur):
    m = ChopinLSTM(ModelConfig(layers=2, hidden=32, duration_head=head, duration_classes=CLASSES))
    x = torch.randn(4, 7, m.config.input_dim)
    out, (h, c) = m(x)
    assert out.key_logits.shape == (4, 7, 88) and out.onset_logits.shape == (4, 7, 88)
    assert out.duration.shape == (4, 7, n_dur) and h.shape == (2, 4, 32)
    d = m.expected_duration(out.duration)
    assert d.shape == (4, 7) and (d > 0).all()


def test_seed_head_normalises_every_node():
    m = ChopinLSTM(ModelConfig(duration_head="seed", dur_nodes=20, max_duration=8.0, duration_classes=CLASSES))
    # all 20 nodes at logit 0 -> each predicts 0.5 * max -> mean 4 beats (not 1/20 of it)
    assert m.expected_duration(torch.zeros(1, 1, 20)).item() == pytest.approx(4.0)


def test_incremental_equals_whole_sequence():
    m = ChopinLSTM(ModelConfig(hidden=24, duration_classes=CLASSES)).eval()
    x = torch.randn(1, 10, m.config.input_dim)
    whole, _ = m(x)
    state, steps = None, []
    for t in range(10):
        o, state = m(x[:, t : t + 1], state)
        steps.append(o.key_logits)
    torch.testing.assert_close(torch.cat(steps, 1), whole.key_logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bad", [dict(hidden=10**7), dict(layers=0), dict(dropout=1.5), dict(duration_head="x"), dict(duration_classes=[])]
)
def test_absurd_configs_are_refused(bad):
    with pytest.raises(ConfigError):
        ModelConfig(**{"duration_classes": CLASSES, **bad})


def test_save_load_roundtrip_and_fp16(tmp_path):
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES)).eval()
    save_model(tmp_path / "a", m, {"note": "x"})
    save_model(tmp_path / "b", m, dtype=torch.float16)
    x = torch.randn(2, 5, m.config.input_dim)
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    torch.testing.assert_close(a(x)[0].key_logits, m(x)[0].key_logits)
    torch.testing.assert_close(b(x)[0].key_logits, m(x)[0].key_logits, atol=2e-2, rtol=1e-2)
    size = {name: (tmp_path / name / "model.safetensors").stat().st_size for name in "ab"}
    assert size["b"] < size["a"] * 0.6
    assert a.meta["note"] == "x" and not list(tmp_path.glob(".*"))  # no temp folders left


def _crafted(tmp_path, edit_config=None, tensors=None):
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES))
    d = tmp_path / "crafted"
    save_model(d, m)
    cfg = json.loads((d / "config.json").read_text())
    if edit_config:
        edit_config(cfg)
        cfg.pop("weights_sha256")
        (d / "config.json").write_text(json.dumps(cfg))
    if tensors is not None:
        save_file(tensors, str(d / "model.safetensors"))
        cfg = json.loads((d / "config.json").read_text())
        cfg.pop("weights_sha256", None)
        (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_crafted_files_are_refused_with_clear_errors(tmp_path):
    with pytest.raises(ModelFileError, match="unknown model config fields: evil"):
        load_model(_crafted(tmp_path, lambda c: c["model"].update(evil="__import__('os')")))
    shutil.rmtree(tmp_path / "crafted")
    with pytest.raises(ModelFileError, match="hidden must be"):
        load_model(_crafted(tmp_path, lambda c: c["model"].update(hidden=10**9)))
    shutil.rmtree(tmp_path / "crafted")
    with pytest.raises(ModelFileError, match="shape|do not match"):
        load_model(_crafted(tmp_path, tensors={"lstm.weight_ih_l0": torch.zeros(3, 3)}))
    shutil.rmtree(tmp_path / "crafted")
    d = _crafted(tmp_path)
    (d / "model.safetensors").write_bytes(b"\x80\x04pickle? no")
    with pytest.raises(ModelFileError, match="sha256|safetensors"):
        load_model(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(d)
    with pytest.raises(ModelFileError, match="no such model folder"):
        load_model(tmp_path / "missing")


def test_joint_loudness_model_round_trips(tmp_path):
    """The new flags are saved and read back; configs saved before them load with both off."""
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=CLASSES, joint_keys=True, loudness=True)).eval()
    save_model(tmp_path / "j", m)
    a = load_model(tmp_path / "j")
    assert a.config.joint_keys and a.config.loudness and a.config == m.config
    x = torch.randn(2, 5, m.config.input_dim)
    given = (torch.zeros(2, 5, 88), torch.zeros(2, 5, 88))
    given[0][..., 40] = 1
    out = a(x, None, given)[0]
    assert out.loudness.shape == (2, 5, 12)
    torch.testing.assert_close(out.key_logits, m(x, None, given)[0].key_logits)
    old = {k: v for k, v in m.config.to_dict().items() if k not in ("joint_keys", "loudness")}
    assert not ModelConfig.from_dict(old).joint_keys and not ModelConfig.from_dict(old).loudness
    with pytest.raises(ConfigError, match="joint_keys"):
        ModelConfig(duration_classes=CLASSES, joint_keys="yes")
