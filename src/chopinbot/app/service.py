"""The web app's engine: everything the app does except layout.

The Streamlit script (:mod:`chopinbot.app.layout`) only draws widgets and shows what
this module returns; every piece of music logic comes from the same library
calls the CLI uses (:func:`~chopinbot.model.checkpoint.load_model`,
:func:`~chopinbot.compose.seeds.seed_from_test` / :func:`~chopinbot.compose.seeds.seed_from_primer`,
:func:`~chopinbot.compose.generate.generate`, :mod:`~chopinbot.render.audio`,
:mod:`~chopinbot.evaluation.musicstats`, :mod:`~chopinbot.render.plots`).

* **Models** come only from a listed set (:func:`list_models`): the shipped
  model, the model the operator named at start-up (``$CHOPINBOT_MODEL``), and
  run folders (holding ``best/``) or checkpoint folders found under the models
  folder (``$CHOPINBOT_MODELS_DIR``, default ``runs/``).  A visitor picks a
  *label*; :func:`resolve_model_label` refuses anything else, so no path typed
  into the app is ever opened.
* **Requests** (:class:`ComposeRequest`) are checked against per-request caps
  (:data:`MAX_REQUEST_SECONDS`, :data:`MAX_REQUEST_STATES`) and refused with a
  readable :class:`RequestRefused` when over them.
* **Generation** runs in a bounded worker pool (:class:`ComposePool`): a fixed
  number of worker threads, a cap on the requests queued or running, and at
  most one request in flight per visitor session, so one visitor cannot
  starve the rest.
* **Uploads** are checked (size cap, MIDI header, usable notes) and turned
  into friendly :class:`UploadError` messages; their bytes stay in memory and
  their names are only ever used as labels (:func:`safe_upload_name`).
* Nothing is written into the repository or any shared folder: audio is
  rendered in a private temporary folder that is removed at once, and each
  visitor's choices and results live in the visitor's session only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chopinbot.constants import BUNDLED_CORPUS_DIR, SHIPPED_MODEL_DIR
from chopinbot.errors import ChopinBotError, ConfigError, MidiError, ModelFileError

log = logging.getLogger(__name__)

# --- Settings (environment variables set by `chopinbot app`) -----------------------
MODEL_ENV = "CHOPINBOT_MODEL"  # the model the operator chose at start-up (a path)
MODELS_DIR_ENV = "CHOPINBOT_MODELS_DIR"  # where run folders are listed from
SERVE_ENV = "CHOPINBOT_SERVE"  # "1" in the server process started by `chopinbot app`
DEFAULT_MODELS_DIR = Path("runs")
SHIPPED_LABEL = "shipped model"

# --- Limits -----------------------------------------------------------------------
# An upload larger than this is refused: a primer needs a few bars, and even
# the longest bundled piece (op. 58/4 ...) is under 100 kB.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
# One request may ask for at most this much new music.  Generation, rendering
# and the picture grow linearly with length; 2 minutes keeps one request to a
# few seconds of a worker's time.  Longer pieces: `chopinbot generate`.
MAX_REQUEST_SECONDS = 120.0
MAX_REQUEST_STATES = 1000
# Worker threads composing at once.  Each runs the LSTM on one core (see
# tune_for_serving) and starts one FluidSynth process; on a 2-core machine two
# workers keep both cores busy without oversubscribing them.
DEFAULT_WORKERS = 2
# Requests queued or running, all visitors together; above it a request is
# refused at once ("busy, try again") instead of waiting without bound.
DEFAULT_MAX_QUEUE = 32
# How long the app waits for one result (queueing included).
REQUEST_TIMEOUT_S = 180.0
# Seed windows: 16 states, as the original app and `chopinbot generate`.
SEED_STATES = 16
# Audio: 16-bit stereo WAV at 22.05 kHz.  Measured on the 2-core machine, a
# 32 s piece costs FluidSynth 0.57 s of CPU at 22.05 kHz against 0.92 s at
# 44.1 kHz (0.3 s of either is loading the soundfont), and the file is half
# the size (2.9 MB instead of 5.8 MB); the bandwidth above 11 kHz it gives up
# matters little for a piano preview.  `chopinbot generate --wav` renders 44.1 kHz.
AUDIO_SAMPLE_RATE = 22050
# App-facing ranges of the controls (the library accepts wider ones).
BPM_RANGE = (20.0, 300.0)
TEMPERATURE_RANGE = (0.05, 3.0)


class UploadError(ChopinBotError):
    """An uploaded primer that cannot be used; the message says why, in plain words."""


class RequestRefused(ChopinBotError):
    """A request refused before any work: too long, server busy, or one already running."""


# --- Models ---------------------------------------------------------------------------


def _is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _model_folder(folder: Path) -> Path | None:
    """The checkpoint a listed folder stands for: a run folder's ``best/``, or the folder itself."""
    for cand in (folder / "best", folder):
        if _is_checkpoint(cand):
            return cand
    return None


