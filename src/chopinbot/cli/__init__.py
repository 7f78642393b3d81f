"""The `chopinbot` command: one subcommand per pipeline stage.

Each subcommand lives in its own module (``chopinbot.cli.<name>``) with
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only
when their command runs, so `chopinbot prepare` never pays for importing torch.
The benchmarks are tools (``chopinbot_tools``, the layer above the command
line): ``COMMANDS`` names their modules, loaded by name when their command
runs, so the command line never imports a tool (tests/test_architecture.py).
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

# name -> (module: a name in chopinbot.cli, or a full module path for a tool; one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("prepare", "MIDI files -> a dataset of piano states (default: the bundled corpus)"),
    "train": ("train", "train a model on a prepared dataset"),
    "plot": ("plot", "draw the training curves of a run folder"),
    "seeds": ("seeds", "list the seed windows of the held-out pieces (bundled, or a dataset's own)"),
    "generate": ("generate", "compose music from a seed or your own MIDI"),
    "score": ("score", "a MIDI, MusicXML or Humdrum file as sheet music (MusicXML, PDF, SVG)"),
    "styles": ("styles", "list the styles (composers) a model can compose in"),
    "evaluate": ("evaluate", "held-out metrics, baselines, musical statistics and a report"),
    "app": ("app", "start the web app"),
    "prune": ("prune", "magnitude-prune a model and measure the trade-off"),
    "export": ("export", "export a model as int8, fp16, ONNX or TorchScript"),
    "models": ("models", "list the bundled models and trained run folders"),
    "benchmark": ("chopinbot_tools.benchmark", "the Piano-midi.de frame-level NLL benchmark"),
    "bench": ("chopinbot_tools.bench", "speed and memory benchmarks"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit code 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def module_path(mod: str) -> str:
    """The module a ``COMMANDS`` entry names: ``chopinbot.cli.<mod>``, or ``mod`` itself when dotted (a tool)."""
    return mod if "." in mod else f"{__name__}.{mod}"


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        try:
            found = importlib.util.find_spec(module_path(mod)) is not None
        except ModuleNotFoundError:  # an install without the tools
            found = False
        if found:
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
            importlib.import_module(module_path(mod)).add_arguments(p)
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
    module = importlib.import_module(module_path(_available()[args.command][0]))
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
