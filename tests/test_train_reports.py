"""A training run reports itself: the epoch-0 figures, the held-out key NLL before
and after, a warning when the first epoch was the best, the fine-tuning learning
rate, the model card and `chopinbot models`; the input blocks' train flags come
from their declaration; the epoch loop is the one that pruning and the benchmark run."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import pytest

from chopinbot.cli import main as cli_main
from chopinbot.cli.train import add_arguments, config_from_args
from chopinbot.constants import SHIPPED_MODEL
from chopinbot.dataset.layout import OPTIONAL_BLOCKS
from chopinbot.training.card import CARD_JSON, CARD_MD, list_models
from chopinbot.training.config import FINETUNE_LR, LR, TrainConfig
from chopinbot.training.train import RunResult, run_warnings, train
from conftest import tiny_train_config


@pytest.fixture(scope="module")
def tiny_run(tiny_dataset_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reporting_run")
    return train(tiny_train_config(tiny_dataset_dir, out, epochs=2))


def test_epoch_zero_is_recorded_before_any_update(tiny_run):
    rows = list(csv.DictReader((tiny_run.out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    zero = rows[0]
    assert math.isnan(float(zero["train_maestro"]))  # nothing trained yet
    assert float(zero["valid_key_nll"]) == pytest.approx(tiny_run.start["valid_key_nll"])
    # a random model predicts the valid pieces far worse than the trained one
    assert float(zero["valid_key_nll"]) > float(rows[tiny_run.best_epoch]["valid_key_nll"])
    assert [h["epoch"] for h in tiny_run.history] == [1, 2]  # the history is the training epochs


def test_the_model_card_holds_data_time_and_held_out_figures(tiny_run):
    card = json.loads((tiny_run.out / CARD_JSON).read_text())
    assert card["composers"] and card["data"]["train_pieces"] >= 1 and card["data"]["valid_pieces"] >= 1
    assert card["cpu_minutes"] > 0 and card["init_from"] is None and card["lr"] == LR
    assert card["held_out"]["start_key_nll"] == pytest.approx(tiny_run.start["valid_key_nll"])
    assert card["held_out"]["key_nll"] == pytest.approx(tiny_run.best["valid_key_nll"])
    md = (tiny_run.out / CARD_MD).read_text()
    assert f"{card['held_out']['key_nll']:.3f}" in md and "random weights" in md


def test_fine_tuning_reports_before_and_after_and_uses_the_lower_rate(tiny_run, tiny_dataset_dir, tmp_path,
                                                                     capsys):
    out = tmp_path / "ft"
    code = cli_main(["train", "--data", str(tiny_dataset_dir), "--out", str(out), "--init-from",
                     str(tiny_run.out), "--epochs", "1", "--threads", "1", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "epoch   0  (before any update" in printed and "held-out key NLL" in printed
    card = json.loads((out / CARD_JSON).read_text())
    assert card["lr"] == FINETUNE_LR and card["init_from"] == str(tiny_run.out)
    # epoch 0 of a fine-tuning run is the starting model itself, on the same valid pieces
    assert card["held_out"]["start_key_nll"] == pytest.approx(tiny_run.best["valid_key_nll"], rel=1e-5)
    assert json.loads((out / "train_config.json").read_text())["lr"] == FINETUNE_LR
    # and a candidate for best/: what is kept is never worse on the valid loss than where it started
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    losses = {int(r["epoch"]): float(r["valid_maestro"]) for r in rows}
    assert losses[card["best_epoch"]] == min(losses.values()) and (out / "best" / "model.safetensors").exists()


def test_the_learning_rate_default_follows_the_start():
    assert TrainConfig().learning_rate() == LR
    assert TrainConfig(init_from="piano-controls").learning_rate() == FINETUNE_LR < LR
    assert TrainConfig(init_from="piano-controls", lr=1e-3).learning_rate() == 1e-3  # --lr wins


def _result(best_epoch, epochs, start, best):
    return RunResult(None, epochs, best_epoch, {"valid_key_nll": best}, "early-stop", 1.0, 1.0,
                     start={"valid_key_nll": start})


def test_a_first_best_epoch_warns_and_says_what_to_change():
    cfg = TrainConfig(init_from="piano-controls")
    (w,) = run_warnings(cfg, _result(1, 9, 4.0, 3.9))
    assert "best epoch was the first" in w and "--lr" in w and f"{FINETUNE_LR / 4:g}" in w
    assert run_warnings(cfg, _result(5, 9, 4.0, 3.9)) == []
    assert run_warnings(cfg, _result(1, 1, 4.0, 3.9)) == []  # one epoch: nothing to compare
    worse = run_warnings(cfg, _result(3, 9, 3.9, 4.0))  # kept on the loss, worse on the key NLL
    assert len(worse) == 1 and "better on the valid loss but not on the held-out key NLL" in worse[0]
    (kept_start,) = run_warnings(cfg, _result(0, 9, 3.9, 3.9))
    assert "no epoch beat the starting model" in kept_start and "best/ is the starting model" in kept_start


def test_selection_defaults_to_the_loss_when_fine_tuning():
    assert TrainConfig().selection() == "f1" and TrainConfig(init_from="piano-controls").selection() == "loss"
    assert TrainConfig(init_from="piano-controls", select_on="f1").selection() == "f1"  # --select-on wins


def test_models_lists_the_bundled_models_and_runs(tiny_run, capsys):
    rows = list_models([str(tiny_run.out)])
    names = [r["name"] for r in rows]
    assert "piano-controls" in names and names[-1] == tiny_run.out.name
    assert rows[-1]["key_nll"] == pytest.approx(tiny_run.best["valid_key_nll"])
    shipped = next(r for r in rows if r["name"] == "piano-controls")
    assert "chopin" in shipped["composers"] and shipped["key_nll"] > 0
    backbones = {r["name"]: r["backbone"] for r in rows}
    assert backbones["piano-controls"] == "LSTM 2×128" and backbones["piano-pretrained"] == "Transformer 3×128"
    assert backbones[tiny_run.out.name].startswith("LSTM ")  # a run folder, read from its card's checkpoint
    assert cli_main(["models", str(tiny_run.out)]) == 0
    printed = capsys.readouterr().out
    assert f"{SHIPPED_MODEL} *" in printed and f"{tiny_run.best['valid_key_nll']:.3f}" in printed
    assert "(started from random weights: " in printed and "None" not in printed  # a run from scratch


def test_every_input_block_with_help_is_a_train_flag():
    """A new block's entry in OPTIONAL_BLOCKS (with its help) is a `train` flag by itself."""
    p = argparse.ArgumentParser()
    add_arguments(p)
    flagged = [b.flag for b in OPTIONAL_BLOCKS if b.help is not None]
    assert {"key_recency", "repeats", "loudness", "controls"} <= set(flagged)
    for flag in flagged:
        default = getattr(p.parse_args([]), flag)
        args = p.parse_args(["--" + flag.replace("_", "-"), "off" if default else "on"])
        assert getattr(config_from_args(args).model, flag) is (not default)