_loadable_cache: dict[tuple, bool] = {}
_loadable_lock = threading.Lock()


def _loadable(folder: Path) -> bool:
    """Whether :func:`~chopinbot.model.checkpoint.load_model` accepts the checkpoint
    (exports such as ONNX or TorchScript keep a config.json and safetensors the
    PyTorch loader refuses).  Tried once per folder and file times."""
    from chopinbot.model.checkpoint import load_model

    try:
        stamp = tuple((folder / f).stat().st_mtime_ns for f in ("config.json", "model.safetensors"))
    except OSError:
        return False
    key = (str(folder.resolve()), stamp)
    with _loadable_lock:
        if key in _loadable_cache:
            return _loadable_cache[key]
    try:
        load_model(folder)
        ok = True
    except ChopinBotError as e:
        log.info("not offering %s: %s", folder, e)
        ok = False
    with _loadable_lock:
        _loadable_cache[key] = ok
    return ok


def models_dir_from_env() -> Path:
    """The folder run directories are listed from (``$CHOPINBOT_MODELS_DIR``, default ``runs/``)."""
    return Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR)


def list_models(models_dir: str | os.PathLike | None = None, configured: str | os.PathLike | None = None,
                max_depth: int = 2, check: bool = True) -> dict[str, Path]:
    """Every model a visitor may pick: label -> checkpoint folder.

    In order: ``configured`` (the operator's ``--model``; default
    ``$CHOPINBOT_MODEL``), the shipped model, then run folders (with a
    ``best/`` checkpoint) and checkpoint folders found under ``models_dir``
    (default :func:`models_dir_from_env`) at most ``max_depth`` levels down,
    labelled by their path relative to ``models_dir``.  Hidden folders,
    ``best``/``last``/``*.old`` folders themselves, symbolic links that lead
    outside ``models_dir`` and (with ``check``) checkpoints the loader refuses
    (e.g. ONNX exports) are skipped.  Only this set can ever be loaded.
    """
    out: dict[str, Path] = {}
    configured = configured if configured is not None else os.environ.get(MODEL_ENV) or None
    if configured:
        folder = _model_folder(Path(configured))
        if folder is None:
            raise ModelFileError(f"{configured}: not a ChopinBot checkpoint or run folder "
                                 "(needs config.json and model.safetensors, or best/ holding them)")
        same_as_shipped = folder.resolve() == SHIPPED_MODEL_DIR.resolve()
        out[SHIPPED_LABEL if same_as_shipped else _configured_label(Path(configured))] = folder
    if _is_checkpoint(SHIPPED_MODEL_DIR):
        out.setdefault(SHIPPED_LABEL, SHIPPED_MODEL_DIR)
    root = Path(models_dir) if models_dir is not None else models_dir_from_env()
    if not root.is_dir():
        return out
    root_real = root.resolve()
    seen = {p.resolve() for p in out.values()}
    frontier = [root]
    for _ in range(max_depth):
        nxt = []
        for parent in frontier:
            try:
                children = sorted(parent.iterdir())
            except OSError:
                continue
            for child in children:
                name = child.name
                if name.startswith(".") or name in ("best", "last") or name.endswith(".old") or not child.is_dir():
                    continue
                real = child.resolve()
                if not real.is_relative_to(root_real):
                    continue  # a link out of the models folder
                folder = _model_folder(child)
                if folder is not None:
                    if folder.resolve() not in seen and (not check or _loadable(folder)):
                        seen.add(folder.resolve())
                        out[child.relative_to(root).as_posix()] = folder
                else:
                    nxt.append(child)
        frontier = nxt
    return out


