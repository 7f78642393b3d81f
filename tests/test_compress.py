"""Pruning (chopinbot.compress.prune), int8/fp16/sparse storage (chopinbot.model.formats)
and ONNX/TorchScript export (chopinbot.compress.export)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compress.export import EXPORT_TOLERANCE, export_model, verify_export
from chopinbot.compress.prune import (
    FinetuneSettings,
    finetune_config,
    make_permanent,
    polynomial_sparsity,
    prune_model,
    prune_schedule,
)
from chopinbot.errors import ModelFileError
from chopinbot.model.checkpoint import load_checkpoint
from chopinbot.model.formats import (
    ExportedModel,
    dense_state_dict,
    fp32_bytes,
    load_model,
    plain_copy,
    quantize_rows,
    save_compressed,
    sparsity_of,
    weights_bytes,
)
from chopinbot.model.network import ChopinLSTM, ModelConfig
from chopinbot.training.train import TrainConfig
from conftest import tiny_train_config

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir, tmp_path_factory):
    """A tiny model of the one-step kind (no joint keys): every format, ONNX and TorchScript included,
    can hold it.  The default (joint) configuration's pruning and study are tested below."""
    from chopinbot.training.train import train

    out = tmp_path_factory.mktemp("tiny_one_step")
    cfg = tiny_train_config(tiny_dataset_dir, out, epochs=2)
    cfg.model = ModelConfig(**{**cfg.model.to_dict(), "joint_keys": False})
    train(cfg)
    return load_model(out)


@pytest.fixture(scope="module")
def seed():
    from chopinbot.compose.seeds import seed_from_test

    return seed_from_test(0, 8)


def _generates(model, seed):
    res = generate(model, seed, GenerateConfig(steps=12, random_seed=0, retry=False))
    assert len(res.generated) == 12
    return res


def _weights_equal(a: ChopinLSTM, b: ChopinLSTM, atol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=atol, rtol=1e-3 if atol else 0.0), k


def test_prune_is_global_permanent_and_accumulates(tiny):
    m = plain_copy(tiny)
    prune_model(m, 0.5)
    assert abs(sparsity_of(m) - 0.5) < 0.01
    assert hasattr(m.lstm, "weight_ih_l0_orig")  # still a trainable reparametrization
    prune_model(m, 0.8)  # masks accumulate
    assert abs(sparsity_of(m) - 0.8) < 0.01
    x = (torch.rand(2, 5, m.config.input_dim) < 0.1).float()
    with torch.no_grad():
        before = m(x)[0].key_logits
        make_permanent(m)
        after = m(x)[0].key_logits
    assert not any(n.endswith("_orig") for n, _ in m.named_parameters())
    assert torch.equal(before, after)
    assert abs(sparsity_of(m) - 0.8) < 0.01


@pytest.mark.parametrize("values,atol", [("fp32", 0.0), ("fp16", 2e-3), ("int8", None)])
def test_pruned_model_round_trips_shrinks_and_generates(tiny, seed, tmp_path, values, atol):
    pruned = make_permanent(prune_model(plain_copy(tiny), 0.7))
    folder = save_compressed(tmp_path / "m", pruned, values=values)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "sparse" and cfg["storage"]["layout"] == "bitmask" and cfg["storage"]["values"] == values
    assert weights_bytes(folder) < fp32_bytes(tiny) * (0.45 if values == "fp32" else 0.3)
    back = load_model(folder, runtime="float")
    assert isinstance(back, ChopinLSTM) and not back.training and back.meta["format"] == "sparse"
    if atol is not None:
        _weights_equal(pruned, back, atol)
    else:  # int8: within half a quantization step of each row, zeros stay zero
        for k, w in dense_state_dict(pruned).items():
            b = back.state_dict()[k]
            if w.dim() == 2:
                step = w.abs().amax(1, keepdim=True) / 127
                assert ((w - b).abs() <= step / 2 + 1e-7).all(), k
                assert torch.equal(w == 0, b == 0) or ((b == 0) >= (w == 0)).all(), k
    assert abs(sparsity_of(back) - sparsity_of(pruned)) < (0.02 if values == "int8" else 1e-9)
    _generates(load_model(folder), seed)


