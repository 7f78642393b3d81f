"""Honest evaluation: ``chopinbot evaluate`` and :func:`evaluate`.

Every figure is measured on the test pieces, which no model trains on and no
choice is tuned on: the decision threshold is chosen on the valid pieces and
then applied to test.  Baselines are scored on the very same states.  The
report also compares the musical statistics of generated pieces with real
test excerpts of the same length, measures how much the generated pieces
copy from the training pieces, and asks a classifier whether continuations
of the held-out pieces' seeds can be told from real Chopin
(:mod:`chopinbot.evaluation.realism`; test seeds by default, valid seeds for
choosing between models).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chopinbot.compose.generate import LOOP_BROKEN, GenerateConfig
from chopinbot.compose.seeds import random_seed_index, seed_from_test
from chopinbot.constants import SEED_STATES
from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.prepare import load_or_prepare
from chopinbot.dataset.store import Dataset
from chopinbot.errors import ConfigError
from chopinbot.evaluation.baselines import baseline_metrics, fit_rates
from chopinbot.evaluation.continuations import continue_seeds, performed_chopin
from chopinbot.evaluation.musicstats import (
    CorpusIndex,
    compare_stats,
    format_stats_table,
    longest_copied_run,
    ngram_overlap,
    piece_stats,
)
from chopinbot.evaluation.realism import format_realism_section
from chopinbot.io_utils import atomic_write_json, atomic_write_text
from chopinbot.model.adaptation import can_listen
from chopinbot.model.checkpoint import resolve_checkpoint
from chopinbot.model.formats import load_model
from chopinbot.model.loss import HARSHNESS
from chopinbot.model.predict import evaluate_split
from chopinbot.music.states import states_to_notes

REPORT_METRICS = [
    ("maestro", "Maestro loss"), ("bce", "BCE"), ("dur", "dur term"), ("key_nll", "key NLL (nats/state)"),
    ("key_nll_listening", "key NLL, listening"),
    ("precision", "P@0.5"), ("recall", "R@0.5"), ("f1", "F1@0.5"), ("best_threshold", "valid-best thr."),
    ("precision_best", "P@thr"), ("recall_best", "R@thr"), ("f1_best", "F1@thr"), ("dur_error", "duration error"),
    ("dur_class_acc", "dur. class acc."),
]


BASELINES = {"copy": "copy previous state", "frequency": "key frequency",
             "repeat": "repeat what followed the passage's last occurrence"}


@dataclass
class EvalSettings:
    pieces: int = 20  # generated pieces for the statistics
    steps: int = 256  # states per generated piece (after a 16-state seed)
    seed_len: int = SEED_STATES
    temperature: float = GenerateConfig.temperature  # decoding: GenerateConfig's defaults (as `chopinbot generate`)
    key_top_k: int = GenerateConfig.key_top_k
    progress: bool = True
    realism: bool = True  # the classifier test of generated vs real excerpts
    realism_split: str = "test"  # whose seeds are continued: "test" to report, "valid" to choose between models
    realism_seconds: float = 60.0  # each seed's continuation, cut into 20-s excerpts
    realism_repeats: int = 5  # random seeds of the classifier test
    composed: bool = True  # the realism of composed music apart from replay (evaluation.composed; issue 27)
    composed_rolls: int = 3  # piano rolls of music composed from the seed alone, each beside the real continuation


def _label(path: str | None) -> str:
    if path is None:
        return "shipped model"
    p = Path(path)
    return p.name if p.name not in ("best", "last") else p.parent.name


def check_compatible(model, ds: Dataset, label: str) -> None:
    """A model must have been trained on states built like this dataset's."""
    meta = getattr(model, "meta", {})
    # the fields that change the states (max_states is only a safety cap)
    fields = ("grid_per_beat", "pedal", "min_state_beats")
    want = meta.get("dataset_settings")
    have = ds.manifest["settings"]
    if want is not None and any(want.get(f) != have.get(f) for f in fields):
        raise ConfigError(f"{label} was trained on states built with {want}, but the dataset uses "
                          f"{have}: prepare the data with the model's settings")


