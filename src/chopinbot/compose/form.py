"""Forms: ABA and AABA -- a contrasting middle, then the opening again, ending on a cadence.

A continuation that only continues wanders: nothing comes back and it stops
wherever the length runs out.  Chopin's nocturnes, mazurkas and many études
are ternary: an opening (A), a contrasting middle (B) in another key area and
texture, then the opening again (the reprise), closed by a cadence.
:func:`compose_form` builds such a piece from :func:`~chopinbot.compose.generate.generate`,
section by section, the model reading everything composed before each one:

* **A**: the seed continued, with what ``cfg`` asks (its key, controls).
* **B**, the contrast.  A model with controls is asked for another key area
  through the key profile (major: the dominant; minor: the relative major),
  and for the density and loudness on the other side of the corpus's median
  from what A played.  A model without controls cannot be asked, and it
  keeps the key of what it reads (made to read the piece moved so that the
  dominant was its home key, C major / A minor, its B leaned towards the
  dominant no more often than a plain continuation's middle does: 56 % vs
  60 % of 50 pieces); so its B is the model's continuation of A moved into
  the dominant -- a change of key at the double bar -- a fifth up from an A
  lying below the corpus's median pitch, a fourth down from one above it, so
  that the register changes too.
* **A'**, the reprise: the first ``reprise_beats`` of A are played again, then
  the model goes on.  The repeats machinery (:mod:`chopinbot.music.repeats`)
  is what makes this a reprise and not a quotation: at every state the
  model reads what followed the last occurrence of the passage just heard, so
  after the replayed phrase it is told how A went on, and it tends to follow.
  (AABA's second A starts the same way: a varied repeat of the first.)
  The first section's start and every later A's start are a multiple of
  ``ALIGN_BEATS`` apart: the model's position-in-the-metre inputs repeat every
  12 beats, so bars of 2, 3 and 4 beats all fit and the replayed opening falls
  where it fell in the bar, whatever the metre.
* **The cadence**: free sampling lands on a tonic chord with the tonic in the
  bass in about 0.5 % of states (measured on ten 30 s pieces of the shipped
  model), so an ending left to chance almost never closes.  The last beats are
  steered instead: the model writes a dominant seventh, then the tonic chord,
  its keys confined to each chord's pitch classes (it chooses which chord
  tones, in which octave, with which rhythm and loudness), the bass set to
  each chord's root near where the music's bass is; the final chord is
  completed to a full triad and held at least ``HOLD_BEATS``.  The cadence is composed by the same
  loop and rules as every section (:mod:`chopinbot.compose.decoding`): key and style guidance, the
  repeat boost, a density kept, a register confined, with the chord's confinement added to them.

Everything is composed in the model's frame (the seed's home key, C major or
A minor) and moved to the output key at the end, as ``generate`` does.
The evaluation package's ``form_measures`` measures what a form gives (`chopinbot evaluate --suite form`;
docs/controls.md, "Form").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from chopinbot.compose.decoding import BeatLimit, Decoder, StepLimit
from chopinbot.compose.generate import (
    DEFAULT_VELOCITY,
    GenerateConfig,
    GenerationResult,
    generate,
    notatable_origin,
    notatable_phase,
    output_key,  # the output key and its mode rule, exactly as generate() decides them
    placed_loop_guards,
    requested_controls,
)
from chopinbot.compose.processors import ChordConfinement
from chopinbot.compose.seeds import Seed
from chopinbot.constants import GRID_PER_BEAT, LOWEST_PITCH, N_KEYS, SEED_STATES
from chopinbot.dataset.features import position_period
from chopinbot.errors import ConfigError
from chopinbot.model.network import ChopinLSTM
from chopinbot.music.controls import LOUDNESS_LEVELS, Controls, key_profile
from chopinbot.music.keys import Key
from chopinbot.music.repeats import MATCH_WINDOW
from chopinbot.music.states import States, transpose_states
from chopinbot.notation.metre import continuation_metre

# The forms, as their sections' labels; a label starting with "A" is the opening's material.
FORMS: dict[str, tuple[str, ...]] = {"ABA": ("A", "B", "A'"), "AABA": ("A", "A'", "B", "A''")}
# A sections start a multiple of this apart: the period of the metre inputs (2-, 3- and 4-beat bars), 12 beats
ALIGN_BEATS = position_period(GRID_PER_BEAT) / GRID_PER_BEAT
REPRISE_BEATS = 8.0  # beats of A's opening replayed at each return (two bars of 4/4): its first phrase
MIN_SECTION_BEATS = 8.0  # a section shorter than two bars holds no phrase (and the last one must hold a cadence)
DOMINANT_BEATS = 2.0  # the cadence's dominant lasts at least this long
HOLD_BEATS = 4.0  # the final tonic chord is held at least this long (a bar of 4/4)
# B's density is asked for on the other side of the corpus's median from A's: the bundled performances'
# 8-beat windows play 3.5 / 4.5 / 6.25 / 8.4 / 11.5 notes per beat at their 10th/25th/50th/75th/90th
# percentiles, so a factor of 1.75 moves a typical A from one quartile to the other.
MEDIAN_DENSITY = 6.25  # notes per beat
DENSITY_CONTRAST = 1.75
# The corpus's median struck pitch (MIDI, in the model's frame): a B without controls moves down a fourth
# from an A above it, up a fifth from one below, into the dominant either way.
MEDIAN_PITCH = 62.0
DENSITY_BOUNDS = (1.0, 20.0)  # notes per beat: what the corpus's windows span (its 1st to 99th percentile or so)


@dataclass(frozen=True)
class Section:
    """One section of a form, where it lies in the result's states."""

    label: str  # "A", "B", "A'", ...
    role: str  # opening, repeat, contrast or reprise
    start_state: int  # index into the result's states
    end_state: int  # one past its last state
    start_beat: float  # beats from the result's start
    end_beat: float
    start_seconds: float
    end_seconds: float
    key: Key  # the key area it was composed in (output key)
    controls: Controls | None = None  # what a model with controls was asked for (its frame); None: none
    replayed_states: int = 0  # states at its start copied from the opening (a repeat or reprise)


