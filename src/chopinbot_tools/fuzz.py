"""A fuzzer for the MIDI reading path: ``python -m chopinbot_tools.fuzz --cases 10000``.

Every case is a hostile MIDI file: a bundled corpus file mutated (truncated,
bytes flipped, header fields overwritten with absurd or SMPTE values, track
lengths that lie, giant or over-long delta times, running-status garbage,
meta and sysex events with absurd lengths or values, empty and duplicated
tracks, splices of two files) or a file synthesized from scratch (up to a
quarter of a million notes, floods of tempo and key-signature events,
thousands of tracks, random bytes after a valid header).

Each case runs through the whole path a user's file takes:
:func:`chopinbot.dataset.prepare.process_file` (read, states, key segments,
transposition -- what ``chopinbot prepare`` does) and
:func:`chopinbot.compose.seeds.seed_from_primer` (what ``generate --primer`` and the
web app's upload do).  A case passes when it ends in a valid result (states
whose invariants hold) or in :class:`chopinbot.errors.MidiError` with a
readable one-line message.  Anything else is a failure:

* ``crash``   -- another exception escaped, or the worker process died (signal);
* ``hang``    -- no answer within the watchdog time (the worker is killed);
* ``slow``    -- the case took more CPU time than ``--time-cap``;
* ``memory``  -- it tried to allocate past ``--mem-cap-mb`` (address-space
  limit of the worker, ``RLIMIT_AS``);
* ``invalid`` -- a result that breaks the states' invariants, or an error
  message that is empty, multi-line or too long.

Cases run in worker subprocesses, so a segfault, an endless loop or a memory
blow-up in C++ code is detected, counted and survived.  Case ``i`` of seed
``s`` is always the same bytes: ``--case i`` reruns one case in-process with
its traceback; ``--save-failures DIR`` writes failing inputs.  The exit code
is 0 when no case failed, 1 otherwise (2 for bad flags).

The bytes and mutators are in :mod:`chopinbot_tools.fuzz_mutate`, the synthesized
files and the cases in :mod:`chopinbot_tools.fuzz_synth`; this module checks
and runs them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chopinbot.cli.args import nonneg_int, positive_float, positive_int
from chopinbot.compose.seeds import seed_from_primer
from chopinbot.constants import BUNDLED_CORPUS_DIR, SEED_STATES
from chopinbot.dataset.prepare import process_file
from chopinbot.dataset.store import PrepareSettings
from chopinbot.errors import MidiError
from chopinbot.io_utils import atomic_write_json
from chopinbot_tools.fuzz_synth import Case, load_corpus, make_case

FAILURES = ("crash", "hang", "slow", "memory", "invalid")
OUTCOMES = ("ok", "midi_error") + FAILURES
MAX_MESSAGE = 300  # characters: a readable one-line message is shorter

# --------------------------------------------------------------------------------------------
# The path under test
# --------------------------------------------------------------------------------------------


def _one_line_ok(msg: str) -> bool:
    return bool(msg.strip()) and "\n" not in msg and len(msg) <= MAX_MESSAGE and msg.isprintable()


def _check_states(states, max_states: int | None = None) -> str | None:
    """The invariants of a valid result; a description of the first broken one, or None."""
    n = len(states)
    if states.keys.shape != (n, 88) or states.onsets.shape != (n, 88):
        return f"keys/onsets shape {states.keys.shape}/{states.onsets.shape} for {n} states"
    if states.seconds.shape != (n,) or states.velocity.shape != (n,):
        return "array lengths differ"
    if (states.onsets & ~states.keys).any():
        return "an onset on a key that does not sound"
    if not (np.isfinite(states.beats).all() and (states.beats > 0).all()):
        return "a state with a non-positive or non-finite length in beats"
    if not (np.isfinite(states.seconds).all() and (states.seconds >= 0).all()):
        return "a state with a negative or non-finite length in seconds"
    if states.velocity.max(initial=0) > 127:
        return "velocity above 127"
    if max_states is not None and n > max_states:
        return f"{n} states, above the cap {max_states}"
    return None


def check_bytes(data: bytes, name: str = "fuzz.mid", workdir: str | os.PathLike | None = None) -> dict:
    """Run one input through the user's reading path and classify it.

    Returns ``{"outcome": "ok" | "midi_error" | "crash" | "invalid", "message",
    "states", "segments"}`` (``message``: the first MidiError reason, or what
    went wrong).  Memory errors are not caught here (the worker reports them).
    """
    settings = PrepareSettings()
    messages = []
    result = {"outcome": "ok", "message": "", "states": 0, "segments": 0}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        # 1) what `chopinbot prepare` does with the file
        try:
            res = process_file(path, settings)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 -- anything escaping process_file is a crash
            return {"outcome": "crash", "message": f"process_file: {type(e).__name__}: {e}"[:1000], "states": 0}
        if res.error is not None:
            messages.append(res.error)
        else:
            result["states"] = res.n_states
            result["segments"] = len(res.segments)
            total = 0
            for states, _key, _shift, _first in res.segments:
                bad = _check_states(states)
                if bad:
                    return {"outcome": "invalid", "message": f"process_file: {bad}", "states": res.n_states}
                total += len(states)
            if total != res.n_states:
                return {"outcome": "invalid", "message": "segments do not add up to the states", "states": total}
            if res.n_states > settings.max_states:
                return {"outcome": "invalid", "message": f"{res.n_states} states above the cap", "states": total}
    # 2) what `generate --primer` and the app's upload do with it
    try:
        seed = seed_from_primer(data, SEED_STATES, settings, name=name)
    except MidiError as e:
        messages.append(e.reason)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001
        return {"outcome": "crash", "message": f"seed_from_primer: {type(e).__name__}: {e}"[:1000],
                "states": result["states"]}
    else:
        bad = _check_states(seed.states, SEED_STATES)
        if bad:
            return {"outcome": "invalid", "message": f"seed_from_primer: {bad}", "states": result["states"]}
    for m in messages:
        if not _one_line_ok(m):
            return {"outcome": "invalid", "message": f"unreadable error message: {m[:200]!r}",
                    "states": result["states"]}
    if messages:
        result["outcome"] = "midi_error"
        result["message"] = messages[0]
    return result


# --------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------


def _import_target(spec: str) -> Callable[[bytes], dict]:
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn or "check_bytes")


def _worker(target: str, mem_cap_mb: int) -> None:
    """Read cases from stdin (4-byte length + bytes), answer one JSON line each."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if mem_cap_mb:
        cap = mem_cap_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    fn = _import_target(target)
    fn(b"")  # import everything before the first timed case
    stdin, stdout = sys.stdin.buffer, sys.stdout
    stdout.write("ready\n")
    stdout.flush()
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        (n,) = struct.unpack(">I", head)
        data = stdin.read(n)
        t0, c0 = time.perf_counter(), _cpu_with_children()
        try:
            res = fn(data)
        except MemoryError:
            res = {"outcome": "memory", "message": "MemoryError"}
        except Exception as e:  # noqa: BLE001 -- the target itself failed
            res = {"outcome": "crash", "message": f"{type(e).__name__}: {e}"[:1000]}
        res["wall"] = time.perf_counter() - t0
        res["cpu"] = _cpu_with_children() - c0
        res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stdout.write(json.dumps(res) + "\n")
        stdout.flush()


