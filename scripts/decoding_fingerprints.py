"""Fingerprints of composed music, one per decoding rule: a refactor of the composing loop must keep them.

Composes with the bundled models a set of configurations that between them exercise every decoding
rule (sampling, threshold, key change + key guidance + KeyDrift, style guidance, the density steer,
register confinement, loudness, the repeat boost on and off, batches, forms with their cadence, infill,
models without controls or without duration classes, the guards' retries) and prints a hash of each
result's states (keys, onsets, beats, velocity) and guards.

    PYTHONPATH=src python scripts/decoding_fingerprints.py --out fingerprints.json        # record
    PYTHONPATH=src python scripts/decoding_fingerprints.py --check scripts/decoding_fingerprints.json

``--check`` lists every configuration whose music differs from the recorded one (exit 1 if any).
``decoding_fingerprints.json`` was recorded before the decoding refactor (issue 26) and still holds
for every configuration without a loop or a form; ``decoding_fingerprints_phase2.json`` after the
deliberate changes (cadences with the config's rules, the loop breaker); ``decoding_fingerprints_phase3.json``
after the loop breaker kept a broken loop out (2026-12-07; 6 of 36 differ from phase 2, those where a
loop broke); ``decoding_fingerprints_phase4.json`` after near-loops were broken too and the repeat boost's
default went from 4 to 16 and its copies were weighed with a density's tilt (2026-12-07; re-recorded when the
loop guard's message named the near-loop too: only the guards' text moved; 21 of 36 differ
from phase 3); ``decoding_fingerprints_phase5.json`` after rests were allowed (``min_keys`` 0), the repeat
boost stopped helping a phrase round a third time (``repeat_passes`` 2) and the default model became
``piano-transformer`` (2026-12-07 evening); ``decoding_fingerprints_phase6.json`` after a scale was turned
after 28 states, the repeat boost stopped helping a moving figure past ``repeat_passes`` and the model's own
style went unguided, other styles guided at 1 (2026-12-07, late; 8 of 36 differ from phase 5: the style
guided, and the guards' text of the loops broken); ``decoding_fingerprints_phase7.json`` after the durations'
top-p went from 0.5 to 0.65 (2026-12-07, late).  It still held 36 of 36
after the note head's listening (``listen``) and the hold limit (``max_hold``) came, both off by default
(on, listening changes 28 of 36, those whose primer holds a whole block; the hold limit at 13 beats 1, the
threshold's held chords).  ``decoding_fingerprints_phase8.json`` after the repeat boost stopped helping a
figure round more than ``repeat_passes`` times too, as it does a phrase (14 of 36 differ from phase 7, those
where a figure had gone round more than twice); ``decoding_fingerprints_phase9.json`` after the loop
breaker began to stop each short figure where Chopin's longest run at its length stops (``chopin_runs`` on
by default; 13 of 36 differ from phase 8); ``decoding_fingerprints_phase10.json`` after the loop guard's line
began to say when and which loop each time (2026-12-08; 12 of 36 differ from phase 9, those where a loop broke,
and ``--states-only`` hashes of all 36 were the same before and after: only the text moved);
``decoding_fingerprints_phase11.json`` after a seed's tempo became its source's over the last 16 beats
(``compose.seeds.source_tempo``; 16 of 36 differ from phase 10, those whose length is in seconds or whose
guards say a time): check refactors against it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace

from chopinbot.compose.form import compose_form
from chopinbot.compose.generate import GenerateConfig, generate
from chopinbot.compose.infill import infill
from chopinbot.compose.seeds import seed_from_test
from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot.model.formats import load_model


def states_hash(states, guards=()) -> str:
    h = hashlib.sha256()
    for a in (states.keys, states.onsets, states.beats, states.velocity):
        h.update(a.tobytes())
    h.update("|".join(guards).encode())
    return h.hexdigest()[:16]


def result_hash(res, guards: bool = True) -> str:
    results = res if isinstance(res, list) else [res]
    return "+".join(states_hash(r.states, r.guards if guards else ()) for r in results)


B = GenerateConfig(steps=64, random_seed=3)
# name -> (model, seed index, context states, what to call, config, extra)
CASES = {
    "plain": ("piano-controls", 5, 512, "generate", B, {}),
    "seconds": ("piano-controls", 7, 512, "generate", replace(B, steps=None, seconds=12.0), {}),
    "threshold": ("piano-controls", 5, 512, "generate", replace(B, threshold=0.3), {}),
    "key-change-drift": ("piano-controls", 9, 512, "generate", replace(B, key="F# minor", steps=96), {}),
    "key-fixed-weight": ("piano-controls", 9, 512, "generate", replace(B, key="Bb minor", key_guidance=1.0,
                                                                         key_guidance_drift=1.0), {}),
    "no-hold-key": ("piano-controls", 9, 512, "generate", replace(B, hold_key=False), {}),
    "style": ("piano-styles", 4, 512, "generate", replace(B, style="mozart"), {}),
    "style-no-guidance": ("piano-styles", 4, 512, "generate", replace(B, style="bach", style_guidance=0.0), {}),
    "density": ("piano-controls", 11, 512, "generate", replace(B, density=12.0), {}),
    "density-no-keep": ("piano-controls", 11, 512, "generate", replace(B, density=2.0, keep_density=False), {}),
    "register": ("piano-controls", 13, 512, "generate", replace(B, register=(55, 79)), {}),
    "register-unconfined": ("piano-controls", 13, 512, "generate", replace(B, register=(55, 79),
                                                                            confine_register=False), {}),
    "register-narrow": ("piano-controls", 13, 512, "generate", replace(B, register=(60, 67)), {}),
    "loudness": ("piano-controls", 2, 512, "generate", replace(B, loudness="pp"), {}),
    "follow-seed": ("piano-controls", 2, 512, "generate", replace(B, follow_seed=True), {}),
    "all-controls": ("chopin-controls", 6, 512, "generate", replace(B, density=6.0, register=(48, 84),
                                                                     loudness="f", key="D major"), {}),
    "no-repeat-boost": ("piano-controls", 5, 512, "generate", replace(B, repeat_boost=1.0), {}),
    "strong-repeat-boost": ("piano-controls", 1, 512, "generate", replace(B, repeat_boost=50.0), {}),
    "top-k-keys": ("piano-controls", 3, 512, "generate", replace(B, key_top_k=8, key_min_p=0.1, top_k=3,
                                                                  top_p=1.0, temperature=0.8), {}),
    "batch4": ("piano-controls", 5, 512, "generate", B, {"batch": 4}),
    "batch4-numpy": ("piano-controls", 5, 512, "generate", replace(B, density=10.0), {"batch": 4,
                                                                                         "engine": "numpy"}),
    "context0": ("piano-controls", 8, 0, "generate", replace(B, steps=200), {}),
    "form-aba": ("piano-controls", 5, 512, "form", replace(B, steps=None, seconds=40.0), {"form": "ABA"}),
    "form-aaba": ("piano-controls", 12, 512, "form", replace(B, steps=None, seconds=50.0), {"form": "AABA"}),
    "form-no-controls": ("chopin-editions", 12, 512, "form", replace(B, steps=None, seconds=40.0), {"form": "ABA"}),
    "infill": ("piano-controls", 0, 512, "infill", replace(B, steps=None), {"span": (10.0, 16.0)}),
    "infill-steer": ("piano-controls", 0, 512, "infill", replace(B, steps=None), {"span": (20.0, 26.0),
                                                                                    "steer": True}),
    "editions": ("chopin-editions", 5, 512, "generate", B, {}),
    "joint-loudness": ("joint-loudness", 5, 512, "generate", B, {}),
    "lstm-repeats": ("lstm-repeats", 5, 512, "generate", B, {}),
    "original": ("original", 5, 512, "generate", B, {}),
    "original-threshold-retry": ("original", 5, 512, "generate", replace(B, threshold=0.97, steps=80), {}),
    "stuck-retry": ("lstm-repeats", 5, 512, "generate", replace(B, threshold=0.95, steps=80), {}),
    "loop-retry": ("original", 20, 0, "generate", replace(B, threshold=0.5, steps=120), {}),
    "no-retry": ("original", 5, 512, "generate", replace(B, threshold=0.97, steps=80, retry=False), {}),
    "rerun-window": ("lstm-repeats", 5, 512, "generate", B, {"rerun_window": 16}),
}


def run_case(name: str, models: dict, guards: bool = True) -> tuple[str, list[str]]:
    model_name, index, context, kind, cfg, extra = CASES[name]
    if model_name not in models:
        models[model_name] = load_model(model_name)
    model = models[model_name]
    if kind == "infill":
        primer = BUNDLED_CORPUS_DIR / "chp_op18.mid"
        res = infill(model, primer, *extra["span"], cfg=cfg, candidates=4, steer=extra.get("steer", False))
        return result_hash(res, guards), res.guards
    seed = seed_from_test(index, context_states=context)
    if kind == "form":
        res = compose_form(model, seed, cfg, extra["form"])
        return result_hash(res, guards), res.guards
    res = generate(model, seed, cfg, **extra)
    said = [g for r in (res if isinstance(res, list) else [res]) for g in r.guards]
    return result_hash(res, guards), said


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the fingerprints here (JSON)")
    ap.add_argument("--check", help="compare with these recorded fingerprints (JSON)")
    ap.add_argument("--only", nargs="*", help="these cases only")
    ap.add_argument("--states-only", action="store_true",
                    help="hash the music alone, not the guards' text (to check that a change of wording moved "
                         "nothing else; record both sides with it)")
    args = ap.parse_args()
    models: dict = {}
    got = {}
    for name in args.only or CASES:
        t = time.perf_counter()
        h, guards = run_case(name, models, guards=not args.states_only)
        got[name] = h
        print(f"{name:28s} {h}  {time.perf_counter() - t:5.1f} s  guards: {'; '.join(guards) or '-'}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(got, f, indent=1)
    if args.check:
        want = json.load(open(args.check))
        diff = [n for n in got if n in want and want[n] != got[n]]
        print(f"{len(got) - len(diff)} of {len(got)} identical" + (f"; differ: {', '.join(diff)}" if diff else ""))
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