def _configured_label(path: Path) -> str:
    name = path.name if path.name not in ("best", "last") else path.parent.name
    return f"{name} (--model)"


def resolve_model_label(label: str, models: dict[str, Path]) -> Path:
    """The checkpoint folder of a listed label; a label not in the list is refused."""
    if label not in models:
        raise ConfigError(f"unknown model {label!r}: choose one of {', '.join(models) or '(none available)'}")
    return models[label]


@dataclass
class ModelEntry:
    """A loaded model and what the app needs to know about it."""

    label: str
    path: Path  # checkpoint folder
    model: Any  # chopinbot.model.network.ChopinLSTM
    settings: Any  # chopinbot.dataset.prepare.PrepareSettings the model was trained with
    threshold: float  # the decision threshold that was best on the valid pieces
    meta: dict
    key: str  # identity for caches: weights hash + state settings

    @property
    def description(self) -> str:
        c = self.model.config
        n_params = sum(p.numel() for p in self.model.parameters())
        f1 = self.meta.get("metrics", {}).get("valid_f1_best")
        f1_text = f", valid key F1 {f1:.3f}" if isinstance(f1, (int, float)) else ""
        return f"LSTM {c.layers}×{c.hidden}, {n_params:,} parameters, epoch {self.meta.get('epoch', '?')}{f1_text}"


_model_cache: dict[tuple, ModelEntry] = {}
_model_lock = threading.Lock()


def load_entry(path: str | os.PathLike, label: str) -> ModelEntry:
    """Load (once; cached while the files are unchanged) the model in checkpoint folder ``path``."""
    from chopinbot.model.checkpoint import load_model, read_config
    from chopinbot.dataset.prepare import PrepareSettings

    folder = Path(path)
    try:
        stamp = tuple((folder / f).stat().st_mtime_ns for f in ("config.json", "model.safetensors"))
    except OSError as e:
        raise ModelFileError(f"{folder}: cannot read the model ({e.strerror})") from None
    key = (str(folder.resolve()), stamp, label)
    with _model_lock:
        if key in _model_cache:
            return _model_cache[key]
        model = load_model(folder)
        meta = read_config(folder)
        settings = PrepareSettings(**meta["dataset_settings"]) if "dataset_settings" in meta else PrepareSettings()
        thr = meta.get("valid_threshold", 0.5)
        threshold = float(thr) if isinstance(thr, (int, float)) and 0 <= thr <= 1 else 0.5
        # caches of per-model results (the threshold guide) are keyed by the
        # weights and settings, so copies of one model share them
        ident = meta.get("weights_sha256") or f"{key[0]}:{stamp}"
        entry = ModelEntry(label, folder, model, settings, threshold, meta, f"{ident}:{settings}")
        if len(_model_cache) >= 4:
            _model_cache.pop(next(iter(_model_cache)))
        _model_cache[key] = entry
        return entry


# --- Seeds and uploads ----------------------------------------------------------------


def seed_infos(entry: ModelEntry) -> list:
    """The test-piece seed windows for this model's state settings (:class:`~chopinbot.compose.seeds.SeedInfo`)."""
    from chopinbot.compose.seeds import list_seeds

    return list_seeds(SEED_STATES, entry.settings)


def pick_random_seed(entry: ModelEntry, rng: np.random.Generator | None = None, key: str | None = None) -> int:
    """A random seed window; of the mode of ``key`` when one is given, so that
    the key can be honoured by transposition alone."""
    from chopinbot.music.keys import parse_key
    from chopinbot.compose.seeds import random_seed_index

    minor = parse_key(key).minor if key else None
    return random_seed_index(rng or np.random.default_rng(), SEED_STATES, minor, entry.settings)


_UNSAFE = re.compile(r"[^\w.\- ()+]")


