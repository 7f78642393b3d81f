"""`chopinbot prune`: magnitude-prune a model step by step, with fine-tuning,
and measure quality, size and speed of every step (plus the fp32, fp16, int8,
ONNX and TorchScript formats) in one table."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from chopinbot.cli.args import nonneg_int, positive_float, positive_int, seed_int
from chopinbot.compress.prune import FinetuneSettings, parse_sparsities
from chopinbot.compress.study import findings, prune_study, speed_comparison, write_table
from chopinbot.dataset.prepare import load_or_prepare
from chopinbot.errors import ConfigError
from chopinbot.model.formats import VALUE_DTYPES, load_model
from chopinbot.model.network import ChopinLSTM

DEFAULT_SPARSITIES = "0.5,0.6,0.7,0.8,0.9"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint or run folder (default: the shipped model)")
    p.add_argument("--data", help="prepared dataset folder (default: the bundled corpus)")
    p.add_argument("--sparsity", default=DEFAULT_SPARSITIES,
                   help="increasing targets, fraction of LSTM and linear weights set to zero (default: %(default)s)")
    p.add_argument("--schedule", choices=["polynomial", "oneshot"], default="polynomial",
                   help="polynomial: raise the sparsity gradually during each step's fine-tuning (Zhu & Gupta); "
                        "oneshot: prune to the target, then fine-tune (default: %(default)s)")
    p.add_argument("--finetune-epochs", type=nonneg_int, default=2,
                   help="fine-tuning epochs per sparsity step; 0 = none (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=5e-4, help="fine-tuning learning rate (default: %(default)s)")
    p.add_argument("--values", default="fp16,int8",
                   help="how each pruned model's non-zero weights are stored, any of fp32,fp16,int8 "
                        "(default: %(default)s)")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the unpruned fp32/fp16/int8/ONNX/TorchScript rows and the speed comparison")
    p.add_argument("--speed-steps", type=nonneg_int, default=256,
                   help="states generated per speed measurement; 0 = do not measure speed (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads for fine-tuning and speed (default: %(default)s)")
    p.add_argument("--control", action="store_true",
                   help="also fine-tune the unpruned model for as many epochs as the whole schedule (a control row)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", required=True, help="folder for the pruned checkpoints, table.md/csv and the plot")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(args: argparse.Namespace) -> int:

    targets = parse_sparsities(args.sparsity)
    values = tuple(v.strip() for v in args.values.split(",") if v.strip())
    if not values or any(v not in VALUE_DTYPES for v in values):
        raise ConfigError(f"--values must list some of {', '.join(VALUE_DTYPES)}")
    settings = FinetuneSettings(epochs=args.finetune_epochs, schedule=args.schedule, lr=args.lr, seed=args.seed,
                                progress=not args.quiet)
    settings.validate()
    out = Path(args.out)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, flush=True))
    torch.set_num_threads(args.threads)
    model = load_model(args.model, runtime="float")
    if not isinstance(model, ChopinLSTM):
        raise ConfigError("--model must be a PyTorch checkpoint (fp32, fp16, int8 or sparse), not an export")
    ds = load_or_prepare(args.data, progress=not args.quiet)
    want = getattr(model, "meta", {}).get("dataset_settings")
    if want is not None and want != ds.manifest["settings"]:
        raise ConfigError(f"the model was trained on states built with {want}, the dataset uses "
                          f"{ds.manifest['settings']}")
    t0 = time.perf_counter()
    rows = prune_study(model, ds, targets, out, settings, values, reference=not args.no_reference,
                       speed_steps=args.speed_steps, threads=args.threads, control=args.control, log=log)
    speed = None
    if not args.no_reference and args.speed_steps:
        log("speed comparison ...")
        formats = ("fp32", "int8", "onnx", "torchscript")
        speed = speed_comparison({k: out / k for k in formats if (out / k).exists()}, args.speed_steps, args.threads)
    minutes = (time.perf_counter() - t0) / 60
    notes = [
        "command: `chopinbot " + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`"
        if sys.argv and "prune" in sys.argv else f"targets {targets}",
        f"source model: {args.model or 'the shipped model'} (weights sha256 "
        f"{str(model.meta.get('weights_sha256', '?'))[:12]}, {model.n_params():,} parameters); measured in one run "
        f"of {minutes:.1f} min on {_cpu_name()} ({os.cpu_count()} logical CPUs, {args.threads} torch thread(s)), "
        f"torch {torch.__version__}",
        "test key F1 at the decision threshold chosen on the valid pieces (as `chopinbot evaluate`); key NLL in "
        "nats per state (sum over 88 keys); duration error = mean 2|d - d̂|/(d + d̂)",
        "weights bytes: model.safetensors (+ model.onnx / model.pt for exports); × smaller = fp32 model.safetensors "
        "bytes / these",
        f"generation states/s: `generate()` at batch 1, {args.speed_steps} states after a 16-state test seed, "
        "sampling, best of 3 runs, by the wall clock and per CPU-second of the process (the machine is shared: "
        "CPU time is the steadier figure); it includes decoding and feature building, which compression does not "
        "touch; forward steps/CPU-s: the network alone, one state per call, oneDNN off (as generate() runs it); "
        "speed vs fp32: states/CPU-s over the fp32 model's, the two timed alternately (absolute rates of different "
        "rows were taken minutes apart and move with the machine's load; compare this column)",
        f"pruning: global magnitude (torch.nn.utils.prune L1) over all LSTM and linear weight matrices, "
        f"{settings.schedule} schedule, {settings.epochs} fine-tuning epoch(s) per step at lr {settings.lr:g}, the "
        "best valid-loss epoch at the target kept, then made permanent; stored as a 1-bit mask + non-zero values",
        "int8: per-row symmetric int8 weights on disk; run with dynamic quantization of the LSTM (CPU)",
    ]
    fnd = findings(rows, speed)
    paths = write_table(rows, out, notes=notes + fnd, speed=speed)
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['png']}")
    for line in fnd:
        print(line)
    return 0