def model_metrics(model, ds: Dataset, harshness: float = HARSHNESS) -> dict:
    """Test metrics at 0.5 and at the valid-optimal threshold, plus the curves."""
    vocab = model.config.vocab
    valid = evaluate_split(model, SplitData(ds, "valid", vocab), harshness)
    thr = valid.keys.best_threshold()
    test = evaluate_split(model, SplitData(ds, "test", vocab), harshness)
    out = test.summary(threshold=thr)
    if can_listen(model):  # as the composer predicts after learning its primer (model.adaptation)
        out["key_nll_listening"] = evaluate_split(model, SplitData(ds, "test", vocab), harshness,
                                                  listen=True).summary()["key_nll"]
    curve = {k: v.tolist() for k, v in test.keys.curve().items()}
    return {"test": out, "valid_best_threshold": thr, "valid_f1_best": valid.summary()["f1_best"], "curve": curve,
            "test_key_nll_by_piece": key_nll_by_piece(model, ds, "test", harshness)}


def key_nll_by_piece(model, ds: Dataset, split: str = "test", harshness: float = HARSHNESS) -> dict[str, dict]:
    """Each piece of ``split`` scored alone: its key NLL (nats/state) and how many states it predicts.  A mean
    over five test pieces can be one piece's: this says which (the report's "Key NLL by test piece")."""
    vocab, out = model.config.vocab, {}
    for piece in ds.pieces(split):
        data = SplitData(ds, split, vocab, keep=lambda seg, piece=piece: seg.piece == piece)
        if data.n_targets:
            out[piece] = {"key_nll": evaluate_split(model, data, harshness).summary()["key_nll"],
                          "states": data.n_targets}
    return out


def _real_excerpts(ds: Dataset, length: int, split: str = "test") -> list:
    out = []
    for seg in filter(performed_chopin, ds.segments(split)):
        s = ds.states(seg)
        for a in range(0, len(s) - length + 1, length):
            out.append(s[a : a + length])
    return out


def musical_statistics(model, ds: Dataset, settings: EvalSettings, train_index=None, split: str = "test") -> dict:
    """Generate ``settings.pieces`` pieces (random seeds 0..N-1) and compare
    their statistics with real excerpts of the same length from ``split``
    (decoding settings are chosen against "valid", reported against "test")."""
    if train_index is None:
        train_index = CorpusIndex([(s.piece, ds.states(s)) for s in ds.segments("train")])
    gen_stats, originality, results = [], [], []
    t0 = time.perf_counter()
    seeds = [seed_from_test(random_seed_index(np.random.default_rng(i), settings.seed_len, settings=ds.settings),
                            settings.seed_len, ds.settings) for i in range(settings.pieces)]
    decoding = {"steps": settings.steps, "temperature": settings.temperature, "key_top_k": settings.key_top_k}
    for c in continue_seeds(model, seeds, seconds=None, include_seed=True, strict=True, excerpt_seconds=None,
                            overrides=lambda seed, _: {**decoding, "key": "A minor" if seed.key.minor else "C major"},
                            progress=settings.progress, desc="generate"):
        res = c.result
        results.append(res)
        gen_stats.append(piece_stats(res.notes, res.bpm, res.states))
        new = res.generated
        new.seconds = (new.beats * 60 / res.bpm).astype(np.float32)
        run = longest_copied_run(new, train_index)
        originality.append({"overlap_8": ngram_overlap(new, train_index, 8), **run, "guards": res.guards})
    gen_seconds = time.perf_counter() - t0
    real = _real_excerpts(ds, settings.seed_len + settings.steps, split)
    real_stats = [piece_stats(states_to_notes(s), None, s) for s in real]
    rows = compare_stats(gen_stats, real_stats)
    longest = max(originality, key=lambda o: o["states"]) if originality else {}
    return {
        "rows": rows,
        "n_generated": len(gen_stats),
        "n_real": len(real_stats),
        "generation_seconds": gen_seconds,
        "originality": {
            "mean_overlap_8": float(np.nanmean([o["overlap_8"] for o in originality])) if originality else float("nan"),
            "max_overlap_8": float(np.nanmax([o["overlap_8"] for o in originality])) if originality else float("nan"),
            "longest_run": {k: longest.get(k) for k in ("states", "beats", "seconds", "piece", "position")},
            "per_piece": [{k: o[k] for k in ("overlap_8", "states", "beats", "piece")} for o in originality],
        },
        # a loop broken where it started is the decoding working, not a fault: counted apart
        "guards_fired": sum(any(not g.startswith(LOOP_BROKEN) for g in o["guards"]) for o in originality),
        "loops_broken": sum(any(g.startswith(LOOP_BROKEN) for g in o["guards"]) for o in originality),
        "examples": results[:1],
    }


