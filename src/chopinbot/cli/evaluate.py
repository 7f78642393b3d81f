"""`chopinbot evaluate`: held-out metrics, baselines, statistics, originality, realism -> a report folder;
with ``--suite NAME``, the fixed evaluation protocols instead (their JSON -> ``--suite-out``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chopinbot.cli.args import number_in, positive_float, positive_int
from chopinbot.compose.generate import TEMPERATURE_RANGE
from chopinbot.evaluation.report import EvalSettings

SUITE_OUT = "runs/suites"


def add_arguments(p: argparse.ArgumentParser) -> None:
    D = EvalSettings()
    p.add_argument("--model", action="append", help="model or run folder (repeatable; default: the shipped model)")
    p.add_argument("--data", help="prepared dataset (default: the bundled corpus)")
    p.add_argument("--pieces", type=positive_int, default=D.pieces,
                   help="generated pieces for the statistics (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=D.steps,
                   help="states per generated piece (default: %(default)s)")
    p.add_argument("--temperature", type=number_in(*TEMPERATURE_RANGE), default=D.temperature,
                   help=f"sampling temperature, {TEMPERATURE_RANGE[0]:g} to {TEMPERATURE_RANGE[1]:g} "
                        "(default: %(default)s)")
    p.add_argument("--out", default="runs/report", help="report folder (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace a report already in --out")
    p.add_argument("--no-realism", dest="realism", action="store_false",
                   help="skip the realism test (a classifier telling generated from real excerpts; minutes)")
    p.add_argument("--no-composed", dest="composed", action="store_false",
                   help="skip the realism of composed music apart from replay (context 0, 60-s excerpts); "
                        "it composes every seed a second time")
    p.add_argument("--realism-split", choices=("test", "valid"), default=D.realism_split,
                   help="whose seeds the realism test continues: test to report, valid to choose between models "
                        "(default: %(default)s)")
    p.add_argument("--realism-seconds", type=positive_float, default=D.realism_seconds,
                   help="length of each seed's continuation for the realism test (default: %(default)s)")
    p.add_argument("--suite", action="append", metavar="NAME",
                   help="run a fixed evaluation protocol instead of the report (repeatable; 'all' runs every "
                        "one): realism, controls, key-hold, style, form, infill")
    p.add_argument("--suite-out", default=SUITE_OUT,
                   help="folder for the suites' JSON, one NAME.json each (controls: controls-check.json, as in "
                        "docs/suites/; default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="suite_settings",
                   help="change a suite setting, e.g. pieces=10 or decoding='repeat_boost=1' (repeatable; "
                        "applies to the suites that have it)")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.suite:
        return run_suites(args)
    from chopinbot.evaluation.report import evaluate

    m = evaluate(args.model or [None], args.out, args.data,
                 EvalSettings(pieces=args.pieces, steps=args.steps, temperature=args.temperature,
                              progress=not args.quiet, realism=args.realism, realism_split=args.realism_split,
                              realism_seconds=args.realism_seconds, composed=args.composed), force=args.force)
    for name, r in m["table"].items():
        print(f"{name:<70} test F1 {r['f1_best']:.3f}  key NLL {r['key_nll']:.2f}  dur err {r['dur_error']:.3f}")
    realism = m.get("realism", {})
    for name, r in {**realism.get("rows", {}), **realism.get("composed", {}).get("rows", {})}.items():
        if "accuracy_mean" in r:
            print(f"realism: {name:<55} accuracy {r['accuracy_mean']:.2f} ± {r['accuracy_sd']:.2f}  "
                  f"AUC {r['auc_mean']:.2f}")
    print(f"report: {args.out}/report.md")
    return 0


def run_suites(args: argparse.Namespace) -> int:
    from chopinbot.errors import ConfigError
    from chopinbot.evaluation.suites import (
        parse_overrides,
        run_suite,
        suite_json_name,
        suite_names,
        suite_settings_type,
    )

    names = suite_names() if "all" in args.suite else list(dict.fromkeys(args.suite))
    unknown = [n for n in names if n not in suite_names()]
    if unknown:
        raise ConfigError(f"unknown suite {unknown[0]!r}; choose from {', '.join(suite_names())} or all")
    pairs = {p.partition("=")[0].strip().replace("-", "_"): p for p in args.suite_settings}
    plan = {}
    for name in names:  # every setting parsed (and checked) before anything runs
        kind = suite_settings_type(name)
        plan[name] = parse_overrides(kind, [p for k, p in pairs.items() if k in kind.__dataclass_fields__])
    unused = [p for k, p in pairs.items() if not any(k in suite_settings_type(n).__dataclass_fields__ for n in names)]
    if unused:
        raise ConfigError(f"no suite asked for has the setting {unused[0]!r}")
    models = args.model or [None]
    for name, overrides in plan.items():
        for model in models:
            file = Path(suite_json_name(name))
            tail = "" if len(models) == 1 else "-" + Path(model or "shipped").name
            out = Path(args.suite_out) / f"{file.stem}{tail}{file.suffix}"
            result = run_suite(name, model, overrides, out, progress=not args.quiet)
            shown = ", ".join(f"{k} {_short(v)}" for k, v in result["figures"].items()
                              if isinstance(v, (int, float)))
            print(f"{name} ({result['model']}, {result['seconds']:.0f} s): {shown[:800]}\n  -> {out}", flush=True)
    return 0


def _short(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
