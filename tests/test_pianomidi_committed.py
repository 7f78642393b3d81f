"""The committed benchmark models (bench/models/): small, plain safetensors + JSON, and scoring them
again gives the figures recorded with them (on a quick slice here; `chopinbot benchmark piano-midi
--score bench/models/piano-midi` checks the whole splits in minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chopinbot_tools.frame_benchmark import recorded_scores, score_model
from chopinbot_tools.pianomidi import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one thread

MODELS = Path(__file__).resolve().parents[1] / "bench" / "models"
COMMITTED = sorted(p for p in MODELS.glob("*") if (p / "config.json").is_file())




def test_the_piano_midi_model_is_committed():
    assert MODELS / "piano-midi" in COMMITTED


@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_model_is_small_plain_and_rescores_to_its_recorded_figures(folder):
    assert sorted(p.name for p in folder.iterdir() if p.suffix != ".md") == ["config.json", "model.safetensors"]
    assert (folder / "model.safetensors").stat().st_size < 5_000_000
    cfg = json.loads((folder / "config.json").read_text())
    model, _ = load_checkpoint(folder)
    assert sum(p.numel() for p in model.parameters()) == cfg["parameters"]
    recorded = recorded_scores(folder)
    assert set(recorded) == {"valid", "test"} and recorded["valid"] == pytest.approx(cfg["valid_nll"])
    check = cfg["check"]
    quick = score_model(folder, cfg["benchmark"], splits=(check["split"],), limit=check["first_pieces"])
    assert quick[check["split"]] == pytest.approx(check["nll"], rel=1e-6)
