"""Compliance of the composer's controls: does the music do what was asked?

For each setting, ``--pieces`` pieces (default 50) are generated from held-out
test seeds (a random window of a test piece each, and a random seed for
sampling), and measured by :mod:`chopinbot.evaluation.figures`:

* density (``--density``): the share of pieces within +-20 % of the request;
* register (``--register``): the share of all notes inside it, with the
  register confining the sampler (the default) and with the steering alone;
* loudness (``--loudness``): for each seed, the five marks pp..ff; the share of
  pairs of marks whose pieces' mean velocities are in order (all 10 pairs,
  and the 4 neighbouring pairs);
* key (``--key``, with ``hold_key`` on and off): the share of 20-s excerpts
  within one fifth of the requested key, from test seeds (requests in random
  keys) and from other composers' primers (the held-out pieces of
  piano-midi.de, ``--piano-data``, of the same split as ``--seeds``, each
  continued in a random key).

    nice -n 10 .venv/bin/python scripts/controls_check.py --model runs/ctl/m-controls/best \\
        --json docs/controls-check.json
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from chopinbot.compose.generate import GenerateConfig, GenerationError, generate
from chopinbot.compose.seeds import list_seeds, seed_from_test
from chopinbot.dataset.corpus import style_name
from chopinbot.dataset.store import Dataset
from chopinbot.evaluation.figures import key_hold, result_figures
from chopinbot.evaluation.realism import held_out_seeds
from chopinbot.io_utils import atomic_write_json
from chopinbot.model.formats import load_model
from chopinbot.music.controls import LOUDNESS_LEVELS
from chopinbot.music.keys import ALL_KEYS
from chopinbot.music.states import states_to_notes

DENSITIES = (3.0, 6.0, 10.0)  # notes per second: sparse, moderate, busy (Chopin's windows: mostly 3-15)
REGISTERS = ((48, 84), (36, 72), (60, 96))  # C3-C6, C2-C5, C4-C7


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a model with controls")
    p.add_argument("--pieces", type=int, default=50, help="pieces per setting")
    p.add_argument("--seconds", type=float, default=30.0, help="length of each piece (key: twice this)")
    p.add_argument("--piano-data", default="runs/corpus/piano", help="a prepared dataset of the piano corpus")
    p.add_argument("--only", nargs="*", default=["density", "register", "loudness", "key"])
    p.add_argument("--seeds", choices=("test", "valid"), default="test",
                   help="whose windows seed the pieces: test to report, valid (of --valid-data) to tune")
    p.add_argument("--valid-data", default="runs/corpus/chopin48", help="a prepared dataset, for --seeds valid")
    p.add_argument("--key-guidance", type=float, default=GenerateConfig().key_guidance)
    p.add_argument("--key-guidance-drift", type=float, default=GenerateConfig().key_guidance_drift)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    model = load_model(args.model)
    n = args.pieces
    rng = np.random.default_rng(0)
    if args.seeds == "test":
        seeds = [seed_from_test(int(i)) for i in rng.choice(len(list_seeds()), n, replace=len(list_seeds()) < n)]
    else:
        found, _ = held_out_seeds(Dataset(args.valid_data), "valid")
        seeds = [found[int(i)] for i in rng.choice(len(found), n, replace=len(found) < n)]
    out: dict = {"model": args.model or "shipped", "pieces": n, "seconds": args.seconds}
    t0 = time.time()

    def pieces(seed_list, **controls):
        for i, seed in enumerate(seed_list):
            cfg = GenerateConfig(seconds=args.seconds, random_seed=i, include_seed=False, **controls)
            try:
                yield i, seed, generate(model, seed, cfg)
            except GenerationError:
                continue

    if "density" in args.only:
        for want in DENSITIES:
            got = [result_figures(r).density for _, _, r in pieces(seeds, density=want)]
            within = float(np.mean([abs(g / want - 1) <= 0.2 for g in got]))
            out[f"density {want:g}"] = {"within_20pc": within, "mean": float(np.mean(got)),
                                        "median": float(np.median(got)), "pieces": len(got)}
            print(f"density {want:g}/s: {within:.0%} of {len(got)} pieces within 20 % (mean {np.mean(got):.2f}, "
                  f"median {np.median(got):.2f})  [{time.time() - t0:.0f} s]", flush=True)
    if "register" in args.only:
        for lo, hi in REGISTERS:
            for confine in (True, False):
                inside, total = 0, 0
                for _, _, r in pieces(seeds, register=(lo, hi), confine_register=confine):
                    pitch = states_to_notes(r.generated)[:, 2]
                    inside += int(((pitch >= lo) & (pitch <= hi)).sum())
                    total += len(pitch)
                share = inside / max(total, 1)
                out[f"register {lo}-{hi} {'confined' if confine else 'steered'}"] = {"inside": share, "notes": total}
                print(f"register {lo}-{hi} ({'confined' if confine else 'steering alone'}): {share:.1%} of "
                      f"{total} notes inside  [{time.time() - t0:.0f} s]", flush=True)
    if "loudness" in args.only:
        marks = list(LOUDNESS_LEVELS)
        vel = np.full((n, len(marks)), np.nan)
        for j, mark in enumerate(marks):
            for i, _, r in pieces(seeds, loudness=mark):
                vel[i, j] = result_figures(r).loudness
        pairs = [(a, b) for a, b in itertools.combinations(range(len(marks)), 2)]
        ordered = [vel[i, a] < vel[i, b] for i in range(n) for a, b in pairs if not np.isnan(vel[i, [a, b]]).any()]
        near = [vel[i, a] < vel[i, a + 1] for i in range(n) for a in range(len(marks) - 1)
                if not np.isnan(vel[i, [a, a + 1]]).any()]
        out["loudness"] = {"pairs_in_order": float(np.mean(ordered)), "neighbours_in_order": float(np.mean(near)),
                           "mean_velocity": dict(zip(marks, np.nanmean(vel, 0).round(1).tolist()))}
        print(f"loudness: {np.mean(ordered):.0%} of pairs in order, {np.mean(near):.0%} of neighbouring pairs; "
              f"mean velocity {dict(zip(marks, np.nanmean(vel, 0).round(1).tolist()))}  [{time.time() - t0:.0f} s]",
              flush=True)
    if "key" in args.only:
        krng = np.random.default_rng(1)
        primers, _ = held_out_seeds(Dataset(args.piano_data), args.seeds,  # valid primers to tune
                                    keep=lambda s: s.dynamics and style_name(s.composer) != "chopin")
        primers = [primers[int(i)] for i in krng.choice(len(primers), n, replace=len(primers) < n)]
        for label, seed_list in ((f"{args.seeds} seeds", seeds), ("other composers' primers", primers)):
            for hold in (True, False):
                holds, moved = [], 0
                for i, seed in enumerate(seed_list):
                    want = ALL_KEYS[int(krng.integers(24))]
                    want = want.with_mode(seed.key.minor)  # the mode is the seed's (a transposition keeps it)
                    moved += want.tonic != seed.key.tonic
                    try:
                        r = generate(model, seed, GenerateConfig(seconds=2 * args.seconds, random_seed=i,
                                                                 include_seed=False, key=want.name, hold_key=hold,
                                                                 key_guidance=args.key_guidance,
                                                                 key_guidance_drift=args.key_guidance_drift))
                    except GenerationError:
                        continue
                    notes = states_to_notes(r.generated).astype(np.float64)
                    notes[:, :2] *= 60.0 / r.bpm
                    share, count = key_hold(notes, r.key)
                    holds += [share] * count
                rate = float(np.mean(holds)) if holds else float("nan")
                out[f"key {label} {'held' if hold else 'free'}"] = {"key_hold": rate, "excerpts": len(holds)}
                print(f"key from {label} ({'hold_key' if hold else 'no hold'}): {rate:.0%} of {len(holds)} "
                      f"excerpts within a fifth of the requested key  [{time.time() - t0:.0f} s]", flush=True)
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