@dataclass
class FormResult(GenerationResult):
    """A :class:`GenerationResult` in a form: its sections, in order, and how it ends."""

    form: str = "ABA"
    sections: list[Section] = field(default_factory=list)
    cadence: str = ""  # how the ending was made, in words

    def summary(self) -> str:
        parts = []
        for s in self.sections:
            extra = f", opening replayed for {s.replayed_states} states" if s.replayed_states else ""
            parts.append(f"{s.label} {s.start_seconds:.1f}-{s.end_seconds:.1f} s ({s.key.name}{extra})")
        return f"{super().summary()} Form {self.form}: {'; '.join(parts)}. {self.cadence}"


def form_labels(form: str) -> tuple[str, ...]:
    """The section labels of ``form`` ("ABA" or "AABA", any case); :class:`ConfigError` otherwise."""
    labels = FORMS.get(str(form).strip().upper())
    if labels is None:
        raise ConfigError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    return labels


def _role(label: str, index: int) -> str:
    if label == "B":
        return "contrast"
    return "opening" if index == 0 else ("repeat" if index == 1 else "reprise")


def plan_sections(form: str, total_beats: float, bpm: float | None = None) -> list[tuple[str, float, float]]:
    """``(label, start, end)`` of each section of a piece of ``total_beats``, in beats from its start:
    equal shares, every A starting a multiple of ``ALIGN_BEATS`` after the first (a whole beat when
    the sections are shorter than that), B on a whole beat.  :class:`ConfigError` when a section
    would be shorter than ``MIN_SECTION_BEATS`` (its message in seconds too, given the ``bpm``)."""
    labels = form_labels(form)
    n = len(labels)
    nominal = total_beats / n
    unit = ALIGN_BEATS if nominal >= ALIGN_BEATS else 1.0
    starts = [0.0] + [float(round(i * nominal / unit) * unit if lab.startswith("A") else round(i * nominal))
                      for i, lab in enumerate(labels) if i > 0]
    ends = starts[1:] + [float(total_beats)]
    if min(e - s for s, e in zip(starts, ends)) < MIN_SECTION_BEATS - 1e-9:
        need = n * MIN_SECTION_BEATS + ALIGN_BEATS
        secs = f" ({total_beats * 60 / bpm:.1f} s at {bpm:.0f} bpm)" if bpm else ""
        ask = f"{need * 60 / bpm:.0f} s" if bpm else f"{need:g} beats"
        raise ConfigError(f"{form.strip().upper()} in {total_beats:.1f} beats{secs} is too short: each of its {n} "
                          f"sections needs at least {MIN_SECTION_BEATS:g} beats; ask for {ask} or more")
    return list(zip(labels, starts, ends))


