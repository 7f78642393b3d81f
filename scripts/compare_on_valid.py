"""Choosing between models on the valid pieces: key NLL, duration error and the realism test.

Every model is scored on the same valid split of one prepared dataset (key NLL
per state, duration error, key F1 at its best threshold) and its continuations
of the valid pieces' seeds go through the realism classifier (lower accuracy =
closer to Chopin).  Select on these; score the chosen model once on test with
``chopinbot evaluate``.

    .venv/bin/python scripts/compare_on_valid.py --data runs/corpus/chopin \\
        runs/corpus/m-chopin48/best runs/corpus/m-chopin/best runs/corpus/m-piano/best joint-loudness
"""

from __future__ import annotations

import argparse
import time

from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.store import Dataset
from chopinbot.evaluation.report import EvalSettings, realism_metrics, realism_summary
from chopinbot.io_utils import atomic_write_json
from chopinbot.model.formats import load_model
from chopinbot.model.predict import evaluate_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model folders or bundled names")
    p.add_argument("--data", required=True, help="the prepared dataset whose valid split judges them all")
    p.add_argument("--split", default="valid", choices=("valid", "test"),
                   help="valid to choose; test only to report a choice made (once)")
    p.add_argument("--repeats", type=int, default=3, help="random seeds of the classifier test")
    p.add_argument("--no-realism", dest="realism", action="store_false")
    p.add_argument("--json", help="write every result here")
    args = p.parse_args()
    ds = Dataset(args.data)
    out = {}
    for name in args.models:
        t0 = time.perf_counter()
        model = load_model(name)
        valid = evaluate_split(model, SplitData(ds, args.split, model.config.vocab)).summary()
        row = {"key_nll": valid["key_nll"], "dur_error": valid["dur_error"], "f1_best": valid["f1_best"]}
        if args.realism:
            r = realism_metrics(model, ds, EvalSettings(progress=False, realism_split=args.split,
                                                        realism_repeats=args.repeats, composed=False))
            row.update(realism_summary(r["details"]))
        out[name] = row
        realism = (f"; realism {row['accuracy_mean']:.3f} ± {row['accuracy_sd']:.3f} "
                   f"(velocities ignored {row['no_velocity_accuracy_mean']:.3f})") if args.realism else ""
        print(f"{name}: {args.split} key NLL {row['key_nll']:.3f}, duration error {row['dur_error']:.3f}, "
              f"F1 {row['f1_best']:.3f}{realism} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
