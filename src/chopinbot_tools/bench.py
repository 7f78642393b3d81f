"""Speed and memory benchmarks: ``make bench``, ``python -m chopinbot_tools.bench NAME|all``.

Each benchmark is one function ``bench_<name>(ctx) -> list[row]`` in a module by
concern (:mod:`~chopinbot_tools.bench_speed`, :mod:`~chopinbot_tools.bench_memory`,
:mod:`~chopinbot_tools.bench_app`; shared parts in :mod:`~chopinbot_tools.bench_common`);
this module runs them and writes the results.  A row is::

    {benchmark, name, figure, unit, better, baseline, baseline_figure,
     baseline_source, ratio, target, met, notes, details}

``ratio`` always reads "times better than the baseline" (figure / baseline
for rates, baseline / figure for times and memory), so > 1 means ChopinBot
wins.  ``target`` is the issue's goal for that row (on the ratio or on the
figure); ``met`` says whether this run reached it.

How each figure is measured (details in ``docs/bench.md``):

* Times are wall-clock (``time.perf_counter``), after a warm-up run of the
  same phase; the figure is the median of the timed repeats.
* Training throughput runs training's own epoch (:func:`chopinbot.training.epoch.train_epoch`:
  forward, the Maestro loss of :func:`chopinbot.model.predict.compute_losses`,
  backward, clipping, the per-layer gradient statistics, optimizer and
  scheduler step -- the region :func:`chopinbot.training.train.train` times for
  its own state-predictions/s) for a fixed number of updates, after warm-up updates.
* Peak memory is measured in a child process (``VmHWM`` / ``ru_maxrss`` of
  the child, ``RUSAGE_CHILDREN`` for its worker processes), so the parent's
  own allocations never count.

Nothing here imports torch at module level (torch and the modules that load it
are imported inside the functions that need them): the child processes that
measure ``prepare`` pay only for what ``prepare`` itself imports, plus under
1 MB of standard library and :mod:`chopinbot.cli.args`.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from chopinbot.cli.args import positive_int
from chopinbot.io_utils import atomic_write_json, atomic_write_text
from chopinbot_tools.bench_app import bench_app
from chopinbot_tools.bench_common import (
    MEASURED,
    SCHEMA_VERSION,
    BenchContext,
    _child_main,
    _loadavg,
    machine_line,
    machine_summary,
)
from chopinbot_tools.bench_memory import bench_memory, bench_scale
from chopinbot_tools.bench_speed import bench_generate, bench_length, bench_prepare, bench_train

# --- Suite ----------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[BenchContext], list[dict]]] = {
    "prepare": bench_prepare,
    "train": bench_train,
    "generate": bench_generate,
    "length": bench_length,
    "memory": bench_memory,
    "app": bench_app,
    "scale": bench_scale,
}


def run_benchmarks(names: list[str], out: str | os.PathLike = "bench", quick: bool = False, jobs: int = 2,
                   corpus: str | os.PathLike | None = None, music21: bool = True, work: str | os.PathLike | None = None,
                   log: Callable[[str], None] = print, command: str = "", smoke: bool = False) -> dict:
    """Run the named benchmarks and write ``out/results.json`` and ``out/results.md``.

    Running a subset keeps the other benchmarks' rows of an existing
    ``results.json`` from the same machine (CPU model, cores, torch), so each
    benchmark can be re-run on its own."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
    out = Path(out)
    machine = machine_summary()
    own_work = work is None
    work_dir = Path(tempfile.mkdtemp(prefix="chopinbot-bench-")) if own_work else Path(work)
    work_dir.mkdir(parents=True, exist_ok=True)
    quick = quick or smoke
    ctx = BenchContext(work_dir, quick=quick, smoke=smoke, jobs=jobs, corpus=Path(corpus) if corpus else None,
                       music21=music21, log=log)
    runs: dict[str, dict] = {}
    rows: list[dict] = []
    t_all = time.perf_counter()
    try:
        for name in names:
            log(f"{name} ...")
            t0 = time.perf_counter()
            load0 = _loadavg()
            got = BENCHMARKS[name](ctx) if smoke else _run_isolated(name, ctx)
            runs[name] = {"seconds": round(time.perf_counter() - t0, 2), "finished": _now(), "quick": quick,
                          "loadavg_before": load0, "loadavg_after": _loadavg()}
            rows += got
    finally:
        if own_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    machine["loadavg_end"] = _loadavg()
    results = {
        "schema": SCHEMA_VERSION,
        "created": _now(),
        "command": command,
        "quick": quick,
        "suite_seconds": round(time.perf_counter() - t_all, 1),
        "machine": machine,
        "ratio_meaning": ("times better than the baseline: figure/baseline for rates, baseline/figure for times and "
                          "memory"),
        "benchmarks": runs,
        "rows": rows,
    }
    old = _load_previous(out / "results.json", machine) if set(names) != set(BENCHMARKS) else None
    if old:
        kept = [r for r in old["rows"] if r["benchmark"] not in runs]
        results["benchmarks"] = {**{k: v for k, v in old["benchmarks"].items() if k not in runs}, **runs}
        order = list(BENCHMARKS)
        results["rows"] = sorted(kept + rows,
                                 key=lambda r: order.index(r["benchmark"]) if r["benchmark"] in order else 99)
        results["quick"] = any(v.get("quick") for v in results["benchmarks"].values())
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))
    return results


