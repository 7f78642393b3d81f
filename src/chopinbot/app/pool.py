"""The server process: the worker pool every visitor shares, warm-up and tuning.

Generation runs in a bounded worker pool (:class:`ComposePool`): a fixed
number of workers (processes in the server, threads elsewhere) taking requests
first come, first served from one queue, a cap on the requests queued or running,
and at most one request in flight per visitor session, so one visitor cannot
starve the rest; a waiting visitor is told its place (:meth:`ComposePool.position`).
Its sizes are in :mod:`chopinbot.app.settings`.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch

from chopinbot.app.reference import reference_length, reference_stats, threshold_guide_png
from chopinbot.app.registry import ModelEntry, load_entry
from chopinbot.app.rendering import AUDIO_SAMPLE_RATE
from chopinbot.app.request import ComposeRequest, ComposeResult, RequestRefused, compose, make_seed
from chopinbot.app.settings import (
    DEFAULT_MAX_QUEUE,
    DEFAULT_WORKERS,
    MAX_QUEUE_ENV,
    POOL_PROCESSES_ENV,
    REQUEST_TIMEOUT_S,
    SERVE_ENV,
    WORKERS_ENV,
)
from chopinbot.errors import ChopinBotError, ConfigError
from chopinbot.music.states import states_to_score
from chopinbot.render.audio import audio_available, render_wav_bytes

log = logging.getLogger(__name__)

# Warm-up: real Chopin's statistics for every length class up to this many states.
WARM_UP_STATES = 512
# A request's time in a worker before any has been measured (the queue's wait estimate).
_INITIAL_SERVICE_S = 1.0
_MAIN_LOCK = threading.Lock()  # while worker processes are started with a bare __main__


class ComposePool:
    """A bounded pool of composing workers shared by every visitor.

    ``workers`` dispatchers take requests from one first-come-first-served queue and run
    :func:`~chopinbot.app.request.compose` for each: in a worker *process* of their own
    (``processes=True``, what the server uses) or in their own thread.  At most ``max_queue``
    requests may be queued or running at once and each session at most one, so one visitor
    can neither flood the queue nor hold more than one worker.  Refusals raise
    :class:`~chopinbot.app.request.RequestRefused` at once, with a message to show;
    :meth:`position` tells a waiting visitor where its request stands.

    Why processes: composing, the piano roll and the statistics are Python code that holds the
    interpreter's lock, so worker threads in the server take turns on one core, beside the page's
    own Python (Streamlit): of the ~0.6 s of CPU a 30-s piece of the shipped model costs, ~0.5 s
    is under that lock (``python -m chopinbot_tools.load``; docs/reliability.md), so with threads
    20 requests take at least 20 x 0.5 s however many cores there are.  Each process loads the
    model once (:meth:`warm` and :func:`warm_up` warm them); a piece is the same as composed in a
    thread (tests/test_service.py).
    """

    def __init__(self, workers: int = DEFAULT_WORKERS, max_queue: int = DEFAULT_MAX_QUEUE,
                 threads_per_worker: int | None = 1, processes: bool = False) -> None:
        if workers < 1 or max_queue < workers:
            raise ConfigError("need workers >= 1 and max_queue >= workers")
        self.workers, self.max_queue, self.processes = workers, max_queue, processes
        self._threads_per_worker = threads_per_worker
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[_Job] = deque()  # waiting, oldest first
        self._background: deque[tuple[Callable, tuple, Future]] = deque()  # low priority (scores), oldest first
        self._sessions: set[str] = set()
        self._running = 0
        self._closed = False
        self.completed = 0
        self.refused = 0
        self._service_s = _INITIAL_SERVICE_S  # a running mean of one request's time in a worker
        self._warm_entries: list[tuple[str, str]] = []  # (model folder, label) each worker process loads
        self._executors: list[ProcessPoolExecutor | None] = [None] * workers
        if processes:
            self._start_processes(range(workers))
        self._dispatchers = [threading.Thread(target=self._dispatch, args=(i,), name=f"chopinbot-compose-{i}",
                                              daemon=True) for i in range(workers)]
        for t in self._dispatchers:
            t.start()

    def _start_processes(self, indexes) -> None:
        """Start worker process ``i`` for each of ``indexes`` now (it loads in the background).

        A spawned process re-runs the parent's main script, which under Streamlit is the page
        itself (it swaps its script in as ``__main__``): the page would run again in the worker and
        start a pool of its own.  So a worker process is started here with a bare ``__main__``, once
        (each executor has one process, which it never replaces)."""
        with _MAIN_LOCK:
            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                for i in indexes:
                    executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                   initializer=_process_init, initargs=(self._threads_per_worker,))
                    executor.submit(_process_ready)
                    for path, label in self._warm_entries:
                        executor.submit(_warm_process, path, label)
                    self._executors[i] = executor
            finally:
                sys.modules["__main__"] = main

    def status(self) -> dict[str, int]:
        """Requests waiting and running now, and totals since start."""
        with self._lock:
            return {"waiting": len(self._queue), "running": self._running, "workers": self.workers,
                    "max_queue": self.max_queue, "completed": self.completed, "refused": self.refused}

    def submit(self, request: ComposeRequest, entry: ModelEntry, session_id: str) -> Future:
        """Queue a request: a :class:`~concurrent.futures.Future` of its result (a :class:`ComposeResult`)."""
        try:
            request.check_limits()
        except RequestRefused:
            with self._lock:
                self.refused += 1
            raise
        with self._lock:
            if self._closed:
                raise RequestRefused("The server is shutting down; please try again later.")
            if session_id in self._sessions:
                self.refused += 1
                raise RequestRefused("Your previous piece is still being composed; wait for it to finish.")
            pending = len(self._queue) + self._running
            if pending >= self.max_queue:
                self.refused += 1
                wait = self._wait_s(len(self._queue) + 1)
                raise RequestRefused(f"The server is busy: {pending} pieces are being composed or waiting, as many "
                                     f"as it queues, so yours would be number {len(self._queue) + 1} in the queue "
                                     f"(about {wait:.0f} s). Please try again in a few seconds.")
            job = _Job(request, entry, session_id, Future(), time.perf_counter())
            self._sessions.add(session_id)
            self._queue.append(job)
            self._wake.notify()
        return job.future

    def submit_background(self, fn: Callable, *args) -> Future:
        """Queue low-priority work (a score's engraving, :func:`~chopinbot.app.rendering.engrave`): a worker
        takes it only when no request waits, so 20 visitors' pieces are all composed and on their pages
        before any worker engraves a score (engraved in the page's own process, 20 scores held up the
        others' audio behind the interpreter's lock).  ``fn`` runs in a worker process (it and ``args``
        must pickle) or thread; a :class:`~concurrent.futures.Future` of its result."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RequestRefused("The server is shutting down; please try again later.")
            self._background.append((fn, args, future))
            self._wake.notify()
        return future

    def position(self, future: Future) -> int:
        """Where a submitted request stands: 1 for the next to start, 2 for the one after, ...;
        0 once a worker composes it (or it is done)."""
        with self._lock:
            for i, job in enumerate(self._queue):
                if job.future is future:
                    return i + 1
            return 0

    def wait_estimate(self, position: int) -> float:
        """Seconds until a request at queue ``position`` is done, from the recent requests' times."""
        with self._lock:
            return self._wait_s(position)

    def _wait_s(self, position: int) -> float:
        # the requests ahead share the workers; then the request's own time
        return (math.ceil(position / self.workers) + 1) * self._service_s if position else self._service_s

    def _dispatch(self, index: int) -> None:
        """One worker: take the oldest waiting request, compose it, set its future; until shut down."""
        if not self.processes:
            _worker_init(self._threads_per_worker)
        while True:
            with self._lock:
                while not self._queue and not self._background and not self._closed:
                    self._wake.wait()
                if not self._queue and self._background and not self._closed:
                    background = self._background.popleft()
                else:
                    background = None
                    if not self._queue:  # closed and drained
                        return
                    job = self._queue.popleft()
            if background is not None:
                self._run_background(index, *background)
                continue
            with self._lock:
                running = job.future.set_running_or_notify_cancel()  # False: the caller cancelled it
                self._running += running
            if not running:
                self._finish(job, None)
                continue
            started = time.perf_counter()
            executor = self._executors[index]
            try:
                if executor is not None:
                    result = executor.submit(_compose_in_process, job.request, str(job.entry.path), job.entry.label,
                                             job.session_id).result()
                else:
                    result = compose(job.request, job.entry, job.session_id)
                result.timings["queued"] = started - job.submitted
            except BaseException as e:  # noqa: BLE001 - the visitor's page shows it
                self._restart_if_died(index, e)
                self._finish(job, time.perf_counter() - started)
                job.future.set_exception(_plain(e))
                continue
            self._finish(job, time.perf_counter() - started)
            job.future.set_result(result)

    def _run_background(self, index: int, fn: Callable, args: tuple, future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        executor = self._executors[index]
        try:
            result = executor.submit(fn, *args).result() if executor is not None else fn(*args)
        except BaseException as e:  # noqa: BLE001 - the page shows it
            self._restart_if_died(index, e)
            future.set_exception(_plain(e))
            return
        future.set_result(result)

    def _restart_if_died(self, index: int, error: BaseException) -> None:
        """Start worker process ``index`` again if ``error`` says it died (killed, out of memory)."""
        if isinstance(error, BrokenProcessPool) and not self._closed:
            log.error("worker process %d stopped; starting another", index)
            self._executors[index].shutdown(wait=False, cancel_futures=True)
            self._start_processes([index])

    def _finish(self, job: _Job, seconds: float | None) -> None:
        with self._lock:
            self._sessions.discard(job.session_id)
            if seconds is not None:
                self._running -= 1
                self._service_s += 0.2 * (seconds - self._service_s)
            self.completed += 1

    def compose(self, request: ComposeRequest, entry: ModelEntry, session_id: str,
                timeout: float | None = REQUEST_TIMEOUT_S,
                on_position: Callable[[int, float], None] | None = None) -> ComposeResult:
        """Submit and wait (:meth:`wait`): the result, or the request's own error."""
        return self.wait(self.submit(request, entry, session_id), timeout, on_position)

    def wait(self, future: Future, timeout: float | None = REQUEST_TIMEOUT_S,
             on_position: Callable[[int, float], None] | None = None, poll_s: float = 0.25) -> ComposeResult:
        """The result of a submitted request.  While it waits in the queue, ``on_position(position,
        seconds)`` is called whenever its place changes (with :meth:`wait_estimate`'s seconds), and
        once more with position 0 when a worker takes it, so a page can show the visitor where it stands."""
        end = None if timeout is None else time.monotonic() + timeout
        shown = None
        while True:
            position = self.position(future) if on_position is not None else 0
            if on_position is not None and position != shown:
                on_position(position, self.wait_estimate(position))
                shown = position
            left = None if end is None else end - time.monotonic()
            try:
                return future.result(poll_s if position and (left is None or left > poll_s) else left)
            except FutureTimeout:
                if end is not None and time.monotonic() >= end:
                    raise RequestRefused(f"The piece took more than {timeout:.0f} s (the server is very busy); "
                                         "please try a shorter piece or try again later.") from None

    def warm(self, entry: ModelEntry, wait: bool = False) -> None:
        """Start loading ``entry``'s model and caches in every worker process, in the background
        (or ``wait`` until done); a no-op for worker threads, which share the server's."""
        if self.processes:
            self._warm_entries.append((str(entry.path), entry.label))
        futures = [executor.submit(_warm_process, str(entry.path), entry.label, wait)
                   for executor in self._executors if executor is not None]
        for fut in futures if wait else ():
            fut.result()

    def worker_pids(self) -> list[int]:
        """The process ids of the worker processes (none for worker threads)."""
        return [pid for executor in self._executors if executor is not None
                for pid in list(getattr(executor, "_processes", None) or {})]

    def shutdown(self) -> None:
        """Refuse new requests, cancel the waiting ones, finish the running ones."""
        with self._lock:
            self._closed = True
            waiting = list(self._queue)
            self._queue.clear()
            background = [f for _, _, f in self._background]
            self._background.clear()
            self._wake.notify_all()
        for job in waiting:
            job.future.cancel()
            self._finish(job, None)
        for future in background:
            future.cancel()
        for t in self._dispatchers:
            t.join()
        for executor in self._executors:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Job:
    request: ComposeRequest
    entry: ModelEntry
    session_id: str
    future: Future
    submitted: float


def _plain(e: BaseException) -> BaseException:
    """A worker process's error as the visitor's page expects it (a ChopinBotError passes as it is)."""
    if isinstance(e, BrokenProcessPool):
        return ChopinBotError("a composing worker stopped unexpectedly; please try again")
    return e


# --- in each worker process -----------------------------------------------------------


def _process_ready() -> None:
    """Nothing: submitted once to start a worker process."""


def _process_init(threads: int | None) -> None:
    """A worker process: one intra-op thread, MKL-DNN off, one BLAS thread (as the server's own)."""
    tune_for_serving(threads or 1)


def _compose_in_process(request: ComposeRequest, path: str, label: str, session_id: str) -> ComposeResult:
    """:func:`~chopinbot.app.request.compose` in a worker process, with the model loaded there once."""
    return compose(request, load_entry(path, label), session_id)


def _warm_process(path: str, label: str, wait: bool = False) -> None:
    """Load the model in this worker process and warm its caches in a background thread
    (:func:`warm_up`), so the first visitors' pieces need not wait for it."""
    warm_up(load_entry(path, label), wait=wait, guide=False)


def queue_message(position: int, seconds: float) -> str:
    """What a waiting visitor is told (``position`` 1 = next)."""
    ahead = "next" if position == 1 else f"number {position}"
    return (f"The server is busy: your piece is {ahead} in the queue (about {max(1, round(seconds))} s). "
            "It starts by itself; keep this page open.")


def _worker_init(threads: int | None) -> None:
    """Each worker runs its generation on ``threads`` intra-op threads (OpenMP's
    setting is per thread, so this leaves the calling process's own threads
    alone).  Several generations at once with several threads each only
    contend: under load on the 2-core machine a batch-1 step of the note-head
    model took ~10x longer with 2 threads than with 1."""
    if threads:
        torch.set_num_threads(threads)


_pool: ComposePool | None = None
_pool_lock = threading.Lock()


def get_pool() -> ComposePool:
    """The process-wide pool: of worker processes in the server (``chopinbot app``), of threads elsewhere
    (``$CHOPINBOT_APP_PROCESSES`` 1 or 0 decides; ``$CHOPINBOT_APP_WORKERS``, ``$CHOPINBOT_APP_MAX_QUEUE``
    override the sizes)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ComposePool(_env_int(WORKERS_ENV, DEFAULT_WORKERS), _env_int(MAX_QUEUE_ENV, DEFAULT_MAX_QUEUE),
                                processes=os.environ.get(POOL_PROCESSES_ENV, os.environ.get(SERVE_ENV, "0")) != "0")
        return _pool


def in_background(fn: Callable, arg):
    """``fn(arg)`` (a score's engraving) run by a worker of the shared pool once no visitor's piece waits
    to be composed (:meth:`ComposePool.submit_background`); a note for the visitor if it cannot be."""
    try:
        return get_pool().submit_background(fn, arg).result(REQUEST_TIMEOUT_S)
    except FutureTimeout:
        return "The score is taking too long to engrave (the server is very busy); the MIDI downloads still work."
    except ChopinBotError as e:
        return f"The score could not be engraved ({e}); the MIDI downloads still work."


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


def tune_for_serving(threads: int = 1) -> Callable[[], None]:
    """Settings for the whole server process (``chopinbot app``, and the benchmark that
    measures it): ``threads`` intra-op threads by default (see :func:`_worker_init`), the
    MKL-DNN LSTM kernel off (it is slower at batch 1), and NumPy's BLAS on ``threads``
    threads too.  ``chopinbot app`` already starts the server with ``OMP_NUM_THREADS=1``,
    which OpenBLAS reads when it loads; this sets the same in a process that is running.
    With 2 BLAS threads a batch-4 NumPy step (4 variations) cost 10x the CPU of one thread
    on the 2-core machine (4.9 s against 0.5 s for four 30-s pieces): the threads spin
    against each other.  Returns a function that gives BLAS its threads back."""
    torch.set_num_threads(max(1, threads))
    torch.backends.mkldnn.enabled = False
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover - then OMP_NUM_THREADS is the only limit
        return lambda: None
    return threadpool_limits(limits=max(1, threads), user_api="blas").restore_original_limits


_warmed: set[str] = set()
_warm_lock = threading.Lock()


def warm_up(entry: ModelEntry, max_states: int = WARM_UP_STATES, wait: bool = False,
            pool: ComposePool | None = None, guide: bool = True) -> threading.Thread | None:
    """Compute, in a background thread, what the first visitors would otherwise
    wait for: the threshold guide (unless not ``guide``), real Chopin's statistics for every length
    class up to ``max_states`` states, and one tiny FluidSynth render (which
    pulls the 148 MB soundfont into the page cache).  Once per model; returns
    the thread (None when already started).  ``chopinbot app`` calls it, with its ``pool``,
    whose worker processes warm their own copies the same way."""
    with _warm_lock:
        if entry.key in _warmed:
            return None
        _warmed.add(entry.key)
    if pool is not None:
        pool.warm(entry, wait)

    def run() -> None:
        _worker_init(1)
        try:  # this thread only (Linux: a thread id is a process id here), and the FluidSynth it starts
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # visitors' pieces come first
        except (AttributeError, OSError):
            pass
        t = time.perf_counter()
        try:
            if guide:
                threshold_guide_png(entry)
            if audio_available()[0]:
                seed = make_seed(ComposeRequest(model=entry.label, seed_index=0), entry)
                render_wav_bytes(bytes(states_to_score(seed.states[:2], bpm=120).dumps_midi()),
                                 sample_rate=AUDIO_SAMPLE_RATE)
            for n in sorted({reference_length(k) for k in range(1, max_states + 1)}):
                reference_stats(entry.settings, n)
            log.info("warmed up %s in %.1f s", entry.label, time.perf_counter() - t)
        except Exception:  # a warm-up failure must never break the app; requests compute on demand
            log.exception("warm-up of %s failed", entry.label)

    thread = threading.Thread(target=run, name="chopinbot-warm-up", daemon=True)
    thread.start()
    if wait:
        thread.join()
    return thread
