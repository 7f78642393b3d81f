"""Speed and memory benchmarks: ``make bench``, ``python -m chopinbot_tools.bench NAME|all``.

Each benchmark is one function ``bench_<name>(ctx) -> list[row]``; a row is::

    {benchmark, name, figure, unit, better, baseline, baseline_figure,
     baseline_source, ratio, target, met, notes, details}

``ratio`` always reads "times better than the baseline" (figure / baseline
for rates, baseline / figure for times and memory), so > 1 means ChopinBot
wins.  ``target`` is the issue's goal for that row (on the ratio or on the
figure); ``met`` says whether this run reached it.

How each figure is measured (details in ``docs/bench.md``):

* Times are wall-clock (``time.perf_counter``), after a warm-up run of the
  same phase; the figure is the median of the timed repeats.
* Training throughput runs the real training step (forward, the Maestro loss
  of :func:`chopinbot.model.predict.compute_losses`, backward, clipping, the
  per-layer gradient statistics, optimizer and scheduler step -- the region
  :func:`chopinbot.training.train.train` times for its own state-predictions/s) for a
  fixed number of updates, after warm-up updates.
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
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import symusic

from chopinbot import __version__
from chopinbot.cli.args import positive_int
from chopinbot.compose.seeds import seed_from_test
from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot.dataset.features import DurationVocab
from chopinbot.dataset.prepare import list_midi_files, prepare
from chopinbot.dataset.store import Dataset
from chopinbot.io_utils import atomic_write_json, atomic_write_text
from chopinbot.music.midi import read_midi

SCHEMA_VERSION = 1
ROW_FIELDS = ("benchmark", "name", "figure", "unit", "better", "baseline", "baseline_figure", "baseline_source",
              "ratio", "target", "met", "notes", "details")
CHILD_MARK = "CHOPINBOT_BENCH_CHILD "

# The original design's figures on this machine type (/work/shared/FIELD-NOTES.md):
# its Keras 2x512 LSTM, TensorFlow 2.21 CPU, 2 cores.
ORIGINAL_TRAIN_WINDOWS_PER_S = (466, 483)
ORIGINAL_GENERATE_STEPS_PER_S = (12, 15)
ORIGINAL_TRAIN_PEAK_RSS_MB = round(1.43e9 / 2**20, 0)  # "1.43 GB" in the field notes, in MiB
ORIGINAL_WINDOW = 16
ORIGINAL_FEATURES = 108  # 88 keys + 20 duration nodes per state, float64
ORIGINAL_BATCH = 512
FIELD_NOTES = "FIELD-NOTES (the original on this machine type, not this run)"
MEASURED = "measured in this run"


# --- Rows ---------------------------------------------------------------------------


def make_row(benchmark: str, name: str, figure: float | None, unit: str, *, better: str = "higher",
             baseline: str | None = None, baseline_figure: float | None = None, baseline_source: str | None = None,
             target: dict | None = None, notes: str = "", details: dict | None = None) -> dict:
    """One result row.  ``better`` is "higher" (rates) or "lower" (times, memory);
    ``target`` is ``{"on": "ratio"|"figure", "min"|"max": value, "text": ...}``."""
    ratio = None
    if figure is not None and baseline_figure is not None and figure > 0 and baseline_figure > 0:
        ratio = figure / baseline_figure if better == "higher" else baseline_figure / figure
    met = None
    if target:
        value = ratio if target.get("on") == "ratio" else figure
        if value is not None:
            ok_min = "min" not in target or value >= target["min"]
            ok_max = "max" not in target or value <= target["max"]
            met = bool(ok_min and ok_max)
    return {
        "benchmark": benchmark, "name": name, "figure": _num(figure), "unit": unit, "better": better,
        "baseline": baseline, "baseline_figure": _num(baseline_figure),
        "baseline_source": baseline_source if baseline_figure is not None else None,
        "ratio": _num(ratio), "target": target, "met": met, "notes": notes, "details": details or {},
    }


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        return None
    return float(f"{x:.6g}")


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _spread(xs: list[float]) -> dict:
    return {"runs": [round(x, 6) for x in xs], "min": round(min(xs), 6), "max": round(max(xs), 6)}


# --- Machine ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _cgroup_cpus() -> float | None:
    """The container's CPU quota in cores (cgroup v2 ``cpu.max``), if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else round(int(quota) / int(period), 2)
    except (OSError, ValueError):
        return None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(module: str) -> str | None:
    try:
        return version(module)
    except Exception:
        return None


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def machine_summary() -> dict:
    """CPU model, cores, memory, library versions and torch's threads."""
    import torch  # not at module level: see the module docstring

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "cgroup_cpu_quota": _cgroup_cpus(),
        "memory_mb": _mem_total_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": bool(torch.cuda.is_available()),
        "numpy": _version("numpy"),
        "symusic": _version("symusic"),
        "music21": _version("music21"),
        "chopinbot": __version__,
        "git": _git_commit(),
        "loadavg_start": _loadavg(),
    }


