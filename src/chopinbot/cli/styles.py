"""`chopinbot styles`: the styles (composers) a model can compose in."""

from __future__ import annotations

import argparse

from chopinbot.model.checkpoint import read_config, resolve_checkpoint
from chopinbot.model.network import ModelConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="checkpoint, run folder or bundled name (default: the shipped model)")


def run(args: argparse.Namespace) -> int:
    folder = resolve_checkpoint(args.model)
    config = ModelConfig.from_dict(read_config(folder)["model"])
    if not config.style_input:
        print(f"{folder.name}: one style (no style input); `generate --style` does not apply")
        return 0
    for name in config.styles:
        print(name + ("  (default)" if name == config.default_style else ""))
    print(f"{len(config.styles)} styles; choose one with `chopinbot generate --style NAME`")
    return 0
