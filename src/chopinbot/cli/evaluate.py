"""`chopinbot evaluate`: held-out metrics, baselines, statistics, originality -> a report folder."""

from __future__ import annotations

import argparse

from chopinbot.cli.args import positive_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", help="model or run folder (repeatable; default: the shipped model)")
    p.add_argument("--data", help="prepared dataset (default: the bundled corpus)")
    p.add_argument("--pieces", type=positive_int, default=20, help="generated pieces for the statistics")
    p.add_argument("--steps", type=positive_int, default=256, help="states per generated piece")
    p.add_argument("--temperature", type=positive_float, default=1.0)
    p.add_argument("--out", default="runs/report", help="report folder (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace a report already in --out")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from chopinbot.evaluation.report import EvalSettings, evaluate

    m = evaluate(args.model or [None], args.out, args.data,
                 EvalSettings(pieces=args.pieces, steps=args.steps, temperature=args.temperature,
                              progress=not args.quiet), force=args.force)
    for name, r in m["table"].items():
        print(f"{name:<70} test F1 {r['f1_best']:.3f}  key NLL {r['key_nll']:.2f}  dur err {r['dur_error']:.3f}")
    print(f"report: {args.out}/report.md")
    return 0
