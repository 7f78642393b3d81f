"""The Transformer backbone: its cache computes exactly its forward, attention stops at its span,
and a Transformer model trains, saves, loads and composes through the same code as the LSTM."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.conftest import tiny_train_config

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.seeds import seed_from_test
from chopinbot.compose.stepper import NumpyStepper, stepper_for
from chopinbot.errors import ConfigError
from chopinbot.model import transformer
from chopinbot.model.network import ChopinLSTM, ModelConfig
from chopinbot.model.transformer import CausalTransformer

CLASSES = [1 / 12, 0.125, 0.25, 1 / 3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]
pytestmark = pytest.mark.usefixtures("one_thread")


def _backbone(span: int = 8) -> CausalTransformer:
    torch.manual_seed(0)
    return CausalTransformer(20, 32, 2, 4, span=span, dropout=0.0).eval()


def test_the_cache_computes_the_forward_state_by_state():
    m = _backbone()
    x = torch.randn(2, 30, 20)
    with torch.inference_mode():
        whole, _ = m(x)
        parts, cache = m(x[:, :5])
        outs = [parts]
        for t in range(5, 30):
            out, cache = m(x[:, t : t + 1], cache)
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), whole, atol=2e-6, rtol=0)
    assert cache[0].shape == (2, 2, 4, 7, 8)  # layers, batch, heads, span - 1 states kept, head width


def test_attention_stops_at_the_span_and_query_blocks_change_nothing(monkeypatch):
    m = _backbone(span=8)
    x = torch.randn(1, 40, 20)
    y = x.clone()
    y[:, :20] = torch.randn(1, 20, 20)  # states 0..19 changed: from state 19 + 2 x 8 on, nothing can tell
    with torch.inference_mode():
        a, b = m(x)[0], m(y)[0]
        assert not torch.allclose(a[:, 20], b[:, 20])  # within reach of the change
        torch.testing.assert_close(a[:, 36:], b[:, 36:])  # 2 layers x 7 states back each: out of reach
        monkeypatch.setattr(transformer, "QUERY_BLOCK", 7)  # a long piece is attended in blocks
        torch.testing.assert_close(m(x)[0], a, atol=2e-6, rtol=0)


def test_numpy_stepper_steps_a_transformer_model_as_its_forward():
    torch.manual_seed(0)
    m = ChopinLSTM(ModelConfig(model_type="transformer", hidden=32, heads=4, span=6, dropout=0.0,
                               duration_classes=CLASSES)).eval()
    for p in m.parameters():  # every weight matters (some start at zero)
        p.data += 0.1 * torch.randn_like(p)
    rng = np.random.default_rng(0)
    x = rng.random((2, 14, m.config.input_dim)).astype(np.float32)
    x[..., : 2 * 88] = rng.random((2, 14, 2 * 88)) < 0.06
    with torch.inference_mode():
        ref, _ = m(torch.from_numpy(x))
    st = NumpyStepper(m)
    outs = [st.start(x[:, :4])] + [st.step(x[:, t]) for t in range(4, 14)]
    for i, (keys, _, dur) in enumerate(outs):
        np.testing.assert_allclose(keys, ref.key_logits[:, 3 + i].numpy(), atol=3e-5)
        np.testing.assert_allclose(dur, ref.duration[:, 3 + i].numpy(), atol=3e-5)


def test_config_refuses_a_transformer_it_cannot_build():
    with pytest.raises(ConfigError, match="heads"):
        ModelConfig(model_type="transformer", hidden=30, heads=4, duration_classes=CLASSES)
    with pytest.raises(ConfigError, match="span"):
        ModelConfig(model_type="transformer", span=1, duration_classes=CLASSES)
    with pytest.raises(ConfigError, match="model_type"):
        ModelConfig(model_type="gru", duration_classes=CLASSES)


def test_a_transformer_trains_saves_loads_and_composes(tiny_dataset_dir, tmp_path):
    from chopinbot.model.formats import load_model
    from chopinbot.training.train import train

    cfg = tiny_train_config(tiny_dataset_dir, tmp_path, epochs=2)
    cfg = replace(cfg, model=replace(cfg.model, model_type="transformer", layers=2, hidden=16, heads=2, span=32))
    train(cfg)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header, last = rows[0].split(","), rows[-1].split(",")
    nll = [float(r.split(",")[header.index("valid_key_nll")]) for r in rows[1:]]
    assert nll[-1] < nll[0]  # it learnt something: below the initial weights' held-out NLL
    model = load_model(tmp_path)
    assert model.config.model_type == "transformer" and last[0] == "2"
    assert isinstance(stepper_for(model), NumpyStepper)
    seed = seed_from_test(0)
    gc = GenerateConfig(steps=60, random_seed=3)
    a = generate(model, seed, gc, engine="numpy")
    b = generate(model, seed, gc, engine="torch")
    assert len(a.generated) == 60
    assert np.array_equal(a.states.keys, b.states.keys) and np.array_equal(a.states.beats, b.states.beats)


def test_a_transformer_fine_tunes_on_music_with_a_new_style():
    """Fine-tuning maps the backbone's first layer's input columns by block, a Transformer's as an LSTM's:
    a style the model does not know gets new columns (starting at 0), every other weight is kept."""
    from chopinbot.training.finetune import copy_weights, fine_tune_config

    cfg = ModelConfig(model_type="transformer", hidden=16, heads=2, span=16, duration_classes=CLASSES,
                      style_input=True, styles=["chopin"], default_style="chopin")
    torch.manual_seed(0)
    source = ChopinLSTM(cfg)
    target = ChopinLSTM(fine_tune_config(cfg, ["schubert"]))
    copy_weights(target, source)
    w_old, w_new = source.transformer.inp.weight, target.transformer.inp.weight
    assert w_new.shape[1] == w_old.shape[1] + 1  # one style column more
    layout = target.config.layout
    style = [b.name for b in layout.blocks].index("style")
    cols = layout.lstm_columns(style)
    assert (w_new[:, cols.start + 1] == 0).all() and torch.equal(w_new[:, cols.start], w_old[:, cols.start])
    torch.testing.assert_close(target.transformer.blocks[0].qkv.weight, source.transformer.blocks[0].qkv.weight)


def test_a_transformer_exports_as_fp16_and_int8_and_refuses_onnx(tmp_path):
    from chopinbot.compress.export import export_model
    from chopinbot.model.formats import load_model

    torch.manual_seed(0)
    m = ChopinLSTM(ModelConfig(model_type="transformer", hidden=16, heads=2, span=8, duration_classes=CLASSES)).eval()
    m.meta = {"dataset_settings": {}}
    info = export_model(m, "fp16", tmp_path / "fp16")
    assert info["max_abs_diff"] < 0.01  # verified from an empty cache, then state by state
    assert load_model(tmp_path / "fp16").config.model_type == "transformer"
    assert export_model(m, "int8", tmp_path / "int8")["max_abs_diff"] < 0.1
    with pytest.raises(ConfigError, match="LSTM backbone"):
        export_model(m, "onnx", tmp_path / "onnx")