def safe_upload_name(name: str | None, limit: int = 60) -> str:
    """A display label for an uploaded file: its base name only, without
    folders, control or odd characters, at most ``limit`` characters.

    Upload names are never used as paths (uploads are never written to disk);
    this only keeps labels and download names tidy."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("_", base).strip(" ._") or "primer.mid"
    return base[:limit]


def check_upload(data: bytes, name: str | None = None, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The uploaded bytes if they may be a MIDI file, else :class:`UploadError` (size cap, header)."""
    label = safe_upload_name(name)
    if not data:
        raise UploadError(f"“{label}” is empty. Upload a standard MIDI file (.mid).")
    if len(data) > max_bytes:
        raise UploadError(f"“{label}” is {len(data) / 1e6:.1f} MB; primers are limited to "
                          f"{max_bytes / 1024 / 1024:.0f} MB. A few bars of MIDI are enough.")
    if not data.startswith(b"MThd"):
        raise UploadError(f"“{label}” is not a MIDI file (it does not start with a MIDI header). "
                          "Upload a standard MIDI file (.mid), such as one exported from a notation program.")
    return data


def primer_seed(data: bytes, name: str | None, entry: ModelEntry, primer_states: int = SEED_STATES,
                max_bytes: int = MAX_UPLOAD_BYTES):
    """A :class:`~chopinbot.compose.seeds.Seed` from an uploaded primer, or :class:`UploadError`."""
    from chopinbot.compose.seeds import seed_from_primer

    label = safe_upload_name(name)
    check_upload(data, name, max_bytes)
    try:
        return seed_from_primer(bytes(data), primer_states, entry.settings, name=label)
    except MidiError as e:
        reason = getattr(e, "reason", str(e))
        raise UploadError(f"“{label}” cannot be used as a primer: {reason}. Upload a MIDI file with piano "
                          "notes (any pitched instrument; drums are ignored).") from None


# --- Requests and results -------------------------------------------------------------


@dataclass(frozen=True)
class ComposeRequest:
    """One visitor's request, as the app's controls set it.

    The seed is ``primer`` (uploaded MIDI bytes) when given, else test window
    ``seed_index``, else a random window chosen with ``random_seed``.  Length
    is ``seconds`` of new music when given, else ``steps`` states.  Decoding
    is deterministic at ``threshold`` when given, else sampling at
    ``temperature``.  ``key`` None keeps the seed's key, ``bpm`` None its tempo.
    """

    model: str = SHIPPED_LABEL  # a label of list_models()
    seed_index: int | None = None
    primer: bytes | None = field(default=None, repr=False)
    primer_name: str | None = None
    primer_states: int = SEED_STATES
    seconds: float | None = 30.0
    steps: int | None = None
    threshold: float | None = None
    temperature: float = 1.0
    key: str | None = None
    bpm: float | None = None
    random_seed: int | None = None
    render_audio: bool = True

    def check_limits(self, max_seconds: float = MAX_REQUEST_SECONDS, max_states: int = MAX_REQUEST_STATES) -> None:
        """Refuse (:class:`RequestRefused`) what is over the per-request caps;
        :class:`ConfigError` for values no request may have."""
        if self.seconds is not None:
            if not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds > 0):
                raise ConfigError("the length must be a positive number of seconds")
            if self.seconds > max_seconds:
                raise RequestRefused(f"{self.seconds:g} s is longer than this server composes in one request "
                                     f"(at most {max_seconds:g} s). Ask for less, or run `chopinbot generate "
                                     f"--seconds {self.seconds:g}` on your own machine.")
        else:
            if self.steps is None or self.steps < 1:
                raise ConfigError("the length must be at least 1 state")
            if self.steps > max_states:
                raise RequestRefused(f"{self.steps:,} states is longer than this server composes in one request "
                                     f"(at most {max_states:,}). Ask for less, or run `chopinbot generate "
                                     f"--steps {self.steps}` on your own machine.")
        if self.bpm is not None and not (BPM_RANGE[0] <= self.bpm <= BPM_RANGE[1]):
            raise ConfigError(f"the tempo must be between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g} bpm")
        if self.threshold is None and not (TEMPERATURE_RANGE[0] <= self.temperature <= TEMPERATURE_RANGE[1]):
            raise ConfigError(f"the temperature must be between {TEMPERATURE_RANGE[0]:g} and {TEMPERATURE_RANGE[1]:g}")
        if self.threshold is not None and not (0.0 <= self.threshold <= 1.0):
            raise ConfigError("the threshold must be between 0 and 1")
        if self.primer is None and self.seed_index is not None and self.seed_index < 0:
            raise ConfigError("the seed index must be 0 or more")

    def generate_config(self):
        """The :class:`~chopinbot.compose.generate.GenerateConfig` of this request."""
        from chopinbot.compose.generate import GenerateConfig

        return GenerateConfig(
            steps=self.steps if self.seconds is None else None, seconds=self.seconds, threshold=self.threshold,
            temperature=self.temperature, bpm=self.bpm, key=self.key, random_seed=self.random_seed,
        )


