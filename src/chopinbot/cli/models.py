"""`chopinbot models [RUN ...]`: the bundled models and the run folders given, with
their composers and held-out key NLL (from each run's model card)."""

from __future__ import annotations

import argparse

from chopinbot.constants import SHIPPED_MODEL
from chopinbot.training.card import list_models


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders (of `chopinbot train`) to list too")


def _composers(names: list[str]) -> str:
    if not names:
        return "one style"
    return ", ".join(names) if len(names) <= 4 else f"{len(names)} styles ({', '.join(names[:3])}, ...)"


def run(args: argparse.Namespace) -> int:
    rows = list_models(args.runs)
    width = max(len(r["name"]) for r in rows) + 2
    print(f"{'name':<{width}}{'kind':<9}{'network':<19}{'key NLL':>8}  composers")
    for r in rows:
        nll = f"{r['key_nll']:.3f}" if r["key_nll"] is not None else "-"
        extra = (f"  (started from {r['init_from'] or 'random weights'}: {r['start_key_nll']:.3f})"
                 if r.get("start_key_nll") is not None else "")
        mark = " *" if r["kind"] == "bundled" and r["name"] == SHIPPED_MODEL else ""
        composers = _composers(r["composers"])
        print(f"{r['name'] + mark:<{width}}{r['kind']:<9}{r['backbone']:<19}{nll:>8}  {composers}{extra}")
    print("key NLL: nats per state on the model's own dataset's valid pieces (lower is better; figures on "
          "different datasets do not compare); * the shipped model")
    return 0