def realism_metrics(model, ds: Dataset, settings: EvalSettings) -> dict:
    """The realism section: the realism suite (:mod:`chopinbot.evaluation.suites.realism`) on the
    ``settings.realism_split`` seeds with the report's decoding and classifier repeats; its JSON
    (``figures``, ``rows``) with the full section under ``details``."""
    from chopinbot.evaluation.suites.realism import RealismSuiteSettings, realism_suite

    return realism_suite(model, ds, RealismSuiteSettings(
        split=settings.realism_split, seconds=settings.realism_seconds, repeats=settings.realism_repeats,
        seed_len=settings.seed_len, composed=settings.composed,
        decoding={"temperature": settings.temperature, "key_top_k": settings.key_top_k}), progress=settings.progress)


def realism_summary(realism: dict) -> dict:
    """A model's realism in a few figures: the main row, the row without velocities, primer replay."""
    rows = realism.get("rows", {})
    main, novel = rows.get("generated vs Chopin", {}), rows.get("generated vs Chopin, velocities ignored", {})
    replay = realism.get("seed_replay", {})
    return {"accuracy_mean": main.get("accuracy_mean"), "accuracy_sd": main.get("accuracy_sd"),
            "auc_mean": main.get("auc_mean"), "no_velocity_accuracy_mean": novel.get("accuracy_mean"),
            "seed_ngram_share": replay.get("generated"), "true_seed_ngram_share": replay.get("true"),
            "seed_ngram_share_transposed": replay.get("generated_transposed"),
            "true_seed_ngram_share_transposed": replay.get("true_transposed")}


def evaluate(models: list[str | None], out_dir: str | os.PathLike, data: str | os.PathLike | None = None,
             settings: EvalSettings | None = None, force: bool = False) -> dict:
    """Write ``report.md``, ``metrics.json`` and PNGs for the given models
    (``None`` = the shipped model) into ``out_dir``; return the metrics.  A
    folder that already holds a report is refused unless ``force``."""
    settings = settings or EvalSettings()
    # matplotlib is imported only when a report is drawn
    from chopinbot.render.pianoroll import plot_pianoroll_pair
    from chopinbot.render.plots import plot_threshold_guide, plot_training

    out = Path(out_dir)
    if not force and ((out / "report.md").exists() or (out / "metrics.json").exists()):
        raise ConfigError(f"{out} already holds a report; choose another --out or pass --force to replace it")
    out.mkdir(parents=True, exist_ok=True)
    ds = load_or_prepare(data, progress=settings.progress)
    vocab_free = SplitData(ds, "train", _any_vocab())
    rates = fit_rates(vocab_free)
    valid_free, test_free = SplitData(ds, "valid", _any_vocab()), SplitData(ds, "test", _any_vocab())
    rows: dict[str, dict] = {}
    for name, label in BASELINES.items():
        thr = baseline_metrics(name, valid_free, rates)["best_threshold"]
        rows[f"baseline: {label}"] = baseline_metrics(name, test_free, rates, thr)
    details: dict[str, dict] = {}
    loaded = []
    for m in models:
        label = _label(m)
        model = load_model(m)
        check_compatible(model, ds, label)
        res = model_metrics(model, ds, harshness=model.meta.get("harshness", HARSHNESS))
        tr = model.meta.get("train", {})
        desc = f"{label} ({model.config.layers}x{model.config.hidden} {model.config.backbone}, " + (
            f"window {tr['window']}" if tr.get("window") else "sequence training"
        ) + f", {model.config.duration_head} durations)"
        rows[desc] = res["test"]
        details[desc] = res
        loaded.append((desc, m, model))
    pngs = []
    first_desc, first_path, first_model = loaded[0]
    pngs.append(plot_threshold_guide({k: np.asarray(v) for k, v in details[first_desc]["curve"].items()},
                                     out / "threshold_guide.png",
                                     title=f"Threshold guide: {first_desc}, test pieces"))
    ckpt = resolve_checkpoint(first_path)
    run_dir = ckpt if (ckpt / "metrics.csv").exists() else ckpt.parent
    curves = []
    if (run_dir / "metrics.csv").exists():
        curves = plot_training(run_dir, out / "training")
    stats = musical_statistics(first_model, ds, settings)
    ex = stats.pop("examples")[0]
    real = _real_excerpts(ds, settings.seed_len + settings.steps)[0]
    pngs.append(plot_pianoroll_pair(ex.notes, states_to_notes(real), out / "pianoroll_generated_vs_real.png",
                                    bpm=ex.bpm, seed_end_beat=ex.seed_end_beat))
    if settings.composed_rolls:
        pngs += composed_rolls(first_model, ds, out, settings.composed_rolls)
    metrics = {"dataset": {"states_sha256": ds.manifest_hash, "totals": ds.manifest["totals"]},
               "table": rows,
               "models": {k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in details.items()},
               "statistics": stats, "settings": settings.__dict__}
    if settings.realism:  # every model's realism; the first model's in full
        suites = {desc: realism_metrics(model, ds, settings) for desc, _, model in loaded}
        for i, (desc, suite) in enumerate(suites.items()):  # each model's realism suite JSON beside the report
            atomic_write_json(out / ("realism.json" if i == 0 else f"realism-{i + 1}.json"),
                              _jsonable({**suite, "model": desc}))
        by_model = {desc: suite["details"] for desc, suite in suites.items()}
        metrics["realism"] = by_model[first_desc]
        metrics["realism_by_model"] = {desc: realism_summary(r) for desc, r in by_model.items()}
    atomic_write_json(out / "metrics.json", _jsonable(metrics))
    by_piece = {_label(m): details[desc]["test_key_nll_by_piece"] for desc, m, _ in loaded}
    atomic_write_text(out / "report.md", _report_md(rows, stats, pngs, curves, out, settings, format_stats_table,
                                                    metrics.get("realism"), metrics.get("realism_by_model"),
                                                    by_piece))
    return metrics


