"""Shared fixtures: the real bundled corpus, a prepared dataset, and a helper
that writes small hand-made MIDI files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import symusic

from chopinbot.constants import BUNDLED_CORPUS_DIR

CORPUS = BUNDLED_CORPUS_DIR
PRELUDE_KEYS = "C a G e D b A f# E c# B g# F# eb Db bb Ab f Eb c Bb g F d".split()


def make_midi(
    path: Path,
    notes: list[tuple[float, float, int]] | list[tuple[float, float, int, int]],
    tpq: int = 480,
    qpm: float = 120.0,
    sharps: int | None = None,
    drum: bool = False,
    tracks: int = 1,
) -> Path:
    """Write a MIDI file; notes are (start_beat, end_beat, pitch[, velocity])."""
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, qpm))
    if sharps is not None:
        score.key_signatures.append(symusic.KeySignature(0, sharps, 0))
    for t in range(tracks):
        tr = symusic.Track(f"t{t}", 0, drum)
        for i, n in enumerate(notes):
            if i % tracks != t:
                continue
            s, e, p = n[:3]
            v = n[3] if len(n) > 3 else 80
            tr.notes.append(symusic.Note(int(round(s * tpq)), int(round((e - s) * tpq)), int(p), int(v)))
        score.tracks.append(tr)
    path.write_bytes(bytes(score.dumps_midi()))
    return path


@pytest.fixture(scope="session")
def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.mid"))


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> Path:
    from chopinbot.dataset.prepare import prepare

    out = tmp_path_factory.mktemp("dataset")
    prepare(None, out, progress=False)
    return out


@pytest.fixture(scope="session")
def dataset(dataset_dir):
    from chopinbot.dataset.store import Dataset

    return Dataset(dataset_dir)


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


TINY_PIECES = ["chpn-p1.mid", "chpn-p7.mid", "chpn-p10.mid", "chpn-p20.mid", "chpn-p6.mid", "chpn-p14.mid",
               "chpn-p9.mid", "chpn-p2.mid"]


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> Path:
    """Eight short preludes (~1,500 states), for fast training tests."""
    import shutil

    from chopinbot.dataset.prepare import prepare

    src = tmp_path_factory.mktemp("tiny_midi")
    for name in TINY_PIECES:
        shutil.copy(CORPUS / name, src)
    out = tmp_path_factory.mktemp("tiny_ds")
    prepare([src], out, progress=False)
    return out


def tiny_train_config(data, out, **kw):
    from chopinbot.model.network import ModelConfig
    from chopinbot.training.train import TrainConfig

    model = ModelConfig(layers=1, hidden=16, dropout=0.1, duration_classes=[1.0])
    base = dict(data=str(data), out=str(out), epochs=2, context=32, batch=8, warmup=5, progress=False,
                threads=1, model=model)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset_dir, tmp_path_factory) -> Path:
    """A tiny trained run folder (best/ and last/)."""
    from chopinbot.training.train import train

    out = tmp_path_factory.mktemp("tiny_run")
    train(tiny_train_config(tiny_dataset_dir, out, epochs=2))
    return out


@pytest.fixture(scope="session")
def tiny_controls_model_dir(tiny_dataset_dir, tmp_path_factory) -> Path:
    """A tiny trained run folder of a model with controls (``ModelConfig.controls``)."""
    from dataclasses import replace

    from chopinbot.training.train import train

    out = tmp_path_factory.mktemp("tiny_controls_run")
    cfg = tiny_train_config(tiny_dataset_dir, out, epochs=2)
    train(replace(cfg, model=replace(cfg.model, controls=True)))
    return out


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one torch thread is fastest, and immune to a busy machine. A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch  # torch only for the modules that ask

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
