"""`chopinbot bench [NAME|all]`: the speed and memory benchmarks (same as
``python -m chopinbot_tools.bench``); writes results.json and results.md."""

from __future__ import annotations

import argparse
import shlex
import sys

from chopinbot_tools.bench import add_arguments as bench_arguments
from chopinbot_tools.bench import run_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    bench_arguments(p)


def run(args: argparse.Namespace) -> int:
    command = "chopinbot " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "bench" in sys.argv[1:] else ""
    return run_args(args, command)