@dataclass
class ComposeResult:
    """Everything the app shows for one generated piece."""

    request: ComposeRequest
    model_label: str
    generation: Any  # chopinbot.compose.generate.GenerationResult
    midi: dict[str, bytes]  # "seed", "generated", "all"
    wav: bytes | None  # None when audio is unavailable (see audio_note)
    audio_note: str | None
    png: bytes
    stats: list[dict]  # chopinbot.evaluation.musicstats.compare_stats rows: this piece vs real test excerpts
    n_real: int  # real excerpts the statistics are compared with
    timings: dict[str, float]
    session_id: str = ""

    @property
    def key_name(self) -> str:
        return self.generation.key.name

    @property
    def bpm(self) -> float:
        return self.generation.bpm

    @property
    def guards(self) -> list[str]:
        return list(self.generation.guards)

    @property
    def summary(self) -> str:
        return self.generation.summary()

    @property
    def seed_source(self) -> str:
        return self.generation.source

    @property
    def fingerprint(self) -> str:
        """12 hex digits of the piece's MIDI hash: two results are the same piece iff equal."""
        return hashlib.sha256(self.midi["all"]).hexdigest()[:12]

    def file_name(self, part: str, ext: str = "mid") -> str:
        """A download name, e.g. ``chopinbot-F-minor-90bpm-generated.mid``."""
        key = re.sub(r"[^A-Za-z0-9#]+", "-", self.key_name).replace("#", "sharp").strip("-")
        return f"chopinbot-{key}-{self.bpm:.0f}bpm-{part}.{ext}"

    def stats_table(self) -> list[dict[str, str]]:
        """The statistics as display rows (label, this piece, real Chopin mean ± sd, flag)."""
        from chopinbot.evaluation.musicstats import STAT_LABELS

        def fmt(x: float) -> str:
            if x is None or (isinstance(x, float) and math.isnan(x)):
                return "–"
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"

        return [{
            "statistic": STAT_LABELS.get(r["stat"], r["stat"]),
            "this piece": fmt(r["gen_mean"]),
            "real Chopin (mean ± sd)": f"{fmt(r['real_mean'])} ± {fmt(r['real_sd'])}",
            "outside real ± 1 sd": "yes" if r["flagged"] else "",
        } for r in self.stats]


_plot_lock = threading.Lock()  # pyplot is not thread-safe


def _render_png(generation) -> bytes:
    with _plot_lock:
        return generation.png_bytes()


def _render_audio(midi: bytes) -> tuple[bytes | None, str | None]:
    from chopinbot.render.audio import AudioUnavailable, audio_available, render_wav_bytes

    ok, message = audio_available()
    if not ok:
        return None, message
    try:
        return render_wav_bytes(midi, sample_rate=AUDIO_SAMPLE_RATE), None
    except AudioUnavailable as e:
        return None, str(e)
    except ChopinBotError as e:
        log.warning("audio rendering failed: %s", e)
        return None, f"The audio could not be rendered ({e}); the MIDI downloads still work."