def _run_isolated(name: str, ctx: BenchContext) -> list[dict]:
    """Run one benchmark in a fresh Python process, so that no benchmark colours
    the next (in one `all` run, batch-1 generation measured 1,686 states/s right
    after the training benchmark in the same process, and 2,501 when run alone a
    minute later).  Its log lines go to this process's stdout."""
    child_ctx = BenchContext(ctx.work, quick=ctx.quick, smoke=ctx.smoke, jobs=ctx.jobs, corpus=ctx.corpus,
                             music21=ctx.music21)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_run_in_child, name, child_ctx).result()


def _run_in_child(name: str, ctx: BenchContext) -> list[dict]:
    ctx.log = functools.partial(print, flush=True)
    return BENCHMARKS[name](ctx)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _load_previous(path: Path, machine: dict) -> dict | None:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    m = old.get("machine", {})
    same = (all(m.get(k) == machine.get(k) for k in ("cpu_model", "cores", "torch"))
            and old.get("schema") == SCHEMA_VERSION)
    return old if same else None


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def markdown(results: dict) -> str:
    """The results as a Markdown table with the machine summary."""
    m = results["machine"]
    quick = results.get("quick")
    lines = [
        "# ChopinBot benchmarks",
        "",
        f"Machine: {machine_line(m)}. Load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')}.",
        f"Run {results['created']}" + (f" (`{results['command']}`)" if results.get("command") else "")
        + f", {results.get('suite_seconds', 0):.0f} s in all."
        + (" **Quick mode: fewer repeats and smaller inputs; not the reference figures.**" if quick else ""),
        "",
        "Ratio = times better than the baseline (higher is better for ChopinBot).",
        "",
        "| benchmark | figure | unit | baseline | baseline figure | ratio | target | met |",
        "|---|---:|---|---|---:|---:|---|---|",
    ]
    for r in results["rows"]:
        tgt = r["target"]["text"] if r.get("target") else ""
        met = "" if r.get("met") is None else ("yes" if r["met"] else "**no**")
        base = r.get("baseline") or ""
        if r.get("baseline_source") and r["baseline_source"] != MEASURED:
            base += f" [{r['baseline_source']}]"
        ratio = f"{_fmt(r['ratio'])}×" if r.get("ratio") is not None else "–"
        lines.append(f"| {r['name']} | {_fmt(r['figure'])} | {r['unit']} | {base.replace('|', '/')} | "
                     f"{_fmt(r.get('baseline_figure'))} | {ratio} | {tgt} | {met} |")
    lines += ["", "Notes:", ""]
    for r in results["rows"]:
        lines.append(f"- **{r['name']}**: {r['notes']}")
    lines += ["", "Benchmark wall times: " + ", ".join(f"{k} {v['seconds']:.0f} s"
                                                      for k, v in results["benchmarks"].items()) + ".", ""]
    return "\n".join(lines)


# --- Command line -----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default="all", choices=["all", *BENCHMARKS],
                   help="which benchmark (default: all)")
    p.add_argument("--out", default="bench", help="folder for results.json and results.md (default: %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats and smaller inputs: a smoke check, not reference figures")
    p.add_argument("--jobs", type=positive_int, default=2,
                   help="worker processes for the parallel prepare runs (default: 2)")
    p.add_argument("--corpus", default=None, help="a folder of MIDI files instead of the bundled corpus")
    p.add_argument("--no-music21", action="store_true", help="skip the music21 baseline even if installed")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary folder, removed afterwards)")


def run_args(args: argparse.Namespace, command: str = "") -> int:
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    res = run_benchmarks(names, args.out, quick=args.quick, jobs=args.jobs, corpus=args.corpus,
                         music21=not args.no_music21, work=args.work, command=command)
    print()
    print(markdown(res))
    print(f"-> {Path(args.out) / 'results.json'}, {Path(args.out) / 'results.md'}")
    return 0


def run(args: argparse.Namespace) -> int:
    """``chopinbot bench``: the command line's launcher (``chopinbot.cli.COMMANDS``) calls this."""
    command = "chopinbot " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if "bench" in sys.argv[1:] else ""
    return run_args(args, command)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_child"]:
        return _child_main(argv[1], argv[2])
    p = argparse.ArgumentParser(prog="python -m chopinbot_tools.bench",
                                description="ChopinBot speed and memory benchmarks")
    add_arguments(p)
    return run_args(p.parse_args(argv), "python -m chopinbot_tools.bench " + " ".join(argv))


if __name__ == "__main__":
    sys.exit(main())