def _cpu_with_children() -> float:
    """CPU seconds of this process and of the children it has waited for (verovio's, for scores)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its waited-for children so far, from /proc
    (0 where there is none).  A child still running is not counted: the wall-time backstop is."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class _Worker:
    """One worker process; started, then ``ready`` once its imports are done."""

    def __init__(self, target: str, mem_cap_mb: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from chopinbot_tools.fuzz import _worker; _worker(sys.argv[1], int(sys.argv[2]))",
             target, str(mem_cap_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )
        self.buf = b""
        self.ready = False
        self.case: Case | None = None
        self.started = time.perf_counter()
        self.cpu0 = 0.0

    def send(self, case: Case) -> None:
        self.case, self.started, self.cpu0 = case, time.perf_counter(), _cpu_seconds(self.proc.pid)
        self.proc.stdin.write(struct.pack(">I", len(case.data)) + case.data)
        self.proc.stdin.flush()

    def cpu(self) -> float:
        """CPU seconds spent on the current case (or on starting up)."""
        return _cpu_seconds(self.proc.pid) - self.cpu0

    def read_line(self) -> bytes | None:
        """A complete line if one is there; b'' at end of file (the worker died)."""
        if b"\n" not in self.buf:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return b""
            self.buf += chunk
        if b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            return line
        return None

    def kill(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        return self.proc.wait()


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


@dataclass
class Summary:
    cases: int = 0
    seed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in OUTCOMES})
    seconds: float = 0.0
    time_cap: float = 0.0
    mem_cap_mb: int = 0
    slowest: list[dict] = field(default_factory=list)  # the 10 slowest cases (CPU time)
    peak_rss_mb: float = 0.0
    failures: list[dict] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)  # MidiError reasons (numbers blanked) -> count
    by_mutator: dict[str, dict[str, int]] = field(default_factory=dict)
    large_cases: int = 0
    worker_restarts: int = 0
    kind: str = "MIDI"  # what the inputs are, for the summary line

    @property
    def failed(self) -> int:
        return sum(self.counts[k] for k in FAILURES)

    def text(self) -> str:
        c = self.counts
        lines = [
            f"fuzzed {self.cases:,} {self.kind} inputs (seed {self.seed}, {self.large_cases} "
            f"{'of 100k+ notes/events' if self.kind == 'MIDI' else 'large or bombs'}) in "
            f"{self.seconds:.1f} s: ok {c['ok']:,}, MidiError {c['midi_error']:,}; "
            f"crash {c['crash']}, hang {c['hang']}, slow {c['slow']}, memory {c['memory']}, invalid {c['invalid']}",
        ]
        if self.slowest:
            s = self.slowest[0]
            lines.append(f"slowest case: #{s['index']} {s['name']}: {s['cpu']:.2f} s CPU, {s['wall']:.2f} s wall "
                         f"(cap {self.time_cap:g} s CPU); peak worker memory {self.peak_rss_mb:.0f} MB "
                         f"(cap {self.mem_cap_mb} MB address space)")
        for f in self.failures[:20]:
            lines.append(f"FAILED #{f['index']} [{f['outcome']}] {f['name']}: {f['message'][:300]}")
        if len(self.failures) > 20:
            lines.append(f"... and {len(self.failures) - 20} more failures")
        lines.append("PASS: no crash, hang or blow-up" if not self.failed else f"FAIL: {self.failed} failing cases")
        return "\n".join(lines)

    def finish(self, report: str | None) -> int:
        """Print the summary, write it as JSON to ``report`` (if given); the exit status (1 if any case failed)."""
        print(self.text())
        if report:
            atomic_write_json(report, dict(asdict(self), failed=self.failed))
        return 1 if self.failed else 0


def _message_key(msg: str) -> str:
    msg = re.sub(r"^.*?\.(mid|musicxml|mxl|xml|krn): ", "", msg)
    return re.sub(r"\d[\d,.]*", "N", msg)[:120]


def run_fuzz(
    cases: int = 1000,
    seed: int = 0,
    time_cap: float = 2.0,
    mem_cap_mb: int = 2048,
    jobs: int = 1,
    hang_cpu: float | None = None,
    hang_wall: float | None = None,
    target: str = "chopinbot_tools.fuzz:check_bytes",
    corpus_dir: str | os.PathLike | None = None,
    save_failures: str | os.PathLike | None = None,
    start: int = 0,
    progress: bool = False,
    case_filter: Callable[[Case], bool] | None = None,
    make: Callable[[int], Case] | None = None,
    kind: str = "MIDI",
) -> Summary:
    """Run cases ``start .. start + cases - 1`` of ``seed`` in ``jobs`` worker processes.

    A case is *slow* when it used more than ``time_cap`` CPU seconds.  The
    watchdog kills a worker as *hung* when its case has used ``hang_cpu`` CPU
    seconds (default ``max(10, 5 * time_cap)``) or ``hang_wall`` wall seconds
    (default ``max(120, 30 * time_cap)``, a backstop for a worker blocked
    without using CPU); CPU time, unlike wall time, does not grow when the
    machine is busy with other work.  ``make(i)`` makes case ``i`` (default: the
    MIDI cases of ``seed`` from ``corpus_dir``); ``kind`` names the inputs in the summary.
    """
    if make is None:
        corpus = load_corpus(Path(corpus_dir or BUNDLED_CORPUS_DIR))
        make = lambda i: make_case(seed, i, corpus)  # noqa: E731
    hang_cpu = hang_cpu or max(10.0, 5 * time_cap)
    hang_wall = hang_wall or max(120.0, 30 * time_cap)
    summary = Summary(seed=seed, time_cap=time_cap, mem_cap_mb=mem_cap_mb, kind=kind)
    t_start = time.perf_counter()
    pending = (make(i) for i in range(start, start + cases))
    if case_filter is not None:
        pending = (c for c in pending if case_filter(c))
    done = 0

    def record(case: Case, res: dict) -> None:
        nonlocal done
        outcome = res.get("outcome", "crash")
        if outcome in ("ok", "midi_error") and res.get("cpu", 0.0) > time_cap:
            outcome = "slow"
            res["message"] = f"took {res['cpu']:.2f} s CPU (cap {time_cap:g} s); " + res.get("message", "")
        summary.counts[outcome] = summary.counts.get(outcome, 0) + 1
        summary.cases += 1
        summary.large_cases += case.large
        if outcome == "midi_error":
            k = _message_key(res.get("message", ""))
            summary.messages[k] = summary.messages.get(k, 0) + 1
        parts = case.name.split("+")
        for part in parts[1:] if "." in parts[0] else ["synth"] + parts[1:]:
            part = "named.x" if part.startswith("named.") else part
            d = summary.by_mutator.setdefault(part, {})
            d[outcome] = d.get(outcome, 0) + 1
        if "cpu" in res:
            summary.peak_rss_mb = max(summary.peak_rss_mb, res.get("maxrss_mb", 0.0))
            summary.slowest.append(dict(index=case.index, name=case.name, cpu=round(res["cpu"], 3),
                                        wall=round(res["wall"], 3), outcome=outcome, bytes=len(case.data),
                                        states=res.get("states", 0)))
            summary.slowest = sorted(summary.slowest, key=lambda s: -s["cpu"])[:10]
        if outcome in FAILURES:
            summary.failures.append(dict(index=case.index, name=case.name, outcome=outcome,
                                         message=str(res.get("message", ""))[:1000], bytes=len(case.data)))
            if save_failures:
                d = Path(save_failures)
                d.mkdir(parents=True, exist_ok=True)
                suffix = getattr(case, "suffix", ".mid")
                (d / f"seed{seed}-case{case.index}{suffix}").write_bytes(getattr(case, "file_bytes", case.data))
        done += 1
        if progress and done % 500 == 0:
            c = summary.counts
            print(f"  {done:,} cases, {time.perf_counter() - t_start:.0f} s: ok {c['ok']:,}, "
                  f"MidiError {c['midi_error']:,}, failures {summary.failed}", file=sys.stderr, flush=True)

    workers = [_Worker(target, mem_cap_mb) for _ in range(max(1, jobs))]
    exhausted = False

    def feed(w: _Worker) -> None:
        nonlocal exhausted
        case = None if exhausted else next(pending, None)
        exhausted = case is None
        if case is None:
            w.case = None
        else:
            w.send(case)

    def replace(w: _Worker) -> _Worker:
        w.kill()
        summary.worker_restarts += 1
        new = _Worker(target, mem_cap_mb)
        workers[workers.index(w)] = new
        return new

    try:
        while True:
            live = [w for w in workers if not w.ready or w.case is not None]
            if not live:
                break
            ready, _, _ = select.select([w.proc.stdout for w in live], [], [], 0.5)
            for w in live:
                if w.proc.stdout in ready:
                    line = w.read_line()
                    if line is None:
                        continue
                    if line == b"":  # the worker died
                        rc = w.proc.wait()
                        why = f"killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
                        if not w.ready:
                            raise RuntimeError(f"fuzz worker for {target} failed to start ({why})")
                        record(w.case, {"outcome": "crash", "message": f"worker process {why}"})
                        replace(w)
                        continue
                    if not w.ready:
                        w.ready = line.strip() == b"ready"
                        feed(w)
                        continue
                    record(w.case, json.loads(line))
                    feed(w)
                elif w.ready and w.case is not None:
                    cpu, wall = w.cpu(), time.perf_counter() - w.started
                    if cpu > hang_cpu or wall > hang_wall:
                        record(w.case, {"outcome": "hang", "message": f"no answer after {cpu:.1f} s CPU / {wall:.1f} s "
                                                                      "wall; worker killed"})
                        replace(w)
    finally:
        for w in workers:
            w.kill()
    summary.seconds = time.perf_counter() - t_start
    summary.messages = dict(sorted(summary.messages.items(), key=lambda kv: -kv[1]))
    return summary


def replay(check, payload: bytes, file_bytes: bytes, suffix: str, save: str | None, save_name: str,
           upload_name: str | None = None) -> int:
    """One case in-process (a MIDI or a score fuzzer's): ``check(payload)``'s outcome, then, for a crash,
    the two paths again (``prepare``'s and ``--primer``'s) without catching anything, so the traceback
    shows.  ``file_bytes`` is the file itself (written to ``save``/``save_name`` when asked)."""
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        out = Path(save) / save_name
        out.write_bytes(file_bytes)
        print(f"input written to {out}")
    t0 = time.process_time()
    res = check(payload)
    print(f"{res['outcome']}: {res['message'] or res.get('states', 0)} ({time.process_time() - t0:.3f} s CPU)")
    if res["outcome"] == "crash":  # again, letting the exception through
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"case{suffix}").write_bytes(file_bytes)
            process_file(Path(tmp) / f"case{suffix}", PrepareSettings())
        try:
            seed_from_primer(file_bytes, SEED_STATES, PrepareSettings(), name=upload_name or "upload")
        except MidiError:
            pass
    return 0 if res["outcome"] in ("ok", "midi_error") else 1


def _reproduce(seed: int, index: int, corpus_dir: str | None, save: str | None) -> int:
    """Run one case in-process, without catching anything, so its traceback shows."""
    case = make_case(seed, index, load_corpus(corpus_dir or BUNDLED_CORPUS_DIR))
    print(f"case #{case.index} of seed {seed}: {case.name} ({len(case.data):,} bytes)")
    return replay(check_bytes, case.data, case.data, ".mid", save, f"seed{seed}-case{case.index}.mid")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chopinbot_tools.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=positive_int, default=1000, help="number of inputs (default: %(default)s)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="run seed: case i of seed s is always the same bytes")
    p.add_argument("--start", type=nonneg_int, default=0, help="first case index (default: 0)")
    p.add_argument("--case", type=nonneg_int, help="run only this case, in-process, and show its traceback")
    p.add_argument("--time-cap", type=positive_float, default=2.0,
                   help="CPU seconds one input may take, both paths together (default: %(default)s)")
    p.add_argument("--hang-cpu", type=positive_float,
                   help="CPU seconds before a worker is killed as hung (default: max(10, 5 x time cap))")
    p.add_argument("--mem-cap-mb", type=nonneg_int, default=2048,
                   help="address-space limit of a worker in MB; 0 = none (default: %(default)s)")
    p.add_argument("--jobs", type=positive_int, default=1, help="worker processes (default: %(default)s)")
    p.add_argument("--corpus", help="folder of .mid files to mutate (default: the bundled corpus)")
    p.add_argument("--report", help="write the summary as JSON to this file")
    p.add_argument("--save-failures", help="write every failing input into this folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.case is not None:
        return _reproduce(args.seed, args.case, args.corpus, args.save_failures)
    summary = run_fuzz(args.cases, args.seed, args.time_cap, args.mem_cap_mb, args.jobs, args.hang_cpu,
                       corpus_dir=args.corpus, save_failures=args.save_failures, start=args.start,
                       progress=not args.quiet)
    return summary.finish(args.report)


if __name__ == "__main__":
    sys.exit(main())
