"""Choosing a model and its decoding on the valid pieces with the realism test.

Each SPEC is a comma-separated list of GenerateConfig fields for the continuations
(e.g. ``key_top_k=8`` or ``key_top_k=0,key_local_p=0.5,key_window=4,top_p=0.5``); every
other field keeps its default.  For each, the model continues the 16 states before
every 20-s window of the valid pieces (with their context) for 60 s, and a random
forest tries to tell those excerpts from real Chopin (see
:mod:`chopinbot.evaluation.realism`); lower accuracy = closer to Chopin.

    # the decoding before 2026-12-01 evening, then the local rule alone, on the previous model
    .venv/bin/python scripts/realism_sweep.py --model lstm-repeats key_top_k=8,key_local_p=0,top_p=1 \\
        key_top_k=0,key_local_p=0.5,key_window=4,top_p=1
    # the shipped model with today's defaults
    .venv/bin/python scripts/realism_sweep.py key_top_k=0

The table of docs/training.md ("music that passes for Chopin") was made this way (3
repeats of the classifier; about 30 s a line on this 2-core machine).  Select on
valid; score the chosen one once on test with ``chopinbot evaluate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from chopinbot.compose.generate import GenerateConfig, GenerationError, generate
from chopinbot.dataset.prepare import load_or_prepare
from chopinbot.evaluation.realism import ClassifierSettings, RealismSettings, evaluate_realism
from chopinbot.model.formats import load_model
from chopinbot.music.states import States

FIELDS = {f.name: f.type for f in dataclasses.fields(GenerateConfig)}


def parse_spec(spec: str) -> dict:
    """``"key_top_k=0,top_p=0.5"`` -> ``{"key_top_k": 0, "top_p": 0.5}`` (types from GenerateConfig's defaults)."""
    out = {}
    for part in filter(None, spec.split(",")):
        name, _, value = part.partition("=")
        if name not in FIELDS:
            raise SystemExit(f"unknown GenerateConfig field {name!r}")
        default = getattr(GenerateConfig(), name)
        if isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes", "on")
        elif name == "register":  # register=36-96 (MIDI, in the output key)
            out[name] = tuple(int(v) for v in value.split("-"))
        elif name in ("loudness", "style", "key"):
            out[name] = value
        else:
            out[name] = int(value) if isinstance(default, int) else float(value)
    GenerateConfig(**out).validate()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("specs", nargs="+", help="decodings to compare (GenerateConfig fields)")
    p.add_argument("--model", help="model folder or bundled name (default: the shipped model)")
    p.add_argument("--split", choices=("valid", "test"), default="valid")
    p.add_argument("--repeats", type=int, default=3, help="random seeds of the classifier test")
    p.add_argument("--seed-offset", type=int, default=0,
                   help="random seed of the i-th continuation: i + this (another draw of the same decoding)")
    p.add_argument("--json", help="write every result here")
    args = p.parse_args()
    model = load_model(args.model)
    ds = load_or_prepare(None, progress=False)
    results = {}
    for spec in args.specs:
        fields = parse_spec(spec)

        def continue_seed(seed, index: int, fields=fields) -> States:
            try:
                return generate(model, seed, GenerateConfig(seconds=60.0, random_seed=index + args.seed_offset,
                                                            include_seed=False,
                                                            **fields)).states
            except GenerationError:
                return States.empty()

        t0 = time.perf_counter()
        r = evaluate_realism(ds, continue_seed, RealismSettings(split=args.split,
                                                                test=ClassifierSettings(repeats=args.repeats)),
                             progress=False)
        main_row = r["rows"]["generated vs Chopin"]
        novel = r["rows"]["generated vs Chopin, velocities ignored"]
        flagged = [row["stat"] for row in r["statistics"] if row["flagged"]]
        recur = next(row for row in r["statistics"] if row["stat"] == "interval_4gram_recurrence")
        replay = r["seed_replay"]
        print(f"{spec or '(defaults)'}: accuracy {main_row['accuracy_mean']:.3f} ± {main_row['accuracy_sd']:.3f}, "
              f"AUC {main_row['auc_mean']:.3f}; velocities ignored {novel['accuracy_mean']:.3f}; "
              f"motif recurrence {recur['gen_mean']:.2f} (Chopin {recur['real_mean']:.2f}); primer replay "
              f"{replay['generated']:.3f} (true {replay['true']:.3f}), transposed {replay['generated_transposed']:.3f} "
              f"(true {replay['true_transposed']:.3f}); flagged {', '.join(flagged) or 'none'} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        results[spec] = r
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, default=str)


if __name__ == "__main__":
    main()
