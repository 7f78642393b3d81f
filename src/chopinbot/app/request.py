"""One visitor's request and its result: :class:`ComposeRequest` -> :func:`compose` -> :class:`ComposeResult`.

Every piece of music logic comes from the same library calls the CLI uses
(:func:`~chopinbot.compose.seeds.seed_from_test` / :func:`~chopinbot.compose.seeds.seed_from_primer`,
:func:`~chopinbot.compose.generate.generate`, :mod:`~chopinbot.render.audio`,
:mod:`~chopinbot.evaluation.musicstats`, :mod:`~chopinbot.render.plots`).
Requests are checked against the app's per-request caps (:mod:`chopinbot.app.settings`)
and refused with a readable :class:`RequestRefused` when over them; decoding
settings are checked against the bounds beside
:class:`~chopinbot.compose.generate.GenerateConfig`, whose defaults they share.
Nothing is written into the repository or any shared folder: each visitor's
choices and results live in the visitor's session only.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chopinbot.app.reference import reference_length, reference_stats
from chopinbot.app.registry import SHIPPED_LABEL, ModelEntry
from chopinbot.app.rendering import piano_roll_png, render_audio
from chopinbot.app.seeds import pick_random_seed, primer_seed, safe_upload_name, seed_infos
from chopinbot.app.settings import BPM_RANGE, MAX_PRIMER_STATES, MAX_REQUEST_SECONDS, MAX_REQUEST_STATES
from chopinbot.compose.generate import (
    KEY_MIN_P_RANGE,
    TEMPERATURE_RANGE,
    THRESHOLD_RANGE,
    GenerateConfig,
    GenerationResult,
    generate,
)
from chopinbot.compose.seeds import Seed, seed_from_test
from chopinbot.constants import SEED_STATES
from chopinbot.errors import ChopinBotError, ConfigError
from chopinbot.evaluation.musicstats import STAT_LABELS, compare_stats, piece_stats

log = logging.getLogger(__name__)

_GENERATE_DEFAULTS = GenerateConfig()


class RequestRefused(ChopinBotError):
    """A request refused before any work: too long, server busy, or one already running."""


@dataclass(frozen=True)
class ComposeRequest:
    """One visitor's request, as the app's controls set it.

    The seed is ``primer`` (uploaded MIDI bytes) when given, else test window
    ``seed_index``, else a random window chosen with ``random_seed``.  Length
    is ``seconds`` of new music when given, else ``steps`` states.  Decoding
    is deterministic at ``threshold`` when given, else sampling at
    ``temperature`` (a silent key may start only if its probability is at
    least ``key_min_p`` of the likeliest silent key's, and ``key_local_p`` of the
    likeliest silent key's near it).  ``key`` None keeps the seed's key, ``bpm`` None its tempo;
    ``style`` None composes in the model's own style (a model with a style input knows several).
    """

    model: str = SHIPPED_LABEL  # a label of list_models()
    seed_index: int | None = None
    primer: bytes | None = field(default=None, repr=False)
    primer_name: str | None = None
    primer_states: int = SEED_STATES
    seconds: float | None = 30.0  # the app's default length (GenerateConfig's is steps)
    steps: int | None = None
    threshold: float | None = _GENERATE_DEFAULTS.threshold
    temperature: float = _GENERATE_DEFAULTS.temperature
    key_min_p: float = _GENERATE_DEFAULTS.key_min_p
    key_local_p: float = _GENERATE_DEFAULTS.key_local_p
    key: str | None = _GENERATE_DEFAULTS.key
    bpm: float | None = _GENERATE_DEFAULTS.bpm
    style: str | None = _GENERATE_DEFAULTS.style
    random_seed: int | None = _GENERATE_DEFAULTS.random_seed
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
        for name, value in (("min-p", self.key_min_p), ("local p", self.key_local_p)):
            if not (KEY_MIN_P_RANGE[0] <= value <= KEY_MIN_P_RANGE[1]):
                raise ConfigError(f"the key {name} must be between {KEY_MIN_P_RANGE[0]:g} and {KEY_MIN_P_RANGE[1]:g}")
        if self.threshold is not None and not (THRESHOLD_RANGE[0] <= self.threshold <= THRESHOLD_RANGE[1]):
            raise ConfigError(f"the threshold must be between {THRESHOLD_RANGE[0]:g} and {THRESHOLD_RANGE[1]:g}")
        if self.primer is not None and not (1 <= self.primer_states <= MAX_PRIMER_STATES):
            raise ConfigError(f"the primer's states to use must be 1..{MAX_PRIMER_STATES}")
        if self.primer is None and self.seed_index is not None and self.seed_index < 0:
            raise ConfigError("the seed index must be 0 or more")

    def generate_config(self) -> GenerateConfig:
        """The :class:`~chopinbot.compose.generate.GenerateConfig` of this request."""
        return GenerateConfig(
            steps=self.steps if self.seconds is None else None, seconds=self.seconds, threshold=self.threshold,
            temperature=self.temperature, key_min_p=self.key_min_p, key_local_p=self.key_local_p, bpm=self.bpm,
            key=self.key, style=self.style, random_seed=self.random_seed,
        )


@dataclass
class ComposeResult:
    """Everything the app shows for one generated piece."""

    request: ComposeRequest
    model_label: str
    generation: GenerationResult
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


def make_seed(request: ComposeRequest, entry: ModelEntry) -> Seed:
    """The seed a request asks for."""
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
    """Generate one piece and everything shown about it (runs in a worker of
    :class:`~chopinbot.app.pool.ComposePool`).

    Raises :class:`RequestRefused` over the caps, :class:`~chopinbot.app.seeds.UploadError`
    for a bad primer, and other :class:`~chopinbot.errors.ChopinBotError` types for
    what the user can fix.  Audio rendering runs in parallel with the piano
    roll and the statistics; when FluidSynth is missing the result carries a
    note instead of audio.
    """
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
                audio_box["result"] = render_audio(midi["all"])
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
    png = piano_roll_png(gen)
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


def describe_request(request: ComposeRequest) -> str:
    """One line for the server log (no upload content, only its size and label)."""
    seed = (f"primer {safe_upload_name(request.primer_name)} ({len(request.primer or b''):,} bytes)"
            if request.primer is not None else f"seed window {request.seed_index}")
    length = f"{request.seconds:g} s" if request.seconds is not None else f"{request.steps} states"
    decoding = f"threshold {request.threshold:.2f}" if request.threshold is not None else \
        f"temperature {request.temperature:.2f}, key min-p {request.key_min_p:g}, key local p {request.key_local_p:g}"
    return (f"model {request.model!r}, {seed}, {length}, {decoding}, key {request.key or 'seed'}, "
            f"style {request.style or 'default'}, "
            f"bpm {request.bpm or 'seed'}, random seed {request.random_seed}")
