"""Paired realism draws on the valid seeds: decodings against each other, draw by draw.

Every decoding choice in docs/training-history.md was made this way: the realism suite
(``chopinbot evaluate --suite realism``: every valid seed continued for 60 s, 3 classifier repeats) run
with ``seed_offset`` 0, 1000, 2000, ... once per arm, and each arm's figures taken minus the first arm's
at the same offset (the same seeds, the same classifier folds), mean +- standard error over the draws.
A draw's noise (+-0.02-0.03 on one accuracy) is mostly shared by the arms at the same offset, so a
paired difference resolves what two means of as many draws would not.

    PYTHONPATH=src python scripts/paired_realism.py --arm base --arm "passes1:repeat_passes=1" --draws 12
    PYTHONPATH=src python scripts/paired_realism.py --arm base --arm "hold:max_hold=13;chopin_runs=0" --jobs 2

An arm is ``NAME`` (the defaults) or ``NAME:FIELD=VALUE;...`` (GenerateConfig fields, as ``--set
decoding=...`` takes them).  Each draw's figures go to ``--out/NAME/OFFSET.json`` and a draw already
there is not run again: a run stopped part way goes on where it stopped, and more draws or another arm
can be added later against the same base.  About 2.5 minutes a draw on one core of the 2-core machine;
``--jobs 2`` runs two at once (each on one thread, at low priority).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

FIGURES = ("accuracy", "composed_accuracy", "seed_alone_accuracy", "seed_alone_composed_accuracy",
           "phrase_accuracy", "accuracy_no_velocity", "replay_generated_mean", "replay_generated_above_0.8",
           "bass_pulse_generated", "bass_pulse_seed_alone", "top_abs_interval_generated",
           "top_abs_interval_seed_alone",
           # whole minutes (the unit for the replay spread); absent from draws stored before them, which
           # are then left out of these two rows only
           "replay_phrase_generated_mean", "replay_phrase_generated_above_0.8")
STEP = 1000  # between the seed offsets of successive draws (a continuation's random seed: its index + offset)


def parse_arm(spec: str) -> tuple[str, dict]:
    from chopinbot.evaluation.suites import parse_decoding

    name, _, decoding = spec.partition(":")
    if not name or "/" in name:
        raise SystemExit(f"an arm needs a name (a folder): {spec!r}")
    return name, parse_decoding(decoding) if decoding else {}


def run_draw(model: str | None, decoding: dict, offset: int, out: str) -> str:
    """One draw of the realism suite, its figures written atomically to ``out``."""
    os.nice(10)
    import torch

    torch.set_num_threads(1)
    from chopinbot.dataset.prepare import load_or_prepare
    from chopinbot.evaluation.suites.realism import RealismSuiteSettings, realism_suite
    from chopinbot.io_utils import atomic_write_json
    from chopinbot.model.formats import load_model

    settings = RealismSuiteSettings(seed_offset=offset, decoding=decoding)
    result = realism_suite(load_model(model), load_or_prepare(None, progress=False), settings, progress=False)
    atomic_write_json(Path(out), {"offset": offset, "decoding": decoding, "figures": result["figures"]})
    return out


def paired(base: Path, arm: Path) -> tuple[int, dict[str, tuple[float, float, float, int]]]:
    """Draws both arms have, and per figure: the base's mean, the mean difference, its standard error and the
    draws that have the figure (fewer where a draw was stored before it existed)."""
    offsets = sorted({p.name for p in base.glob("*.json")} & {p.name for p in arm.glob("*.json")})
    figures = [[json.loads((d / o).read_text())["figures"] for d in (base, arm)] for o in offsets]
    rows = {}
    for name in FIGURES:
        pairs = np.array([(a[name], b[name] - a[name]) for a, b in figures
                          if a.get(name) is not None and b.get(name) is not None]).reshape(-1, 2)
        if len(pairs):
            se = pairs[:, 1].std(ddof=1) / math.sqrt(len(pairs)) if len(pairs) > 1 else math.nan
            rows[name] = (float(pairs[:, 0].mean()), float(pairs[:, 1].mean()), float(se), len(pairs))
    return len(offsets), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME or NAME:FIELD=VALUE;... (the first: the base)")
    ap.add_argument("--draws", type=int, default=12, help="seed offsets 0, 1000, ... (default: %(default)s)")
    ap.add_argument("--model", default=None, help="model folder or bundled name (default: the shipped model)")
    ap.add_argument("--jobs", type=int, default=1, help="draws at once, one thread each (default: %(default)s)")
    ap.add_argument("--out", default="runs/paired", help="one folder per arm (default: %(default)s)")
    args = ap.parse_args()
    arms = [parse_arm(a) for a in args.arm]
    out = Path(args.out)
    todo = []
    for name, decoding in arms:
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(args.draws):
            path = out / name / f"{i * STEP}.json"
            if path.exists():
                done = json.loads(path.read_text())["decoding"]
                if done != json.loads(json.dumps(decoding)):  # as JSON keeps it (a tuple comes back a list)
                    raise SystemExit(f"{path} was drawn with {done}, not {decoding}: name the arm anew")
            else:
                todo.append((args.model, decoding, i * STEP, str(path)))
    # draw by draw across the arms, so that a run stopped part way leaves pairs, not one arm
    todo.sort(key=lambda t: t[2])
    with ProcessPoolExecutor(max(1, args.jobs), mp_context=get_context("spawn")) as pool:
        for i, path in enumerate(pool.map(run_draw, *zip(*todo)) if todo else [], 1):
            print(f"[{i}/{len(todo)}] {path}", flush=True)
    base = arms[0][0]
    for name, decoding in arms[1:]:
        n, rows = paired(out / base, out / name)
        print(f"\n{name} {decoding} - {base}, {n} paired draws (lower accuracy: nearer Chopin):")
        for figure, (a, d, se, k) in rows.items():
            fewer = f"   ({k} draws)" if k < n else ""
            print(f"  {figure:34s} {a:7.3f} -> {a + d:7.3f}   {d:+.3f} +- {se:.3f}{fewer}")


if __name__ == "__main__":
    main()