def contrast_key(key: Key, steered: bool) -> Key:
    """B's key area for a piece in ``key``: with controls the dominant (major) or the relative major
    (minor); without, the dominant in the same mode (a transposition cannot change the mode)."""
    if steered and key.minor:
        return Key((key.tonic + 3) % 12, False)
    return Key((key.tonic + 7) % 12, key.minor)


def contrast_controls(a: Controls, density: float, velocity: float, minor: bool) -> Controls:
    """B's controls (the model's frame) after an A asked for ``a`` that played ``density`` notes per
    beat at mean ``velocity``: the contrasting key area's profile, the density and loudness on the other
    side of the corpus's median, A's register (what the user asked) kept."""
    d = a.density if a.density is not None else density
    d = d * DENSITY_CONTRAST if d < MEDIAN_DENSITY else d / DENSITY_CONTRAST
    v = a.loudness if a.loudness is not None else velocity
    loud = LOUDNESS_LEVELS["f"] if v <= LOUDNESS_LEVELS["mf"] else LOUDNESS_LEVELS["p"]
    # the relative major of A minor is C major: the major profile as it is; the dominant of C: rolled to G
    profile = key_profile(False) if minor else tuple(float(x) for x in np.roll(key_profile(False), 7))
    return Controls(density=float(np.clip(d, *DENSITY_BOUNDS)), register=a.register, loudness=float(loud),
                    key=profile)


# --------------------------------------------------------------------------- the piece being composed


class _Draft:
    """The piece in the model's frame: everything the model has read (the seed's context, the seed) and
    every section composed so far; the output is ``body[out_start:]``."""

    def __init__(self, seed: Seed, include_seed: bool) -> None:
        self.body = seed.history
        self.start_beat = seed.history_start_beat  # where body starts in the metre
        self.out_start = len(seed.history) - (len(seed.states) if include_seed else 0)
        self.home, self.bpm, self.source = seed.home, seed.bpm, seed.source

    @property
    def out_len(self) -> int:
        return len(self.body) - self.out_start

    @property
    def out_beats(self) -> float:
        return self.body[self.out_start :].total_beats

    def add(self, new: States) -> None:
        self.body = States.concat([self.body, new])

    def seed(self) -> Seed:
        """The piece so far as a seed (its last states the window, up to ``MATCH_WINDOW`` before them the
        context), in the home key so that generate() keeps the model's frame."""
        n = len(self.body)
        w = n - min(SEED_STATES, n)
        first = max(0, w - MATCH_WINDOW)
        part = self.body[first:]
        start = self.start_beat + self.body[:w].total_beats
        return Seed(part[w - first :], self.home, self.bpm, self.source, start, part[: w - first])

    def opening(self, beats: float) -> States:
        """The output's first whole states lasting at most ``beats`` (at least one)."""
        out = self.body[self.out_start :]
        cum = np.cumsum(out.grid_units())
        m = max(1, int(np.searchsorted(cum, round(beats * GRID_PER_BEAT), side="right")))
        return out[:m].copy()


