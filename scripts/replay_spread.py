"""How often a one-minute continuation plays its primer back, against what really followed the same seeds.

The realism suite reads the replay spread on the Chopin valid seeds, where the model plays a whole minute
back too seldom (1 of 25) to tell decodings apart.  The piano corpus's valid pieces (every composer but
Chopin, whose held-out works are the Chopin splits' business) give more: every 60-s window that follows 16
states, with the 512 states before it as context, as the report's seeds have.  Each arm continues every
seed for 60 s, ``--draws`` times (random seeds: its index, + 1000, ...); each minute, and what really
followed the seed over the same minute, gets its replay share (:mod:`chopinbot.evaluation.replay`: its
8-state n-grams found, at any transposition, in the seed and its context).

    PYTHONPATH=src python scripts/replay_spread.py --draws 3 --arm base --arm "span96:repeat_span=96"

Prints, per arm, the mean share and the share of minutes above 0.8, and how many minutes the arm played
back (> 0.8) where the piece itself moved on (its truth <= 0.5): the copies Chopin's own music would not
make.  Each arm's shares go to ``--out/NAME.json`` (atomically) and are not computed again.  About two
minutes an arm with three draws on the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

SECONDS = 60.0


def not_chopin(seg) -> bool:
    from chopinbot.dataset.corpus import style_name

    return style_name(seg.composer) != "chopin"


def held_out(data: str, split: str, every: int):
    """The dataset, and every ``every``-th seed of its ``split`` pieces but Chopin's (512 states of context)."""
    from chopinbot.dataset.store import Dataset
    from chopinbot.evaluation.continuations import held_out_seeds

    ds = Dataset(data)
    return ds, held_out_seeds(ds, split, seconds=SECONDS, keep=not_chopin)[0][::every]


def run_arm(model: str, decoding: dict, data: str, split: str, every: int, draws: int, part: int,
            parts: int) -> list[float]:
    os.nice(10)
    import torch

    torch.set_num_threads(1)
    from chopinbot.evaluation.continuations import model_composer
    from chopinbot.evaluation.replay import continuation_replays
    from chopinbot.model.formats import load_model

    _, seeds = held_out(data, split, every)
    compose = model_composer(load_model(model), SECONDS, decoding)
    out = []
    for j in range(part, len(seeds) * draws, parts):
        d, i = divmod(j, len(seeds))
        res = compose(seeds[i], i + 1000 * d)
        out.append(float("nan") if res is None else continuation_replays(seeds[i], res.states, 1, SECONDS)[0])
    return out


def summary(shares: np.ndarray, truths: np.ndarray) -> str:
    ok = ~np.isnan(shares) & ~np.isnan(truths)
    s, t = shares[ok], truths[ok]
    fresh = t <= 0.5
    return (f"mean {s.mean():.3f}, above 0.8 {(s > 0.8).mean():.3f} ({(s > 0.8).sum()} of {ok.sum()}); "
            f"where the truth moves on (<= 0.5, {fresh.sum()}): copied {(s[fresh] > 0.8).sum()}")


def main() -> None:
    from chopinbot.evaluation.suites import parse_decoding
    from chopinbot.io_utils import atomic_write_json

    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", action="append", required=True, help="NAME or NAME:FIELD=VALUE;...")
    ap.add_argument("--model", default="piano-pretrained")
    ap.add_argument("--data", default="runs/corpus/piano")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--every", type=int, default=1, help="every k-th seed only")
    ap.add_argument("--draws", type=int, default=1, help="continuations per seed (random seeds i, i + 1000, ...)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/replay_spread")
    args = ap.parse_args()
    from chopinbot.evaluation.replay import true_continuation_replays

    ds, seeds = held_out(args.data, args.split, 1)
    truths = true_continuation_replays(ds, args.split, seeds, 1, SECONDS, keep=not_chopin)[:: args.every]
    t = np.tile(np.asarray(truths, np.float64), args.draws)
    print(f"{len(t)} seeds; what really followed: mean {np.nanmean(t):.3f}, above 0.8 {np.nanmean(t > 0.8):.3f}")
    for spec in args.arm:
        name, _, dec = spec.partition(":")
        path = Path(args.out) / f"{name}.json"
        if path.exists():
            shares = json.loads(path.read_text())["shares"]
        else:
            decoding = parse_decoding(dec) if dec else {}
            with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
                parts = list(pool.map(run_arm, *zip(*[(args.model, decoding, args.data, args.split, args.every,
                                                       args.draws, p, args.jobs) for p in range(args.jobs)])))
            shares = [0.0] * len(t)
            for p, part in enumerate(parts):
                shares[p::args.jobs] = part
            atomic_write_json(path, {"arm": spec, "model": args.model, "draws": args.draws, "shares": shares})
        print(f"{spec}: {summary(np.asarray(shares, np.float64), t)}")


if __name__ == "__main__":
    main()
