"""`chopinbot evaluate`: held-out metrics, baselines, statistics, originality, realism -> a report folder."""

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
    p.add_argument("--no-realism", dest="realism", action="store_false",
                   help="skip the realism test (a classifier telling generated from real excerpts; about a minute)")
    p.add_argument("--realism-split", choices=("test", "valid"), default="test",
                   help="whose seeds the realism test continues: test to report, valid to choose between models "
                        "(default: %(default)s)")
    p.add_argument("--realism-seconds", type=positive_float, default=60.0,
                   help="length of each seed's continuation for the realism test (default: %(default)s)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from chopinbot.evaluation.report import EvalSettings, evaluate

    m = evaluate(args.model or [None], args.out, args.data,
                 EvalSettings(pieces=args.pieces, steps=args.steps, temperature=args.temperature,
                              progress=not args.quiet, realism=args.realism, realism_split=args.realism_split,
                              realism_seconds=args.realism_seconds), force=args.force)
    for name, r in m["table"].items():
        print(f"{name:<70} test F1 {r['f1_best']:.3f}  key NLL {r['key_nll']:.2f}  dur err {r['dur_error']:.3f}")
    realism = m.get("realism", {})
    for name, r in realism.get("rows", {}).items():
        if "accuracy_mean" in r:
            print(f"realism: {name:<55} accuracy {r['accuracy_mean']:.2f} ± {r['accuracy_sd']:.2f}  "
                  f"AUC {r['auc_mean']:.2f}")
    print(f"report: {args.out}/report.md")
    return 0