ROLL_SECONDS = 30.0


def composed_rolls(model, ds: Dataset, out: Path, count: int, seconds: float = ROLL_SECONDS) -> list[Path]:
    """``count`` pictures ``composed_vs_real_N.png``: what the model composes from a 16-state test seed
    alone (context 0: nothing before it to replay), above what the piece really does next; the first
    window of ``count`` different test pieces, ``seconds`` each, both at the real excerpt's steady tempo."""
    from chopinbot.evaluation.continuations import held_out_seeds, model_composer
    from chopinbot.evaluation.excerpts import timed_notes
    from chopinbot.render.pianoroll import plot_pianoroll_pair

    seeds, true = held_out_seeds(ds, "test", seconds=seconds, context_states=0)
    firsts = [i for i in range(len(true)) if i == 0 or true[i].group != true[i - 1].group][:count]
    compose = model_composer(model, seconds)
    paths = []
    for n, i in enumerate(firsts, 1):
        result = compose(seeds[i], i)
        if result is None:
            continue
        composed = timed_notes(result.generated)
        paths.append(plot_pianoroll_pair(
            composed, true[i].notes, out / f"composed_vs_real_{n}.png", bpm=60.0,  # both in seconds already
            labels=(f"composed from the 16-state seed alone: {seeds[i].source}", "what the piece does next")))
    return paths


