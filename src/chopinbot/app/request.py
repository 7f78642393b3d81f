"""One visitor's request and its result: :class:`ComposeRequest` -> :func:`compose` -> :class:`ComposeResult`.

Every piece of music logic comes from the same library calls the CLI uses
(:func:`~chopinbot.compose.seeds.seed_from_test` / :func:`~chopinbot.compose.seeds.seed_from_primer`,
:func:`~chopinbot.compose.generate.generate` (its ``batch`` for variations),
:func:`~chopinbot.compose.form.compose_form`, :func:`~chopinbot.compose.infill.infill`,
:mod:`~chopinbot.render.audio`, :mod:`~chopinbot.evaluation.musicstats`,
:mod:`~chopinbot.evaluation.figures`, :mod:`~chopinbot.render.plots`).
Requests are checked against the app's per-request caps (:mod:`chopinbot.app.settings`)
and refused with a readable :class:`RequestRefused` when over them; a request *is* a
:class:`~chopinbot.compose.generate.GenerateConfig` (its defaults, its one ``validate()``), and what
it composes is chosen by :func:`~chopinbot.compose.request.compose_piece`, as the CLI's is.
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
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from chopinbot.app.reference import reference_length, style_reference
from chopinbot.app.registry import SHIPPED_LABEL, ModelEntry
from chopinbot.app.rendering import piano_roll_png, render_audio
from chopinbot.app.seeds import infill_source, pick_random_seed, primer_seed, safe_upload_name, seed_infos
from chopinbot.app.settings import (
    BPM_RANGE,
    MAX_PRIMER_STATES,
    MAX_REQUEST_SECONDS,
    MAX_REQUEST_STATES,
    MAX_VARIATIONS,
)
from chopinbot.compose.form import form_labels
from chopinbot.compose.generate import GenerateConfig, GenerationResult
from chopinbot.compose.infill import DEFAULT_CANDIDATES, MAX_CANDIDATES, PICTURE_MARGIN_BEATS, InfillResult
from chopinbot.compose.repetition import CHOPIN_REPEAT_SPAN
from chopinbot.compose.request import InfillSpan, compose_piece
from chopinbot.compose.seeds import Seed, seed_from_test
from chopinbot.compose.stepper import NumpyStepper
from chopinbot.constants import SEED_STATES
from chopinbot.errors import ChopinBotError, ConfigError
from chopinbot.evaluation.figures import PieceFigures, piece_figures, result_figures, span_would_help
from chopinbot.evaluation.musicstats import STAT_LABELS, compare_stats, piece_stats
from chopinbot.music.keys import pitch_name
from chopinbot.music.states import States, states_to_notes, states_to_score
from chopinbot.render.outputs import maker_label

log = logging.getLogger(__name__)

class RequestRefused(ChopinBotError):
    """A request refused before any work: too long, server busy, or one already running."""


@dataclass
class ComposeRequest(GenerateConfig):
    """One visitor's request, as the app's controls set it: a
    :class:`~chopinbot.compose.generate.GenerateConfig` (every decoding setting and control, with its
    defaults and its :meth:`~chopinbot.compose.generate.GenerateConfig.validate`) and what only the app
    asks.

    The seed is ``primer`` (uploaded MIDI bytes) when given, else test window
    ``seed_index``, else a random window chosen with ``random_seed``.  Length
    is ``seconds`` of new music when given (30 by default, the app's), else ``steps`` states.
    ``variations``: this many continuations of the one seed, composed at once.
    ``form`` ("ABA", "AABA"): the new music is a piece in that form, ending on a cadence.
    ``infill`` (START, END in ``infill_unit``, seconds or bars): instead of continuing the
    primer, its span is composed anew (the best of ``infill_candidates``) and the whole
    piece returned; it keeps the piece's key and tempo, and the span its length.
    """

    seconds: float | None = 30.0  # the app's default length (GenerateConfig's is steps)
    model: str = SHIPPED_LABEL  # a label of list_models()
    seed_index: int | None = None
    own_seeds: bool = False  # seed windows from the model's own dataset's held-out pieces (ModelEntry.dataset)
    primer: bytes | None = field(default=None, repr=False)
    primer_name: str | None = None
    primer_states: int = SEED_STATES
    variations: int = 1
    form: str | None = None
    infill: tuple[float, float] | None = None
    infill_unit: str = "seconds"
    infill_candidates: int = DEFAULT_CANDIDATES
    render_audio: bool = True

    def check_limits(self, max_seconds: float = MAX_REQUEST_SECONDS, max_states: int = MAX_REQUEST_STATES) -> None:
        """Refuse (:class:`RequestRefused`) what is over the per-request caps (a request's cost is
        its length times its variations); :class:`ConfigError` for values no request may have."""
        if not (isinstance(self.variations, int) and 1 <= self.variations <= MAX_VARIATIONS):
            raise ConfigError(f"the number of variations must be 1..{MAX_VARIATIONS}")
        n = self.variations
        # what to say when over a cap: a single piece, or n variations of one length
        each = "" if n == 1 else f"{n} variations of "
        fewer = "Ask for less" if n == 1 else "Ask for fewer or shorter variations"
        flags = "" if n == 1 else f" --variations {n}"
        if self.seconds is not None:
            if not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds > 0):
                raise ConfigError("the length must be a positive number of seconds")
            if self.seconds * n > max_seconds:
                total = "" if n == 1 else f" ({self.seconds * n:g} s in all)"
                raise RequestRefused(f"{each}{self.seconds:g} s{total} is longer than this server composes in one "
                                     f"request (at most {max_seconds:g} s). {fewer}, or run `chopinbot generate "
                                     f"--seconds {self.seconds:g}{flags}` on your own machine.")
        else:
            if self.steps is None or self.steps < 1:
                raise ConfigError("the length must be at least 1 state")
            if self.steps * n > max_states:
                total = "" if n == 1 else f" ({self.steps * n:,} in all)"
                raise RequestRefused(f"{each}{self.steps:,} states{total} is longer than this server composes in "
                                     f"one request (at most {max_states:,}). {fewer}, or run `chopinbot generate "
                                     f"--steps {self.steps}{flags}` on your own machine.")
        if self.bpm is not None and not (BPM_RANGE[0] <= self.bpm <= BPM_RANGE[1]):  # the app's narrower range
            raise ConfigError(f"the tempo must be between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g} bpm")
        if self.primer is not None and not (1 <= self.primer_states <= MAX_PRIMER_STATES):
            raise ConfigError(f"the primer's states to use must be 1..{MAX_PRIMER_STATES}")
        if self.primer is None and self.seed_index is not None and self.seed_index < 0:
            raise ConfigError("the seed index must be 0 or more")
        if self.register is not None and not (len(self.register) == 2
                                              and all(isinstance(p, (int, np.integer)) for p in self.register)):
            raise ConfigError("the register must be two MIDI pitches, low then high")
        if self.form is not None:
            form_labels(self.form)  # ABA or AABA
        if self.infill is not None:
            self._check_infill()
        # every decoding setting's bounds are the library's own, checked there once
        self.generate_config().validate()

    def _check_infill(self) -> None:
        """What an infill may not be asked (as `chopinbot generate --infill` refuses it); its cost,
        the span's states times the candidates, is checked once the piece is read (:func:`compose`)."""
        if self.primer is None:
            raise ConfigError("an infill needs your own MIDI file: the piece whose span is composed anew")
        if not (len(self.infill) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x)
                                              for x in self.infill)):
            raise ConfigError("the infill span must be two numbers, START and END")
        if self.infill_unit not in ("seconds", "bars"):
            raise ConfigError("the infill span is in seconds or in bars")
        if self.form is not None:
            raise ConfigError("a form composes a whole piece: it does not apply to an infill")
        if self.variations != 1:
            raise ConfigError("an infill writes one piece: variations do not apply (the candidates set how many "
                              "spans are composed to choose from)")
        if self.key is not None or self.bpm is not None:
            raise ConfigError("an infill keeps the piece's key and tempo: leave key and tempo unset")
        if not (isinstance(self.infill_candidates, int) and 1 <= self.infill_candidates <= MAX_CANDIDATES):
            raise ConfigError(f"the infill candidates must be 1..{MAX_CANDIDATES}")

    def generate_config(self) -> GenerateConfig:
        """The :class:`~chopinbot.compose.generate.GenerateConfig` of this request: its fields, as they are
        (``steps`` unset when ``seconds`` is)."""
        cfg = GenerateConfig(**{f.name: getattr(self, f.name) for f in fields(GenerateConfig)})
        cfg.steps = self.steps if self.seconds is None else None
        cfg.register = tuple(self.register) if self.register is not None else None
        return cfg


