"""Whole-piece retries, loops broken, pieces stuck in a figure (evaluation.form_measures.figure_loop_share
above any Chopin piece's), pieces going round a phrase (form_measures.phrase_passes above any Chopin
piece's), pieces going round a figure more states in a row than any Chopin piece at its period
(form_measures.beyond_chopin_run: a chord hammered, a trill), pieces sliding one way longer than any Chopin
piece (form_measures.longest_slide) and pieces holding a key longer than any Chopin piece
(form_measures.longest_hold) in N pieces of 60 s from the test seeds, as `chopinbot generate --random-seed i
--seconds 60 [--context-states C]` composes them (i = 0..N-1), or (``--split valid``, to choose a setting on)
from random windows of the valid pieces of runs/dataset.

    PYTHONPATH=src python scripts/loop_retries_check.py --pieces 50 [--context-states 0] [--loop-states 0] \
        [--repeat-boost B] [--repeat-passes N] [--min-keys K] [--max-hold BEATS] [--no-chopin-runs] [--split valid]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from chopinbot.compose import decoding, processors
from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.processors import LONGEST_HOLD
from chopinbot.compose.seeds import random_seed_index, seed_from_test
from chopinbot.constants import SHIPPED_MODEL, WARM_STATES
from chopinbot.dataset.store import Dataset
from chopinbot.evaluation.continuations import held_out_seeds
from chopinbot.evaluation.form_measures import (
    CHOPIN_FIGURE_SHARE,
    CHOPIN_PHRASE_PASSES,
    CHOPIN_SLIDE_STATES,
    beyond_chopin_run,
    figure_loop_share,
    longest_hold,
    longest_slide,
    loop_runs,
    phrase_passes,
)
from chopinbot.model.formats import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder or bundled name (default: the shipped model)")
    ap.add_argument("--pieces", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--context-states", type=int, default=WARM_STATES)
    ap.add_argument("--loop-states", type=int, default=GenerateConfig.loop_states)
    ap.add_argument("--repeat-boost", type=float, default=GenerateConfig.repeat_boost)
    ap.add_argument("--repeat-passes", type=int, default=GenerateConfig.repeat_passes)
    ap.add_argument("--min-keys", type=int, default=GenerateConfig.min_keys)
    ap.add_argument("--max-hold", type=float, default=GenerateConfig.max_hold)
    ap.add_argument("--chopin-runs", action=argparse.BooleanOptionalAction, default=GenerateConfig.chopin_runs)
    ap.add_argument("--split", choices=("test", "valid"), default="test",
                    help="whose windows seed the pieces: the bundled test pieces (as `generate` picks a random seed) "
                         "or the valid pieces of runs/dataset (to choose a setting on)")
    args = ap.parse_args()
    model = load_model(args.model)
    breakers = []
    factory = decoding.processors_for

    def spy(*a, **k):
        made = factory(*a, **k)
        breakers.extend(p for p in made if isinstance(p, processors.LoopBreaker))
        return made

    decoding.processors_for = spy
    retried, retries, looped, shares, passes, slides, holds, runs, t = 0, 0, 0, [], [], [], [], [], time.perf_counter()
    valid = held_out_seeds(Dataset("runs/dataset"), "valid", context_states=args.context_states)[0] \
        if args.split == "valid" else None
    for i in range(args.pieces):
        if valid is None:
            seed = seed_from_test(random_seed_index(np.random.default_rng(i)), context_states=args.context_states)
        else:
            seed = valid[int(np.random.default_rng(i).integers(len(valid)))]
        res = generate(model, seed, GenerateConfig(seconds=args.seconds, random_seed=i, loop_states=args.loop_states,
                                                  repeat_boost=args.repeat_boost, repeat_passes=args.repeat_passes,
                                                  min_keys=args.min_keys, max_hold=args.max_hold,
                                                  chopin_runs=args.chopin_runs))
        n = sum(g.count("retried") for g in res.guards)
        retried += n > 0
        retries += n
        looped += any("looping" in g for g in res.guards)
        shares.append(figure_loop_share(res.generated))
        passes.append(phrase_passes(res.generated))
        slides.append(longest_slide(res.generated))
        holds.append(longest_hold(res.generated))
        runs.append((beyond_chopin_run(res.generated) is not None, loop_runs(res.generated)[:2]))
    breaks = int(sum(b.breaks.sum() for b in breakers))
    loops = int(sum(b.loops.sum() for b in breakers))
    out = {"model": args.model or SHIPPED_MODEL, "pieces": args.pieces, "split": args.split,
           "context_states": args.context_states,
           "loop_states": args.loop_states, "chopin_runs": args.chopin_runs,
           "repeat_boost": args.repeat_boost, "repeat_passes": args.repeat_passes, "min_keys": args.min_keys,
           "pieces_retried": retried, "retries": retries, "pieces_with_a_loop_guard": looped,
           "loops_broken": loops, "states_composed_with_a_loop_forbidden": breaks,
           "pieces_stuck_in_a_figure": int(sum(s > CHOPIN_FIGURE_SHARE for s in shares)),
           "figure_loop_share_median": round(float(np.median(shares)), 3),
           "figure_loop_share_max": round(float(np.max(shares)), 3),
           "pieces_looping_beyond_chopin": int(sum(beyond for beyond, _ in runs)),
           "chord_struck_again_max": int(max(r[0] for _, r in runs)),
           "alternation_max": int(max(r[1] for _, r in runs)),
           "pieces_going_round_a_phrase": int(sum(p > CHOPIN_PHRASE_PASSES for p in passes)),
           "phrase_passes_median": round(float(np.median(passes)), 2),
           "phrase_passes_max": round(float(np.max(passes)), 2),
           "pieces_sliding_beyond_chopin": int(sum(s > CHOPIN_SLIDE_STATES for s in slides)),
           "longest_slide_max": int(np.max(slides)),
           "pieces_holding_beyond_chopin": int(sum(h > LONGEST_HOLD + 1e-6 for h in holds)),
           "longest_hold_max": round(float(np.max(holds)), 2), "seconds": round(time.perf_counter() - t)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
