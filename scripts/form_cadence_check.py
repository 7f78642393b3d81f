"""What the cadence of `--form ABA` gives, on N test seeds: whether the piece ends on its tonic chord,
how the reprise is heard (the repeats lookup), the cadence's own states, and the key of the last 8 beats.

    PYTHONPATH=src python scripts/form_cadence_check.py --seeds 10 --out cadence.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from chopinbot.compose.form import DOMINANT_BEATS, HOLD_BEATS, compose_form
from chopinbot.compose.generate import GenerateConfig
from chopinbot.compose.seeds import seed_from_test
from chopinbot.evaluation.excerpts import detected_key
from chopinbot.evaluation.form_measures import ends_on_tonic_chord, reprise_matches
from chopinbot.model.formats import load_model
from chopinbot.music.keys import within_a_fifth
from chopinbot.music.repeats import find_continuations
from chopinbot.music.states import states_to_notes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model folder or bundled name (default: the shipped model)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--loop-states", type=int, default=GenerateConfig.loop_states)
    ap.add_argument("--out")
    args = ap.parse_args()
    model = load_model(args.model)
    rows = []
    t = time.perf_counter()
    for i in range(args.seeds):
        res = compose_form(model, seed_from_test(i), GenerateConfig(seconds=args.seconds, random_seed=i,
                                                                    loop_states=args.loop_states), "ABA")
        st = res.states
        # the cadence: the states of the last DOMINANT_BEATS + HOLD_BEATS or so
        edges = np.concatenate([[0.0], np.cumsum(st.beats.astype(np.float64))])
        tail = st[int(np.searchsorted(edges, edges[-1] - max(8.0, st.beats[-1] + DOMINANT_BEATS))) :]
        notes = states_to_notes(tail)
        cad = st[int(np.searchsorted(edges, edges[-1] - st.beats[-1] - DOMINANT_BEATS - 1e-6)) :]
        m = reprise_matches(res)
        _, length, _ = find_continuations("exact", st.keys, st.onsets, st.beats)
        heard = length[len(st) - len(cad) : len(st)] >= 2  # a cadence state that goes on as a passage went
        rows.append({"seed": i, "tonic_end": ends_on_tonic_chord(st, res.key),
                     "last8_in_key": bool(len(notes) and within_a_fifth(detected_key(notes), res.key)),
                     "reprise_share": m.share, "beyond_replay": m.beyond_share,
                     "cadence_states": len(cad), "cadence_notes": int(cad.onsets.sum()),
                     "cadence_repeats": float(heard.mean()),
                     "cadence_velocity": float(cad.velocity[cad.velocity > 0].mean()),
                     "final_hold": float(st.beats[-1]), "guards": len(res.guards)})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    print(json.dumps(mean, indent=1))
    print(f"{time.perf_counter() - t:.0f} s; HOLD_BEATS {HOLD_BEATS}")
    if args.out:
        json.dump({"rows": rows, "mean": mean}, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