def _any_vocab():
    from chopinbot.dataset.features import DurationVocab

    return DurationVocab((1.0,))


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _report_md(rows, stats, pngs, curves, out: Path, settings: EvalSettings, format_stats_table,
               realism: dict | None = None, realism_by_model: dict | None = None,
               nll_by_piece: dict[str, dict] | None = None) -> str:
    cols = [c for c in REPORT_METRICS if any(c[0] in r for r in rows.values())]
    lines = ["# ChopinBot evaluation report", "",
             "All figures on the **test pieces** (never trained on; the threshold is chosen on the valid pieces).",
             "Duration error is 2|d_true - d_pred| / (d_true + d_pred), averaged over states. "
             "Key NLL, listening: its note head learning each piece block by block as it reads it, through the first "
             "512 states, as the composer learns its primer with `--listen` (docs/training-history.md).", "",
             "| model | " + " | ".join(lbl for _, lbl in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")
    if nll_by_piece:
        lines += [""] + _nll_by_piece_md(nll_by_piece)
    lines += ["", f"![threshold guide]({pngs[0].name})", "",
              "## Musical statistics: generated vs real", "",
              f"{stats['n_generated']} generated pieces ({settings.seed_len}-state test seed + {settings.steps} "
              f"states, sampling at temperature {settings.temperature}, random seeds 0..{settings.pieces - 1}) "
              f"against {stats['n_real']} real test excerpts of the same length. Flagged (⚠): the generated mean "
              "lies outside the real mean ± 1 sd.", "", format_stats_table(stats["rows"]), "",
              f"![piano rolls]({pngs[1].name})", ""]
    rolls = [p for p in pngs if p.name.startswith("composed_vs_real")]
    if rolls:
        lines += ["What the model composes with nothing to replay: each picture continues a 16-state seed of a "
                  "different test piece, read alone (`--context-states 0`), above what the piece does next.", ""]
        lines += [f"![{p.stem}]({p.name})" for p in rolls] + [""]
    lines += ["## Originality", ""]
    o = stats["originality"]
    lr = o["longest_run"]
    lines += [f"- 8-state n-grams (keys + rhythmic value) found verbatim in the training pieces: mean "
              f"{o['mean_overlap_8']:.1%}, worst piece {o['max_overlap_8']:.1%}.",
              f"- Longest run copied from a training piece: {lr['states']} states ({_fmt(lr['beats'])} beats, "
              f"{_fmt(lr['seconds'])} s) from {lr['piece']}.",
              f"- Generation guards fired on {stats['guards_fired']} of {stats['n_generated']} pieces (silence, "
              f"stuck notes, a retry); a loop was broken where it started in {stats.get('loops_broken', 0)}.", ""]
    if realism is not None:
        lines += ["## Realism: generated vs real Chopin", ""]
        if realism_by_model and len(realism_by_model) > 1:
            lines += ["Every model, its continuations of the same held-out seeds against the same real excerpts "
                      "(lower accuracy = closer to Chopin; the calibration rows below give the scale):", "",
                      "| model | accuracy | AUC | accuracy, velocities ignored | n-grams from its own seed | "
                      "... at any transposition |",
                      "|---|---|---|---|---|---|"]
            for name, s in realism_by_model.items():
                lines.append(f"| {name} | {_fmt(s.get('accuracy_mean'))} ± {_fmt(s.get('accuracy_sd'))} | "
                             f"{_fmt(s.get('auc_mean'))} | {_fmt(s.get('no_velocity_accuracy_mean'))} | "
                             f"{_fmt(s.get('seed_ngram_share'))} | {_fmt(s.get('seed_ngram_share_transposed'))} |")
            first = next(iter(realism_by_model.values()))
            lines += ["", f"What really followed the same seeds: {_fmt(first.get('true_seed_ngram_share'))} of its "
                      f"n-grams from the seed, {_fmt(first.get('true_seed_ngram_share_transposed'))} at any "
                      "transposition."]
            lines += ["", f"In full, for {next(iter(realism_by_model))}:", ""]
        lines += [format_realism_section(realism)]
    if curves:
        lines += ["## Training curves", ""] + [f"![{p.stem}](training/{p.name})" for p in curves] + [""]
    return "\n".join(lines)


def _nll_by_piece_md(by_model: dict[str, dict]) -> list[str]:
    """The key NLL of each test piece scored alone, a column per model (by its name)."""
    pieces = list(dict.fromkeys(p for d in by_model.values() for p in d))
    states = {p: next(d[p]["states"] for d in by_model.values() if p in d) for p in pieces}
    lines = ["**Key NLL by test piece** (each scored alone; the mean above weighs them by their states):", "",
             "| piece | states | " + " | ".join(by_model) + " |", "|---|---|" + "---|" * len(by_model)]
    for p in pieces:
        cells = (_fmt(d.get(p, {}).get("key_nll")) for d in by_model.values())
        lines.append(f"| {p} | {states[p]} | " + " | ".join(cells) + " |")
    return lines


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, float) and not np.isfinite(v):
        return "–"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
