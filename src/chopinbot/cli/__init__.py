"""The `chopinbot` command: one subcommand per pipeline stage.

Each subcommand lives in its own module (``chopinbot.cli.<name>``) with
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only
when their command runs, so `chopinbot prepare` never pays for importing torch.
All the work is done by library functions; these modules only parse flags,
call them and print.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from chopinbot import __version__
from chopinbot.errors import ChopinBotError, ConfigError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("prepare", "MIDI files -> a dataset of piano states (default: the bundled corpus)"),
    "train": ("train", "train a model on a prepared dataset"),
    "plot": ("plot", "draw the training curves of a run folder"),
    "seeds": ("seeds", "list the seed windows of the held-out test pieces"),
    "generate": ("generate", "compose music from a seed or your own MIDI"),
    "score": ("score", "a MIDI, MusicXML or Humdrum file as sheet music (MusicXML, PDF, SVG)"),
    "styles": ("styles", "list the styles (composers) a model can compose in"),
    "evaluate": ("evaluate", "held-out metrics, baselines, musical statistics and a report"),
    "app": ("app", "start the web app"),
    "prune": ("prune", "magnitude-prune a model and measure the trade-off"),
    "export": ("export", "export a model as int8, fp16, ONNX or TorchScript"),
    "benchmark": ("benchmark", "the Piano-midi.de frame-level NLL benchmark"),
    "bench": ("bench", "speed and memory benchmarks"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(f"{__name__}.{mod}") is not None:
            out[name] = (mod, help_)
    return out


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="chopinbot", description="ChopinBot: compose piano music in the style of Chopin.")
    parser.add_argument("--version", action="version", version=f"chopinbot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == command:
            importlib.import_module(f"{__name__}.{mod}").add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(f"{__name__}.{_available()[args.command][0]}")
    try:
        return int(module.run(args) or 0)
    except ConfigError as e:
        print(f"chopinbot {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ChopinBotError as e:
        print(f"chopinbot {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