@dataclass
class ComposedPiece:
    """One continuation of the seed (one variation), or one infilled piece, and everything the
    app shows about it."""

    generation: GenerationResult | InfillResult
    midi: dict[str, bytes]  # a continuation: "seed", "generated", "all"; an infill: "all" (the piece), "excerpt"
    wav: bytes | None  # None when audio is unavailable (see audio_note)
    audio_note: str | None
    png: bytes
    stats: dict[str, float]  # chopinbot.evaluation.musicstats.piece_stats of the piece (seed included)
    figures: PieceFigures  # its new music measured on the controls' scales

    @property
    def fingerprint(self) -> str:
        """12 hex digits of the piece's MIDI hash: two pieces are the same iff equal."""
        return hashlib.sha256(self.midi["all"]).hexdigest()[:12]

    @property
    def guards(self) -> list[str]:
        return list(self.generation.guards)

    @property
    def summary(self) -> str:
        return self.generation.summary()

    @property
    def new_states(self) -> States:
        """The new music: the continuation, or the infilled span."""
        return new_music(self.generation)

    @property
    def new_seconds(self) -> float:
        """Seconds of new music."""
        return self.new_states.total_beats * 60 / self.generation.bpm


@dataclass
class ComposeResult:
    """Everything the app shows for one request: its pieces (one per variation), side by side."""

    request: ComposeRequest
    model_label: str
    pieces: list[ComposedPiece]  # request.variations of them, all from the same seed, key and tempo
    real_stats: list[dict]  # compare_stats rows of real test excerpts of about the pieces' length
    n_real: int  # real excerpts the statistics are compared with
    timings: dict[str, float]
    session_id: str = ""
    style: str | None = None  # the style composed in (None: a model without a style input)
    reference: str = "real Chopin"  # whose real music the statistics are beside
    reference_source: str = "the held-out test pieces"  # which pieces of it, in words

    @property
    def key_name(self) -> str:
        return self.pieces[0].generation.key.name

    @property
    def bpm(self) -> float:
        return self.pieces[0].generation.bpm

    @property
    def seed_source(self) -> str:
        return self.pieces[0].generation.source

    @property
    def seed_midi(self) -> bytes:
        """The seed's MIDI (the same for every variation; an infill has none)."""
        return self.pieces[0].midi.get("seed", b"")

    @property
    def is_infill(self) -> bool:
        return self.request.infill is not None

    def file_name(self, part: str, ext: str = "mid", variation: int = 0) -> str:
        """A download name, e.g. ``chopinbot-F-minor-90bpm-generated.mid``; with several
        variations the ``variation``'s (0-based) number follows, as `chopinbot generate
        --variations` numbers its files: ``...-generated-2.mid``."""
        key = re.sub(r"[^A-Za-z0-9#]+", "-", self.key_name).replace("#", "sharp").strip("-")
        number = f"-{variation + 1}" if len(self.pieces) > 1 and part != "seed" else ""
        return f"chopinbot-{key}-{self.bpm:.0f}bpm-{part}{number}.{ext}"

    def piece_label(self, variation: int) -> str:
        """'this piece' for a single piece ('the new span' of an infill), else 'variation N' (1-based)."""
        if len(self.pieces) == 1:
            return "the new span" if self.is_infill else "this piece"
        return f"variation {variation + 1}"

    def stats_table(self) -> list[dict[str, str]]:
        """The statistics as display rows: the label, one column per piece, real Chopin's
        mean ± sd, and which pieces lie outside it by more than one sd."""
        def fmt(x: float) -> str:
            if x is None or (isinstance(x, float) and math.isnan(x)):
                return "–"
            return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"

        rows = []
        for real in self.real_stats:
            stat = real["stat"]
            row = {"statistic": STAT_LABELS.get(stat, stat)}
            outside = []
            for i, piece in enumerate(self.pieces):
                value = piece.stats.get(stat, math.nan)
                row[self.piece_label(i)] = fmt(value)
                if not math.isnan(value) and not math.isnan(real["real_mean"]) and \
                        abs(value - real["real_mean"]) > real["real_sd"]:
                    outside.append(str(i + 1))
            row[f"{self.reference} (mean ± sd)"] = f"{fmt(real['real_mean'])} ± {fmt(real['real_sd'])}"
            row["outside real ± 1 sd"] = ("yes" if outside else "") if len(self.pieces) == 1 else ", ".join(outside)
            rows.append(row)
        return rows


