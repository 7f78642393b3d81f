"""The realism suite: can a classifier tell a model's continuations from real Chopin?

The protocol models and decodings were chosen by (docs/training.md, "music that
passes for Chopin"): every valid seed (the 16 states before each 20-s window of
the valid pieces, with its context) continued for 60 s, random seed = the seed's
index (+ ``seed_offset`` for another draw), the classifier test of
:func:`~chopinbot.evaluation.realism.evaluate_realism` with 3 repeats.  Beside
the main row: the feature gaps (what the classifier sees, feature by feature)
and the composed-music rows of :mod:`chopinbot.evaluation.composed` (issue 27).
Select on valid; ``chopinbot evaluate`` scores the chosen one once on test
(this same suite with ``split="test"`` and 5 repeats).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chopinbot.constants import SEED_STATES
from chopinbot.evaluation.continuations import CONTINUATION_SECONDS, model_composer
from chopinbot.evaluation.realism import (
    CALIBRATION_COMPOSERS,
    ClassifierSettings,
    RealismSettings,
    evaluate_realism,
)
from chopinbot.evaluation.suites.schema import Suite, suite_result


@dataclass
class RealismSuiteSettings:
    split: str = "valid"  # choose on valid; the report scores test
    seconds: float = CONTINUATION_SECONDS
    repeats: int = 3  # random seeds of the classifier test (about 30 s a row on a 2-core machine)
    seed_offset: int = 0  # random seed of the i-th continuation: i + this (another draw of the same decoding)
    seed_len: int = SEED_STATES
    decoding: dict = field(default_factory=dict)  # GenerateConfig fields for every continuation
    composed: bool = True  # the composed-music rows (a second pass from the seed alone: twice the composing)
    composers: tuple = CALIBRATION_COMPOSERS  # the calibration rows: other composers against Chopin
    data: str | None = None  # a prepared dataset (default: the bundled corpus)


def _figures(r: dict) -> dict:
    if "skipped" in r:
        return {}
    rows = r["rows"]
    main, novel = rows.get("generated vs Chopin", {}), rows.get("generated vs Chopin, velocities ignored", {})
    recur = next((s for s in r["statistics"] if s["stat"] == "interval_4gram_recurrence"), {})
    replay = r["seed_replay"]
    out = {"accuracy": main.get("accuracy_mean"), "accuracy_sd": main.get("accuracy_sd"), "auc": main.get("auc_mean"),
           "accuracy_no_velocity": novel.get("accuracy_mean"),
           "motif_recurrence": recur.get("gen_mean"), "motif_recurrence_chopin": recur.get("real_mean"),
           "seed_replay": replay.get("generated"), "seed_replay_true": replay.get("true"),
           "seed_replay_transposed": replay.get("generated_transposed"),
           "seed_replay_transposed_true": replay.get("true_transposed"),
           "excerpts": r["n_excerpts"]["generated"],
           "flagged": [s["stat"] for s in r["statistics"] if s["flagged"]]}
    for name, row in rows.items():
        if name not in ("generated vs Chopin", "generated vs Chopin, velocities ignored") and "accuracy_mean" in row:
            out[f"calibration: {name}"] = row["accuracy_mean"]
    c = r.get("composed")
    if c:
        crow = c["rows"]
        out.update({
            "composed_accuracy": crow["composed generated vs composed Chopin"].get("accuracy_mean"),
            "seed_alone_accuracy": crow["seed alone (context 0) vs Chopin"].get("accuracy_mean"),
            "seed_alone_composed_accuracy":
                crow["seed alone (context 0), composed vs composed Chopin"].get("accuracy_mean"),
            "phrase_accuracy": crow[f"{c['phrase_seconds']:g}-s excerpts: generated vs Chopin"].get("accuracy_mean")})
        for scale, replays in (("replay", c["replay"]), ("replay_phrase", c.get("replay_phrase", {}))):
            for side, d in replays.items():
                for k in ("mean", "median", "above_0.8", "composed"):
                    out[f"{scale}_{side}_{k}"] = d.get(k)
        for side, d in c.get("voices", {}).items():
            for stat, v in d.items():
                out[f"{stat}_{side}"] = v["mean"]
                if side == "chopin":
                    out[f"{stat}_{side}_sd"] = v["sd"]
    return out


def realism_suite(model, ds, settings: RealismSuiteSettings | None = None, progress: bool = True,
                  label: str | None = None) -> dict:
    """The suite's JSON for a loaded ``model`` on dataset ``ds``; the full
    :func:`~chopinbot.evaluation.realism.evaluate_realism` result under ``details``."""
    s = settings or RealismSuiteSettings()
    compose = model_composer(model, s.seconds, s.decoding)

    def continue_seed(seed, index: int):
        return compose(seed, index + s.seed_offset)

    rs = RealismSettings(split=s.split, continuation_seconds=s.seconds, seed_len=s.seed_len, composed=s.composed,
                         composers=tuple(s.composers), test=ClassifierSettings(repeats=s.repeats))
    r = evaluate_realism(ds, continue_seed, rs, progress=progress)
    rows = [{"kind": "classifier", "pair": name, **row} for name, row in r.get("rows", {}).items()]
    rows += [{"kind": "classifier", "pair": name, **row} for name, row in r.get("composed", {}).get("rows", {}).items()]
    rows += [{"kind": "feature gap", **g} for g in r.get("feature_gaps", [])]
    return suite_result("realism", label, s, _figures(r), rows, r.get("seconds", 0.0), details=r)


def run(model_name: str | None, settings: RealismSuiteSettings, progress: bool = True) -> dict:
    from chopinbot.dataset.prepare import load_or_prepare
    from chopinbot.model.formats import load_model

    ds = load_or_prepare(settings.data, progress=progress)
    return realism_suite(load_model(model_name), ds, settings, progress, label=model_name)


SUITE = Suite("realism", run, RealismSuiteSettings,
              "continuations of the valid seeds against real Chopin: accuracy, feature gaps, composed music")
