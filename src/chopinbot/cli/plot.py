"""`chopinbot plot RUN_DIR`: the training curves as PNG files."""

from __future__ import annotations

import argparse

from chopinbot.render.plots import plot_training


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run folder written by `chopinbot train`")
    p.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots)")


def run(args: argparse.Namespace) -> int:
    for path in plot_training(args.run, args.out):
        print(path)
    return 0