def fit_beats(new: States, beats: float) -> States:
    """``new`` cut (its last state shortened) or its last state held longer, to last exactly ``beats``."""
    units = new.grid_units()
    target = max(1, round(beats * GRID_PER_BEAT))
    cum = np.cumsum(units)
    m = min(int(np.searchsorted(cum, target)) + 1, len(units))  # the states up to the one reaching the target
    new = new[:m].copy()
    units = units[:m].copy()
    units[-1] += target - units.sum()
    if units[-1] < 2 and m > 1:  # a sliver of a state (under the merge threshold): the one before holds on
        new, units = new[: m - 1].copy(), units[: m - 1].copy()
        units[-1] += target - units.sum()
    new.beats = (units / GRID_PER_BEAT).astype(np.float32)
    return new


def _continue(model: ChopinLSTM, draft: _Draft, beats: float, cfg: GenerateConfig, controls: Controls | None,
              random_seed: int | None, engine: str) -> tuple[States, list[str]]:
    """The model's next ``beats`` of the piece (the model's frame), and the guards that fired.  A section
    stuck in a figure is not composed again: the loop breaker (``cfg.loop_states``) breaks it where it
    starts, as in every continuation; its guard line gives each break's time in the whole piece written
    (the section begins where the draft ends), not in the section."""
    sec = replace(cfg, seconds=beats * 60.0 / draft.bpm, bpm=draft.bpm, key=None, include_seed=False,
                  random_seed=random_seed)
    res = generate(model, draft.seed(), sec, engine=engine, controls=controls)
    new = fit_beats(res.states, beats)
    return new, placed_loop_guards(res, len(new), res.generated.seconds, draft.out_beats * 60.0 / draft.bpm)


def _replay(opening: States, prev_keys: np.ndarray) -> States:
    """The opening again after ``prev_keys``: a key that starts sounding there is struck."""
    out = opening.copy()
    out.onsets[0] |= out.keys[0] & ~prev_keys
    return out


# --------------------------------------------------------------------------- the cadence


def _key_of(pc: int, near: float, at_most: bool = False) -> int:
    """The key index of pitch class ``pc`` nearest to key index ``near`` (``at_most``: the highest not
    above it, if there is one)."""
    ks = np.flatnonzero((np.arange(N_KEYS) + LOWEST_PITCH) % 12 == pc % 12)
    if at_most and (ks <= near).any():
        return int(ks[ks <= near][-1])
    return int(ks[np.argmin(np.abs(ks - near))])


