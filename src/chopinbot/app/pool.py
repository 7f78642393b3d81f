"""The server process: the worker pool every visitor shares, warm-up and tuning.

Generation runs in a bounded worker pool (:class:`ComposePool`): a fixed
number of worker threads, a cap on the requests queued or running, and at most
one request in flight per visitor session, so one visitor cannot starve the
rest.  Its sizes are in :mod:`chopinbot.app.settings`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import torch

from chopinbot.app.reference import reference_length, reference_stats, threshold_guide_png
from chopinbot.app.registry import ModelEntry
from chopinbot.app.rendering import AUDIO_SAMPLE_RATE
from chopinbot.app.request import ComposeRequest, ComposeResult, RequestRefused, compose, make_seed
from chopinbot.app.settings import DEFAULT_MAX_QUEUE, DEFAULT_WORKERS, MAX_QUEUE_ENV, REQUEST_TIMEOUT_S, WORKERS_ENV
from chopinbot.errors import ConfigError
from chopinbot.music.states import states_to_score
from chopinbot.render.audio import audio_available, render_wav_bytes

log = logging.getLogger(__name__)

# Warm-up: real Chopin's statistics for every length class up to this many states.
WARM_UP_STATES = 512


class ComposePool:
    """A bounded pool of composing workers shared by every visitor.

    ``workers`` threads run :func:`~chopinbot.app.request.compose`; at most
    ``max_queue`` requests may be queued or running at once and each session
    at most one, so one visitor can neither flood the queue nor hold more than
    one worker.  Refusals raise :class:`~chopinbot.app.request.RequestRefused`
    at once, with a message to show.
    """

    def __init__(self, workers: int = DEFAULT_WORKERS, max_queue: int = DEFAULT_MAX_QUEUE,
                 threads_per_worker: int | None = 1) -> None:
        if workers < 1 or max_queue < workers:
            raise ConfigError("need workers >= 1 and max_queue >= workers")
        self.workers, self.max_queue = workers, max_queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chopinbot-compose",
                                            initializer=_worker_init, initargs=(threads_per_worker,))
        self._lock = threading.Lock()
        self._sessions: set[str] = set()
        self._pending = 0
        self._running = 0
        self.completed = 0
        self.refused = 0

    def status(self) -> dict[str, int]:
        """Requests waiting and running now, and totals since start."""
        with self._lock:
            return {"waiting": self._pending - self._running, "running": self._running, "workers": self.workers,
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
            if session_id in self._sessions:
                self.refused += 1
                raise RequestRefused("Your previous piece is still being composed; wait for it to finish.")
            if self._pending >= self.max_queue:
                self.refused += 1
                raise RequestRefused(f"The server is busy ({self._pending} pieces are being composed or waiting). "
                                     "Please try again in a few seconds.")
            self._sessions.add(session_id)
            self._pending += 1
        submitted = time.perf_counter()

        def run() -> ComposeResult:
            with self._lock:
                self._running += 1
            started = time.perf_counter()
            try:
                result = compose(request, entry, session_id)
                result.timings["queued"] = started - submitted
                return result
            finally:
                with self._lock:
                    self._running -= 1

        def release(_: Future) -> None:
            with self._lock:
                self._sessions.discard(session_id)
                self._pending -= 1
                self.completed += 1

        try:
            fut = self._executor.submit(run)
        except RuntimeError:  # the executor was shut down
            release(Future())
            raise RequestRefused("The server is shutting down; please try again later.") from None
        fut.add_done_callback(release)
        return fut

    def compose(self, request: ComposeRequest, entry: ModelEntry, session_id: str,
                timeout: float | None = REQUEST_TIMEOUT_S) -> ComposeResult:
        """Submit and wait: the result, or the request's own error."""
        fut = self.submit(request, entry, session_id)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            raise RequestRefused(f"The piece took more than {timeout:.0f} s (the server is very busy); "
                                 "please try a shorter piece or try again later.") from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


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
    """The process-wide pool (``$CHOPINBOT_APP_WORKERS``, ``$CHOPINBOT_APP_MAX_QUEUE`` override the sizes)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ComposePool(_env_int(WORKERS_ENV, DEFAULT_WORKERS), _env_int(MAX_QUEUE_ENV, DEFAULT_MAX_QUEUE))
        return _pool


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


def warm_up(entry: ModelEntry, max_states: int = WARM_UP_STATES, wait: bool = False) -> threading.Thread | None:
    """Compute, in a background thread, what the first visitors would otherwise
    wait for: the threshold guide, real Chopin's statistics for every length
    class up to ``max_states`` states, and one tiny FluidSynth render (which
    pulls the 148 MB soundfont into the page cache).  Once per model; returns
    the thread (None when already started).  ``chopinbot app`` calls it."""
    with _warm_lock:
        if entry.key in _warmed:
            return None
        _warmed.add(entry.key)

    def run() -> None:
        _worker_init(1)
        try:  # this thread only (Linux: a thread id is a process id here), and the FluidSynth it starts
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # visitors' pieces come first
        except (AttributeError, OSError):
            pass
        t = time.perf_counter()
        try:
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
