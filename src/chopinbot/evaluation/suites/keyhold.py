"""Two suites on other composers' music: key hold after their primers, and styles.

**key-hold**: the primers are windows of the held-out pieces of the other
composers of piano-midi.de (a prepared dataset of the ``piano`` corpus; Chopin
left out), 40 spread evenly, each with the states before it as context, as
``generate --primer`` reads a file.  Each is continued for 60 s; a 20-s excerpt
holds the key when its detected key lies within one fifth of the primer's key
(the realism test's ``key_hold``).

**style**: two generators -- one model in two styles, or two models -- continue
the same seeds (the held-out windows of both composers' performed pieces, at
most 40 each, spread evenly), 60 s each.  A random forest on the realism
features of 20-s excerpts (cross-validated by seed piece) tells generator A's
pieces from B's, and each generator's from each composer's real pieces: a style
that works is harder to tell from its own composer than from the other.  Real
pieces: Chopin's performed pieces in the dataset (every split) and the bundled
piano-midi.de files of the other composer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chopinbot.dataset.corpus import style_name
from chopinbot.evaluation.classifier import ClassifierSettings, two_sets_test
from chopinbot.evaluation.continuations import (
    CONTINUATION_SECONDS,
    continue_seeds,
    evenly,
    excerpts_of,
    held_out_seeds,
    split_excerpts,
)
from chopinbot.evaluation.excerpts import EXCERPT_SECONDS, feature_matrix
from chopinbot.evaluation.realism import composer_excerpts, excerpt_stats
from chopinbot.evaluation.suites.controls import need_dataset, other_composers
from chopinbot.evaluation.suites.schema import Suite, suite_result


@dataclass
class KeyHoldSettings:
    data: str = "runs/corpus/piano"  # a prepared dataset of the piano corpus
    split: str = "test"
    primers: int = 40  # spread evenly over the windows
    seconds: float = CONTINUATION_SECONDS


def key_hold_check(model, ds, s: KeyHoldSettings, progress: bool = True) -> dict:
    seeds, _ = held_out_seeds(ds, s.split, keep=other_composers)
    seeds = evenly(seeds, s.primers)
    holds, per_primer = [], []
    for c in continue_seeds(model, seeds, s.seconds, groups=["x"] * len(seeds), progress=progress, desc="key hold"):
        if c.failed:
            continue
        hs = [excerpt_stats(e)["key_hold"] for e in c.excerpts]
        holds += hs
        per_primer.append(float(np.mean(hs)) if hs else float("nan"))
    return {"key_hold": float(np.nanmean(holds)) if holds else float("nan"), "excerpts": len(holds),
            "primers": len(per_primer), "pieces": len({x.source.split(" ", 1)[0] for x in seeds}),
            "hold_per_primer": per_primer}


def run_key_hold(model_name: str | None, settings: KeyHoldSettings, progress: bool = True) -> dict:
    from chopinbot.model.formats import load_model

    r = key_hold_check(load_model(model_name), need_dataset(settings.data, "piano"), settings, progress)
    rows = [{"primer": i, "key_hold": h} for i, h in enumerate(r.pop("hold_per_primer"))]
    return suite_result("key-hold", model_name, settings, r, rows, 0.0)


@dataclass
class StyleSettings:
    data: str = "runs/corpus/piano"  # a prepared dataset holding both composers' pieces
    styles: tuple = ("chopin", "mozart")  # the composers of generators A and B (their styles, with one model)
    model_b: str | None = None  # generator B's model; then each model composes in its own default style
    split: str = "test"  # whose windows seed the pieces
    max_seeds: int = 40  # at most this many seeds per composer (evenly spread)
    seconds: float = CONTINUATION_SECONDS
    context_states: int | None = None  # states of the piece read before each seed (None: as generate; 0: none)
    # one model in two styles: the style guidance; None, as `generate --style NAME` composes (STYLE_GUIDANCE for a
    # style other than the model's own, none for its own; compose.guidance). It was 0 until 2026-12-07, which
    # measured styles no user hears
    style_guidance: float | None = None
    decoding: dict = field(default_factory=dict)  # GenerateConfig fields for every continuation
    repeats: int = 3  # random seeds of the classifier test
    seed_offset: int = 0  # the i-th seed is continued with random seed seed_offset + i (another draw: another offset)


def style_check(model, ds, s: StyleSettings, model_b=None, progress: bool = True) -> dict:
    a, b = s.styles
    if model_b is not None:  # two models, each in its own style
        generators = {a: (model, None), b: (model_b, None)}
    else:
        generators = {st: (model, st) for st in s.styles}
        for st in s.styles:
            model.config.with_style(st)  # fails early for an unknown style
    seeds = []
    for st in s.styles:
        found, _ = held_out_seeds(ds, s.split, keep=lambda seg, st=st: seg.dynamics and style_name(seg.composer) == st)
        seeds += evenly(found, s.max_seeds)
    features, groups = {}, {}
    for st in s.styles:
        gen_model, asked = generators[st]
        overrides = {"style": asked, **s.decoding, "style_guidance": s.style_guidance if asked else 0.0}
        conts = continue_seeds(gen_model, seeds, s.seconds, overrides, context_states=s.context_states,
                               random_seeds=[s.seed_offset + i for i in range(len(seeds))],
                               groups=[f"seed {x.source.split(' ', 1)[0]}" for x in seeds],  # a piece's windows
                               progress=progress, desc=f"{st} style")  # share a fold
        ex = excerpts_of(conts)
        features[st] = feature_matrix(ex, EXCERPT_SECONDS)
        groups[st] = [e.group for e in ex]
    real = {}
    for st in s.styles:
        if st == "chopin":
            ex = [e for split in ("train", "valid", "test") for e in split_excerpts(ds, split)]
        else:
            ex = composer_excerpts((st.capitalize(),), EXCERPT_SECONDS, ds.settings)
        real[st] = (feature_matrix(ex, EXCERPT_SECONDS), [e.group for e in ex])
    cs = ClassifierSettings(repeats=s.repeats)
    n = min(len(groups[a]), len(groups[b]))
    rows = {f"{a} style vs {b} style": two_sets_test(features[a], groups[a], features[b], groups[b], cs,
                                                     per_class=n)}
    for st in s.styles:
        for composer in s.styles:
            rows[f"{st} style vs real {composer}"] = two_sets_test(features[st], groups[st], *real[composer], cs,
                                                                   per_class=n)
    return {"seeds": len(seeds), "excerpts_per_style": n, "rows": rows}


def run_style(model_name: str | None, settings: StyleSettings, progress: bool = True) -> dict:
    from chopinbot.model.formats import load_model

    r = style_check(load_model(model_name), need_dataset(settings.data, "piano"), settings,
                    load_model(settings.model_b) if settings.model_b else None, progress)
    figures = {"seeds": r["seeds"], "excerpts_per_style": r["excerpts_per_style"],
               **{name: row.get("accuracy_mean") for name, row in r["rows"].items()}}
    rows = [{"pair": name, **row} for name, row in r["rows"].items()]
    return suite_result("style", model_name, settings, figures, rows, 0.0)


KEY_HOLD = Suite("key-hold", run_key_hold, KeyHoldSettings,
                 "continuations of other composers' primers: excerpts within a fifth of the primer's key")
STYLE = Suite("style", run_style, StyleSettings,
              "two styles (or models) told apart, and each told from each composer's real music")
