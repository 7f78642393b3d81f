"""Many visitors at once, without a browser: N sessions submit a request each to the app's
worker pool (:class:`chopinbot.app.pool.ComposePool`) at the same moment, as the page's
Generate button does, and the latency of each (submit -> result with its audio) is measured.

    python -m chopinbot_tools.load --sessions 20            # p50/p95/max, failures, where the time went
    python -m chopinbot_tools.load --sessions 50 --max-queue 32   # beyond the queue cap: refused with a message

This is the server side of ``tests/test_app_load.py`` (which drives the real Streamlit page
over its websocket): the same pool, the same ``compose``, the shipped model by default; it
adds no page or network cost, so it isolates what the pool, the composing, the audio and the
statistics cost under load.  Each session asks for ``--seconds`` of new music with its own
random seed and tempo (60 + 4 i bpm, as the page test does).  Printed: the latency
percentiles, the failures and refusals, each step's mean wall time (from the result's
``timings``), the CPU the server process and its FluidSynth children used, and the load
average before the run (a shared machine inflates every figure).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``sorted_values``, nearest rank (as tests/test_app_load.py reports it)."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def _proc_cpu(pids: list[int]) -> float:
    """CPU seconds so far of processes ``pids`` and their finished children (a worker's FluidSynth)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def run_load(sessions: int, seconds: float = 30.0, model: str | None = None, workers: int | None = None,
             max_queue: int | None = None, audio: bool = True, stagger_s: float = 0.0,
             processes: bool = True) -> dict:
    """Submit ``sessions`` requests at once and wait for all; a summary dict (see the module docstring)."""
    from chopinbot.app.pool import ComposePool, tune_for_serving, warm_up
    from chopinbot.app.registry import SHIPPED_LABEL, load_entry
    from chopinbot.app.request import ComposeRequest, RequestRefused
    from chopinbot.app.settings import DEFAULT_MAX_QUEUE, DEFAULT_WORKERS
    from chopinbot.constants import SHIPPED_MODEL_DIR

    tune_for_serving()
    folder = Path(model) if model else SHIPPED_MODEL_DIR
    label = SHIPPED_LABEL if model is None else folder.name
    entry = load_entry(folder, label)
    pool = ComposePool(workers or DEFAULT_WORKERS, max_queue or DEFAULT_MAX_QUEUE, processes=processes)
    warm_up(entry, wait=True, pool=pool)  # what `chopinbot app` starts at once; visitors arrive after it
    # one request alone first: the single-visitor figure on this machine, now
    t = time.perf_counter()
    pool.compose(ComposeRequest(model=label, seconds=seconds, random_seed=1, bpm=100.0, render_audio=audio),
                 entry, "alone")
    alone = time.perf_counter() - t

    results: list[dict] = [{} for _ in range(sessions)]
    barrier = threading.Barrier(sessions)

    def visitor(i: int) -> None:
        out = results[i]
        request = ComposeRequest(model=label, seconds=seconds, random_seed=1000 + i, bpm=60.0 + 4 * i,
                                 render_audio=audio)
        barrier.wait()
        time.sleep(stagger_s * i)
        t0 = time.perf_counter()
        try:
            fut = pool.submit(request, entry, f"load-{i}")
            positions = []
            while not fut.done():
                positions.append(pool.position(fut))
                time.sleep(0.05)
            result = fut.result()
            out.update(ok=True, latency=time.perf_counter() - t0, timings=result.timings,
                       first_position=positions[0] if positions else 0,
                       fingerprint=result.pieces[0].fingerprint, wav=result.pieces[0].wav is not None)
        except RequestRefused as e:
            out.update(ok=False, refused=str(e), latency=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - counted as a failure and reported
            out.update(ok=False, error=repr(e), latency=time.perf_counter() - t0)

    load_before = os.getloadavg()[0]
    workers_cpu0 = _proc_cpu(pool.worker_pids())
    cpu0, wall0 = os.times(), time.perf_counter()
    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(sessions)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    cpu1, wall = os.times(), time.perf_counter() - wall0
    workers_cpu = _proc_cpu(pool.worker_pids()) - workers_cpu0
    pool.shutdown()
    served = [r for r in results if r.get("ok")]
    lat = sorted(r["latency"] for r in served)
    steps = ("queued", "seed", "generate", "generate_cpu", "statistics", "picture", "picture_cpu", "audio", "total")
    mean_steps = {k: round(sum(r["timings"].get(k, 0.0) for r in served) / max(1, len(served)), 3) for k in steps}
    summary = {
        "sessions": sessions, "seconds": seconds, "model": label, "workers": pool.workers,
        "worker_kind": "processes" if processes else "threads",
        "max_queue": pool.max_queue, "served": len(served),
        "refused": sum(1 for r in results if "refused" in r),
        "told_position": sum(1 for r in served if r["first_position"] > 0),
        "failures": sum(1 for r in results if "error" in r),
        "errors": sorted({r["error"] for r in results if "error" in r})[:3],
        "refusals": sorted({r["refused"] for r in results if "refused" in r})[:2],
        "distinct_pieces": len({r["fingerprint"] for r in served}),
        "p50_s": round(percentile(lat, 0.5), 2), "p95_s": round(percentile(lat, 0.95), 2),
        "max_s": round(lat[-1], 2) if lat else None, "wall_s": round(wall, 2), "alone_s": round(alone, 2),
        "mean_step_s": mean_steps,
        "cpu_s": {"server_process": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 2),
                  "its FluidSynth (worker threads)": round(
                      (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system), 2),
                  "worker processes and their FluidSynth": round(workers_cpu, 2)},
        "load_average_before": round(load_before, 2),
    }
    cpu = summary["cpu_s"]
    summary["cpu_per_request_s"] = round(sum(cpu.values()) / max(1, len(served)), 3)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chopinbot_tools.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of new music per request")
    p.add_argument("--model", default=None, help="a model folder (default: the shipped model)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--max-queue", type=int, default=None)
    p.add_argument("--no-audio", action="store_true", help="skip FluidSynth (to see what the audio costs)")
    p.add_argument("--threads", action="store_true", help="worker threads instead of processes (the old pool)")
    p.add_argument("--stagger", type=float, default=0.0, help="seconds between one visitor's press and the next")
    a = p.parse_args(argv)
    if a.sessions < 1:
        p.error("--sessions must be at least 1")
    summary = run_load(a.sessions, a.seconds, a.model, a.workers, a.max_queue, audio=not a.no_audio,
                       stagger_s=a.stagger, processes=not a.threads)
    print(json.dumps(summary, indent=1))
    print(f"{summary['sessions']} sessions x {a.seconds:g} s: p50 {summary['p50_s']} s, p95 {summary['p95_s']} s, "
          f"max {summary['max_s']} s; served {summary['served']}, refused {summary['refused']}, "
          f"failures {summary['failures']} (one alone {summary['alone_s']} s; load average "
          f"{summary['load_average_before']})")
    return 0 if summary["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
