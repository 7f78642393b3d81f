"""What every benchmark shares (:mod:`chopinbot_tools.bench` runs them): the row
format, the machine summary, child processes that measure peak memory, the
context and the timing helper.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from chopinbot import __version__
from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot.dataset.prepare import list_midi_files, prepare

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