def figures_lines(figures: PieceFigures, request: ComposeRequest, states: int = 0) -> list[str]:
    """A piece's measured figures as display lines, each beside what the request asked
    (density, register, loudness, key hold); ``states``: how many the piece composed (for the advice on
    a piece mostly played back)."""
    def asked(text: str | None) -> str:
        return f" (asked {text})" if text else ""

    register = figures.register_names.replace("-", "–") if figures.notes else "no notes"
    inside = ""
    if request.register is not None and figures.inside_register is not None and not math.isnan(
            figures.inside_register):
        inside = f", {figures.inside_register:.1%} of the notes inside"
    loudness = f"{figures.loudness:.0f} ({figures.loudness_mark})" if figures.notes else "–"
    hold = (f"{figures.key_hold:.0%} of {figures.key_excerpts} excerpt{'s' if figures.key_excerpts != 1 else ''}"
            if figures.key_excerpts else "too short to judge")
    wanted_register = (f"{pitch_name(request.register[0])}–{pitch_name(request.register[1])}"
                       if request.register is not None else None)
    return [f"density {figures.density:.1f} notes/s" + asked(f"{request.density:g}" if request.density else None),
            f"register {register}" + asked(wanted_register) + inside,
            f"loudness {loudness}" + asked(request.loudness),
            "key held: " + hold] + figures.remarks + replay_advice(figures, request, states)


