"""Infilling: compose a new span inside a piece, one that leads into what follows it.

The model composes left to right: whatever it writes for bars 5-8 it writes
without seeing bar 9.  So :func:`infill` *rescores*: it samples several
candidate spans from what precedes the span (one batched
:func:`~chopinbot.compose.generate.generate` call), then runs the model over
each candidate followed by the piece's true continuation and keeps the
candidate under which that continuation is most likely -- the lowest key NLL
per state (nats) of the states after the span (:func:`continuation_nll`).  A
candidate that sets up the continuation's harmony, register and texture makes
it likely; one that wanders off makes it unlikely.  It needs no retraining and
works with every model; its price is that the left-to-right model only ever
*chooses* among spans composed without the right-hand context, so the join is
as good as the best of ``candidates`` samples (``chopinbot evaluate --suite infill``
measures it: ``docs/controls.md``, "Infill").

A model with controls can also be *steered* towards the music after the span
(``steer``): the density, register, loudness and pitch-class shares of the
8 beats after it, measured from the piece, are what its candidates are asked
for.  Measured, it lowers the continuation's NLL by 1 % more but makes the
music around the join easier to tell from Chopin (a classifier's accuracy
0.65 -> 0.74; likely because every state of the span is asked to sound like
the bars after it, from its first on), so it is off by default
(``docs/controls.md``).

The likelihood is scored with every control absent (``ModelConfig.scoring_blocks``,
as held-out pieces are scored): the rows of a sequence would otherwise read, at
each state, the measured controls of the 8 beats ahead of it -- statistics of
the very continuation being scored.

Outside the span the piece is the source as ChopinBot reads it (states on the
grid, each state's struck notes at their mean velocity), with its own key and
its own timing (the output MIDI keeps the source's tempo, state by state);
the new span lasts exactly as many beats, and as many seconds, as the one it
replaces, so everything after it stays where it was.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from chopinbot.compose.generate import GenerateConfig, generate, placed_loop_guards, requested_controls
from chopinbot.compose.seeds import window_seed
from chopinbot.constants import GRID_PER_BEAT, N_KEYS, SEED_STATES, WARM_STATES
from chopinbot.dataset.layout import InputLayout
from chopinbot.dataset.store import DEFAULT_SETTINGS, PrepareSettings
from chopinbot.errors import ConfigError, MidiError
from chopinbot.model.network import ChopinLSTM
from chopinbot.music.controls import Controls, window_controls
from chopinbot.music.keys import Key, detect_key, pitch_class_histogram
from chopinbot.music.scores import read_notes, read_notes_bytes
from chopinbot.music.states import States, notes_to_states, states_to_notes, states_to_score, transpose_states
from chopinbot.render.outputs import PieceOutputs

Unit = Literal["seconds", "bars"]
DEFAULT_CANDIDATES = 16  # spans sampled per infill (one batch); measured in docs/controls.md
MAX_CANDIDATES = 64
# The true continuation the candidates are judged by: at most this many states after the span (about
# 2-8 bars of Chopin; beyond them the span's influence on the model fades, and the cost grows).
LOOKAHEAD_STATES = 64
# The longest span: 16 bars of 4/4.  Longer spans are a new section, not a bridge, and every candidate
# costs the whole span in composing.
MAX_SPAN_BEATS = 64.0
DEFAULT_METRE = (4, 4)  # a file without a time signature
MAX_BAR = 100_000  # a bar number past any piece (a guard before counting bars)
PICTURE_MARGIN_BEATS = 16.0  # the piano roll shows this much of the piece either side of the span


# --------------------------------------------------------------------------- where the span is


def parse_position(text: str) -> tuple[float, Unit]:
    """A span boundary as the CLI takes it: seconds (``12.5``) or a bar number (``5b``, bars from 1)."""
    s = str(text).strip().lower()
    m = re.fullmatch(r"(\d+)\s*b(?:ars?)?", s)
    if m:
        return float(m.group(1)), "bars"
    try:
        v = float(s)
    except ValueError:
        raise ConfigError(f"infill position {text!r}: give seconds (12.5) or a bar number (5b)") from None
    if not np.isfinite(v):
        raise ConfigError(f"infill position {text!r} is not a finite number of seconds")
    return v, "seconds"


def parse_span(start: str, end: str) -> tuple[float, float, Unit]:
    """``START END`` as the CLI takes them (both in seconds or both in bars): (start, end, unit)."""
    (a, ua), (b, ub) = parse_position(start), parse_position(end)
    if ua != ub:
        raise ConfigError(f"infill START and END must both be seconds or both bars, got {start!r} and {end!r}")
    return a, b, ua


def bar_start_tick(bar: int, time_signatures: list[tuple[int, int, int]], ticks_per_quarter: int) -> int:
    """The tick where bar ``bar`` (from 1) starts: bar 1 at the file's start, each bar as long as the
    time signature in force says (``(tick, numerator, denominator)`` events; 4/4 before the first)."""
    if bar < 1 or bar > MAX_BAR:
        raise ConfigError(f"bar numbers start at 1 (and stop well before {MAX_BAR:,}), got {bar}")
    events = sorted((int(t), int(n), int(d)) for t, n, d in time_signatures if n > 0 and d > 0)
    if not events or events[0][0] > 0:
        events.insert(0, (0, *DEFAULT_METRE))
    tick, done = 0.0, 1
    for i, (_, num, den) in enumerate(events):
        length = num * 4.0 / den * ticks_per_quarter
        change = events[i + 1][0] if i + 1 < len(events) else None
        # bars of this metre until the next change (a change is taken to fall on a bar line, as it should)
        bars_here = MAX_BAR if change is None else max(0, int(np.ceil((change - tick) / length - 1e-9)))
        if done + bars_here >= bar:
            return int(round(tick + (bar - done) * length))
        tick += bars_here * length
        done += bars_here
    raise AssertionError("unreachable: the last metre runs to MAX_BAR")  # pragma: no cover


@dataclass
class SourcePiece:
    """A MIDI file read for infilling: its states in its own key and timing, and where they sit in the file."""

    states: States
    label: str
    boundary_ticks: np.ndarray  # (n + 1,) the tick where each state starts, then where the last ends
    boundary_seconds: np.ndarray  # (n + 1,) the same in seconds from the file's start
    ticks_per_quarter: int
    time_signatures: list[tuple[int, int, int]]  # (tick, numerator, denominator)
    key_signatures: list[tuple[int, int, int]]  # (tick, sharps, is_minor)

    def span_states(self, start: float, end: float, unit: Unit = "seconds") -> tuple[int, int]:
        """The states ``[a, b)`` of the span from ``start`` to ``end`` (seconds from the file's start, or
        bars: from the start of bar ``start`` to the start of bar ``end``), each boundary moved to the
        nearest state boundary.  :class:`ConfigError` for a span that is not inside the piece."""
        if unit not in ("seconds", "bars"):
            raise ConfigError(f"infill unit must be 'seconds' or 'bars', got {unit!r}")
        if not (np.isfinite(start) and np.isfinite(end)):
            raise ConfigError("infill START and END must be finite numbers")
        if end <= start:
            raise ConfigError(f"infill END must come after START, got {_fmt(start, unit)} to {_fmt(end, unit)}")
        if start < (1 if unit == "bars" else 0):
            raise ConfigError(f"infill START must be {'bar 1' if unit == 'bars' else '0 s'} or later, "
                              f"got {_fmt(start, unit)}")
        if unit == "bars":
            if start != int(start) or end != int(end):
                raise ConfigError("infill bars must be whole bar numbers (5b 9b)")
            ticks = [bar_start_tick(int(x), self.time_signatures, self.ticks_per_quarter) for x in (start, end)]
            where = [int(np.argmin(np.abs(self.boundary_ticks - t))) for t in ticks]
        else:
            where = [int(np.argmin(np.abs(self.boundary_seconds - t))) for t in (start, end)]
        n = len(self.states)
        a, b = where
        if (start >= self.boundary_seconds[-1]) if unit == "seconds" else (ticks[0] >= self.boundary_ticks[-1]):
            raise ConfigError(f"infill START ({_fmt(start, unit)}) is past the piece's end ({self.describe_end(unit)})")
        if a == 0:
            raise ConfigError(f"the span must start after the piece's first notes (at {self.describe(0, unit)}): "
                              "the model composes it from what comes before")
        if b >= n:
            raise ConfigError(f"nothing after the span: it runs to the piece's end ({self.describe_end(unit)}), so "
                              "this is a continuation, not an infill -- use `chopinbot generate --primer FILE` "
                              "without --infill, or end the span earlier")
        if b <= a:
            raise ConfigError(f"the span {_fmt(start, unit)} to {_fmt(end, unit)} holds no state of the piece "
                              f"(its states start at {self.describe(a, unit)}): make it longer")
        return a, b

    def describe(self, i: int, unit: Unit) -> str:
        """State boundary ``i`` in words (seconds, or bar and beat)."""
        if unit == "seconds":
            return f"{self.boundary_seconds[i]:.2f} s"
        return self._bar_of(int(self.boundary_ticks[i]))

    def describe_end(self, unit: Unit) -> str:
        return self.describe(len(self.states), unit)

    def _bar_of(self, tick: int) -> str:
        bar = 1
        while bar < MAX_BAR and bar_start_tick(bar + 1, self.time_signatures, self.ticks_per_quarter) <= tick:
            bar += 1
        into = (tick - bar_start_tick(bar, self.time_signatures, self.ticks_per_quarter)) / self.ticks_per_quarter
        return f"bar {bar}" + (f" + {into:g} beats" if into > 1e-6 else "")

    def key_at(self, a: int, b: int, lookahead: int = LOOKAHEAD_STATES) -> Key:
        """The key around states ``[a, b)``: the key signature in force there (major or relative minor by
        the pitch-class profile) or, without one, the best of the 24 keys; the profile is that of what
        the model reads and the candidates are judged by."""
        tick = self.boundary_ticks[a]
        sigs = [s for s in self.key_signatures if s[0] <= tick] or self.key_signatures[:1]
        sharps = sigs[-1][1] if sigs else None
        lo, hi = max(0, a - WARM_STATES), min(len(self.states), b + lookahead)
        around = self.states[lo:hi]
        return detect_key(pitch_class_histogram(around.keys, around.beats), sharps)


def read_source(source: str | os.PathLike | bytes, settings: PrepareSettings = DEFAULT_SETTINGS,
                name: str | None = None) -> SourcePiece:
    """Read a MIDI file or score (a path, or its bytes) as a primer is read
    (:func:`~chopinbot.compose.seeds.seed_from_primer`), keeping where each state sits in the file and its
    time signatures.  Raises :class:`MidiError`."""
    if isinstance(source, (bytes, bytearray)):
        label = name or "uploaded MIDI"
        notes = read_notes_bytes(bytes(source), label)  # MIDI or a score, by its name or content
    else:
        label = name or Path(source).name
        notes = read_notes(source)  # every check of a file on disk; a score through the child-process reader
    try:
        states, ticks, _ = notes_to_states(notes, settings.grid_per_beat, settings.pedal, settings.min_state_beats,
                                           settings.max_states)
    except MidiError as e:
        raise MidiError(e.reason, label) from None
    signatures = list(notes.time_signatures)
    return SourcePiece(states, label, ticks, notes.seconds_at(ticks), notes.ticks_per_quarter, signatures,
                       list(notes.key_signatures))


def _fmt(x: float, unit: Unit) -> str:
    return f"bar {x:g}" if unit == "bars" else f"{x:g} s"


# --------------------------------------------------------------------------- scoring


def continuation_nll(model: ChopinLSTM, before: States, spans: list[States], after: States,
                     start_beat: float = 0.0, style: str | None = None) -> np.ndarray:
    """The model's key NLL per state (nats) of ``after`` when it follows ``before`` and then each of
    ``spans`` (all in the model's frame; ``before`` starts ``start_beat`` into its piece), one value per span.

    The exact NLL of each state's keys, as the training loss reports it (a ``joint_keys`` model's
    conditionals are taken on the true keys below each key), with every control absent (see the
    module docstring).  ``before`` is read once; the spans and ``after`` in one batch."""
    if not spans or len(after) == 0 or len(before) == 0:
        raise ConfigError("continuation_nll needs a history, at least one span and a continuation")
    if any(len(s) == 0 for s in spans):
        raise ConfigError("a span is empty")
    layout = InputLayout(model.config.with_style(style).scoring_blocks["blocks"])  # controls absent
    H, K = len(before), len(after)
    seqs = [States.concat([before, s, after]) for s in spans]
    rows = [layout.sequence_rows(q.keys, q.onsets, q.beats, start_beat, q.velocity) for q in seqs]
    B, T = len(spans), max(len(s) for s in spans) + K - 1  # after the history: every row but the last
    x = np.zeros((B, T, layout.width), np.float32)
    target_keys = np.zeros((B, T, N_KEYS), np.float32)
    target_onsets = np.zeros((B, T, N_KEYS), np.float32)
    for b, (q, r) in enumerate(zip(seqs, rows)):
        n = len(q) - H - 1  # rows H .. len(q) - 2 predict states H + 1 .. len(q) - 1
        x[b, :n] = r[H : H + n]
        target_keys[b, :n] = q.keys[H + 1 : H + 1 + n]
        target_onsets[b, :n] = q.onsets[H + 1 : H + 1 + n]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            _, shared = model(torch.from_numpy(rows[0][:H]).to(device)[None])  # the shared history, once
            # one copy per span; batch is dimension 1 of either backbone's state (LSTM or Transformer)
            state = tuple(s.expand(-1, B, *s.shape[2:]).contiguous() for s in shared)
            xt, kt = torch.from_numpy(x).to(device), torch.from_numpy(target_keys).to(device)
            given = (kt, torch.from_numpy(target_onsets).to(device)) if model.config.joint_keys else None
            out, _ = model(xt, state, given)
            bce = F.binary_cross_entropy_with_logits(out.key_logits.float(), kt, reduction="none").sum(-1)
    finally:
        model.train(was_training)
    bce = bce.cpu().numpy()
    # the targets of ``after`` are predicted by the rows from the span's last state on
    return np.array([bce[b, len(s) - 1 : len(s) - 1 + K].mean() for b, s in enumerate(spans)], np.float64)


def fit_to_length(states: States, units: int, grid_per_beat: int) -> States:
    """``states`` cut (or their last state lengthened) to last exactly ``units`` grid steps."""
    out = states.copy()
    u = out.grid_units(grid_per_beat)
    cum = np.cumsum(u)
    k = int(np.searchsorted(cum, units))  # the first state reaching the length
    if k >= len(out):  # short (a guard stopped it early): the last state holds on
        out.beats[-1] = (u[-1] + units - cum[-1]) / grid_per_beat
        return out
    out = out[: k + 1]
    out.beats[-1] = (units - (cum[k - 1] if k else 0)) / grid_per_beat
    return out


def steering_controls(after: States) -> Controls:
    """What a model with controls is asked for when steered towards ``after`` (model frame): the
    density, register, loudness and pitch-class shares of its first 8 beats."""
    return window_controls(after.onsets, after.beats, after.velocity).at(0)


# --------------------------------------------------------------------------- the result


@dataclass
class InfillResult(PieceOutputs):
    """A piece with a span composed anew, in the source's own key and timing."""

    states: States  # the whole piece: before the span, the new span, after it
    span: tuple[int, int]  # the new span's states in ``states``
    original: States  # the source piece as read
    original_span: tuple[int, int]  # the replaced span's states in ``original``
    key: Key
    source: str
    candidate_nll: np.ndarray  # per candidate: key NLL per state (nats) of the true continuation after it
    chosen: int  # the candidate kept: the lowest of ``candidate_nll``
    original_nll: float  # the same NLL after the source's own span
    lookahead: int  # states of the true continuation scored
    candidates: list[States] = field(repr=False, default_factory=list)  # every candidate span, model frame
    steered: bool = False
    guards: list[str] = field(default_factory=list)
    config: GenerateConfig | None = None
    start_second: float = 0.0  # where the piece's first state lies in its file (its first note), in seconds

    @property
    def nll(self) -> float:
        """The kept span's continuation NLL (nats per state)."""
        return float(self.candidate_nll[self.chosen])

    @property
    def new_span(self) -> States:
        return self.states[self.span[0] : self.span[1]]

    @property
    def bpm(self) -> float:
        """The span's mean tempo (the piece keeps its own, state by state)."""
        s = self.new_span
        return float(60.0 * s.total_beats / s.total_seconds) if s.total_seconds > 0 else 120.0

    @property
    def span_beats(self) -> tuple[float, float]:
        """Where the span starts and ends, in beats from the piece's first state."""
        t = self._beat_edges()
        return float(t[self.span[0]]), float(t[self.span[1]])

    @property
    def span_seconds(self) -> tuple[float, float]:
        """... and in seconds from the file's start (as ``infill`` takes them)."""
        t = self.start_second + np.concatenate([[0.0], np.cumsum(self.states.seconds.astype(np.float64))])
        return float(t[self.span[0]]), float(t[self.span[1]])

    def _beat_edges(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.states.grid_units())]) / GRID_PER_BEAT

    @property
    def notes(self) -> np.ndarray:
        """(N, 4): start beat, end beat, MIDI pitch, velocity of the whole piece."""
        return states_to_notes(self.states)

    @property
    def seconds(self) -> float:
        return self.states.total_seconds

    def midi_bytes(self) -> bytes:
        """MIDI of the whole piece, each state at the source's own tempo."""
        return bytes(states_to_score(self.states, bpm=None).dumps_midi())

    def figure(self, title: str | None = None):
        """A piano roll of the span and ``PICTURE_MARGIN_BEATS`` of the piece either side (the piece grey,
        the new span blue, its edges marked)."""
        from chopinbot.render.pianoroll import GENERATED_CMAP, SEED_CMAP, pianoroll_figure, velocity_colours
        from chopinbot.render.plots import plt  # here: matplotlib loads only for a picture

        a, b = self.span_beats
        lo = max(0.0, a - PICTURE_MARGIN_BEATS)
        hi = b + PICTURE_MARGIN_BEATS
        n = self.notes
        n = n[(n[:, 1] > lo) & (n[:, 0] < hi)].copy()
        n[:, :2] = np.clip(n[:, :2], lo, hi) - lo
        fig = pianoroll_figure(n, bpm=self.bpm, seed_end_beat=a - lo,
                               title=title or f"{self.label} infill in {self.key.name}: {self.source}")
        ax = fig.axes[0]
        after = n[:, 0] >= b - lo - 1e-9
        poly = ax.collections[-1] if len(n) else None
        if poly is not None and after.any():  # the notes after the span are the piece's again
            colours = np.array(poly.get_facecolors())
            colours[after] = velocity_colours(SEED_CMAP, n[after, 3])
            poly.set_facecolors(colours)
        scale = 60.0 / self.bpm
        ax.axvline((b - lo) * scale, color="#c0392b", linestyle="--", linewidth=1.2, zorder=3)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=plt.get_cmap(SEED_CMAP)(0.7), label="the piece"),
                           Patch(color=plt.get_cmap(GENERATED_CMAP)(0.7), label="new span"),
                           Line2D([], [], color="#c0392b", linestyle="--", label="span edges")],
                  loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, title="darker = louder",
                  title_fontsize=8)
        ax.set_xlabel(f"time (s at {self.bpm:.0f} bpm, from {lo:g} beats into the piece)")
        return fig

    def summary(self) -> str:
        (a, b), (sa, sb) = self.span_beats, self.span_seconds
        o = self.original_span
        others = np.delete(self.candidate_nll, self.chosen)
        spread = (f"; the other {len(others)} candidates {others.min():.2f} to {others.max():.2f}, median "
                  f"{np.median(others):.2f}") if len(others) else ""
        guards = "; ".join(self.guards) if self.guards else "none fired"
        return (f"{self.summary_lead}infilled {sa:.1f}-{sb:.1f} s ({b - a:g} beats) of {self.source} in "
                f"{self.key.name}: "
                f"{o[1] - o[0]} states replaced by {self.span[1] - self.span[0]}, the best of "
                f"{len(self.candidate_nll)} candidates{' steered towards what follows' if self.steered else ''} "
                f"by the model's NLL of the next {self.lookahead} states: {self.nll:.2f} nats/state (the "
                f"original span: {self.original_nll:.2f}{spread}); guards: {guards}.")



