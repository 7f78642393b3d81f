"""`chopinbot benchmark piano-midi|jsb-chorales` (or ``python -m chopinbot_tools.benchmark``):
train on traindata, select on validdata, report valid and test frame-level NLL and accuracy
beside the published table; resume an interrupted run; re-score a saved model.

The ``chopinbot`` command reaches this module by name only (``chopinbot.cli.COMMANDS``):
the tools sit above the command line and may use its argument types, never the reverse."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from chopinbot.cli.args import nonneg_float, nonneg_int, positive_float, positive_int, probability
from chopinbot_tools.frame_benchmark import recorded_scores, reevaluate, run_benchmark, score_model_results
from chopinbot_tools.frame_models import MODEL_TYPES, FrameModelConfig
from chopinbot_tools.frame_training import TrainSettings
from chopinbot_tools.pianomidi import BENCHMARK_FILES

BENCHMARKS = tuple(BENCHMARK_FILES)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = FrameModelConfig()
    p.add_argument("benchmark", choices=BENCHMARKS, help="which benchmark (the same format and score)")
    p.add_argument("--out", help="run folder: checkpoint, history.csv, report.md, report.json")
    p.add_argument("--eval-only", action="store_true",
                   help="do not train: evaluate the run folder's saved model again and rewrite its report")
    p.add_argument("--score", metavar="MODEL_DIR",
                   help="do not train: print the valid and test NLL of the model in MODEL_DIR (model.safetensors "
                        "+ config.json, e.g. bench/models/piano-midi); writes nothing")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last saved training state (the same "
                        "settings are required)")
    p.add_argument("--data", default=None, help="the benchmark's .mat file (default: the copy bundled in the package)")
    p.add_argument("--limit-pieces", type=positive_int, default=None,
                   help="use only the first N pieces of each split (quick checks; not a benchmark figure)")
    m = p.add_argument_group("model")
    m.add_argument("--model-type", choices=MODEL_TYPES, default="lstm",
                   help="lstm: independent Bernoulli keys; lstm-nade: LSTM + NADE over the keys; "
                        "biaxial: time-axis LSTM per key (tied) + note-axis LSTM (default: %(default)s)")
    m.add_argument("--hidden", type=positive_int, default=d.hidden,
                   help="lstm/lstm-nade: LSTM units (default: %(default)s)")
    m.add_argument("--layers", type=positive_int, default=d.layers,
                   help="lstm/lstm-nade: LSTM layers (default: %(default)s)")
    m.add_argument("--nade-hidden", type=positive_int, default=d.nade_hidden,
                   help="lstm-nade: NADE units (default: %(default)s)")
    m.add_argument("--time-hidden", type=positive_int, default=d.time_hidden,
                   help="biaxial: time-axis units (default: %(default)s)")
    m.add_argument("--time-layers", type=positive_int, default=d.time_layers,
                   help="biaxial: time-axis layers (default: %(default)s)")
    m.add_argument("--note-hidden", type=positive_int, default=d.note_hidden,
                   help="biaxial: note-axis units (default: %(default)s)")
    m.add_argument("--note-layers", type=positive_int, default=d.note_layers,
                   help="biaxial: note-axis layers (default: %(default)s)")
    m.add_argument("--global-hidden", type=nonneg_int, default=d.global_hidden,
                   help="biaxial: size of an extra frame LSTM whose state reaches every key; 0 = none "
                        "(default: %(default)s)")
    m.add_argument("--repeats", action="store_true",
                   help="biaxial: read what followed the last exact and transposed occurrence of the passage just "
                        "heard (computed from the piece's past only)")
    m.add_argument("--repeat-vicinity", type=nonneg_int, default=d.repeat_vicinity,
                   help="biaxial with --repeats: continuation keys within +-N semitones feed each key "
                        "(default: %(default)s)")
    m.add_argument("--dropout", type=probability, default=d.dropout, help="dropout (default: %(default)s)")
    t = p.add_argument_group("training")
    t.add_argument("--minutes", type=positive_float, default=None,
                   help="time budget for training, evaluations included, on --clock (use --clock cpu for a "
                        "budget in CPU-minutes)")
    t.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="what --minutes counts: elapsed time, or this process's CPU time, which a busy shared "
                        "machine does not stretch (default: %(default)s)")
    t.add_argument("--epochs", type=positive_int, default=None, help="at most this many passes over traindata")
    t.add_argument("--batch-size", type=positive_int, default=16, help="chunks per step (default: %(default)s)")
    t.add_argument("--chunk", type=positive_int, default=128, help="frames per training chunk (default: %(default)s)")
    t.add_argument("--lr", type=positive_float, default=2e-3, help="peak AdamW learning rate (default: %(default)s)")
    t.add_argument("--weight-decay", type=nonneg_float, default=0.01, help="AdamW weight decay (default: %(default)s)")
    t.add_argument("--warmup-steps", type=nonneg_int, default=100, help="linear warm-up steps (default: %(default)s)")
    t.add_argument("--transpose", type=nonneg_int, default=6,
                   help="transpose each training chunk by a random shift of up to +-N semitones (default: %(default)s)")
    t.add_argument("--patience", type=positive_int, default=5,
                   help="stop after this many evaluations without a better valid NLL (default: %(default)s)")
    t.add_argument("--eval-every", type=positive_int, default=None,
                   help="evaluate on validdata every N steps (default: each epoch)")
    t.add_argument("--checkpoint-minutes", type=positive_float, default=TrainSettings.checkpoint_minutes,
                   help="save the training state (for --resume) this often, on --clock (default: %(default)s)")
    t.add_argument("--nice", type=nonneg_int, default=0,
                   help="lower this process's scheduling priority by N before training (19: the lowest, for long "
                        "runs on a shared machine; the CPU-time budget of --clock cpu is unaffected)")
    t.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: all)")
    t.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default: %(default)s)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.score:
        results = score_model_results(args.score, args.benchmark, data_path=args.data, threads=args.threads,
                                      limit=args.limit_pieces)
        scores = {s: r.nll for s, r in results.items()}
        print(f"{args.benchmark}: {args.score}: " + ", ".join(f"{s} NLL {r.nll:.4f}" for s, r in results.items())
              + " nats/frame (exact); the mean over pieces: "
              + ", ".join(f"{s} {r.nll_piece_mean:.4f}" for s, r in results.items()))
        recorded = recorded_scores(args.score) if not args.limit_pieces else {}
        if recorded:
            same = all(abs(scores[s] - v) <= 1e-4 * abs(v) for s, v in recorded.items() if s in scores)
            print("recorded with the model: " + ", ".join(f"{s} NLL {v:.4f}" for s, v in recorded.items())
                  + (" -- the same" if same else " -- DIFFERENT"))
            return 0 if same else 1
        return 0
    if not args.out:
        print("chopinbot benchmark: error: --out is required (or --score MODEL_DIR)", file=sys.stderr)
        return 2
    if args.eval_only:
        rep = reevaluate(args.out, data_path=args.data, threads=args.threads)
        _print_summary(rep, args.out)
        return 0

    cfg = FrameModelConfig(model_type=args.model_type, hidden=args.hidden, layers=args.layers,
                           dropout=args.dropout, nade_hidden=args.nade_hidden, time_hidden=args.time_hidden,
                           time_layers=args.time_layers, note_hidden=args.note_hidden, note_layers=args.note_layers,
                           global_hidden=args.global_hidden, repeats=args.repeats,
                           repeat_vicinity=args.repeat_vicinity)
    settings = TrainSettings(minutes=args.minutes, clock=args.clock, epochs=args.epochs,
                             batch_size=args.batch_size, chunk=args.chunk, lr=args.lr,
                             weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                             transpose=args.transpose, patience=args.patience, eval_every=args.eval_every,
                             threads=args.threads, seed=args.seed, checkpoint_minutes=args.checkpoint_minutes,
                             progress=not args.quiet)
    if args.nice:
        os.nice(min(args.nice, 19))
    command = "chopinbot " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "benchmark" in sys.argv[1:3] else ""
    rep = run_benchmark(args.out, cfg, settings, data_path=args.data, limit=args.limit_pieces, command=command,
                        log=(lambda s: None) if args.quiet else print, benchmark=args.benchmark,
                        resume=args.resume)
    _print_summary(rep, args.out)
    return 0


def _print_summary(rep: dict, out: str) -> None:
    r, t = rep["results"], rep["training"]
    copy = next(b for b in rep["baselines"] if b["model"].startswith("Copy"))
    cpu = f", {t['cpu_seconds'] / 60:.1f} CPU-min" if "cpu_seconds" in t else ""
    print(f"{rep['model']['type']} ({rep['model']['parameters']:,} params, {t['wall_seconds'] / 60:.1f} min{cpu} on "
          f"{t['threads_used']} thread(s), {t['stopped']}): valid NLL {r['valid']['nll']:.3f}, "
          f"test NLL {r['test']['nll']:.3f}, test frame accuracy {100 * r['test']['acc']:.1f} % "
          f"(copy-previous {copy['test']['nll']:.2f} nats, {100 * copy['test']['acc']:.1f} %) -> "
          f"{out}/report.md")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chopinbot_tools.benchmark",
                                description="the Piano-midi.de / JSB Chorales frame-level NLL benchmark")
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