def replay_advice(figures: PieceFigures, request: ComposeRequest, states: int) -> list[str]:
    """A piece that mostly played its primer back, composed with repeats helped all the way: the control that
    lets the model compose more of its own (as the command line suggests ``--repeat-span``)."""
    if not span_would_help(figures, request, states):
        return []
    return [f"mostly played back from the primer: “Repeats run at most” {CHOPIN_REPEAT_SPAN} states lets the "
            "model compose more of its own"]


def new_music(result: GenerationResult | InfillResult) -> States:
    """The states a result composed: a continuation's new part, or an infill's span."""
    return result.new_span if isinstance(result, InfillResult) else result.generated


def infill_excerpt(result: InfillResult, margin_beats: float = PICTURE_MARGIN_BEATS) -> States:
    """The infilled span with ``margin_beats`` of the piece either side: what the page plays
    (the same stretch as the infill's piano roll), not the whole uploaded piece."""
    edges = np.concatenate([[0.0], np.cumsum(result.states.beats.astype(np.float64))])
    start, end = result.span_beats
    lo = max(0, int(np.searchsorted(edges, start - margin_beats, side="right")) - 1)
    hi = min(len(result.states), int(np.searchsorted(edges, end + margin_beats, side="left")))
    return result.states[lo:hi]


def midi_parts(result: GenerationResult | InfillResult) -> dict[str, bytes]:
    """The MIDI downloads of a result: a continuation's seed, new part and both; an infill's whole
    piece (``"all"``) and the excerpt played (at the piece's own tempo, state by state)."""
    if isinstance(result, InfillResult):
        return {"all": result.midi_bytes(), "excerpt": bytes(states_to_score(infill_excerpt(result)).dumps_midi())}
    return {part: result.midi_bytes(part) for part in ("seed", "generated", "all")}


def measure(result: GenerationResult | InfillResult, request: ComposeRequest) -> tuple[dict[str, float], PieceFigures]:
    """A result's statistics (a continuation: seed included, as real excerpts are whole passages;
    an infill: its span) and the figures of its new music."""
    if isinstance(result, InfillResult):
        span = result.new_span
        return (piece_stats(states_to_notes(span), result.bpm, span),
                piece_figures(span, result.bpm, result.key, request.register))
    return piece_stats(result.notes, result.bpm, result.states), result_figures(result)


