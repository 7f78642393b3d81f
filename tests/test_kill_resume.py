"""Interrupted training: SIGKILL at random moments, then ``--resume``.

A training process is killed (SIGKILL: no handler, no clean-up) at random
moments several times; after each kill the run folder must hold a checkpoint
that loads (never a half-written file), and ``--resume`` must continue from
it.  At the end the run's metrics must be one row per epoch, 1..N, equal to
those of the same run never interrupted (training is deterministic on CPU),
so the resumed epochs really continue the run.  An unwritable or full output
disk is refused before training starts.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chopinbot.errors import ConfigError
from chopinbot.model.checkpoint import resolve_checkpoint
from chopinbot.model.formats import load_model

# A tiny model on the eight-prelude dataset: about a second per epoch.
FLAGS = ["--layers", "1", "--hidden", "16", "--context", "32", "--batch", "8", "--warmup", "5", "--threads", "1",
         "--schedule", "constant", "--seed", "3", "--quiet"]
KILLS = int(os.environ.get("CHOPINBOT_KILLS", "3"))  # more for a longer trial: see docs/reliability.md
IGNORED_COLUMNS = {"seconds"}  # wall time differs between runs; everything else must not


def _metrics(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    return list(csv.DictReader(path.open())) if path.exists() else []


def _epochs(run: Path) -> list[int]:
    return [int(r["epoch"]) for r in _metrics(run)]


def _train(data: Path, run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chopinbot", "train", "--data", str(data), "--out", str(run),
                             *FLAGS, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONWARNINGS="ignore"))


def _checkpoint_epoch(run: Path) -> int:
    """The epoch of the run's last/ checkpoint, after checking that it loads whole."""
    from safetensors.torch import load_file

    folder = resolve_checkpoint(run / "last")
    model = load_model(folder)  # sha256 of the weights, names and shapes of every tensor
    state = json.loads((folder / "resume.json").read_text())
    load_file(str(folder / "optimizer.safetensors"))
    assert state["epoch"] == model.meta["epoch"]
    if (run / "best").exists() or (run / "best.old").exists():
        load_model(resolve_checkpoint(run / "best"))
    return int(state["epoch"])


