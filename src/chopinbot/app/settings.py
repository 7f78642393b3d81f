"""The web app's settings: what ``chopinbot app`` passes to the server, how big
the server is, and what one visitor may ask of it.

The per-request bounds are enforced by the service
(:meth:`chopinbot.app.request.ComposeRequest.check_limits`,
:func:`chopinbot.app.seeds.check_upload`) and offered by the page's controls
(:mod:`chopinbot.app.layout` takes its minima and maxima from here and from the
ranges beside :class:`~chopinbot.compose.generate.GenerateConfig`), so a control
never offers what the service refuses, with one exception: the length controls go up to
the library's bounds, so that a length over :data:`MAX_REQUEST_SECONDS` /
:data:`MAX_REQUEST_STATES` reaches the service and is refused with its message (Streamlit
would reset a value past a control's maximum to the default without a word).  They lie within the library's own
bounds (:data:`chopinbot.compose.generate.MAX_STEPS` and the ranges beside it).

No heavy import here: ``chopinbot app`` reads these before it starts the server.
"""

from __future__ import annotations

import math
from pathlib import Path

# --- Environment variables set by `chopinbot app` for the server process ---------------
MODEL_ENV = "CHOPINBOT_MODEL"  # the model the operator chose at start-up (a path)
MODELS_DIR_ENV = "CHOPINBOT_MODELS_DIR"  # where run folders are listed from
SERVE_ENV = "CHOPINBOT_SERVE"  # "1" in the server process started by `chopinbot app`
WORKERS_ENV = "CHOPINBOT_APP_WORKERS"  # overrides DEFAULT_WORKERS
MAX_QUEUE_ENV = "CHOPINBOT_APP_MAX_QUEUE"  # overrides DEFAULT_MAX_QUEUE
POOL_PROCESSES_ENV = "CHOPINBOT_APP_PROCESSES"  # "1"/"0": the pool's workers are processes/threads
# (default: processes in the server that `chopinbot app` starts, threads elsewhere, e.g. in tests)
DEFAULT_MODELS_DIR = Path("runs")

# --- The server -------------------------------------------------------------------------
# Workers composing at once (processes in the server: see chopinbot.app.pool.ComposePool).
# Each runs the model on one core (see chopinbot.app.pool.tune_for_serving) and starts one
# FluidSynth process; on a 2-core machine two workers keep both cores busy without
# oversubscribing them.
DEFAULT_WORKERS = 2
# Requests queued or running, all visitors together; above it a request is refused at once
# ("busy", with the place it would have had) instead of waiting without bound.
DEFAULT_MAX_QUEUE = 32
# How long the app waits for one result (queueing included).
REQUEST_TIMEOUT_S = 180.0

# --- One request ------------------------------------------------------------------------
# An upload larger than this is refused: a primer needs a few bars, and even
# the longest bundled piece (op. 58/4 ...) is under 100 kB.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
# Streamlit's uploader takes its limit in whole MB, which its page counts as
# 2**20 or 10**6 bytes depending on the visitor's platform: rounded up in the
# smaller unit, it never refuses a file the service accepts, and the service's
# check (with its own message) has the last word.
UPLOAD_LIMIT_MB = math.ceil(MAX_UPLOAD_BYTES / 1_000_000)
# One request may ask for at most this much new music, all its variations
# together (a request's cost is its length times its variations).  Generation,
# rendering and the pictures grow linearly with it; 2 minutes keeps one request
# to a few seconds of a worker's time.  Longer pieces: `chopinbot generate`.
MAX_REQUEST_SECONDS = 120.0
MAX_REQUEST_STATES = 1000
# Continuations of one seed composed at once (one batch) and shown side by side:
# four 30-s pieces fill the per-request cap above, and four columns are as many
# as a page can show side by side.
MAX_VARIATIONS = 4
# The primer's last states a request may use (the CLI's --primer-states has no cap).
MAX_PRIMER_STATES = 256
# The tempo control's range (the library's BPM_RANGE is wider).
BPM_RANGE = (20.0, 300.0)
# The register control's starting range when a visitor ticks it (MIDI C3-C6: the middle
# three octaves, where a melody and its accompaniment both fit); any A0-C8 range may be chosen.
DEFAULT_REGISTER = (48, 84)