def test_int8_export_quantizes_lstm_and_generates(tiny, seed, tmp_path):
    info = export_model(tiny, "int8", tmp_path / "q", sparse=False)
    assert info["ratio"] > 2.5  # tiny model: biases and the embedding weigh more than in a full one
    q = load_model(tmp_path / "q")
    assert type(q.lstm).__name__ == "LSTM" and "quantized" in type(q.lstm).__module__
    assert info["max_abs_diff"] < 0.05
    assert q.meta["format"] == "int8" and q.config == tiny.config
    _generates(q, seed)
    # the dynamic int8 runtime uses exactly the stored integers
    f = load_model(tmp_path / "q", runtime="float")
    stored, scale = quantize_rows(f.dense[0].weight if len(f.dense) else f.key_out.weight)
    assert torch.equal(quantize_rows(stored.float() * scale[:, None])[0], stored)


def test_fp16_export_is_a_plain_checkpoint(tiny, tmp_path):
    info = export_model(tiny, "fp16", tmp_path / "h", sparse=False)
    assert 1.9 < info["ratio"] < 2.1
    m = load_checkpoint(tmp_path / "h")  # the plain loader reads it without help
    _weights_equal(tiny, m, 2e-3)


@pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed (pip install 'chopinbot[export]')")
def test_onnx_export_matches_pytorch_and_generates(tiny, seed, tmp_path):
    info = export_model(tiny, "onnx", tmp_path / "o")
    assert info["max_abs_diff"] <= EXPORT_TOLERANCE
    m = load_model(tmp_path / "o")
    assert isinstance(m, ExportedModel) and (tmp_path / "o" / "model.onnx").exists()
    assert verify_export(tiny, m, steps=8, batch=3, seed=5) <= EXPORT_TOLERANCE
    a = _generates(m, seed)
    b = _generates(tiny, seed)
    assert (a.states.keys == b.states.keys).mean() > 0.99  # same sampler seed, near-identical probabilities


def test_torchscript_export_matches_pytorch(tiny, seed, tmp_path):
    info = export_model(tiny, "torchscript", tmp_path / "t")
    assert info["max_abs_diff"] <= EXPORT_TOLERANCE
    m = load_model(tmp_path / "t")
    assert verify_export(tiny, m, steps=8, batch=1, seed=3) <= EXPORT_TOLERANCE
    _generates(m, seed)


