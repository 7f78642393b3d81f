"""`chopinbot export`: a model as int8, fp16, ONNX or TorchScript, checked
against the fp32 PyTorch model."""

from __future__ import annotations

import argparse
from pathlib import Path

from chopinbot.cli.args import positive_float
from chopinbot.compress.export import EXPORT_TOLERANCE, export_model
from chopinbot.compress.study import measure_generation_speed, quality
from chopinbot.dataset.prepare import load_or_prepare
from chopinbot.errors import ConfigError
from chopinbot.model.formats import load_model
from chopinbot.model.network import ChopinLSTM


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint or run folder (default: the shipped model)")
    p.add_argument("--format", required=True, choices=["int8", "fp16", "onnx", "torchscript", "fp32"],
                   help="int8: per-row int8 weights, run with dynamic quantization on CPU; fp16: half-precision "
                        "weights; onnx: model.onnx for onnxruntime; torchscript: model.pt for torch.jit.load")
    p.add_argument("--out", required=True, help="checkpoint folder to write (usable as `chopinbot generate --model`)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sparse", dest="sparse", action="store_const", const=True, default=None,
                   help="store weights as bitmask + values (default: when that is smaller, e.g. a pruned model)")
    g.add_argument("--dense", dest="sparse", action="store_const", const=False, help="store weights densely")
    p.add_argument("--tolerance", type=positive_float, default=None,
                   help="onnx/torchscript: largest allowed difference of next-state probabilities from PyTorch "
                        "(default: 1e-4)")
    p.add_argument("--measure", action="store_true",
                   help="also measure test key F1 and batch-1 generation speed of the export and of the source")
    p.add_argument("--data", help="dataset for --measure (default: the bundled corpus)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:

    out = Path(args.out)
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; use --force to replace it")
    if args.sparse is not None and args.format in ("onnx", "torchscript"):
        raise ConfigError("--sparse/--dense apply to fp32, fp16 and int8 only")
    model = load_model(args.model, runtime="float")
    if not isinstance(model, ChopinLSTM):
        raise ConfigError("--model must be a PyTorch checkpoint, not an export")
    info = export_model(model, args.format, out, sparse=args.sparse,
                        tolerance=args.tolerance if args.tolerance is not None else EXPORT_TOLERANCE)
    print(f"wrote {info['folder']}: {args.format}, {info['bytes']:,} bytes of weights "
          f"({info['ratio']:.2f}x smaller than the fp32 {info['fp32_bytes']:,})")
    print(f"max abs difference of next-state probabilities from fp32 PyTorch: {info['max_abs_diff']:.3g}"
          + (f" (int8 weights in float: {info['max_abs_diff_float_runtime']:.3g})"
             if "max_abs_diff_float_runtime" in info else ""))
    if args.measure:

        ds = load_or_prepare(args.data, progress=False)
        exported = load_model(out)
        for name, m in (("fp32 source", model), (args.format, exported)):
            q = quality(m, ds)
            sp = measure_generation_speed(m, threads=1)
            print(f"{name:<12} test key F1 {q['f1']:.4f}  key NLL {q['key_nll']:.3f}  duration error "
                  f"{q['dur_error']:.4f}  {sp['states_per_s']:.0f} states/s at batch 1 "
                  f"(forward alone {sp['forward_steps_per_s']:.0f} steps/s)")
    return 0