def chord_pitch_classes(home: Key) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The dominant seventh (root first) and the tonic triad (root, third, fifth) of ``home``
    (harmonic minor: the dominant's third is the raised leading tone)."""
    t = home.tonic
    dominant = ((t + 7) % 12, (t + 11) % 12, (t + 2) % 12, (t + 5) % 12)
    return dominant, (t, (t + (3 if home.minor else 4)) % 12, (t + 7) % 12)


def _cadence(model: ChopinLSTM, draft: _Draft, cfg: GenerateConfig, controls: Controls | None,
             rng: np.random.Generator, engine: str, end_beats: float) -> States:
    """A dominant seventh then the tonic chord, written by the model with its keys confined to their
    pitch classes (see the module docstring); the final chord lasts until ``end_beats`` of the output,
    and at least ``HOLD_BEATS``."""
    h = draft.body[max(0, len(draft.body) - MATCH_WINDOW) :]
    start = draft.start_beat + draft.body[: len(draft.body) - len(h)].total_beats
    dominant, tonic = chord_pitch_classes(draft.home)
    lows = [int(np.flatnonzero(k)[0]) for k in h.keys[-SEED_STATES:] if k.any()]
    bass_ref = min(float(np.median(lows)) if lows else 27.0, 39.0)  # the music's bass, at most around middle C
    v_bass = _key_of(dominant[0], bass_ref, at_most=True)
    i_bass = _key_of(tonic[0], v_bass)  # the nearer of a fourth up and a fifth down
    pcs = (np.arange(N_KEYS) + LOWEST_PITCH) % 12
    struck = h.velocity[h.velocity > 0]
    velocity = int(round(struck.mean())) if struck.size else DEFAULT_VELOCITY
    ks, os_, bs, vs = [], [], [], []
    with torch.inference_mode():
        decoder = Decoder(model, [h], cfg, rng, start, controls, engine)
        for chord, bass, phase in ((dominant, v_bass, "dominant"), (tonic, i_bass, "tonic")):
            allowed = np.isin(pcs, chord) & (np.arange(N_KEYS) >= bass)
            stop = [StepLimit(1)] if phase == "tonic" else [BeatLimit(DOMINANT_BEATS, 1)]
            for new in decoder.run(stop, extra=[ChordConfinement(allowed[None], bass)]):
                ks.append(new.keys[0])
                os_.append(new.onsets[0])
                bs.append(float(new.beats[0]))
                vs.append(int(new.velocity[0]) if new.velocity is not None else
                          (velocity if new.onsets.any() else 0))
            if phase == "dominant":  # the tonic arrives on a whole beat: the dominant's last state holds on
                end = start + h.total_beats + sum(bs)
                bs[-1] += float(np.ceil(end - 1e-6) - end)
    final_keys, final_onsets = ks[-1], os_[-1]
    for pc in tonic[1:]:  # complete the triad: a missing third or fifth in the octave above the bass
        if not final_keys[pcs == pc].any():
            k = _key_of(pc, min(i_bass + 12 + (pc - tonic[0]) % 12, N_KEYS - 1))
            final_keys[k] = final_onsets[k] = True
    so_far = draft.out_beats + sum(bs[:-1])
    bs[-1] = max(bs[-1], HOLD_BEATS, end_beats - so_far)
    units = np.round(np.asarray(bs) * GRID_PER_BEAT) / GRID_PER_BEAT
    return States(np.array(ks), np.array(os_), units.astype(np.float32), np.zeros(len(ks), np.float32),
                  np.array(vs, np.uint8))


# --------------------------------------------------------------------------- composing a form


def compose_form(model: ChopinLSTM, seed: Seed, cfg: GenerateConfig | None = None, form: str = "ABA",
                 engine: str = "auto", reprise_beats: float = REPRISE_BEATS) -> FormResult:
    """Continue ``seed`` as a piece in ``form`` ("ABA" or "AABA") of ``cfg.seconds`` of new music (or
    ``cfg.steps`` states' worth, at the seed history's mean state length), ending on a cadence.

    ``cfg`` is what :func:`generate` reads (key, tempo, decoding, controls; its controls steer the A
    sections and B contrasts with them); ``reprise_beats``: how much of the opening each return of A
    replays.  See the module docstring for how each section is made."""
    cfg = cfg or GenerateConfig()
    cfg.validate()
    form_labels(form)
    if len(seed.states) == 0:
        raise ConfigError("the seed is empty")
    if not reprise_beats > 0:
        raise ConfigError("reprise_beats must be more than 0")
    bpm = float(cfg.bpm or seed.bpm)
    guards: list[str] = []
    key = output_key(seed, cfg.key, guards)
    a_controls = requested_controls(model, cfg, seed, key, bpm)  # None without controls (raises if asked for some)
    steered = a_controls is not None
    if cfg.seconds is not None:
        new_beats = cfg.seconds * bpm / 60.0
    else:
        new_beats = cfg.steps * float(np.mean(seed.history.beats))
    draft = _Draft(replace(seed, bpm=bpm), cfg.include_seed)
    if cfg.notatable:  # every section and the cadence on the seed end's grid
        cfg = replace(cfg, notatable_origin=notatable_origin(seed, cfg))
    plan = plan_sections(form, draft.out_beats + new_beats, bpm)
    if plan[0][2] - draft.out_beats < 1.0:
        raise ConfigError(f"the seed ({draft.out_beats:.1f} beats) fills the first section: ask for more music")
    rng = np.random.default_rng(cfg.random_seed)
    seeds = [None if cfg.random_seed is None else int(s) for s in rng.integers(0, 2**31, len(plan))]
    shift_home = seed.home.shift_to(key)
    rows: list[tuple] = []  # each section's Section fields but its seconds
    a_sections: list[tuple[int, int]] = []  # (start, end) state of each A in the output
    for i, (label, start, end) in enumerate(plan):
        role = _role(label, i)
        first_state, first_beat = (draft.out_len, draft.out_beats) if i else (0, 0.0)  # A holds the seed
        controls, sec_key, shift, replayed = a_controls, key, 0, 0  # shift: B moved to its key area
        if role in ("repeat", "reprise"):
            length = min(reprise_beats, (end - start) / 2, plan[0][2] - plan[0][1])
            copy = _replay(draft.opening(length), draft.body.keys[-1])
            draft.add(copy)
            replayed = len(copy)
        if role == "contrast":
            sec_key = contrast_key(key, steered)
            a0, a1 = a_sections[-1]
            a = draft.body[draft.out_start + a0 : draft.out_start + a1]
            if steered:
                density = a.onsets.sum() / max(a.total_beats, 1e-9)
                struck = a.velocity[a.velocity > 0]
                controls = contrast_controls(a_controls, float(density),
                                             float(struck.mean()) if struck.size else LOUDNESS_LEVELS["mf"],
                                             draft.home.minor)
            else:  # the model's continuation, moved to the dominant, away from A's register (module docstring)
                pitch = np.nonzero(a.onsets)[1].mean() + LOWEST_PITCH if a.onsets.any() else MEDIAN_PITCH
                shift = -5 if pitch >= MEDIAN_PITCH else 7
        last = i == len(plan) - 1
        room = end - draft.out_beats - (DOMINANT_BEATS + HOLD_BEATS if last else 0.0)
        if room >= 1.0 / GRID_PER_BEAT:
            new, g = _continue(model, draft, room, cfg, controls, seeds[i], engine)
            if shift:
                new = _replay(transpose_states(new, shift)[0], draft.body.keys[-1])
            draft.add(new)
            guards += [f"{label}: {x}" for x in g]
        if last:
            draft.add(_cadence(model, draft, cfg, controls, np.random.default_rng(seeds[i]), engine, end))
        if label.startswith("A"):
            a_sections.append((first_state, draft.out_len))
        rows.append((label, role, first_state, draft.out_len, first_beat, draft.out_beats, sec_key, controls,
                         replayed))
    out = draft.body[draft.out_start :]
    out.seconds = (out.beats.astype(np.float64) * 60.0 / bpm).astype(np.float32)
    out_states, _ = transpose_states(out, shift_home)
    spb = 60.0 / bpm
    done = [Section(lab, role, s0, s1, b0, b1, b0 * spb, b1 * spb, k, c, r)
            for lab, role, s0, s1, b0, b1, k, c, r in rows]
    final = out_states.beats[-1]
    cadence = (f"Ends on a {key.name} chord (tonic in the bass) held {final:g} beats, after the model's dominant "
               f"seventh: both confined to those chords' notes, the voicing and rhythm the model's.")
    # with notatable, the beat on the grid the sections were composed on; else inferred from the piece
    metre = None if not cfg.notatable else continuation_metre(
        seed.history, draft.body[len(seed.history):], len(seed.states) if cfg.include_seed else 0,
        notatable_phase(seed, cfg))
    return FormResult(out_states, len(seed.states) if cfg.include_seed else 0, key, bpm, seed.source, guards,
                      cfg, metre, form=form.strip().upper(), sections=done, cadence=cadence)