def compose_infill(request: ComposeRequest, entry: ModelEntry) -> InfillResult:
    """The request's span of its primer composed anew, if its cost (the span's states times the
    candidates) is within the per-request cap."""
    piece = infill_source(request.primer, request.primer_name, entry)
    start, end = piece.span_states(request.infill[0], request.infill[1], request.infill_unit)
    cost = (end - start) * request.infill_candidates
    if cost > MAX_REQUEST_STATES:
        raise RequestRefused(f"the span holds {end - start:,} states; {request.infill_candidates} candidates of it "
                             f"({cost:,} states in all) is more than this server composes in one request (at most "
                             f"{MAX_REQUEST_STATES:,}). Choose a shorter span or fewer candidates, or run `chopinbot "
                             f"generate --primer FILE --infill START END` on your own machine.")
    span = InfillSpan(request.primer, request.infill[0], request.infill[1], request.infill_unit,
                      request.infill_candidates, name=safe_upload_name(request.primer_name))
    [made] = compose_piece(entry.model, request.generate_config(), span=span, settings=entry.settings)
    return made


def serving_engine(model) -> str:
    """How a worker computes the steps of its pieces: in NumPy wherever it applies, at any batch.
    The library's ``auto`` takes PyTorch's modules from batch 2 up (they win at batch 32), but
    at the app's batches, on the one thread a worker has (:func:`~chopinbot.app.pool.tune_for_serving`),
    NumPy wins: 4 variations of 30 s with a 2x128 model with controls took 0.48 s of CPU against
    1.23 s, the same MIDI bytes (2026-12-02, the 2-core machine)."""
    return "numpy" if NumpyStepper.supports(model) else "auto"


def make_pieces(request: ComposeRequest, entry: ModelEntry) -> list[GenerationResult | InfillResult]:
    """The library's results for a request: an infill, pieces in a form (one at a time, each
    variation from the next random seed, as `chopinbot generate --form` makes them), or the
    variations of a continuation in one batch."""
    if request.infill is not None:
        return [compose_infill(request, entry)]
    return compose_piece(entry.model, request.generate_config(), make_seed(request, entry), form=request.form,
                         batch=request.variations, engine=serving_engine(entry.model))


def make_seed(request: ComposeRequest, entry: ModelEntry) -> Seed:
    """The seed a request asks for."""
    if request.primer is not None:
        return primer_seed(request.primer, request.primer_name, entry, request.primer_states)
    seeds_from = entry.dataset if request.own_seeds else None  # never a path from the visitor
    if request.own_seeds and seeds_from is None:
        raise ConfigError(f"model {entry.label!r} has no dataset of its own here: choose the bundled test pieces")
    index = request.seed_index
    if index is None:
        index = pick_random_seed(entry, np.random.default_rng(request.random_seed), request.key, seeds_from)
    n = len(seed_infos(entry, seeds_from))
    if not 0 <= index < n:
        raise ConfigError(f"seed window {index} does not exist: choose 0..{n - 1}")
    return seed_from_test(index, SEED_STATES, entry.settings, seeds_from=seeds_from)


