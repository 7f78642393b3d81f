"""Evaluation: baselines on known cases, and the report end to end (tiny model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.features import DurationVocab
from chopinbot.dataset.prepare import prepare
from chopinbot.dataset.store import Dataset, PrepareSettings
from chopinbot.errors import ConfigError
from chopinbot.evaluation.baselines import baseline_metrics, fit_rates
from chopinbot.evaluation.report import EvalSettings, evaluate, key_nll_by_piece
from chopinbot.model.formats import load_model
from chopinbot.model.metrics import prf_from_sets
from chopinbot.model.predict import evaluate_split
from conftest import make_midi


def _split(ds_dir, split="train"):
    return SplitData(Dataset(ds_dir), split, DurationVocab((1.0,)))


def _train_split_of(tmp_path, notes) -> SplitData:
    """The train split of a dataset of three copies of one hand-made piece."""
    src = tmp_path / "m"
    src.mkdir()
    for i in range(3):
        make_midi(src / f"piece{i}.mid", notes)
    prepare([src], tmp_path / "ds", progress=False)
    return _split(tmp_path / "ds", "train")


def test_copy_baseline_is_perfect_on_a_repeated_state(tmp_path):
    # the same chord struck again and again: copy predicts every next state exactly
    data = _train_split_of(tmp_path, [(i, i + 1, p) for i in range(40) for p in (60, 64, 67)])
    m = baseline_metrics("copy", data, fit_rates(data), threshold=0.5)
    assert m["f1_best"] == 1.0 and m["dur_error"] == 0.0
    assert m["key_nll"] < 0.01  # p_stay = 1 - tiny, p_on = tiny


@pytest.mark.parametrize("step", [0, 2])
def test_repeat_baseline_continues_a_figure_copy_cannot(tmp_path, step):
    """An arpeggio played 12 times (each time ``step`` semitones higher): every
    next state differs from the current one, so copying is always wrong; after
    the first time round the repeat baseline is right, exactly or transposed."""
    data = _train_split_of(tmp_path, [(4 * r + i, 4 * r + i + 1, p + step * r)
                                      for r in range(12) for i, p in enumerate((48, 52, 55, 60))])
    rates = fit_rates(data)
    copy = baseline_metrics("copy", data, rates, threshold=0.5)
    repeat = baseline_metrics("repeat", data, rates, threshold=0.5)
    assert copy["f1_best"] == 0.0
    assert repeat["f1_best"] > 0.85 and repeat["key_nll"] < copy["key_nll"] / 3  # wrong only the first time round


def test_baselines_match_direct_computation(tiny_dataset_dir):
    data = _split(tiny_dataset_dir, "train")
    rates = fit_rates(data)
    assert rates["p_on"] < 0.1 < rates["p_stay"]
    m = baseline_metrics("copy", data, rates, threshold=(rates["p_on"] + rates["p_stay"]) / 2)
    ds = Dataset(tiny_dataset_dir)
    preds, trues = [], []
    for seg in ds.segments("train"):
        s = ds.states(seg)
        preds.append(s.keys[:-1])
        trues.append(s.keys[1:])
    p, r, f = prf_from_sets(np.concatenate(preds), np.concatenate(trues))
    assert m["f1_best"] == pytest.approx(f) and m["precision_best"] == pytest.approx(p)
    freq = baseline_metrics("frequency", data, rates)
    assert 0 < freq["f1_best"] < m["f1_best"]  # knowing the last state beats knowing nothing


def test_report_end_to_end(tiny_model_dir, tiny_dataset_dir, tmp_path):
    out = tmp_path / "report"
    m = evaluate([str(tiny_model_dir)], out, tiny_dataset_dir,
                 EvalSettings(pieces=2, steps=16, progress=False, realism_seconds=20, realism_repeats=1,
                              composed=False, composed_rolls=2))  # composed rows: test_realism.py, test_suites.py
    for name in ("report.md", "metrics.json", "threshold_guide.png", "pianoroll_generated_vs_real.png"):
        assert (out / name).stat().st_size > 100, name
    # music composed from the seed alone above the real continuation, one per test piece (the tiny data has one)
    rolls = sorted(out.glob("composed_vs_real_*.png"))
    assert [p.name for p in rolls] == ["composed_vs_real_1.png"]
    assert all(f"![{p.stem}]({p.name})" in (out / "report.md").read_text() for p in rolls)
    table = json.loads((out / "metrics.json").read_text())["table"]
    assert any(k.startswith("baseline: copy") for k in table) and any(k.startswith("baseline: repeat") for k in table)
    assert len(table) == 4
    stats = m["statistics"]
    assert stats["n_generated"] == 2 and 0 <= stats["originality"]["mean_overlap_8"] <= 1
    assert "Originality" in (out / "report.md").read_text()
    # a loop broken where it started is counted apart from the guards that mean a fault
    assert 0 <= stats["loops_broken"] <= 2 and 0 <= stats["guards_fired"] <= 2
    assert f"a loop was broken where it started in {stats['loops_broken']}." in (out / "report.md").read_text()
    realism = json.loads((out / "metrics.json").read_text())["realism"]
    assert realism["split"] == "test" and realism["n_excerpts"]["generated"] > 0
    assert 0 <= realism["rows"]["generated vs Chopin"]["accuracy_mean"] <= 1
    assert "Mozart, Beethoven, Brahms vs Chopin" in realism["rows"]
    assert "## Realism" in (out / "report.md").read_text() and "composed" not in realism
    suite = json.loads((out / "realism.json").read_text())  # the realism suite's JSON, beside the report
    assert suite["suite"] == "realism" and suite["figures"]["accuracy"] == realism["rows"]["generated vs Chopin"][
        "accuracy_mean"] and suite["settings"]["split"] == "test"
    # each test piece scored alone, under the main table
    by_piece = m["models"][next(iter(m["models"]))]["test_key_nll_by_piece"]
    assert list(by_piece) == Dataset(tiny_dataset_dir).pieces("test")
    assert f"| {next(iter(by_piece))} | {by_piece[next(iter(by_piece))]['states']} |" in (out / "report.md").read_text()
    before = (out / "report.md").read_bytes()
    with pytest.raises(ConfigError, match="already holds a report"):  # nothing lost without --force
        evaluate([str(tiny_model_dir)], out, tiny_dataset_dir, EvalSettings(pieces=2, steps=16, progress=False))
    assert (out / "report.md").read_bytes() == before


def test_key_nll_by_piece_weighs_back_to_the_split(tiny_model_dir, tiny_dataset_dir):
    """Each piece scored alone (the report's table by piece): weighted by their states, the split's own NLL."""
    ds, model = Dataset(tiny_dataset_dir), load_model(str(tiny_model_dir))
    by_piece = key_nll_by_piece(model, ds, "train")
    assert sorted(by_piece) == sorted(ds.pieces("train")) and len(by_piece) >= 5
    whole = evaluate_split(model, SplitData(ds, "train", model.config.vocab)).summary()["key_nll"]
    weighed = sum(d["key_nll"] * d["states"] for d in by_piece.values()) / sum(d["states"] for d in by_piece.values())
    assert weighed == pytest.approx(whole, rel=1e-4)
    assert len({round(d["key_nll"], 3) for d in by_piece.values()}) > 1  # the pieces differ: each was scored alone
    piece = next(iter(by_piece))
    one = SplitData(ds, "train", model.config.vocab, keep=lambda seg: seg.piece == piece)
    assert one.n_targets == by_piece[piece]["states"] < SplitData(ds, "train", model.config.vocab).n_targets


def test_report_without_realism(tiny_model_dir, tiny_dataset_dir, tmp_path):
    m = evaluate([str(tiny_model_dir)], tmp_path / "r", tiny_dataset_dir,
                 EvalSettings(pieces=1, steps=8, progress=False, realism=False, composed_rolls=0))
    assert not list((tmp_path / "r").glob("composed_vs_real_*"))
    assert "realism" not in m and "## Realism" not in (tmp_path / "r" / "report.md").read_text()


def test_model_and_data_must_match(tiny_model_dir, tmp_path):
    import shutil

    from conftest import CORPUS, TINY_PIECES

    src = tmp_path / "m"
    src.mkdir()
    for n in TINY_PIECES:
        shutil.copy(CORPUS / n, src)
    prepare([src], tmp_path / "ds", PrepareSettings(pedal="apply"), progress=False)
    with pytest.raises(ConfigError, match="trained on states built with"):
        evaluate([str(tiny_model_dir)], tmp_path / "r", tmp_path / "ds",
                 EvalSettings(pieces=1, steps=8, progress=False))