def make_seed(request: ComposeRequest, entry: ModelEntry):
    """The :class:`~chopinbot.compose.seeds.Seed` a request asks for."""
    from chopinbot.compose.seeds import seed_from_test

    if request.primer is not None:
        return primer_seed(request.primer, request.primer_name, entry, request.primer_states)
    index = request.seed_index
    if index is None:
        index = pick_random_seed(entry, np.random.default_rng(request.random_seed), request.key)
    n = len(seed_infos(entry))
    if not 0 <= index < n:
        raise ConfigError(f"seed window {index} does not exist: choose 0..{n - 1}")
    return seed_from_test(index, SEED_STATES, entry.settings)


def compose(request: ComposeRequest, entry: ModelEntry, session_id: str = "") -> ComposeResult:
    """Generate one piece and everything shown about it (runs in a worker of :class:`ComposePool`).

    Raises :class:`RequestRefused` over the caps, :class:`UploadError` for a
    bad primer, and other :class:`~chopinbot.errors.ChopinBotError` types for
    what the user can fix.  Audio rendering runs in parallel with the piano
    roll and the statistics; when FluidSynth is missing the result carries a
    note instead of audio.
    """
    from chopinbot.compose.generate import generate
    from chopinbot.evaluation.musicstats import compare_stats, piece_stats

    request.check_limits()
    if request.model != entry.label:
        raise ConfigError(f"the request names model {request.model!r} but {entry.label!r} was given")
    t0 = time.perf_counter()
    seed = make_seed(request, entry)
    t1, c1 = time.perf_counter(), time.thread_time()
    gen = generate(entry.model, seed, request.generate_config())
    t2, c2 = time.perf_counter(), time.thread_time()
    midi = {part: gen.midi_bytes(part) for part in ("seed", "generated", "all")}
    audio_box: dict[str, Any] = {}
    audio_thread = None
    if request.render_audio:
        def run_audio() -> None:
            t = time.perf_counter()
            try:
                audio_box["result"] = _render_audio(midi["all"])
            except Exception:  # the piece is still shown, with its MIDI downloads
                log.exception("audio rendering failed")
            audio_box["seconds"] = time.perf_counter() - t

        audio_thread = threading.Thread(target=run_audio, name="chopinbot-audio", daemon=True)
        audio_thread.start()
    t3 = time.perf_counter()
    real = reference_stats(entry.settings, reference_length(len(gen.states)))
    stats = compare_stats([piece_stats(gen.notes, gen.bpm, gen.states)], real)
    t4 = time.perf_counter()
    c4 = time.thread_time()
    png = _render_png(gen)
    t5, c5 = time.perf_counter(), time.thread_time()
    wav, note = None, "Audio was not requested."
    if audio_thread is not None:
        audio_thread.join()
        wav, note = audio_box.get("result", (None, "The audio could not be rendered; the MIDI downloads still work."))
    t6 = time.perf_counter()
    # wall-clock seconds of each step (audio runs beside statistics and picture),
    # and the CPU seconds of generation and picture in this thread
    timings = {"seed": t1 - t0, "generate": t2 - t1, "statistics": t4 - t3, "picture": t5 - t4,
               "audio": audio_box.get("seconds", 0.0), "total": t6 - t0,
               "generate_cpu": c2 - c1, "picture_cpu": c5 - c4}
    return ComposeResult(request, entry.label, gen, midi, wav, note, png, stats, len(real), timings, session_id)


# --- Reference statistics and the threshold guide -------------------------------------

class _Memo:
    """A thread-safe cache in which each value is computed once: callers asking
    for a key being computed wait for that computation instead of repeating it."""

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._values: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = compute()
            with self._lock:
                if len(self._values) >= self.maxsize:
                    self._values.pop(next(iter(self._values)))
                self._values[key] = value
                self._locks.pop(key, None)
            return value


_test_states_memo = _Memo(4)
_reference_memo = _Memo(256)
_curve_memo = _Memo(8)
_guide_memo = _Memo(8)


def _split_names() -> dict[str, list[str]]:
    return json.loads((BUNDLED_CORPUS_DIR / "splits.json").read_text())


def _test_states(settings) -> list:
    """The key segments of the bundled test pieces (model's home key), computed once per settings."""
    from chopinbot.dataset.prepare import process_file

    def compute() -> list:
        segs = []
        for name in _split_names()["test"]:
            segs += [st for st, _, _, _ in process_file(BUNDLED_CORPUS_DIR / name, settings).segments]
        return segs

    return _test_states_memo.get(settings, compute)