def machine_line(m: dict) -> str:
    quota = f", cgroup quota {m['cgroup_cpu_quota']} CPUs" if m.get("cgroup_cpu_quota") else ""
    return (f"{m['cpu_model']}, {m['cores']} cores ({m['cores_usable']} usable{quota}), "
            f"{(m.get('memory_mb') or 0) / 1024:.1f} GiB RAM; Python {m['python']}, torch {m['torch']} "
            f"({m['torch_threads']} threads), numpy {m['numpy']}, symusic {m['symusic']}"
            + (f", music21 {m['music21']}" if m.get("music21") else "")
            + f"; chopinbot {m['chopinbot']}" + (f" ({m['git']})" if m.get("git") else ""))


# --- Child processes (peak memory) -----------------------------------------------------


def _proc_status_kb(pid: int | str, field_name: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _children_of(pid: int) -> list[int]:
    out = []
    try:
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
                except (OSError, ValueError, IndexError):
                    continue
    except OSError:
        pass
    return out


def _pss_kb(pid: int) -> int | None:
    """Proportional set size: shared pages split between the processes sharing
    them, so the PSS of a process tree adds up to its real memory."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class _TreeSampler(threading.Thread):
    """Samples the summed memory (PSS, else RSS) of a process and its children
    every ``interval`` s: the simultaneous peak of a job with worker processes."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self.samples = 0
        self.kind = "RSS"
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            pids = [self.pid] + _children_of(self.pid)
            total = 0
            for p in pids:
                kb = _pss_kb(p)
                if kb is None:
                    kb = _proc_status_kb(p, "VmRSS") or 0
                else:
                    self.kind = "PSS"
                total += kb
            self.peak_kb = max(self.peak_kb, total)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


def run_child(kind: str, args: dict, timeout: float = 900) -> dict:
    """Run ``_child_<kind>(args)`` in a fresh Python process; returns its result
    plus ``peak_rss_mb`` (the child itself), ``workers_peak_rss_mb`` (its
    largest worker process, if any) and ``tree_peak_mb`` (sampled sum); MiB."""
    fd, arg_path = tempfile.mkstemp(prefix="chopinbot-bench-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(args, f)
    try:
        cmd = [sys.executable, "-m", "chopinbot_tools.bench", "_child", kind, arg_path]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = None
        if Path(f"/proc/{proc.pid}").exists():
            sampler = _TreeSampler(proc.pid)
            sampler.start()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"benchmark child {kind!r} ran past {timeout:.0f} s") from None
        finally:
            if sampler:
                sampler.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark child {kind!r} failed (exit {proc.returncode}): {err.strip()[-2000:]}")
        lines = [ln for ln in out.splitlines() if ln.startswith(CHILD_MARK)]
        if not lines:
            raise RuntimeError(f"benchmark child {kind!r} printed no result: {err.strip()[-2000:]}")
        res = json.loads(lines[-1][len(CHILD_MARK):])
        if sampler and sampler.samples:
            res["tree_peak_mb"] = round(sampler.peak_kb / 1024, 1)
            res["tree_measure"] = f"{sampler.kind} of the process and its children, sampled every {sampler.interval} s"
            res["tree_samples"] = sampler.samples
        return res
    finally:
        os.unlink(arg_path)


def _child_main(kind: str, arg_path: str) -> int:
    args = json.loads(Path(arg_path).read_text())
    fn = _CHILDREN[kind]
    result = fn(args)
    # VmHWM starts afresh at exec; ru_maxrss does not (it keeps the parent's
    # peak from before the exec), so it is only the fallback without /proc.
    hwm = _proc_status_kb("self", "VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Worker processes are forked (no exec): their ru_maxrss is their own.
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = dict(result, peak_rss_mb=round(hwm / 1024, 1),
                  workers_peak_rss_mb=round(kids_kb / 1024, 1) if kids_kb else 0.0)
    sys.stdout.flush()
    print(CHILD_MARK + json.dumps(result), flush=True)
    return 0


def _child_floor(args: dict) -> dict:
    """Only the imports (torch, numpy, the package): the floor every figure sits on.
    The imports are what this child measures, so they are here."""
    import numpy  # noqa: F401
    import torch  # noqa: F401

    import chopinbot.compose.generate  # noqa: F401
    import chopinbot.dataset.prepare  # noqa: F401
    import chopinbot.training.train  # noqa: F401

    return {}


def _child_floor_prepare(args: dict) -> dict:
    import chopinbot.dataset.prepare  # noqa: F401  (what this child measures)

    return {}


def _child_prepare(args: dict) -> dict:
    inputs = args.get("inputs") or None
    if args.get("files_list"):
        inputs = json.loads(Path(args["files_list"]).read_text())
    t0 = time.perf_counter()
    rep = prepare(inputs, args["out"], jobs=int(args.get("jobs", 1)), force=True, progress=False)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "files": rep.files, "skipped": rep.skipped, "rows": rep.rows}


def _child_train_epoch(args: dict) -> dict:
    # torch-side imports stay in the functions that need them (module docstring)
    from chopinbot.model.network import ModelConfig
    from chopinbot.training.train import TrainConfig, train

    mk = dict(args.get("model") or {})
    cfg = TrainConfig(data=args["data"], out=args["out"], epochs=1, progress=False,
                      model=ModelConfig(duration_classes=[1.0], **mk))
    t0 = time.perf_counter()
    res = train(cfg)
    return {"seconds": time.perf_counter() - t0, "predictions_per_s": res.predictions_per_s,
            "hidden": cfg.model.hidden, "layers": cfg.model.layers}


_CHILDREN: dict[str, Callable[[dict], dict]] = {
    "floor": _child_floor,
    "floor_prepare": _child_floor_prepare,
    "prepare": _child_prepare,
    "train_epoch": _child_train_epoch,
}


# --- Context ----------------------------------------------------------------------------


@dataclass
class BenchContext:
    """What every benchmark shares: options, a work folder, the prepared corpus."""

    work: Path
    quick: bool = False
    smoke: bool = False  # the tests' setting: quick, and the smallest sizes that still run every code path
    jobs: int = 2
    corpus: Path | None = None  # a folder of MIDI files instead of the bundled corpus
    music21: bool = True  # measure the music21 baseline when importable
    log: Callable[[str], None] = print
    _dataset_dir: Path | None = field(default=None, repr=False)

    @property
    def corpus_dir(self) -> Path:
        return Path(self.corpus) if self.corpus else BUNDLED_CORPUS_DIR

    def corpus_files(self) -> list[Path]:
        return list_midi_files([self.corpus_dir])

    def dataset_dir(self) -> Path:
        """The corpus prepared once (default settings) for the training and memory benchmarks."""
        if self._dataset_dir is None:
            out = self.work / "dataset"
            prepare([self.corpus_dir], out, progress=False)
            self._dataset_dir = out
        return self._dataset_dir


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 1, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` untimed ones; this
    process's CPU seconds of each go into ``cpu`` when given (a check on a busy
    machine: a single-threaded phase's CPU time barely moves with the load)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.process_time() - c0)
    return times


# --- prepare ------------------------------------------------------------------------------


def _music21_parse_seconds(files: list[Path], quick: bool) -> tuple[float, dict] | None:
    """Seconds for music21's ``converter.parse`` of ``files`` (parse only, no pickle
    cache), or None when music21 is not installed.  Quick: four files spread
    over the size range, scaled to all files by their note count."""
    try:  # music21 is optional (the bench extra)
        import music21  # noqa: F401
        from music21 import converter
    except ImportError:
        return None

    def parse(p: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # music21 warns about every unnamed instrument
            converter.parse(str(p), forceSource=True, storePickle=False)

    by_size = sorted(files, key=lambda p: p.stat().st_size)
    parse(by_size[0])  # warm-up: music21's lazy imports and first-call costs
    step = max(1, len(by_size) // 4)
    subset = by_size[step // 2 :: step][:4] if quick and len(files) > 4 else files
    c0 = time.process_time()
    t0 = time.perf_counter()
    for p in subset:
        parse(p)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    details = {"music21": _version("music21"), "files_parsed": len(subset),
               "call": "music21.converter.parse(path, forceSource=True, storePickle=False)"}
    if len(subset) < len(files):
        notes_all = sum(len(read_midi(p)) for p in files)
        notes_sub = sum(len(read_midi(p)) for p in subset)
        details.update(measured_seconds=round(seconds, 3), extrapolated_by_notes=f"{notes_sub} -> {notes_all}")
        seconds = seconds * notes_all / max(notes_sub, 1)
        cpu = cpu * notes_all / max(notes_sub, 1)
    details["cpu_seconds"] = round(cpu, 3)
    return seconds, details


def bench_prepare(ctx: BenchContext) -> list[dict]:
    """Wall time to prepare the corpus (default: the 48 bundled files), 1 and
    ``jobs`` worker processes, against music21's parse of the same files."""
    files = ctx.corpus_files()
    n = len(files)
    repeats = 1 if ctx.smoke else 2 if ctx.quick else 5
    rows_out: dict[int, tuple[list[float], int, list[float]]] = {}
    for jobs in sorted({1, ctx.jobs}):
        out = ctx.work / f"prepare_j{jobs}"
        holder: dict[str, int] = {}

        def run(jobs=jobs, out=out, holder=holder) -> None:
            rep = prepare([ctx.corpus_dir], out, jobs=jobs, force=True, progress=False)
            holder["rows"] = rep.rows

        cpu: list[float] = []
        times = _timed(run, repeats, cpu=cpu)
        rows_out[jobs] = (times, holder["rows"], cpu)
        shutil.rmtree(out, ignore_errors=True)
        ctx.log(f"  prepare jobs={jobs}: median {_median(times):.3f} s over {repeats} runs")
    base = _music21_parse_seconds(files, ctx.quick) if ctx.music21 else None
    if base is not None:
        ctx.log(f"  music21 parse: {base[0]:.1f} s")
    rows = []
    target = {"on": "ratio", "min": 200, "text": ">= 200x faster than the music21 parse"}
    for jobs, (times, n_rows, cpu) in rows_out.items():
        fig = _median(times)
        notes = (f"{n} files -> {n_rows:,} states: read (symusic), states, keys, transposition, write; "
                 f"median of {len(times)} runs after a warm-up")
        if base is None:
            notes += ("; music21 not measured (" + ("skipped" if not ctx.music21 else
                      "not installed: pip install '.[bench]'") + "); FIELD-NOTES: ~72 s for the 48 files here")
        elif base[1].get("extrapolated_by_notes"):
            notes += "; quick: music21 figure extrapolated from 4 files (spread over the sizes) by note count"
        rows.append(make_row(
            "prepare", f"prepare_{n}_files_jobs{jobs}", fig, "s", better="lower",
            baseline=f"music21 converter.parse of the same {n} files (parse only)" if base else None,
            baseline_figure=base[0] if base else None, baseline_source=MEASURED, target=target, notes=notes,
            details=dict(_spread(times), files=n, states=n_rows, jobs=jobs, files_per_s=round(n / fig, 1),
                         cpu_seconds_main_process=round(_median(cpu), 4),
                         **({"baseline": base[1]} if base else {})),
        ))
    return rows


# --- train ----------------------------------------------------------------------------------


def _train_throughput(split, mcfg, window: int, batch: int, context: int, warmup: int, updates: int) -> dict:
    """State-predictions/s of the real training step over ``updates`` updates
    (after ``warmup``): the same region :func:`chopinbot.training.train.train` times."""
    import torch  # torch-side imports stay in the functions that need them (module docstring)

    from chopinbot.model.network import ChopinLSTM
    from chopinbot.training.train import TrainConfig, _lr_lambda, _make_optimizer, _seed_everything, train_step

    cfg = TrainConfig(context=context, window=window, batch=batch, model=mcfg)
    _seed_everything(cfg.seed)
    model = ChopinLSTM(mcfg)
    opt = _make_optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, 10_000))
    rng = np.random.default_rng(cfg.seed)
    units = split.windows(window) if window else split.chunks(context, rng)
    order = rng.permutation(len(units))
    model.train()
    grad_acc: dict = {}
    step_s, batch_s, preds = [], [], []
    for i in range(warmup + updates):
        a = (i * batch) % max(1, len(order) - batch + 1)
        idx = order[a : a + batch]
        tb = time.perf_counter()
        x, t = split.batch([units[j] for j in idx], **model.config.input_blocks)
        tb = time.perf_counter() - tb
        t0 = time.perf_counter()
        train_step(model, model, opt, sched, cfg, x, t, grad_acc, where="in the training benchmark")
        dt = time.perf_counter() - t0
        if i >= warmup:
            step_s.append(dt)
            batch_s.append(tb)
            preds.append(int(t.mask.sum().item()))
    n = sum(preds)
    return {
        "predictions_per_s": n / sum(step_s),
        "predictions_per_s_with_batching": n / (sum(step_s) + sum(batch_s)),
        "updates": updates, "warmup_updates": warmup, "predictions": n, "step_seconds": round(sum(step_s), 4),
        "batching_seconds": round(sum(batch_s), 4), "batch": batch,
        "states_computed_per_update": batch * (window if window else context),
        "units_per_s": len(preds) * batch / sum(step_s),
    }


def bench_train(ctx: BenchContext) -> list[dict]:
    """Sequence training vs the original's 16-state windows, same model, same run:
    2x512 (the original's size) and the default model."""
    # torch-side imports stay in the functions that need them (module docstring)
    from chopinbot.dataset.batches import SplitData
    from chopinbot.model.network import ChopinLSTM, ModelConfig
    from chopinbot.training.train import TrainConfig, build_model_config

    ds = Dataset(ctx.dataset_dir())
    d = TrainConfig()
    seq_updates, win_updates, warm = (3, 2, 1) if ctx.quick else (30, 10, 3)
    models = [("2x512", dict(layers=2, hidden=512)), (f"{ModelConfig.layers}x{ModelConfig.hidden} (default)", {})]
    rows = []
    for label, shape in models:
        mcfg = build_model_config(TrainConfig(model=ModelConfig(duration_classes=[1.0], **shape)), ds)
        split = SplitData(ds, "train", mcfg.vocab)
        seq = _train_throughput(split, mcfg, 0, d.batch, d.context, warm, seq_updates)
        win = _train_throughput(split, mcfg, ORIGINAL_WINDOW, ORIGINAL_BATCH, d.context, warm, win_updates)
        ctx.log(f"  train {label}: sequence {seq['predictions_per_s']:,.0f}/s, "
                f"window {win['predictions_per_s']:,.0f}/s")
        n_params = ChopinLSTM(mcfg).n_params()
        rows.append(make_row(
            "train", f"train_sequence_vs_window_{label.split()[0]}", seq["predictions_per_s"], "state-predictions/s",
            baseline=f"the original's window mode (--window {ORIGINAL_WINDOW}, batch {ORIGINAL_BATCH}), same model",
            baseline_figure=win["predictions_per_s"], baseline_source=MEASURED,
            target={"on": "ratio", "min": 10, "text": ">= 10x the state-predictions/s of window training"},
            notes=(f"LSTM {label}, {n_params:,} params; sequence mode: batch {d.batch} x context {d.context}; "
                   f"{seq_updates} timed updates (window: {win_updates}) after {warm} warm-up; training step only "
                   f"(batch assembly excluded, as train.py counts it; with it: "
                   f"{seq['predictions_per_s_with_batching']:,.0f} vs "
                   f"{win['predictions_per_s_with_batching']:,.0f}/s); "
                   f"the original Keras model: {ORIGINAL_TRAIN_WINDOWS_PER_S[0]}-{ORIGINAL_TRAIN_WINDOWS_PER_S[1]} "
                   f"windows/s (2x512, {FIELD_NOTES})"),
            details={"model": label, "parameters": n_params, "sequence": seq, "window": win},
        ))
    return rows


# --- generate ------------------------------------------------------------------------------


def bench_generate(ctx: BenchContext) -> list[dict]:
    """States/s at batch 1 and 32, carried LSTM state vs re-running the last 16
    states every step (the original app's way), and the real-time factor."""
    # torch-side imports stay in the functions that need them (module docstring)
    import torch

    from chopinbot.compose.generate import GenerateConfig, generate
    from chopinbot.model.formats import load_model

    model = load_model(None)
    model.eval()
    seed = seed_from_test(0)
    # (batch, re-run window, engine): steps
    steps = {(1, 0, "auto"): 1000, (1, 16, "auto"): 300, (32, 0, "auto"): 300, (32, 16, "auto"): 100,
             (1, 0, "torch"): 300}
    if ctx.quick:
        steps = {k: max(20, v // 10) for k, v in steps.items()}
    if ctx.smoke:
        steps = {k: 8 for k in steps}
    repeats = 1 if ctx.quick else 3
    default_threads = torch.get_num_threads()
    thread_options = [1] if ctx.smoke else sorted({1, default_threads})
    res: dict[tuple[int, int, str], dict] = {}
    for (batch, window, engine), n in steps.items():
        cfg = GenerateConfig(steps=n, random_seed=1, retry=False)
        per_threads = {}
        for threads in thread_options:
            box: dict[str, Any] = {}

            def run(batch=batch, window=window, cfg=cfg, box=box, engine=engine) -> None:
                box["out"] = generate(model, seed, cfg, batch=batch, rerun_window=window, engine=engine)

            torch.set_num_threads(threads)
            try:
                generate(model, seed, GenerateConfig(steps=2 if ctx.smoke else 16, random_seed=0, retry=False),
                         batch=batch, rerun_window=window, engine=engine)  # warm-up
                times = _timed(run, repeats, warmup=0)
            finally:
                torch.set_num_threads(default_threads)
            outs = box["out"] if isinstance(box["out"], list) else [box["out"]]
            music_s = sum(float(o.generated.beats.astype("float64").sum()) * 60.0 / o.bpm for o in outs)
            t = _median(times)
            per_threads[threads] = {"states_per_s": batch * n / t, "steps": n, "batch": batch, "threads": threads,
                                    "seconds": t, "music_seconds": music_s, "realtime_factor": music_s / t,
                                    **_spread(times)}
        best = max(per_threads.values(), key=lambda r: r["states_per_s"])
        res[(batch, window, engine)] = dict(best, by_threads={str(k): round(v["states_per_s"], 1)
                                                              for k, v in per_threads.items()})
        ctx.log(f"  generate batch {batch} {'re-run 16' if window else 'incremental'} (engine {engine}): "
                + ", ".join(f"{v['states_per_s']:,.0f} states/s ({k} thread{'s' if k > 1 else ''})"
                            for k, v in per_threads.items()))
    c = model.config
    about = (f"shipped model (LSTM {c.layers}x{c.hidden}), sampling, seed window 0 ({seed.source}); median of "
             f"{repeats} after a warm-up; each figure the faster of torch threads {thread_options} (details: "
             f"by_threads); the original Keras app: {ORIGINAL_GENERATE_STEPS_PER_S[0]}-"
             f"{ORIGINAL_GENERATE_STEPS_PER_S[1]} steps/s at batch 1 ({FIELD_NOTES})")
    rows = []
    for batch in (1, 32):
        inc, rerun = res[(batch, 0, "auto")], res[(batch, 16, "auto")]
        rows.append(make_row(
            "generate", f"generate_batch{batch}", inc["states_per_s"], "states/s",
            baseline="re-running the last 16 states every step (--rerun-window 16), same model",
            baseline_figure=rerun["states_per_s"], baseline_source=MEASURED,
            target={"on": "figure", "min": 2000, "text": ">= 2,000 states/s at batch 1"} if batch == 1 else None,
            notes=(f"{inc['steps']} steps x batch {batch} at {inc['threads']} thread(s) (re-run: {rerun['steps']} "
                   f"steps at {rerun['threads']}); " + about),
            details={"incremental": inc, "rerun16": rerun},
        ))
    inc, torch_inc = res[(1, 0, "auto")], res[(1, 0, "torch")]
    rows.append(make_row(
        "generate", "generate_engine_batch1", inc["states_per_s"], "states/s",
        baseline="the same incremental generation through the model's own PyTorch forward (--engine torch)",
        baseline_figure=torch_inc["states_per_s"], baseline_source=MEASURED,
        notes=("NumPy step (chopinbot.compose.stepper) vs PyTorch modules, both carrying the LSTM state; "
               "the same music either way; shows how much of the batch-1 speed is call overhead, not arithmetic"),
        details={"numpy": inc, "torch": torch_inc},
    ))
    inc, rerun = res[(1, 0, "auto")], res[(1, 16, "auto")]
    rows.append(make_row(
        "generate", "realtime_factor_batch1", inc["realtime_factor"], "s of music / s",
        baseline="re-running the last 16 states every step, same model", baseline_figure=rerun["realtime_factor"],
        baseline_source=MEASURED,
        notes=(f"seconds of generated music (at the seed's tempo) per second of compute, batch 1; at batch 32 "
               f"{res[(32, 0, 'auto')]['realtime_factor']:,.0f} (all 32 pieces together)"),
        details={"batch1": inc["realtime_factor"], "batch32": res[(32, 0, "auto")]["realtime_factor"]},
    ))
    return rows


# --- memory ----------------------------------------------------------------------------------


def dataset_memory(dataset_dir: str | os.PathLike) -> dict:
    """Bytes our training data needs in memory vs the original's float64 windows
    (every 16-state window of each piece as 16 x 108 float64)."""
    from chopinbot.dataset.batches import SplitData  # torch (module docstring)

    ds = Dataset(dataset_dir)
    rows = int(len(ds.records))
    records = int(ds.records.nbytes)
    vocab = DurationVocab((1.0,))
    derived = 0
    for split in ("train", "valid"):  # what a training run builds beside the memory-mapped records
        derived += int(SplitData(ds, split, vocab).end_pos.nbytes)
    windows = sum(max(0, int(f["states"]) - ORIGINAL_WINDOW) for f in ds.manifest["files"])
    window_bytes = windows * ORIGINAL_WINDOW * ORIGINAL_FEATURES * 8
    return {"states": rows, "record_bytes": records, "bytes_per_state": records / max(rows, 1),
            "derived_bytes": derived, "ours_bytes": records + derived, "windows": windows,
            "window_bytes": window_bytes}


def bench_memory(ctx: BenchContext) -> list[dict]:
    """Peak RSS of prepare and of one training epoch (child processes); the
    dataset's size in memory vs the original's float64 windows."""
    data = ctx.dataset_dir()
    floor = run_child("floor", {})
    floor_p = run_child("floor_prepare", {})
    prep = run_child("prepare", {"inputs": [str(ctx.corpus_dir)], "out": str(ctx.work / "mem_prepare"), "jobs": 1})
    shutil.rmtree(ctx.work / "mem_prepare", ignore_errors=True)
    model = {"hidden": 64, "layers": 1} if ctx.quick else {}
    ep = run_child("train_epoch", {"data": str(data), "out": str(ctx.work / "mem_train"), "model": model})
    shutil.rmtree(ctx.work / "mem_train", ignore_errors=True)
    dm = dataset_memory(data)
    ctx.log(f"  peak RSS: prepare {prep['peak_rss_mb']:.0f} MiB, one epoch {ep['peak_rss_mb']:.0f} MiB; dataset "
            f"{dm['ours_bytes'] / 2**20:.2f} MiB vs windows {dm['window_bytes'] / 2**20:.0f} MiB")
    mb = 1024 * 1024
    return [
        make_row("memory", "peak_rss_prepare", prep["peak_rss_mb"], "MiB", better="lower",
                 notes=(f"peak RSS (VmHWM) of a child process preparing {prep['files']} files (1 process) in "
                        f"{prep['seconds']:.2f} s; of which {floor_p['peak_rss_mb']:.0f} MiB is Python + the "
                        "prepare imports"),
                 details={"child": prep, "import_floor_mb": floor_p["peak_rss_mb"]}),
        make_row("memory", "peak_rss_train_epoch", ep["peak_rss_mb"], "MiB", better="lower",
                 baseline="the original Keras 2x512 training (TensorFlow, window 16, batch 512)",
                 baseline_figure=ORIGINAL_TRAIN_PEAK_RSS_MB, baseline_source=FIELD_NOTES,
                 notes=(f"peak RSS (VmHWM) of a child process: `train` for one epoch of LSTM "
                        f"{ep['layers']}x{ep['hidden']}"
                        f"{' (quick: a small model)' if ctx.quick else ' (the default model)'}, validation and "
                        f"checkpoints included, {ep['seconds']:.1f} s; of which {floor['peak_rss_mb']:.0f} MiB is "
                        "Python + torch + the package imports"),
                 details={"child": ep, "import_floor_mb": floor["peak_rss_mb"]}),
        make_row("memory", "dataset_in_memory", dm["ours_bytes"] / mb, "MiB", better="lower",
                 baseline=(f"the original's float64 windows: {dm['windows']:,} windows x {ORIGINAL_WINDOW} x "
                           f"{ORIGINAL_FEATURES} x 8 bytes"),
                 baseline_figure=dm["window_bytes"] / mb, baseline_source="computed for this corpus",
                 target={"on": "ratio", "min": 100, "text": "<= 1/100 of the float64 windows"},
                 notes=(f"{dm['states']:,} states x {dm['bytes_per_state']:.0f} B (memory-mapped, bit-packed) "
                        f"+ {dm['derived_bytes'] / mb:.2f} MiB of derived end positions (train and valid SplitData); "
                        "batches are gathered from the map on the fly, no window is ever materialised"),
                 details=dm),
    ]


# --- app -----------------------------------------------------------------------------------


def bench_app(ctx: BenchContext) -> list[dict]:
    """Click-to-audio latency for a 30-second piece: the web app's
    ``chopinbot.app.request.compose`` when present, else generate + render_wav_bytes;
    with the app, also for 4 variations of 30 s (one batch, each rendered and drawn)."""
    repeats = 1 if ctx.quick else 3
    path, timings, audio_note = "", {}, None
    try:
        from chopinbot.app.registry import SHIPPED_LABEL, load_entry
        from chopinbot.app.request import ComposeRequest, compose
        from chopinbot.constants import SHIPPED_MODEL_DIR

        entry = load_entry(SHIPPED_MODEL_DIR, SHIPPED_LABEL)
        request = ComposeRequest(seconds=30.0, seed_index=0, random_seed=1)
        box: dict[str, Any] = {}

        def run() -> None:
            box["r"] = compose(request, entry)

        path = "app.request.compose(ComposeRequest(seconds=30, seed_index=0, random_seed=1), shipped model)"
        box["variations"] = (ComposeRequest(seconds=30.0, seed_index=0, random_seed=1, variations=4), entry)
    except (ImportError, AttributeError, TypeError):
        from chopinbot.compose.generate import GenerateConfig, generate
        from chopinbot.model.formats import load_model
        from chopinbot.render.audio import render_wav_bytes

        box = {}

        def run() -> None:
            model = box.get("model") or load_model(None)
            box["model"] = model
            gen = generate(model, seed_from_test(0), GenerateConfig(seconds=30.0, random_seed=1))
            box["r"] = gen
            box["wav"] = render_wav_bytes(gen.midi_bytes())

        path = ("generate(shipped model, seed 0, GenerateConfig(seconds=30)) + audio.render_wav_bytes "
                "(chopinbot.app.request.compose not available)")
    import torch  # not at module level: see the module docstring

    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    tuned, untune = "", None
    try:
        from chopinbot.app.pool import tune_for_serving

        untune = tune_for_serving()  # what `chopinbot app` does at start: 1 thread per generation, MKL-DNN off
        tuned = f"; tuned as the server is (pool.tune_for_serving: {torch.get_num_threads()} thread(s))"
    except ImportError:
        pass
    try:
        t0 = time.perf_counter()
        run()  # the first click after start: model load, caches
        cold = time.perf_counter() - t0
        times = _timed(run, repeats, warmup=0)
        if "variations" in box:  # the app's 4 variations: four 30-s continuations of one seed, one batch
            request4, entry4 = box["variations"]
            times4 = _timed(lambda: box.__setitem__("r4", compose(request4, entry4)), repeats, warmup=1)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
        if untune is not None:
            untune()  # NumPy's BLAS threads back
    r = box["r"]
    if hasattr(r, "timings"):
        timings = {k: round(v, 4) for k, v in r.timings.items()}
        audio_ok = r.pieces[0].wav is not None
        audio_note = r.pieces[0].audio_note
        gen = r.pieces[0].generation
    else:
        audio_ok = bool(box.get("wav"))
        gen = r
    n_states = len(gen.generated)
    fig = _median(times)
    ctx.log(f"  app: {fig:.2f} s per 30-s piece (first click {cold:.2f} s)")
    original = n_states / (sum(ORIGINAL_GENERATE_STEPS_PER_S) / 2)
    rows = [make_row(
        "app", "click_to_audio_30s", fig, "s", better="lower",
        baseline=(f"the original app's generation alone for the same {n_states} states at "
                  f"{sum(ORIGINAL_GENERATE_STEPS_PER_S) / 2:g} steps/s (an estimate: generation only, no rendering)"),
        baseline_figure=original, baseline_source="estimate from " + FIELD_NOTES,
        notes=(f"{path}{tuned}; median of {repeats} after the first click ({cold:.2f} s: model load and caches); "
               f"{n_states} new states, {gen.seconds:.1f} s of music in all; "
               + ("audio rendered with FluidSynth" if audio_ok else f"NO AUDIO: {audio_note or 'FluidSynth missing'}")),
        details={"path": path, "cold_seconds": round(cold, 4), **_spread(times), "timings_last": timings,
                 "audio": audio_ok, "new_states": n_states},
    )]
    if "r4" in box:
        r4 = box["r4"]
        fig4 = _median(times4)
        states4 = [len(p.generation.generated) for p in r4.pieces]
        audio4 = all(p.wav is not None for p in r4.pieces)
        ctx.log(f"  app: {fig4:.2f} s for 4 variations of 30 s")
        rows.append(make_row(
            "app", "click_to_audio_30s_4_variations", fig4, "s", better="lower",
            target={"on": "figure", "max": 4.0, "text": "<= 4 s (issue 18)"},
            notes=(f"app.request.compose(ComposeRequest(seconds=30, seed_index=0, random_seed=1, variations=4), "
                   f"shipped model){tuned}: one batch of 4, each piece rendered and drawn; median of {repeats} after "
                   f"one untimed; {sum(states4)} new states ({', '.join(map(str, states4))}); "
                   + ("audio rendered with FluidSynth" if audio4 else "NO AUDIO: " + str(r4.pieces[0].audio_note))),
            details={**_spread(times4), "timings_last": {k: round(v, 4) for k, v in r4.timings.items()},
                     "audio": audio4, "new_states": states4},
        ))
    return rows


# --- scale ----------------------------------------------------------------------------------

_TEMPO_FACTORS = (1.0, 0.8, 1.25, 0.9, 1.1, 0.85, 1.15, 0.95, 1.05)
_SHIFTS = (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6)


def build_synthetic_corpus(folder: str | os.PathLike, n: int, sources: list[Path]) -> list[Path]:
    """``n`` MIDI files made from ``sources``: each transposed by -5..+6 semitones
    (key signatures moved with it) and time-stretched by a tempo factor of
    0.8..1.25, every combination distinct up to len(sources) x 108 files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scores = [(p.stem, symusic.Score(str(p))) for p in sources]
    out = []
    for v in range(n):
        stem, score = scores[v % len(scores)]
        k = _SHIFTS[(v // len(scores)) % len(_SHIFTS)]
        f = _TEMPO_FACTORS[(v // (len(scores) * len(_SHIFTS))) % len(_TEMPO_FACTORS)]
        s = score.shift_pitch(k)  # a new score
        for t in s.tempos:
            t.qpm = t.qpm * f
        for ks in s.key_signatures:
            ks.key = (ks.key + 7 * k + 5) % 12 - 5  # the signature of the transposed key
        path = folder / f"syn{v:05d}_{stem}_t{k:+d}_x{f:g}.mid"
        s.dump_midi(str(path))
        out.append(path)
    return out


def bench_scale(ctx: BenchContext) -> list[dict]:
    """A synthetic corpus (the bundled pieces transposed and time-stretched),
    prepared with ``jobs`` workers at two sizes: files/s and peak memory."""
    sizes = (100, 300) if ctx.quick else (1000, 5000)
    t0 = time.perf_counter()
    files = build_synthetic_corpus(ctx.work / "synthetic", max(sizes), ctx.corpus_files())
    build_s = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in files) / 1e6
    ctx.log(f"  built {len(files)} synthetic files ({mb:.0f} MB) in {build_s:.1f} s")
    res = {}
    for n in sizes:
        lst = ctx.work / f"files_{n}.json"
        lst.write_text(json.dumps([str(p) for p in files[:n]]))
        r = run_child("prepare", {"files_list": str(lst), "out": str(ctx.work / f"scale_{n}"), "jobs": ctx.jobs})
        shutil.rmtree(ctx.work / f"scale_{n}", ignore_errors=True)
        r["files_per_s"] = n / r["seconds"]
        r["peak_bound_mb"] = round(r["peak_rss_mb"] + ctx.jobs * r["workers_peak_rss_mb"], 1)
        # the figure: the sampled simultaneous peak of the whole job (PSS), else the per-process bound
        r["peak_mb"] = r.get("tree_peak_mb") or r["peak_bound_mb"]
        res[n] = r
        ctx.log(f"  prepare {n} files, jobs {ctx.jobs}: {r['files_per_s']:.0f} files/s, peak {r['peak_mb']:.0f} MiB "
                f"(main {r['peak_rss_mb']:.0f} + {ctx.jobs} x worker {r['workers_peak_rss_mb']:.0f} MiB RSS)")
    small, big = sizes
    rows = []
    for n in sizes:
        r = res[n]
        rows.append(make_row(
            "scale", f"scale_prepare_{n}_files", r["files_per_s"], "files/s",
            target={"on": "figure", "min": 100, "text": ">= 100 files/s"} if n == big else None,
            notes=(f"synthetic corpus: {n} files ({r['rows']:,} states), prepare --jobs {ctx.jobs} in a child "
                   f"process, {r['seconds']:.1f} s (imports excluded); corpus built in {build_s:.1f} s (not counted)"),
            details=r,
        ))
    measure = res[big].get("tree_measure") or "main process RSS + jobs x largest worker RSS (upper bound)"
    growth_kib = (res[big]["peak_mb"] - res[small]["peak_mb"]) * 1024 / (big - small)
    states_kib = res[big]["rows"] * 31 / 1024 / big  # 31 bytes a state (dataset.STATE_DTYPE)
    rows.append(make_row(
        "scale", f"scale_peak_memory_{big}_files", res[big]["peak_mb"], "MiB", better="lower",
        baseline=f"the same at {small} files", baseline_figure=res[small]["peak_mb"], baseline_source=MEASURED,
        target={"on": "ratio", "min": 0.8, "text": f"flat: at {big} files <= 1.25x the peak at {small}"},
        notes=(f"peak memory of the whole prepare job: {measure}; it grows {growth_kib:.1f} KiB per file while "
               f"{states_kib:.0f} KiB of states per file are streamed to disk (manifest entries too); summed PSS "
               f"also rises as the forked workers' copy-on-write pages turn private over a longer run; "
               f"per-process peaks (RSS, shared pages counted "
               f"in each): main {res[small]['peak_rss_mb']:.0f} -> {res[big]['peak_rss_mb']:.0f} MiB, largest "
               f"worker {res[small]['workers_peak_rss_mb']:.0f} -> {res[big]['workers_peak_rss_mb']:.0f} MiB"),
        details={str(n): {k: res[n].get(k) for k in ("peak_mb", "tree_peak_mb", "peak_rss_mb", "workers_peak_rss_mb",
                                                        "peak_bound_mb", "tree_samples")} for n in sizes}
                | {"growth_kib_per_file": round(growth_kib, 2), "states_kib_per_file": round(states_kib, 1)},
    ))
    shutil.rmtree(ctx.work / "synthetic", ignore_errors=True)
    return rows


# --- Suite ----------------------------------------------------------------------------------

BENCHMARKS: dict[str, Callable[[BenchContext], list[dict]]] = {
    "prepare": bench_prepare,
    "train": bench_train,
    "generate": bench_generate,
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
