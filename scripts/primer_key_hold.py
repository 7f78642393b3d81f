"""Key hold from other composers' primers: does a continuation stay in its primer's key?

The primers are windows of the held-out pieces of the other composers of
piano-midi.de (a prepared dataset of the ``piano`` corpus; Chopin left out),
spread evenly, each with the states before it as context, as `generate
--primer` reads a file.  Each is continued for 60 s; a 20-s excerpt holds the
key when its detected key lies within one fifth of the primer's key (the
realism test's ``key_hold``, :mod:`chopinbot.evaluation.realism`).

    .venv/bin/python scripts/primer_key_hold.py --data runs/corpus/piano joint-loudness runs/corpus/m-piano/best
"""

from __future__ import annotations

import argparse

import numpy as np

from chopinbot.compose.generate import GenerateConfig, GenerationError, generate
from chopinbot.dataset.corpus import style_name
from chopinbot.dataset.store import Dataset
from chopinbot.evaluation.excerpts import time_excerpts, timed_notes
from chopinbot.evaluation.realism import EXCERPT_SECONDS, excerpt_stats, held_out_seeds
from chopinbot.io_utils import atomic_write_json
from chopinbot.model.formats import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--data", required=True, help="a prepared dataset of the piano corpus")
    p.add_argument("--split", default="test", choices=("test", "valid"))
    p.add_argument("--primers", type=int, default=40, help="primers, spread evenly over the windows")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    ds = Dataset(args.data)
    seeds, _ = held_out_seeds(ds, args.split, keep=lambda s: s.dynamics and style_name(s.composer) != "chopin")
    seeds = seeds[:: max(1, len(seeds) // args.primers)][: args.primers]
    out = {}
    for name in args.models:
        model = load_model(name)
        holds, per_primer = [], []
        for i, seed in enumerate(seeds):
            try:
                states = generate(model, seed, GenerateConfig(seconds=args.seconds, random_seed=i,
                                                              include_seed=False)).states
            except GenerationError:
                continue
            hs = [excerpt_stats(e)["key_hold"] for e in time_excerpts(timed_notes(states), "x", seed.key,
                                                                       EXCERPT_SECONDS)]
            holds += hs
            per_primer.append(float(np.mean(hs)) if hs else float("nan"))
        rate = float(np.nanmean(holds)) if holds else float("nan")
        out[name] = {"key_hold": rate, "excerpts": len(holds), "primers": len(per_primer),
                     "hold_per_primer": per_primer}
        print(f"{name}: key hold {rate:.3f} over {len(holds)} excerpts of {len(per_primer)} primers "
              f"({len({s.source.split(' ', 1)[0] for s in seeds})} pieces)", flush=True)
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