def test_untrusted_files_are_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    pruned = make_permanent(prune_model(plain_copy(tiny), 0.6))
    folder = save_compressed(tmp_path / "s", pruned, values="fp16")
    w = folder / "model.safetensors"
    tensors = load_file(str(w))
    tensors["key_out.weight::values"] = tensors["key_out.weight::values"][:-1]  # popcount no longer matches
    save_file(tensors, str(w))
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("weights_sha256")
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="key_out.weight::values"):
        load_model(folder)
    cfg["format"] = "pickle"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="unknown format"):
        load_model(folder)
    export_model(tiny, "torchscript", tmp_path / "t")
    with open(tmp_path / "t" / "model.pt", "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ModelFileError, match="sha256"):
        load_model(tmp_path / "t")


def test_prune_schedule_finetunes_and_keeps_the_best_epoch(tiny, tiny_dataset_dir):
    from chopinbot.dataset.store import Dataset

    ds = Dataset(tiny_dataset_dir)
    steps = list(prune_schedule(tiny, [0.5, 0.8], ds, FinetuneSettings(epochs=2, schedule="polynomial")))
    assert [s.target for s in steps] == [0.5, 0.8]
    for s in steps:
        assert abs(s.sparsity - s.target) < 0.01
        assert s.chosen_epoch in (1, 2) and len(s.epochs) == 2 and s.epochs[-1]["at_target"]
        assert isinstance(s.model.lstm, torch.nn.LSTM) and not hasattr(s.model.lstm, "weight_ih_l0_orig")
    assert not hasattr(tiny.lstm, "weight_ih_l0_orig") and sparsity_of(tiny) < 0.4  # the source is untouched
    assert polynomial_sparsity(0.5, 0.8, 0.0) == 0.5 and polynomial_sparsity(0.5, 0.8, 1.0) == 0.8


def test_finetuning_takes_the_training_runs_settings_else_trainconfigs(tiny):
    cfg = finetune_config(tiny, FinetuneSettings(lr=1e-3))
    assert cfg.batch == tiny.meta["train"]["batch"] and cfg.context == tiny.meta["train"]["context"]
    assert cfg.lr == 1e-3 and cfg.max_norm == 0.0 and cfg.schedule == "constant"
    bare = plain_copy(tiny)
    bare.meta = {}
    assert finetune_config(bare, FinetuneSettings()).batch == TrainConfig().batch


def test_the_plain_loader_refuses_other_formats_and_load_model_reads_them(tiny, tmp_path):
    folder = save_compressed(tmp_path / "q", tiny, values="int8", sparse=False)
    with pytest.raises(ModelFileError, match="not a plain checkpoint"):
        load_checkpoint(folder)
    assert load_model(folder).meta["format"] == "int8"


def test_prune_and_export_commands(tiny_model_dir, tiny_dataset_dir, tmp_path):
    from chopinbot.cli import main

    out = tmp_path / "prune"
    rc = main(["prune", "--model", str(tiny_model_dir), "--data", str(tiny_dataset_dir), "--sparsity", "0.8",
               "--finetune-epochs", "1", "--values", "int8", "--speed-steps", "4", "--control", "--out", str(out),
               "--quiet"])
    assert rc == 0
    table = (out / "table.md").read_text()
    assert "pruned 80%, int8" in table and "fp32 (source)" in table and "Batch-1 speed" in table
    assert (out / "quality_vs_size.png").exists()
    rows = (out / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 + 1 + 1  # header, formats (a joint model: no ONNX or TorchScript), pruned, control
    assert "fp32 fine-tuned (control)" in table
    q = load_model(out / "sparsity-0.80-int8")
    assert abs(q.meta["sparsity"] - 0.8) < 0.02
    rc = main(["export", "--model", str(tiny_model_dir), "--format", "int8", "--out", str(tmp_path / "e")])
    assert rc == 0 and (tmp_path / "e" / "config.json").exists()
    assert main(["export", "--model", str(tiny_model_dir), "--format", "int8", "--out", str(tmp_path / "e")]) == 2
    assert main(["prune", "--model", str(tiny_model_dir), "--sparsity", "0.8,0.5", "--out", str(out)]) == 2


def test_torchscript_export_of_a_recency_model(seed, tmp_path):
    import torch

    from chopinbot.model.network import ChopinLSTM, ModelConfig

    torch.manual_seed(0)
    m = ChopinLSTM(ModelConfig(hidden=16, key_recency=True, joint_keys=False,
                               duration_classes=[0.25, 0.5, 1.0, 2.0])).eval()
    m.meta = {}
    info = export_model(m, "torchscript", tmp_path / "t")  # checks the export's outputs against forward
    assert info["max_abs_diff"] <= EXPORT_TOLERANCE


def test_prune_schedule_finetunes_a_joint_loudness_model(tiny_dataset_dir, seed):
    """Fine-tuning goes through training's own step: teacher forcing and the loudness loss included."""
    from chopinbot.dataset.store import Dataset
    from chopinbot.model.network import ModelConfig

    torch.manual_seed(0)
    m = ChopinLSTM(ModelConfig(hidden=16, duration_classes=[0.25, 0.5, 1.0], joint_keys=True, loudness=True)).eval()
    m.meta = {}
    step = next(prune_schedule(m, [0.5], Dataset(tiny_dataset_dir), FinetuneSettings(epochs=1)))
    assert abs(step.sparsity - 0.5) < 0.01 and "valid_vel_ce" in step.epochs[0]
    _generates(step.model, seed)