def _wait_for_epoch(proc: subprocess.Popen, run: Path, epoch: int, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not _epochs(run) or _epochs(run)[-1] < epoch:
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-2000:]
            raise AssertionError(f"training ended early (code {proc.returncode}): {err}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no epoch {epoch} after {timeout:.0f} s")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tiny_dataset_dir, tmp_path):
    run = tmp_path / "run"
    rnd = random.Random(os.environ.get("CHOPINBOT_KILL_SEED", "kill-resume"))
    proc = _train(tiny_dataset_dir, run, "--epochs", "500")
    _wait_for_epoch(proc, run, 1)
    t0 = time.monotonic()  # metrics.csv gets its row before last/ is written: wait for the checkpoint too,
    while not (run / "last" / "resume.json").exists():  # or there is nothing to resume
        assert time.monotonic() - t0 < 120, "no first checkpoint"
        time.sleep(0.05)
    done = 0
    for trial in range(KILLS):
        # somewhere inside an epoch: the step loop, the valid pass, the CSV and checkpoint writes
        time.sleep(rnd.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        epoch = _checkpoint_epoch(run)
        epochs = _epochs(run)
        assert epochs == list(range(len(epochs))), f"trial {trial}: metrics epochs {epochs}"  # 0: before any update
        # metrics may be one epoch ahead of the checkpoint (killed between the two writes)
        assert epochs[-1] in (epoch, epoch + 1), f"trial {trial}: metrics end at {epochs[-1]}, checkpoint {epoch}"
        assert epoch >= done, "the checkpoint went back in time"
        done = epoch
        proc = _train(tiny_dataset_dir, run, "--resume")
        _wait_for_epoch(proc, run, epoch + 1)  # the resumed run writes the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # finish: a resumed run with a smaller epoch budget stops after it
    final = _checkpoint_epoch(run) + 2
    r = subprocess.run([sys.executable, "-m", "chopinbot", "train", "--data", str(tiny_dataset_dir), "--out",
                        str(run), *FLAGS, "--resume", "--epochs", str(final)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _epochs(run) == list(range(final + 1))
    assert _checkpoint_epoch(run) == final

    # the same run, never interrupted (in this process: the same flags, parsed the same way),
    # gives the same metrics epoch for epoch
    from chopinbot.cli import build_parser
    from chopinbot.cli.train import config_from_args
    from chopinbot.training.train import train

    ref = tmp_path / "ref"
    args = build_parser("train").parse_args(["train", "--data", str(tiny_dataset_dir), "--out", str(ref), *FLAGS,
                                             "--epochs", str(final)])
    train(config_from_args(args))
    got, want = _metrics(run), _metrics(ref)
    assert len(got) == len(want) == final + 1
    for g, w in zip(got, want):
        for col in set(w) - IGNORED_COLUMNS:  # epoch 0's train columns are NaN: nothing trained yet
            assert float(g[col]) == pytest.approx(float(w[col]), rel=1e-4, abs=1e-7, nan_ok=True), (g["epoch"], col)


def test_swap_interrupted_between_renames_leaves_a_usable_checkpoint(tmp_path):
    """The two renames of a checkpoint swap, and a second save after a crash
    between them: at every step some complete checkpoint can be found."""
    import shutil

    import torch

    from chopinbot.model.checkpoint import save_model
    from chopinbot.model.network import ChopinLSTM, ModelConfig

    model = ChopinLSTM(ModelConfig(hidden=8, layers=1, duration_classes=[1.0]))
    folder = tmp_path / "last"
    save_model(folder, model, {"epoch": 1})
    # crash after `rename(folder, folder.old)`, before the new folder is renamed in
    os.rename(folder, tmp_path / "last.old")
    assert load_model(tmp_path / "last").meta["epoch"] == 1  # found through last.old
    # the next save must not delete last.old before the new folder is in place:
    # simulate a crash right after the first step of the next swap
    real_rmtree = shutil.rmtree
    calls = []

    def crash_after_first_delete(path, *a, **kw):
        calls.append(Path(path))
        real_rmtree(path, *a, **kw)
        if Path(path).name == "last.old" and not folder.exists():
            raise KeyboardInterrupt  # killed here

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    shutil.rmtree = crash_after_first_delete
    try:
        try:
            save_model(folder, model, {"epoch": 2})
        except KeyboardInterrupt:
            pass
    finally:
        shutil.rmtree = real_rmtree
    assert load_model(tmp_path / "last").meta["epoch"] in (1, 2), "no complete checkpoint left"


@pytest.mark.parametrize("how", ["under-a-file", "read-only"])
def test_unwritable_run_folder_is_refused_before_training(how, tmp_path, tiny_dataset_dir, monkeypatch):
    from chopinbot.training import train as train_mod

    if how == "under-a-file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only folder")
        (tmp_path / "ro").mkdir(mode=0o500)
        out = tmp_path / "ro" / "run"
    called = []
    monkeypatch.setattr(train_mod, "load_or_prepare", lambda *a, **k: called.append(1))
    cfg = train_mod.TrainConfig(data=str(tiny_dataset_dir), out=str(out), progress=False)
    with pytest.raises(ConfigError, match="cannot write"):
        train_mod.train(cfg)
    assert not called, "the dataset was loaded before the folder check"


def test_full_disk_is_refused_before_training(tmp_path, tiny_dataset_dir, monkeypatch):
    import shutil

    from chopinbot.training import train as train_mod

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10 * 1024 * 1024))
    called = []
    monkeypatch.setattr(train_mod, "load_or_prepare", lambda *a, **k: called.append(1))
    cfg = train_mod.TrainConfig(data=str(tiny_dataset_dir), out=str(tmp_path / "run"), progress=False)
    with pytest.raises(ConfigError, match="free"):
        train_mod.train(cfg)
    assert not called, "the dataset was loaded before the disk check"


def _without_data(cfg):
    cfg.data = None  # as `train --resume` without --data
    return cfg


def test_resume_reads_the_runs_own_dataset(tmp_path, tiny_dataset_dir, monkeypatch):
    """``--resume`` without ``--data`` continues on the data the run started with (not the
    bundled corpus, --data's default); other data, named or changed since, is refused."""
    from chopinbot.training import train as train_mod
    from conftest import tiny_train_config

    run = tmp_path / "run"
    train_mod.train(tiny_train_config(tiny_dataset_dir, run, epochs=1))
    read = []
    real = train_mod.load_or_prepare
    monkeypatch.setattr(train_mod, "load_or_prepare", lambda data, **k: read.append(data) or real(data, **k))
    train_mod.train(_without_data(tiny_train_config(tiny_dataset_dir, run, epochs=2)), resume=True)
    assert read == [str(tiny_dataset_dir)]
    assert _epochs(run) == [0, 1, 2]

    with pytest.raises(ConfigError, match="was trained on"):
        train_mod.train(tiny_train_config(tmp_path / "elsewhere", run, epochs=3), resume=True)
    # The run's dataset rebuilt since (here: the run remembers another one).
    resume_json = resolve_checkpoint(run / "last") / "resume.json"
    state = json.loads(resume_json.read_text())
    state["train_config"]["dataset_sha256"] = "0" * 64
    resume_json.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="has changed"):
        train_mod.train(_without_data(tiny_train_config(tiny_dataset_dir, run, epochs=3)), resume=True)
