"""Training on real (tiny) data: one epoch, reproducibility, resume, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chopinbot.model.formats import load_model
from chopinbot.training.train import train
from conftest import tiny_train_config


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_one_epoch_writes_everything(tiny_model_dir):
    run = tiny_model_dir
    for name in ("metrics.csv", "grads.csv", "weights.csv", "train_config.json", "best/model.safetensors",
                 "best/config.json", "last/optimizer.safetensors", "last/resume.json", "model_card.json",
                 "model_card.md"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]  # 0: the valid figures before any update
    for key in ("train_total", "valid_total", "valid_bce", "valid_dur", "valid_f1", "valid_f1_best",
                "valid_precision", "valid_recall", "valid_dur_error", "valid_key_nll", "valid_dur_class_acc", "lr"):
        assert key in rows[0] and float(rows[-1][key]) == float(rows[-1][key])  # present and not NaN
    grads = list(csv.DictReader((run / "grads.csv").open()))
    assert {"overall", "lstm.weight_ih_l0"} <= {r["layer"] for r in grads}
    assert {"norm", "mean", "min", "max", "max_row_norm"} <= set(grads[0])
    m = load_model(run)
    assert m.meta["dataset_sha256"] and m.config.hidden == 16


def test_same_seed_same_bits(tiny_dataset_dir, tmp_path):
    a = train(tiny_train_config(tiny_dataset_dir, tmp_path / "a", epochs=1, seed=3))
    b = train(tiny_train_config(tiny_dataset_dir, tmp_path / "b", epochs=1, seed=3))
    wa, wb = _weights(tmp_path / "a" / "last"), _weights(tmp_path / "b" / "last")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history[-1]["valid_total"] == b.history[-1]["valid_total"]
    c = train(tiny_train_config(tiny_dataset_dir, tmp_path / "c", epochs=1, seed=4))
    assert c.history[-1]["valid_total"] != a.history[-1]["valid_total"]


def test_resume_continues_exactly(tiny_dataset_dir, tmp_path, monkeypatch):
    import chopinbot.training.train as train_mod

    straight = train(tiny_train_config(tiny_dataset_dir, tmp_path / "s", epochs=3, patience=99))
    # Ctrl-C during epoch 3's validation: last/ holds epoch 2.
    real_eval, calls = train_mod.evaluate_split, []

    def interrupted(*a, **kw):
        calls.append(1)
        if len(calls) == 4:  # epoch 0's, 1's and 2's validations, then epoch 3's
            raise KeyboardInterrupt
        return real_eval(*a, **kw)

    monkeypatch.setattr(train_mod, "evaluate_split", interrupted)
    first = train(tiny_train_config(tiny_dataset_dir, tmp_path / "r", epochs=3, patience=99))
    assert first.stopped == "interrupted"
    monkeypatch.setattr(train_mod, "evaluate_split", real_eval)
    resumed = train(tiny_train_config(tiny_dataset_dir, tmp_path / "r", epochs=3, patience=99), resume=True)
    ws, wr = _weights(tmp_path / "s" / "last"), _weights(tmp_path / "r" / "last")
    assert all(torch.equal(ws[k], wr[k]) for k in ws)
    assert resumed.history[-1]["valid_total"] == straight.history[-1]["valid_total"]
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    valid = [k for k in straight.start if k.startswith("valid_")]
    assert valid and all(resumed.start[k] == straight.start[k] for k in valid)  # epoch 0's figures survive resume


def test_window_mode_has_one_target_per_window(tiny_dataset_dir, tmp_path):
    from chopinbot.dataset.batches import SplitData
    from chopinbot.dataset.features import DurationVocab
    from chopinbot.dataset.store import Dataset

    data = SplitData(Dataset(tiny_dataset_dir), "train", DurationVocab((0.25, 0.5, 1.0)))
    windows = data.windows(16)
    assert len(windows) == sum(b - a - 16 for a, b in data.segments)
    x, t = data.batch(windows[:4])
    assert x.shape[:2] == (4, 16) and t.mask.sum().item() == 4 and t.mask[:, -1].all()
    chunks = data.chunks(32)
    assert sum(c.length for c in chunks) == data.n_targets  # sequence mode: every state once
    res = train(tiny_train_config(tiny_dataset_dir, tmp_path / "w", epochs=1, window=16))
    assert res.history[0]["train_total"] > 0


def test_unwritable_run_folder_fails_before_training(tiny_dataset_dir, tmp_path):
    from chopinbot.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write"):
        train(tiny_train_config(tiny_dataset_dir, blocker / "run"))


@pytest.mark.slow
def test_two_process_ddp_ends_with_identical_weights(tiny_dataset_dir, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "chopinbot", "train", "--data", str(tiny_dataset_dir), "--out", str(out), "--epochs", "1",
           "--layers", "1", "--hidden", "16", "--context", "32", "--batch", "4", "--threads", "1", "--quiet"]
    env = dict(os.environ, CHOPINBOT_DDP_DUMP=str(tmp_path / "rank{rank}.safetensors"))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    if r.returncode and "terminate called without an active exception" in r.stderr:
        # gloo sometimes aborts a rank as the processes exit (about 1 run in 30 on this 2-core machine, with every
        # rank past a barrier first): a teardown race in the library, not in training; the launch is tried again
        r = subprocess.run(cmd + ["--force"], capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert torch.equal(w0["valid_total"], w1["valid_total"])
    assert (out / "best" / "model.safetensors").exists()


def test_a_joint_loudness_model_trains_and_generates(tiny_dataset_dir, tmp_path):
    """Teacher forcing (the targets' keys below each key) and the loudness loss, through train and evaluate."""
    from chopinbot.compose.generate import GenerateConfig, generate
    from chopinbot.compose.seeds import seed_from_test
    from chopinbot.model.network import ModelConfig

    model = ModelConfig(layers=1, hidden=16, dropout=0.1, duration_classes=[1.0], joint_keys=True, loudness=True)
    res = train(tiny_train_config(tiny_dataset_dir, tmp_path / "j", epochs=1, model=model))
    row = res.history[-1]
    assert 0 < row["valid_vel_ce"] < 10 and 0 < row["valid_key_nll"] < 100
    m = load_model(tmp_path / "j")
    assert m.config.joint_keys and m.config.loudness
    g = generate(m, seed_from_test(0, 8), GenerateConfig(steps=16, random_seed=0, retry=False)).generated
    assert len(g) == 16 and (g.velocity[g.onsets.any(1)] > 0).all()


def test_a_cpu_time_budget_stops_the_run(tiny_dataset_dir, tmp_path):
    """``cpu_minutes`` counts this process's CPU time: a budget spent in the first epoch stops there."""
    res = train(tiny_train_config(tiny_dataset_dir, tmp_path / "run", epochs=5, cpu_minutes=1e-4))
    assert res.stopped == "time-budget" and res.epochs == 1
    state = json.loads((tmp_path / "run" / "last" / "resume.json").read_text())
    assert state["cpu_seconds"] > 0.006