def compose(request: ComposeRequest, entry: ModelEntry, session_id: str = "") -> ComposeResult:
    """Generate the request's pieces (its variations, in one batch) and everything shown about
    them (runs in a worker of :class:`~chopinbot.app.pool.ComposePool`).

    Raises :class:`RequestRefused` over the caps, :class:`~chopinbot.app.seeds.UploadError`
    for a bad primer, and other :class:`~chopinbot.errors.ChopinBotError` types for
    what the user can fix (e.g. the controls asked of a model without them).  Each
    piece's audio is rendered in its own thread (FluidSynth runs as a separate process,
    so the pieces' renders share the cores) beside the pictures and the statistics;
    when FluidSynth is missing each piece carries a note instead of audio.
    """
    request.check_limits()
    if request.model != entry.label:
        raise ConfigError(f"the request names model {request.model!r} but {entry.label!r} was given")
    t0 = t1 = time.perf_counter()
    c1 = time.thread_time()
    generations = make_pieces(request, entry)
    style = request.style or entry.default_style
    for gen in generations:  # pictures and summaries name the model and the style
        gen.label = maker_label(entry.name or entry.label, style)
    t2, c2 = time.perf_counter(), time.thread_time()
    midis = [midi_parts(gen) for gen in generations]
    played = "excerpt" if request.infill is not None else "all"  # an infill plays its span and its surroundings
    audio_boxes: list[dict[str, Any]] = [{} for _ in generations]
    audio_threads = []
    if request.render_audio:
        def run_audio(midi: bytes, box: dict[str, Any]) -> None:
            t = time.perf_counter()
            try:
                box["result"] = render_audio(midi)
            except Exception:  # the piece is still shown, with its MIDI downloads
                log.exception("audio rendering failed")
            box["seconds"] = time.perf_counter() - t

        for midi, box in zip(midis, audio_boxes, strict=True):
            thread = threading.Thread(target=run_audio, args=(midi[played], box), name="chopinbot-audio", daemon=True)
            thread.start()
            audio_threads.append(thread)
    t3 = time.perf_counter()
    # one set of real excerpts for every variation: the longest piece's length class
    measured = [measure(gen, request) for gen in generations]
    stats, figures = [m[0] for m in measured], [m[1] for m in measured]
    length = max(len(gen.new_span if isinstance(gen, InfillResult) else gen.states) for gen in generations)
    reference = style_reference(entry, style, reference_length(length))
    real_rows = compare_stats(stats, reference.stats)
    t4 = time.perf_counter()
    c4 = time.thread_time()
    pngs = [piano_roll_png(gen) for gen in generations]
    t5, c5 = time.perf_counter(), time.thread_time()
    for thread in audio_threads:
        thread.join()
    unrendered = (None, "The audio could not be rendered; the MIDI downloads still work.")
    audio = [box.get("result", unrendered) if request.render_audio else (None, "Audio was not requested.")
             for box in audio_boxes]
    t6 = time.perf_counter()
    pieces = [ComposedPiece(gen, midi, wav, note, png, piece, fig)
              for gen, midi, (wav, note), png, piece, fig in zip(generations, midis, audio, pngs, stats, figures,
                                                                 strict=True)]
    # wall-clock seconds of each step (audio runs beside statistics and pictures; "audio" is the
    # slowest piece's render), and the CPU seconds of generation and pictures in this thread
    timings = {"seed": t1 - t0, "generate": t2 - t1, "statistics": t4 - t3, "picture": t5 - t4,
               "audio": max((box.get("seconds", 0.0) for box in audio_boxes), default=0.0), "total": t6 - t0,
               "generate_cpu": c2 - c1, "picture_cpu": c5 - c4}
    return ComposeResult(request, entry.label, pieces, real_rows, len(reference.stats), timings, session_id, style,
                         reference.label, reference.source)


def describe_request(request: ComposeRequest) -> str:
    """One line for the server log (no upload content, only its size and label)."""
    seed = (f"primer {safe_upload_name(request.primer_name)} ({len(request.primer or b''):,} bytes)"
            if request.primer is not None else
            f"seed window {request.seed_index}" + (" of the model's own data" if request.own_seeds else ""))
    length = f"{request.seconds:g} s" if request.seconds is not None else f"{request.steps} states"
    decoding = f"threshold {request.threshold:.2f}" if request.threshold is not None else \
        f"temperature {request.temperature:.2f}, key min-p {request.key_min_p:g}, key local p {request.key_local_p:g}"
    if request.infill is not None:
        seed = (f"infill of {seed}, {request.infill_unit} {request.infill[0]:g} to {request.infill[1]:g}, "
                f"{request.infill_candidates} candidates")
        length = "the span's length"
    elif request.form is not None:
        length += f" in form {request.form}"
    controls = ", ".join(part for part in (
        f"density {request.density:g}/s" if request.density is not None else "",
        f"register {request.register[0]}-{request.register[1]}"
        f"{'' if request.confine_register else ' (not confined)'}" if request.register is not None else "",
        f"loudness {request.loudness}" if request.loudness is not None else "",
        "" if request.hold_key else "key not held") if part)
    return (f"model {request.model!r}, {seed}, {length}, {decoding}, key {request.key or 'seed'}, "
            f"style {request.style or 'default'}, "
            f"bpm {request.bpm or 'seed'}, random seed {request.random_seed}, "
            f"{request.variations} variation{'s' if request.variations != 1 else ''}"
            + (f", controls: {controls}" if controls else ""))