def test_the_speed_benchmark_runs_trainings_own_epoch(tiny_dataset_dir):
    """The same generator and settings give the same updates through train_epoch as
    through the benchmark's call (one loop, not a copy)."""
    import torch

    from chopinbot.dataset.batches import SplitData
    from chopinbot.dataset.store import Dataset
    from chopinbot.model.network import ChopinLSTM, ModelConfig
    from chopinbot.training.epoch import make_optimizer, make_scheduler, seed_everything, train_epoch
    from chopinbot.training.train import build_model_config

    ds = Dataset(tiny_dataset_dir)
    mcfg = build_model_config(TrainConfig(model=ModelConfig(layers=1, hidden=8, duration_classes=[1.0])), ds)
    split = SplitData(ds, "train", mcfg.vocab)
    cfg = TrainConfig(context=16, batch=4, model=mcfg)
    weights = []
    for cap in (2, 2):
        seed_everything(0)
        model = ChopinLSTM(mcfg)
        opt = make_optimizer(cfg, model)
        done = train_epoch(model, opt, make_scheduler(cfg, opt, 100), cfg, split, np.random.default_rng(0),
                           max_updates=cap)
        assert done.updates == cap and len(done.predictions) == cap
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_no_valid_piece_is_refused_with_the_fix(tmp_path):
    import shutil

    from chopinbot.dataset.prepare import prepare
    from chopinbot.errors import ConfigError
    from conftest import CORPUS

    src = tmp_path / "two"
    src.mkdir()
    for name in ("chpn-p7.mid", "chpn-p20.mid"):
        shutil.copy(CORPUS / name, src)
    (src / "splits.json").write_text('{"valid": [], "test": []}')
    prepare([src], tmp_path / "ds", progress=False)
    with pytest.raises(ConfigError, match=r"2 train and 0 valid pieces.*splits\.json"):
        train(tiny_train_config(tmp_path / "ds", tmp_path / "run", epochs=1))


def test_a_run_stopped_in_its_first_epoch_may_be_started_again(tmp_path):
    from chopinbot.cli.train import _holds_run

    (tmp_path / "metrics.csv").write_text("epoch,lr\n0,0.0\n")
    assert not _holds_run(tmp_path)  # epoch 0's row only: nothing to resume
    (tmp_path / "metrics.csv").write_text("epoch,lr\n0,0.0\n1,0.002\n")
    assert _holds_run(tmp_path)
