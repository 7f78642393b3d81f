"""Where generated continuations differ from real Chopin, feature by feature (what the realism classifier sees).

The shipped model (or ``--model``) continues every valid (or test) seed for 60 s with
the decoding SPEC (GenerateConfig fields, as ``scripts/realism_sweep.py`` reads
them); the 65 realism features of its 20-s excerpts are compared with those of the
real Chopin excerpts (the training pieces and the split's own).  Printed: the
features whose means differ most, in real standard deviations, and the quartiles
of any feature named with ``--quantiles``.

    .venv/bin/python scripts/feature_gaps.py                       # the default decoding
    .venv/bin/python scripts/feature_gaps.py repeat_boost=1 --quantiles interval_4gram_recurrence
"""

from __future__ import annotations

import argparse

import numpy as np

from chopinbot.compose.generate import GenerateConfig, GenerationError, generate
from chopinbot.dataset.prepare import load_or_prepare
from chopinbot.evaluation.excerpts import EXCERPT_SECONDS, FEATURE_NAMES, feature_matrix, time_excerpts, timed_notes
from chopinbot.evaluation.realism import held_out_seeds, split_excerpts
from chopinbot.model.formats import load_model
from realism_sweep import parse_spec  # scripts/: run as .venv/bin/python scripts/feature_gaps.py


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("spec", nargs="?", default="", help="decoding: GenerateConfig fields (default: the defaults)")
    p.add_argument("--model", help="model folder or bundled name (default: the shipped model)")
    p.add_argument("--split", choices=("valid", "test"), default="valid")
    p.add_argument("--top", type=int, default=15, help="print this many features")
    p.add_argument("--quantiles", nargs="*", default=[], metavar="FEATURE",
                   help="also print these features' 10/25/50/75/90th percentiles, generated and real")
    args = p.parse_args()
    fields = parse_spec(args.spec)
    ds = load_or_prepare(None, progress=False)
    model = load_model(args.model)
    seeds, true = held_out_seeds(ds, args.split)
    generated = []
    for i, seed in enumerate(seeds):
        try:
            states = generate(model, seed, GenerateConfig(seconds=60.0, random_seed=i, include_seed=False,
                                                          **fields)).states
        except GenerationError:
            continue
        generated += time_excerpts(timed_notes(states), seed.source, seed.key, EXCERPT_SECONDS)
    G = feature_matrix(generated)
    R = feature_matrix(split_excerpts(ds, "train") + true)
    mean_g, mean_r, sd_r = np.nanmean(G, 0), np.nanmean(R, 0), np.nanstd(R, 0)
    z = (mean_g - mean_r) / np.where(sd_r > 0, sd_r, np.nan)
    print(f"{len(generated)} generated and {len(R)} real excerpts; mean differences in real sds:")
    for j in np.argsort(-np.nan_to_num(np.abs(z)))[: args.top]:
        print(f"  {FEATURE_NAMES[j]:<26} generated {mean_g[j]:8.3f}   real {mean_r[j]:8.3f} ± {sd_r[j]:7.3f}"
              f"   z {z[j]:+.2f}")
    q = (0.1, 0.25, 0.5, 0.75, 0.9)
    for name in args.quantiles:
        j = FEATURE_NAMES.index(name)
        print(f"{name} percentiles 10/25/50/75/90:")
        for label, X in (("generated", G), ("real", R)):
            print(f"  {label:<10}" + " ".join(f"{v:7.3f}" for v in np.nanquantile(X[:, j], q)))


if __name__ == "__main__":
    main()