# --------------------------------------------------------------------------- infilling


def infill_piece(model: ChopinLSTM, piece: States, key: Key, start: int, end: int,
                 cfg: GenerateConfig | None = None, candidates: int = DEFAULT_CANDIDATES,
                 lookahead: int = LOOKAHEAD_STATES, steer: bool = False, context_states: int = WARM_STATES,
                 source: str = "piece", *, start_second: float = 0.0) -> InfillResult:
    """Compose states ``[start, end)`` of ``piece`` (in its own key ``key``, timed) anew: ``candidates``
    spans sampled from what precedes (decoded as ``cfg`` says), the one kept under which the model finds
    the next ``lookahead`` states of the piece most likely (:func:`continuation_nll`).  ``steer``: a
    model with controls is asked for the controls of what follows (:func:`steering_controls`).
    ``start_second``: where the piece's first state lies in its file (the loop guard's times are the file's)."""
    cfg = cfg or GenerateConfig()
    if cfg.key is not None or cfg.bpm is not None:
        raise ConfigError("an infill keeps the piece's key and tempo: leave key and bpm unset")
    if not (1 <= candidates <= MAX_CANDIDATES):
        raise ConfigError(f"infill candidates must be 1..{MAX_CANDIDATES}, got {candidates}")
    if lookahead < 1:
        raise ConfigError("the infill lookahead must be at least 1 state")
    if context_states < 0:
        raise ConfigError("context states must be 0 or more")
    n = len(piece)
    if not (0 <= start < end <= n):
        raise ConfigError(f"infill span [{start}, {end}) is not a span of the piece's {n} states")
    if start == 0:
        raise ConfigError("the span must start after the piece's first state: the model composes it from "
                          "what comes before")
    if end == n:
        raise ConfigError("nothing after the span: this is a continuation, not an infill")
    grid = model.config.grid_per_beat
    units = int(piece[start:end].grid_units(grid).sum())
    if units / grid > MAX_SPAN_BEATS:
        raise ConfigError(f"the span lasts {units / grid:g} beats; an infill spans at most {MAX_SPAN_BEATS:g} "
                          "beats (16 bars of 4/4): infill it in parts")
    if steer and not model.config.controls:
        raise ConfigError("steering an infill towards what follows needs a model with controls")
    home, _ = transpose_states(piece, key.shift_home)
    position = max(0, start - SEED_STATES)
    seed = window_seed(home, key, position, start - position, source, context_states)
    after = home[end : end + lookahead]
    span_beats = units / grid
    # generate's length is in seconds at the seed's tempo; fit_to_length then makes it exact
    gen_cfg = replace(cfg, seconds=span_beats * 60.0 / seed.bpm, key=seed.home.name, include_seed=False)
    controls = None
    if model.config.controls:  # requests in the piece's own key (the output is in the home key)
        controls = steering_controls(after) if steer else requested_controls(model, cfg, seed, seed.key, seed.bpm)
    results = generate(model, seed, gen_cfg, batch=candidates, controls=controls)
    results = results if isinstance(results, list) else [results]
    spans = [fit_to_length(r.states, units, grid) for r in results]
    original = home[start:end]
    nll = continuation_nll(model, seed.history, spans + [original], after, seed.history_start_beat, cfg.style)
    chosen = int(np.argmin(nll[:-1]))
    states = splice(piece, start, end, spans[chosen], key)
    span = (start, len(states) - (n - end))
    # the kept candidate's loops broken, said at their times in the file (its span composed from 0 s)
    before = start_second + float(states.seconds[:start].astype(np.float64).sum())
    guards = placed_loop_guards(results[chosen], span[1] - span[0], states.seconds[span[0]:span[1]], before)
    return InfillResult(states, span, piece, (start, end), key, source, nll[:-1], chosen, float(nll[-1]),
                        len(after), spans, steer, guards, cfg, start_second=start_second)