def reference_length(n_states: int) -> int:
    """The excerpt length a piece of ``n_states`` states is compared with:
    rounded to 16 states (64 above 256), so that the real excerpts' statistics
    are computed once per length class, not once per request (the statistics
    change little within a few percent of length)."""
    step = 16 if n_states <= 256 else 64
    return max(step, step * int(round(n_states / step)))


def reference_stats(settings, n_states: int) -> list[dict[str, float]]:
    """Musical statistics of real Chopin: non-overlapping excerpts of ``n_states``
    states of the held-out test pieces (as ``chopinbot evaluate`` compares), or
    their whole key segments when none is that long.  Cached."""
    from chopinbot.evaluation.musicstats import piece_stats
    from chopinbot.music.states import states_to_notes

    n = int(n_states)

    def compute() -> list[dict[str, float]]:
        segs = _test_states(settings)
        excerpts = [s[a : a + n] for s in segs for a in range(0, len(s) - n + 1, n)] or segs
        return [piece_stats(states_to_notes(e), None, e) for e in excerpts]

    return _reference_memo.get((settings, n), compute)


def threshold_curve(entry: ModelEntry) -> dict[str, list[float]]:
    """Key precision, recall and F1 against the decision threshold, on the
    bundled corpus's valid pieces (those the threshold is chosen on).

    The model's config.json stores only the best threshold, not the curve, so
    the valid pieces are prepared (with the model's settings) in a private
    temporary folder, removed at once, and scored with
    :func:`~chopinbot.model.predict.evaluate_split`.  Computed once per model."""
    from chopinbot.dataset.prepare import Dataset, prepare
    from chopinbot.model.predict import evaluate_split
    from chopinbot.dataset.batches import SplitData

    def compute() -> dict[str, list[float]]:
        files = [BUNDLED_CORPUS_DIR / n for n in _split_names()["valid"]]
        with tempfile.TemporaryDirectory(prefix="chopinbot-guide-") as tmp:
            prepare(files, tmp, settings=entry.settings, progress=False)
            data = SplitData(Dataset(tmp), "valid", entry.model.config.vocab)
            metrics = evaluate_split(entry.model, data)
        return {k: np.asarray(v).tolist() for k, v in metrics.keys.curve().items()}

    return _curve_memo.get(entry.key, compute)


def threshold_guide_png(entry: ModelEntry) -> bytes:
    """The threshold guide of a model as PNG bytes (:func:`~chopinbot.render.plots.threshold_guide_figure`). Cached."""
    import io

    from chopinbot.render.plots import plt, threshold_guide_figure

    def compute() -> bytes:
        curve = threshold_curve(entry)
        with _plot_lock:
            fig = threshold_guide_figure({k: np.asarray(v) for k, v in curve.items()},
                                         title=f"Choosing the decision threshold ({entry.label})")
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            plt.close(fig)
        return buf.getvalue()

    return _guide_memo.get((entry.key, entry.label), compute)


_warmed: set[str] = set()
_warm_lock = threading.Lock()


def warm_up(entry: ModelEntry, max_states: int = 512, wait: bool = False) -> threading.Thread | None:
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
            from chopinbot.render.audio import audio_available, render_wav_bytes
            from chopinbot.music.states import states_to_score

            if audio_available()[0]:
                seed = make_seed(ComposeRequest(model=entry.label, seed_index=0), entry)
                render_wav_bytes(bytes(states_to_score(seed.states[:2], bpm=120).dumps_midi()),
                                 sample_rate=AUDIO_SAMPLE_RATE)
            for n in sorted({reference_length(k) for k in range(16, max_states + 1, 16)}):
                reference_stats(entry.settings, n)
            log.info("warmed up %s in %.1f s", entry.label, time.perf_counter() - t)
        except Exception:  # a warm-up failure must never break the app; requests compute on demand
            log.exception("warm-up of %s failed", entry.label)

    thread = threading.Thread(target=run, name="chopinbot-warm-up", daemon=True)
    thread.start()
    if wait:
        thread.join()
    return thread


