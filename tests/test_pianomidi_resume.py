"""Resumable training of the frame models: an interrupted run, resumed, ends exactly where an
uninterrupted one does; a resume with other settings, or a restart over an unfinished run, is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from chopinbot.cli import main
from chopinbot.errors import ConfigError
from chopinbot_tools.frame_models import FrameModelConfig, build_model
from chopinbot_tools.frame_training import TRAIN_STATE, TrainSettings, train
from chopinbot_tools.pianomidi import key_log_odds, load_checkpoint, load_piano_midi

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread

CFG = FrameModelConfig(model_type="biaxial", time_hidden=6, time_layers=2, note_hidden=5, note_layers=2,
                       dropout=0.2, repeats=True, repeat_vicinity=2)




@pytest.fixture(scope="module")
def data():
    return load_piano_midi(limit=2)


def settings(**kw) -> TrainSettings:
    base = dict(epochs=3, batch_size=4, chunk=32, warmup_steps=3, eval_every=4, patience=50, checkpoint_steps=3,
                threads=1, progress=False)
    return TrainSettings(**{**base, **kw})


def fresh_model(data):
    torch.manual_seed(0)
    model = build_model(CFG)
    model.init_output_bias(torch.tensor(key_log_odds(data["train"]), dtype=torch.float32))
    return model


class Crash(Exception):
    pass


def crash_at(step: int):
    def on_step(s: int) -> None:
        if s == step:
            raise Crash(f"simulated crash after step {s}")
    return on_step


def test_an_interrupted_run_resumed_ends_with_the_same_model(tmp_path, data):
    whole_dir, broken_dir = tmp_path / "whole", tmp_path / "broken"
    whole_dir.mkdir()
    broken_dir.mkdir()
    whole = train(fresh_model(data), data, settings(), whole_dir, CFG.to_dict())
    assert whole.steps >= 12 and not (whole_dir / TRAIN_STATE).exists()  # a finished run leaves no state

    # the crash comes two steps after the last saved state (step 15) and mid-epoch: those two steps are lost
    with pytest.raises(Crash):
        train(fresh_model(data), data, settings(), broken_dir, CFG.to_dict(), on_step=crash_at(17))
    assert (broken_dir / TRAIN_STATE).is_file()
    # a fresh model object (other initial weights) is overwritten by the saved state
    torch.manual_seed(99)
    resumed = train(build_model(CFG), data, settings(), broken_dir, CFG.to_dict(), resume=True)
    assert resumed.resumed_at == [15]
    assert resumed.steps == whole.steps and resumed.best_step == whole.best_step
    assert [r["valid_nll"] for r in resumed.history] == [r["valid_nll"] for r in whole.history]
    assert [r["train_nll"] for r in resumed.history] == pytest.approx([r["train_nll"] for r in whole.history],
                                                                      rel=1e-9)
    a, _ = load_checkpoint(whole_dir)
    b, _ = load_checkpoint(broken_dir)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_resume_refuses_other_settings_and_a_restart_refuses_an_unfinished_run(tmp_path, data):
    with pytest.raises(Crash):
        train(fresh_model(data), data, settings(), tmp_path, CFG.to_dict(), on_step=crash_at(4))
    with pytest.raises(ConfigError, match="unfinished run"):
        train(fresh_model(data), data, settings(), tmp_path, CFG.to_dict())
    with pytest.raises(ConfigError, match="different schedule"):
        train(fresh_model(data), data, settings(lr=1e-3), tmp_path, CFG.to_dict(), resume=True)
    other = {**CFG.to_dict(), "time_hidden": 7}
    with pytest.raises(ConfigError, match="different model"):
        train(build_model(FrameModelConfig.from_dict(other)), data, settings(), tmp_path, other, resume=True)


def test_resume_through_the_command_line(tmp_path, data, capsys, monkeypatch):
    """`--resume` on a run folder with a saved state finishes the run and reports it."""
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(Crash):
        train(fresh_model(data), data, settings(epochs=1, eval_every=None, checkpoint_steps=2), out, CFG.to_dict(),
              on_step=crash_at(3))
    argv = ["benchmark", "piano-midi", "--out", str(out), "--limit-pieces", "2", "--epochs", "1", "--chunk", "32",
            "--batch-size", "4", "--warmup-steps", "3", "--threads", "1", "--quiet", "--model-type", "biaxial",
            "--time-hidden", "6", "--time-layers", "2", "--note-hidden", "5", "--note-layers", "2",
            "--dropout", "0.2", "--repeats", "--repeat-vicinity", "2", "--patience", "50", "--resume", "--nice", "19"]
    niced: list[int] = []
    monkeypatch.setattr("os.nice", niced.append)  # the test process keeps its priority
    assert main(argv) == 0
    assert niced == [19]
    rep = json.loads((out / "report.json").read_text())
    assert rep["training"]["resumed_at_steps"] == [2]
    assert not (out / TRAIN_STATE).exists()
    assert np.isfinite(rep["results"]["test"]["nll"])
    # --score re-scores the saved model without writing anything, with the same figures
    capsys.readouterr()
    assert main(["benchmark", "piano-midi", "--score", str(out), "--limit-pieces", "2", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"test NLL {rep['results']['test']['nll']:.4f}" in printed