def splice(piece: States, start: int, end: int, span: States, key: Key) -> States:
    """``piece`` (in its own key ``key``, timed) with states ``[start, end)`` replaced by ``span`` (in the
    model's frame, as long in beats), put into ``key`` and timed at the replaced states' mean tempo, so
    that it lasts as long in seconds too and everything after it stays in place."""
    new, _ = transpose_states(span, key.home.shift_to(key))
    old = piece[start:end]
    # (a span without timing plays at 120 bpm)
    per_beat = old.total_seconds / old.total_beats if old.total_beats > 0 and old.total_seconds > 0 else 0.5
    new.seconds = (new.beats.astype(np.float64) * per_beat).astype(np.float32)
    return States.concat([piece[:start], new, piece[end:]])


def infill(model: ChopinLSTM, source: str | os.PathLike | bytes, start: float, end: float,
           unit: Unit = "seconds", cfg: GenerateConfig | None = None, candidates: int = DEFAULT_CANDIDATES,
           lookahead: int = LOOKAHEAD_STATES, steer: bool = False, settings: PrepareSettings = DEFAULT_SETTINGS,
           context_states: int = WARM_STATES, name: str | None = None) -> InfillResult:
    """Compose the span from ``start`` to ``end`` of a MIDI file (a path or its bytes) anew, so that it
    leads into what follows; returns the whole piece with the span replaced.

    ``unit``: ``"seconds"`` from the file's start, or ``"bars"``: from the start of bar ``start`` to the
    start of bar ``end`` (bars from 1; ``end`` not included: 5, 9 replaces bars 5-8), bar lengths from
    the file's time signatures (4/4 without one).  Each edge moves to the nearest state boundary.  The
    rest as :func:`infill_piece`.  Raises :class:`ConfigError` for a span that is not inside the piece
    (or has nothing after it), :class:`MidiError` for an unusable file."""
    piece = read_source(source, settings, name)
    a, b = piece.span_states(start, end, unit)
    key = piece.key_at(a, b, lookahead)
    label = f"{piece.label} ({_fmt(start, unit)} to {_fmt(end, unit)})"
    return infill_piece(model, piece.states, key, a, b, cfg, candidates, lookahead, steer, context_states, label,
                        start_second=float(piece.boundary_seconds[0]))
