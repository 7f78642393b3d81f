"""Does ``--style`` (or fine-tuning) steer the music?  Two composers' generators, judged by the realism classifier.

Two generators -- one model in two styles, or two models -- continue the same
seeds (the held-out windows of both composers' performed pieces, from a
prepared dataset that holds both), 60 s each.  A random forest on the realism
features of 20-s excerpts (:mod:`chopinbot.evaluation.realism`,
cross-validated by seed piece) then tells:

* generator A's pieces from generator B's (can they be told apart at all?);
* each generator's pieces from each composer's real pieces: a style that
  works is harder to tell from its own composer than from the other.

    # one model, two styles
    .venv/bin/python scripts/style_check.py --model runs/corpus/m-piano/best --data runs/corpus/piano \\
        --styles chopin mozart --json runs/corpus/style_check.json
    # two models: the shipped one (Chopin) and one fine-tuned on Schubert
    .venv/bin/python scripts/style_check.py --model joint-loudness --model-b runs/walk/ft/best \\
        --data runs/corpus/piano --styles chopin schubert

Real pieces: Chopin's performed pieces in the dataset (every split) and the bundled
piano-midi.de files of the other composer.  The figures of docs/corpus.md were made this way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from chopinbot.compose.generate import GenerateConfig, GenerationError, generate
from chopinbot.dataset.corpus import style_name
from chopinbot.dataset.store import Dataset
from chopinbot.evaluation.excerpts import time_excerpts, timed_notes
from chopinbot.evaluation.realism import (
    EXCERPT_SECONDS,
    ClassifierSettings,
    composer_excerpts,
    feature_matrix,
    held_out_seeds,
    split_excerpts,
    two_sets_test,
)
from chopinbot.io_utils import atomic_write_text
from chopinbot.model.formats import load_model
from chopinbot.music.states import States
from realism_sweep import parse_spec  # scripts/: run as .venv/bin/python scripts/style_check.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="generator A's model (and B's, without --model-b)")
    p.add_argument("--model-b", help="generator B's model; then each model composes in its own default style")
    p.add_argument("--data", required=True, help="a prepared dataset holding both composers' pieces")
    p.add_argument("--styles", nargs=2, default=["chopin", "mozart"], metavar=("A", "B"),
                   help="the composers of generators A and B (their styles, with one model)")
    p.add_argument("--split", default="test", choices=("test", "valid"), help="whose windows seed the pieces")
    p.add_argument("--max-seeds", type=int, default=40, help="at most this many seeds per composer (evenly spread)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each continuation")
    p.add_argument("--context-states", type=int, default=None,
                   help="states of the piece read before each seed (default: as generate, 512; 0 = the seed alone)")
    p.add_argument("--style-guidance", type=float, default=0.0,
                   help="compose with this style guidance (one model in two styles; compose.guidance)")
    p.add_argument("--decoding", default="", metavar="SPEC",
                   help="GenerateConfig fields for every continuation, as scripts/realism_sweep.py reads them "
                        "(e.g. repeat_boost=1,key_local_p=0.2)")
    p.add_argument("--repeats", type=int, default=3, help="random seeds of the classifier test")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.model_b:  # two models, each in its own style
        generators = {args.styles[0]: (load_model(args.model), None), args.styles[1]: (load_model(args.model_b), None)}
    else:
        model = load_model(args.model)
        generators = {s: (model, s) for s in args.styles}
        for s in args.styles:
            model.config.with_style(s)  # fails early for an unknown style
    decoding = parse_spec(args.decoding)
    ds = Dataset(args.data)
    t0 = time.perf_counter()
    seeds = []
    for s in args.styles:
        found, _ = held_out_seeds(ds, args.split, keep=lambda seg, s=s: seg.dynamics and style_name(seg.composer) == s)
        step = max(1, len(found) // args.max_seeds)
        seeds += found[::step][: args.max_seeds]
    if args.context_states is not None:  # keep only the last N states of each seed's context
        seeds = [dataclasses.replace(x, context=x.context[len(x.context) - args.context_states:]
                                     if x.context is not None and args.context_states else None) for x in seeds]
    features, groups = {}, {}
    for style in args.styles:
        excerpts = []
        model, asked = generators[style]
        for i, seed in enumerate(seeds):
            try:
                states = generate(model, seed, GenerateConfig(seconds=args.seconds, random_seed=i, style=asked,
                                                              include_seed=False, **decoding,
                                                              style_guidance=args.style_guidance if asked else 0.0)
                              ).states
            except GenerationError:
                states = States.empty()
            piece = seed.source.split(" ", 1)[0]  # grouped by the seed's piece: its windows share a fold
            excerpts += time_excerpts(timed_notes(states), f"seed {piece}", seed.key, EXCERPT_SECONDS)
        features[style] = feature_matrix(excerpts, EXCERPT_SECONDS)
        groups[style] = [e.group for e in excerpts]
    real = {}
    for style in args.styles:
        if style == "chopin":
            ex = [e for split in ("train", "valid", "test") for e in split_excerpts(ds, split)]
        else:
            ex = composer_excerpts((style.capitalize(),), EXCERPT_SECONDS, ds.settings)
        real[style] = (feature_matrix(ex, EXCERPT_SECONDS), [e.group for e in ex])
    settings = ClassifierSettings(repeats=args.repeats)
    a, b = args.styles
    n = min(len(groups[a]), len(groups[b]))
    rows = {f"{a} style vs {b} style": two_sets_test(features[a], groups[a], features[b], groups[b], settings,
                                                     per_class=n)}
    for style in args.styles:
        for composer in args.styles:
            rows[f"{style} style vs real {composer}"] = two_sets_test(features[style], groups[style],
                                                                      *real[composer], settings, per_class=n)
    print(f"{len(seeds)} seeds, {n} excerpts per style ({time.perf_counter() - t0:.0f} s)")
    for name, r in rows.items():
        print(f"{name:<32} accuracy {r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f}  AUC {r['auc_mean']:.3f}")
    if args.json:
        result = {"seeds": len(seeds), "excerpts_per_style": n, "rows": rows, "args": vars(args)}
        atomic_write_text(args.json, json.dumps(result, indent=2, default=float) + "\n")  # numpy floats too


if __name__ == "__main__":
    main()