# --- The worker pool ------------------------------------------------------------------


class ComposePool:
    """A bounded pool of composing workers shared by every visitor.

    ``workers`` threads run :func:`compose`; at most ``max_queue`` requests
    may be queued or running at once and each session at most one, so one
    visitor can neither flood the queue nor hold more than one worker.
    Refusals raise :class:`RequestRefused` at once, with a message to show.
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
        """Queue a request; a :class:`~concurrent.futures.Future` of its :class:`ComposeResult`."""
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
        import torch

        torch.set_num_threads(threads)


_pool: ComposePool | None = None
_pool_lock = threading.Lock()


def get_pool() -> ComposePool:
    """The process-wide pool (``$CHOPINBOT_APP_WORKERS``, ``$CHOPINBOT_APP_MAX_QUEUE`` override the sizes)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ComposePool(_env_int("CHOPINBOT_APP_WORKERS", DEFAULT_WORKERS),
                                _env_int("CHOPINBOT_APP_MAX_QUEUE", DEFAULT_MAX_QUEUE))
        return _pool


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


# --- Sessions, logging, the server process --------------------------------------------


def new_session_id() -> str:
    """A short random id for a visitor's session (it appears in every server log line about it)."""
    return uuid.uuid4().hex[:12]


class _SessionAdapter(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"[session {self.extra['session']}] {msg}", kwargs


def session_log(session_id: str) -> logging.LoggerAdapter:
    """A logger whose lines start with ``[session <id>]``."""
    return _SessionAdapter(logging.getLogger("chopinbot.app"), {"session": session_id})


def configure_logging(level: int = logging.INFO) -> None:
    """Send the app's log lines to stderr (once), unless logging is already configured."""
    lg = logging.getLogger("chopinbot")
    if lg.level == logging.NOTSET:
        lg.setLevel(level)
    if not lg.handlers and not logging.getLogger().handlers:
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        lg.addHandler(h)


def tune_for_serving(threads: int = 1) -> None:
    """Settings for the whole server process (``chopinbot app`` only): ``threads``
    intra-op threads by default (see :func:`_worker_init`) and the MKL-DNN LSTM
    kernel off (it is slower at batch 1)."""
    import torch

    torch.set_num_threads(max(1, threads))
    torch.backends.mkldnn.enabled = False


def describe_request(request: ComposeRequest) -> str:
    """One line for the server log (no upload content, only its size and label)."""
    seed = (f"primer {safe_upload_name(request.primer_name)} ({len(request.primer or b''):,} bytes)"
            if request.primer is not None else f"seed window {request.seed_index}")
    length = f"{request.seconds:g} s" if request.seconds is not None else f"{request.steps} states"
    decoding = f"threshold {request.threshold:.2f}" if request.threshold is not None else \
        f"temperature {request.temperature:.2f}"
    return (f"model {request.model!r}, {seed}, {length}, {decoding}, key {request.key or 'seed'}, "
            f"bpm {request.bpm or 'seed'}, random seed {request.random_seed}")


__all__ = [
    "AUDIO_SAMPLE_RATE", "BPM_RANGE", "ComposePool", "ComposeRequest", "ComposeResult", "DEFAULT_MAX_QUEUE",
    "DEFAULT_MODELS_DIR", "DEFAULT_WORKERS", "MAX_REQUEST_SECONDS", "MAX_REQUEST_STATES", "MAX_UPLOAD_BYTES",
    "MODELS_DIR_ENV", "MODEL_ENV", "ModelEntry", "RequestRefused", "SEED_STATES", "SERVE_ENV", "SHIPPED_LABEL",
    "TEMPERATURE_RANGE", "UploadError", "check_upload", "compose", "configure_logging", "describe_request",
    "get_pool", "list_models", "load_entry", "make_seed", "models_dir_from_env", "new_session_id",
    "pick_random_seed", "primer_seed", "reference_length", "reference_stats", "resolve_model_label", "safe_upload_name",
    "seed_infos", "session_log", "threshold_curve", "threshold_guide_png", "tune_for_serving", "warm_up",
]
