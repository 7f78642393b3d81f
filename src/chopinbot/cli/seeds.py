"""`chopinbot seeds`: list the seed windows of the held-out pieces (bundled, or a dataset's own)."""

from __future__ import annotations

import argparse

from chopinbot.cli.args import positive_int
from chopinbot.cli.generate import settings_of
from chopinbot.compose.seeds import list_seeds, seeds_label
from chopinbot.constants import SEED_STATES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-len", type=positive_int, default=SEED_STATES, help="states per seed (default: %(default)s)")
    p.add_argument("--model", help="model whose state settings to use (default: the shipped one)")
    p.add_argument("--seeds-from", metavar="DATASET",
                   help="a prepared dataset folder: list its own held-out pieces' windows (its test split, else "
                        "its valid one) instead of the bundled Chopin test pieces")


def run(args: argparse.Namespace) -> int:
    infos = list_seeds(args.seed_len, settings_of(args.model), args.seeds_from)
    w = max([20] + [len(i.piece) for i in infos])
    print(f"{'index':>5}  {'piece':<{w}} {'key':<10} {'position':>8}  {'beats':>6}  {'seconds':>7}")
    for i in infos:
        print(f"{i.index:>5}  {i.piece:<{w}} {i.key:<10} {i.position:>8}  {i.beats:>6.2f}  {i.seconds:>7.2f}")
    print(f"{len(infos)} seeds of {args.seed_len} states from {seeds_label(args.seeds_from)}"
          + (f" (use them with `chopinbot generate --seeds-from {args.seeds_from} --seed-index N`)"
             if args.seeds_from else ""))
    return 0
