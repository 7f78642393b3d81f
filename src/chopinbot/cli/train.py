"""`chopinbot train`: flags -> TrainConfig -> :func:`chopinbot.training.train.train`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

from chopinbot.cli.args import nonneg_float, nonneg_int, positive_float, positive_int, seed_int
from chopinbot.dataset.layout import OPTIONAL_BLOCKS
from chopinbot.errors import ConfigError
from chopinbot.model.network import MODEL_TYPES, ModelConfig
from chopinbot.training.config import FINETUNE_LR, LR
from chopinbot.training.train import TrainConfig, train

D = TrainConfig()
M = ModelConfig(duration_classes=[1.0])
# The model's shape flags; the input blocks' flags come from their declaration (OPTIONAL_BLOCKS).
MODEL_FLAGS = ("model_type", "heads", "span", "layers", "hidden", "dropout", "dense_layers", "layer_norm",
               "onset_head", "skip", "note_head", "note_hidden", "note_context", "duration_head", "dur_nodes",
               "joint_keys", "style_heads")
BLOCK_FLAGS = tuple(b.flag for b in OPTIONAL_BLOCKS if b.help is not None)


def _onoff(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("use on or off")
    return text == "on"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="prepared dataset folder (default: the bundled corpus, prepared if needed)")
    p.add_argument("--out", default=D.out, help="run folder (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--force", action="store_true", help="start a new run even if --out holds one (replaces it)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="fine-tune: start from this trained model (a bundled name or a folder), keeping its shape; "
                        "music by a composer it does not know becomes a new style (the model flags are ignored)")
    p.add_argument("--styles", choices=["auto", "on", "off"], default=D.styles,
                   help="a style (composer) input: auto = when the data has several composers (default: auto)")
    p.add_argument("--style-heads", type=_onoff, default=M.style_heads, metavar="on|off",
                   help="a model with styles: the style also reaches the note and duration heads directly "
                        f"(default: {'on' if M.style_heads else 'off'})")
    p.add_argument("--default-style", metavar="NAME",
                   help="the style the model composes in unless told (default: chopin when present)")
    g = p.add_argument_group("model")
    g.add_argument("--model-type", choices=MODEL_TYPES, default=M.model_type,
                   help="the backbone: a stacked LSTM, or a causal Transformer with ALiBi positions "
                        "(default: %(default)s)")
    g.add_argument("--layers", type=positive_int, default=M.layers, help="LSTM layers or Transformer blocks")
    g.add_argument("--hidden", type=positive_int, default=M.hidden, help="LSTM units or the Transformer's width")
    g.add_argument("--heads", type=positive_int, default=M.heads, help="Transformer: attention heads")
    g.add_argument("--span", type=positive_int, default=M.span,
                   help="Transformer: how many states each state attends back over (default: %(default)s)")
    g.add_argument("--dropout", type=nonneg_float, default=M.dropout)
    g.add_argument("--dense-layers", type=nonneg_int, default=M.dense_layers)
    g.add_argument("--layer-norm", type=_onoff, default=M.layer_norm, metavar="on|off")
    g.add_argument("--onset-head", type=_onoff, default=M.onset_head, metavar="on|off")
    g.add_argument("--skip", type=_onoff, default=M.skip, metavar="on|off",
                   help="direct path from the current state to the key logits (default: on)")
    g.add_argument("--note-head", type=_onoff, default=M.note_head, metavar="on|off",
                   help="per-key MLP with weights tied across keys (default: on)")
    g.add_argument("--note-hidden", type=positive_int, default=M.note_hidden,
                   help="the note head's hidden units (default: %(default)s)")
    g.add_argument("--note-context", type=positive_int, default=M.note_context,
                   help="features of the backbone's state the note head reads (default: %(default)s)")
    for block in OPTIONAL_BLOCKS:  # one flag per optional input block, from the blocks' own declaration
        if block.help is not None:
            on = getattr(M, block.flag)
            g.add_argument("--" + block.flag.replace("_", "-"), type=_onoff, default=on, metavar="on|off",
                           help=f"{block.help} (default: {'on' if on else 'off'})")
    g.add_argument("--joint-keys", type=_onoff, default=M.joint_keys, metavar="on|off",
                   help="the note head reads the new state's keys below each key; keys are drawn low to high "
                        f"(needs the note head; default: {'on' if M.joint_keys else 'off'})")
    g.add_argument("--duration-head", choices=["classes", "seed"], default=M.duration_head)
    g.add_argument("--dur-nodes", type=positive_int, default=M.dur_nodes)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=None,
                   help=f"maximum epochs (default: {D.epochs}; on --resume, the run's own)")
    g.add_argument("--context", type=positive_int, default=D.context, help="states per chunk (default: %(default)s)")
    g.add_argument("--window", type=nonneg_int, default=D.window,
                   help="the original's window mode with this many states (e.g. 16); 0 = sequence mode")
    g.add_argument("--batch", type=positive_int, default=D.batch)
    g.add_argument("--optimizer", choices=["adamw", "rmsprop"], default=D.optimizer)
    g.add_argument("--lr", type=positive_float, default=None,
                   help=f"peak learning rate (default: {LR:g}; {FINETUNE_LR:g} with --init-from, which starts from a "
                        "trained model)")
    g.add_argument("--weight-decay", type=nonneg_float, default=D.weight_decay)
    g.add_argument("--clip-grad", type=nonneg_float, default=D.clip_grad, help="gradient-norm clip; 0 = off")
    g.add_argument("--schedule", choices=["cosine", "constant"], default=D.schedule)
    g.add_argument("--warmup", type=nonneg_int, default=D.warmup)
    g.add_argument("--patience", type=positive_int, default=D.patience)
    g.add_argument("--select-on", choices=["f1", "loss"], default=D.select_on,
                   help="best/ keeps the epoch with the best valid key F1 or the best valid loss (default: F1, "
                        "and the loss when fine-tuning with --init-from, the starting model a candidate too)")
    g.add_argument("--harshness", type=nonneg_float, default=D.harshness)
    g.add_argument("--dur-ce-weight", type=nonneg_float, default=D.dur_ce_weight,
                   help="weight of the duration-class cross-entropy in the loss (default: %(default)s)")
    g.add_argument("--transpose", type=nonneg_int, default=D.transpose,
                   help="augment: transpose chunks by a random -N..+N semitones (default: %(default)s)")
    g.add_argument("--no-loss-clip", action="store_true", help="use bce + dur instead of min(2 bce, bce + dur)")
    g.add_argument("--max-norm", type=nonneg_float, default=D.max_norm, help="max-norm weight constraint; 0 = off")
    g.add_argument("--seed", type=seed_int, default=D.seed)
    g.add_argument("--device", default=D.device, help="auto, cpu or cuda (default: %(default)s)")
    g.add_argument("--threads", type=nonneg_int, default=D.threads, help="CPU threads; 0 = torch's default")
    g.add_argument("--minutes", type=nonneg_float, default=D.minutes, help="wall-time budget; 0 = none")
    g.add_argument("--cpu-minutes", type=nonneg_float, default=D.cpu_minutes,
                   help="CPU-time budget (this process, all threads): the same work on a busy machine; 0 = none")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.joint_keys and not args.note_head:
        raise ConfigError("--joint-keys on needs the note head (--note-head on): it is the note head that reads "
                          "the keys below each key")
    model = ModelConfig(**{f: getattr(args, f) for f in MODEL_FLAGS + BLOCK_FLAGS}, duration_classes=[1.0])
    names = {f.name for f in fields(TrainConfig)} - {"model", "loss_clip", "progress"}
    cfg = TrainConfig(**{n: getattr(args, n) for n in names if n != "epochs"}, model=model)
    if args.epochs is not None:
        cfg.epochs = args.epochs
    elif args.resume:
        saved = Path(args.out) / "train_config.json"
        if saved.exists():
            cfg.epochs = int(json.loads(saved.read_text()).get("epochs", cfg.epochs))
    cfg.loss_clip = not args.no_loss_clip
    cfg.progress = not args.quiet
    return cfg


def _holds_run(out: Path) -> bool:
    """A run worth keeping: a checkpoint, or metrics past epoch 0 (a run stopped during its
    first epoch has only epoch 0's row and nothing to resume)."""
    if (out / "last").exists() or (out / "best").exists():
        return True
    metrics = out / "metrics.csv"
    return metrics.exists() and any(not line.startswith("0,") for line in metrics.read_text().splitlines()[1:])


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = Path(args.out)
    if not args.resume and not args.force and _holds_run(out):
        raise ConfigError(f"{out} holds a run: use --resume to continue it or --force to start over")
    res = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    b = res.best
    print(
        f"{res.stopped} after epoch {res.epochs} ({res.seconds / 60:.1f} min, "
        f"{res.predictions_per_s:,.0f} state-predictions/s); best epoch {res.best_epoch}: "
        f"valid loss {b.get('valid_maestro', float('nan')):.4f}, key F1 {b.get('valid_f1_best', float('nan')):.3f} "
        f"at threshold {b.get('valid_best_threshold', float('nan')):.2f}, duration error "
        f"{b.get('valid_dur_error', float('nan')):.3f} -> {res.out / 'best'}"
    )
    held = res.card.get("held_out", {})
    if held.get("key_nll") is not None:
        before = res.card.get("init_from") or "the initial weights"
        print(f"held-out key NLL (the {held['split']} pieces, nats/state): {before} "
              f"{held['start_key_nll']:.3f} (epoch 0) -> this run {held['key_nll']:.3f} "
              f"({held['key_nll'] - held['start_key_nll']:+.3f}); model card: {res.out / 'model_card.md'}")
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
