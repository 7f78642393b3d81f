"""Composing: :func:`generate` continues a :class:`~chopinbot.compose.seeds.Seed`.

The LSTM state is carried forward one state at a time (the seed is read once,
then every step feeds only the new state), where the original design re-ran
the network over its last 16 states at every step.  A step is computed by
:mod:`chopinbot.compose.stepper` (in NumPy on CPU, where a step at batch 1 costs what
its few dozen tiny operations cost to call) and sampled here, in NumPy too.

Decoding: with ``threshold`` a key sounds when its probability reaches it and
the duration is the most likely rhythmic value (the original's deterministic
decoding); otherwise (the default) every key and onset is drawn from its
Bernoulli at ``temperature`` and the duration from its distribution, with
optional top-k / top-p.  A key that starts sounding is always struck, every
new state changes something (a key starts, stops or is struck again; see
:meth:`~chopinbot.compose.sampling.Sampler.__call__`) and at least ``min_keys`` keys sound.  A
``joint_keys`` model's keys are drawn low to high, each from its conditional
given those below it, exactly (:meth:`~chopinbot.compose.sampling.Sampler._draw_joint`); a ``loudness``
model's velocity class is drawn from its loudness head and written into the
generated states (other models' states take the seed's mean velocity).

The step loop lives in :mod:`chopinbot.compose.decoding`, every decoding rule in
:mod:`chopinbot.compose.processors`; a loop is broken where it starts (``loop_states``,
:class:`~chopinbot.compose.processors.LoopBreaker`).

Guards: the original's decoding often collapsed into silence or one stuck
chord.  After generating, the result is checked (no notes; a long stretch with
nothing struck; with the loop breaker off, a short loop repeating); unless ``retry`` is off, it is
generated again with a recorded adjustment (more temperature / a lower
threshold).  A result with no notes at all is an error, never a silent empty file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from chopinbot.compose.decoding import STUCK_STATES, BeatLimit, Decoder, StepLimit, Stuck, history_end_step
from chopinbot.compose.processors import LoopBreak, LoopBreaker
from chopinbot.compose.seeds import Seed
from chopinbot.constants import GRID_PER_BEAT, HIGHEST_PITCH, LOWEST_PITCH, MIN_KEYS, N_KEYS
from chopinbot.errors import ChopinBotError, ConfigError
from chopinbot.model.network import ChopinLSTM
from chopinbot.music.controls import LOUDNESS_LEVELS, Controls, key_profile, loudness_velocity, passage_controls
from chopinbot.music.keys import Key, parse_key
from chopinbot.music.states import States, states_to_notes, states_to_score, transpose_states
from chopinbot.notation.metre import Metre, continuation_metre, infer_states_metre, midi_grid
from chopinbot.notation.spelling import key_sharps
from chopinbot.render.outputs import PieceOutputs

DEFAULT_VELOCITY = 72  # mezzo-forte, when the seed gives none
# Bounds of GenerateConfig's settings: validate() enforces them, and the flags of
# `chopinbot generate` and the web app's controls take theirs from here.
MAX_STEPS = 20_000  # one generation's cap (about 40 minutes of music)
MAX_SECONDS = 3600.0  # one generation's cap in seconds of new music
THRESHOLD_RANGE = (0.0, 1.0)  # a probability
# Sampling temperature: towards 0 sampling becomes the threshold-0.5 decoding
# (--threshold does that), above 3 the keys' probabilities are flattened towards
# a coin toss; a guard's retry never raises the temperature past the top.
TEMPERATURE_RANGE = (0.05, 3.0)
BPM_RANGE = (10.0, 400.0)
# key_min_p: a fraction of the likeliest silent key's probability (1: only the likeliest may start)
KEY_MIN_P_RANGE = (0.0, 1.0)  # key_min_p and key_local_p: fractions
KEY_WINDOW_RANGE = (1, 24)  # semitones either side of a key, for key_local_p
DENSITY_RANGE = (0.5, 40.0)  # notes per second (the corpus's 8-beat windows: 1-20 at their tempo)
MIN_REGISTER_SPAN = 7  # semitones: a narrower register cannot hold a melody's steps
REPEAT_BOOST_RANGE = (1.0, 1000.0)  # 1 = the model's own odds; beyond ~100 every match is copied whole
GUIDANCE_RANGE = (0.0, 8.0)  # style and key guidance: beyond a few the predictions leave anything the model has seen
LOOP_WINDOW = 48  # the last this many states drawn from a cycle of <= 4 states = looping


class GenerationError(ChopinBotError):
    """Generation produced nothing usable (after any retries)."""


@dataclass
class GenerateConfig:
    """How to continue a seed."""

    steps: int | None = 128  # states to generate (ignored when ``seconds`` is set)
    seconds: float | None = None  # generate until the new part lasts this long at ``bpm``
    threshold: float | None = None  # deterministic decoding at this probability; None = sample
    temperature: float = 1.0  # sampling: < 1 safer, > 1 wilder
    key_top_k: int = 0  # sampling: of the keys not sounding, only the k likeliest may start, their
    #                     probabilities scaled up to keep the expected number of new keys (88
    #                     independent draws at ~1.5 % each would add ~1.3 random keys per state); 0 = all.
    #                     Was 8 until 2026-12-01: it let only the melody's neighbours start, and the bass died
    #                     out (key_local_p does the truncation now)
    key_min_p: float = 0.0  # sampling: a silent key may start only if its probability (joint_keys: its
    #                         conditional) is at least this fraction of the likeliest silent key's (0 = off)
    key_local_p: float = 0.5  # sampling: ... only if at least this fraction of the likeliest silent key's
    #                           within key_window semitones, and at least 1 % (0 = off; see compose.sampling)
    key_window: int = 4  # semitones either side, for key_local_p
    top_k: int = 0  # durations: sample among the k most likely rhythmic values (0 = all)
    top_p: float = 0.65  # durations: nucleus sampling (1 = off).  0.5 kept the LSTM's rhythms as steady as real ones
    #                      (at 1 the inter-onset intervals varied far more than Chopin's); with the Transformer 0.65
    #                      is nearer Chopin (valid realism, 12 paired draws: -0.013 +- 0.006; 0.8: +0.027)
    min_keys: int = MIN_KEYS  # at least this many keys sound in every generated state (1: no rests, see constants)
    max_keys: int = 10  # at most this many (two hands)
    bpm: float | None = None  # None = the seed's own tempo
    key: str | None = None  # output key, e.g. "F# minor"; None = the seed's key
    style: str | None = None  # the style (composer) to compose in, for a model with a style input; None = its default
    style_guidance: float | None = None  # a model with a style input: compose further in the style than the model's
    #   own prediction goes (classifier-free guidance, compose.guidance; 0 = off).  None: STYLE_GUIDANCE when a
    #   style other than the model's own is asked for, else off: `--style mozart` then sounds like Mozart without
    #   more flags, and `--style chopin` is the model's own prediction
    key_guidance: float = 0.5  # with hold_key: guide the model towards the key asked, as style_guidance does.  On the
    #                            valid seeds, excerpts in key: 0 -> 88 %, 0.5 -> 100 %; realism 0.92 either way
    #                            (1: 0.96); it costs a second step per state (docs/controls.md)
    key_guidance_drift: float = 3.0  # ... while the last 8 or so beats have left the key (more than a fifth from
    #   it; compose.guidance.KeyDrift); = key_guidance: one weight throughout.  For piano-controls, on the valid
    #   seeds, 0.5 -> 3 took the excerpts in key from other composers' primers from 86 % to 98 % at equal realism
    #   (a fixed weight of 1 held 92 % but cost realism: 0.82 -> 0.87, docs/controls.md)
    # The composer's controls (a model with controls, see chopinbot.music.controls); None = not steered:
    density: float | None = None  # notes per second of the new music
    register: tuple[int, int] | None = None  # its lowest and highest MIDI pitch, in the output key
    loudness: str | None = None  # its dynamic: pp, p, mf, f or ff
    hold_key: bool = True  # steer it to stay in the output key (a model with controls; others only transpose)
    confine_register: bool = True  # with register: keys outside it are never struck (off: the model's steering alone)
    keep_density: bool = True  # with density: tilt the states' lengths to keep it (off: the model's steering alone)
    follow_seed: bool = False  # steer the controls not asked for to the seed's last 8 beats (its density, register,
    #                            loudness): a continuation that keeps the primer's character
    repeat_boost: float = 16.0  # multiply the odds of going on as a passage heard before went (compose.repetition;
    #                             1 = the model's own).  On the valid seeds 1 -> 4 took the realism classifier
    #                             from 0.92 to 0.85 (chopin-controls, 2026-12-02); 4 -> 16 took piano-controls'
    #                             from 0.831 to 0.798, its composed excerpts from 0.850 to 0.807 (six paired
    #                             draws, 2026-12-07; 24 and 32 no better; docs/training-history.md)
    repeat_passes: int = 2  # the boost helps a passage (a figure or a phrase) go round at most this many times in
    #                         a row, then the model alone decides (0 = no limit; compose.repetition).  No Chopin
    #                         piece goes round a phrase twice in full; without a limit 19-24 of 50 pieces did, up
    #                         to 38 times.  Figures were helped round freely until the model, helped at every
    #                         round, stayed in them: limited too, fewer pieces go round a figure beyond Chopin's
    #                         longest run or hold a key beyond his (docs/training-history.md)
    repeat_span: int = 0  # the boost helps a repeat go on for at most this many states in a row, then the model
    #                       alone decides whether it goes on (0 = no limit; compose.repetition.CHOPIN_REPEAT_SPAN).
    #                       Boosted at every state, a repeat the model has found goes on far longer than Chopin's
    #                       (the model alone copies almost nothing).  At 96 states, longer than 97 % of his, the
    #                       minutes played back whole from the piano corpus's valid seeds went from 13 to 3 of 276
    #                       (Chopin's valid seeds: 20-s excerpts over 80 % 0.107 -> 0.051), but the realism test
    #                       liked it less (+0.035 +- 0.010, six paired draws): off, an option for a continuation
    #                       that plays its primer back no longer than Chopin would (docs/training-history.md)
    listen: bool = False  # the note head learns the primer (context and seed, up to 512 states) before composing:
    #                       its chords and voicings (model.adaptation).  Key NLL measured the same way 3.47 -> 3.21
    #                       (valid), 3.91 -> 3.78 (test); realism level on the valid seeds (-0.009 +- 0.012, twelve
    #                       draws) but worse on test (0.59 -> 0.66, scored once; the Mozart style no nearer Mozart):
    #                       off by default (docs/training-history.md)
    loop_states: int = 48  # a cycle of up to 16 states repeated for this many states is broken there: the state
    #                        that would go on with it is drawn again (compose.processors.LoopBreaker; 0 = off).
    #                        The corpus's longest such run is 39 states, so 48 never fires on real Chopin
    chopin_runs: bool = True  # the loop breaker also stops each shorter figure where Chopin's longest of its
    #                           length stops (LONGEST_RUNS: a chord struck at most 11 times in a row, two states
    #                           alternating 17; nothing with the loop breaker off).  With figures helped round
    #                           twice, 33 of 50 one-minute pieces from the valid seeds alone still went round one
    #                           longer (a chord up to 23 times, two states alternating 48); with it none does, a
    #                           minute's share going round one figure is Chopin's (0.28), and the realism test was
    #                           level (twelve paired valid draws: overall +0.011 +- 0.010, composed -0.008 +- 0.023;
    #                           before figures were limited it had liked it less; docs/training-history.md)
    max_hold: float = 0.0  # beats: a key that has sounded this long without being struck again is struck again
    #                        if it goes on (compose.processors.HoldLimit; 0 = off).  At LONGEST_HOLD = 13, the longest
    #                        any key of the 48 pieces is held, no piece holds one longer (19 of 50 one-minute pieces
    #                        did, up to 33 beats), but the realism test liked it less (valid, six paired draws: overall
    #                        +0.009 +- 0.009, composed +0.028 +- 0.012; released instead: +0.027 +- 0.015): off
    max_leap: int | None = None  # semitones: the top voice never climbs more than this at once (None = off;
    #                              compose.processors.MelodyLeap)
    notatable: bool = False  # compose only rhythms a score writes exactly (compose.processors.NotatableRhythm): the
    #                          score then has every onset where the MIDI has it.  Off by default: on the valid seeds
    #                          realism went from 0.831 to 0.853 and, on a second draw, from 0.836 to 0.867 (worse),
    #                          seed replay from 0.13 to 0.10 (docs/sheet-music.md)
    notatable_origin: int | None = None  # with notatable: the grid step of the seed's source (48 a beat) the grid
    #                                     counts from; None: where this composing starts (a form's sections keep
    #                                     the first one's)
    random_seed: int | None = None  # makes sampling reproducible
    include_seed: bool = True  # start the output with the seed
    retry: bool = True  # retry when a guard fires
    max_retries: int = 3

    def validate(self) -> None:
        if self.seconds is None and (self.steps is None or self.steps < 1):
            raise ConfigError("steps must be at least 1")
        if self.steps is not None and self.steps > MAX_STEPS:
            raise ConfigError(f"steps must be at most {MAX_STEPS:,}")
        if self.seconds is not None and not (0 < self.seconds <= MAX_SECONDS):
            raise ConfigError(f"seconds must be in (0, {MAX_SECONDS:g}]")
        if self.threshold is not None and not (THRESHOLD_RANGE[0] <= self.threshold <= THRESHOLD_RANGE[1]):
            raise ConfigError(f"threshold must be between {THRESHOLD_RANGE[0]:g} and {THRESHOLD_RANGE[1]:g}")
        if not (0 <= self.key_top_k <= N_KEYS):
            raise ConfigError(f"key top-k must be 0..{N_KEYS}")
        for name, value in (("min-p", self.key_min_p), ("local p", self.key_local_p)):
            if not (KEY_MIN_P_RANGE[0] <= value <= KEY_MIN_P_RANGE[1]):  # NaN fails too
                raise ConfigError(f"key {name} must be between {KEY_MIN_P_RANGE[0]:g} and {KEY_MIN_P_RANGE[1]:g}")
        if not (KEY_WINDOW_RANGE[0] <= self.key_window <= KEY_WINDOW_RANGE[1]):
            raise ConfigError(f"key window must be {KEY_WINDOW_RANGE[0]}..{KEY_WINDOW_RANGE[1]} semitones")
        if not (TEMPERATURE_RANGE[0] <= self.temperature <= TEMPERATURE_RANGE[1]):  # NaN fails too
            raise ConfigError(f"temperature must be between {TEMPERATURE_RANGE[0]:g} and {TEMPERATURE_RANGE[1]:g} "
                              "(use --threshold for deterministic decoding)")
        if self.top_k < 0 or not (0 < self.top_p <= 1):
            raise ConfigError("top-k must be 0 or more and top-p in (0, 1]")
        if not (0 <= self.min_keys <= self.max_keys <= N_KEYS) or self.max_keys < 1:
            raise ConfigError(f"need 0 <= min-keys <= max-keys <= {N_KEYS} and max-keys >= 1")
        if self.bpm is not None and not (BPM_RANGE[0] <= self.bpm <= BPM_RANGE[1]):
            raise ConfigError(f"bpm must be between {BPM_RANGE[0]:g} and {BPM_RANGE[1]:g}")
        if self.key is not None:
            parse_key(self.key)
        if self.density is not None and not (DENSITY_RANGE[0] <= self.density <= DENSITY_RANGE[1]):
            raise ConfigError(f"density must be {DENSITY_RANGE[0]:g} to {DENSITY_RANGE[1]:g} notes per second")
        if self.register is not None:
            lo, hi = self.register
            if not (LOWEST_PITCH <= lo < hi <= HIGHEST_PITCH):
                raise ConfigError(f"register must be two MIDI pitches, low then high, within "
                                  f"{LOWEST_PITCH}..{HIGHEST_PITCH} (A0..C8), got {lo} {hi}")
            if hi - lo < MIN_REGISTER_SPAN:
                raise ConfigError(f"register must span at least {MIN_REGISTER_SPAN} semitones, got {hi - lo}")
        for name, value in (("style", self.style_guidance or 0.0), ("key", self.key_guidance),
                            ("key drift", self.key_guidance_drift)):
            if not (GUIDANCE_RANGE[0] <= value <= GUIDANCE_RANGE[1]):
                raise ConfigError(f"{name} guidance must be between {GUIDANCE_RANGE[0]:g} and "
                                  f"{GUIDANCE_RANGE[1]:g}")
        if not (REPEAT_BOOST_RANGE[0] <= self.repeat_boost <= REPEAT_BOOST_RANGE[1]):
            raise ConfigError(f"repeat boost must be between {REPEAT_BOOST_RANGE[0]:g} and {REPEAT_BOOST_RANGE[1]:g}")
        if self.repeat_passes < 0:
            raise ConfigError("repeat passes must be 0 (no limit) or more")
        if self.repeat_span < 0:
            raise ConfigError("repeat span must be 0 (no limit) or more states")
        if self.max_leap is not None and not (1 <= self.max_leap <= N_KEYS):
            raise ConfigError(f"max leap must be 1..{N_KEYS} semitones")
        if not (self.max_hold == 0 or 1.0 <= self.max_hold <= 64.0):  # NaN fails too
            raise ConfigError("max hold must be 0 (off) or 1..64 beats")
        if self.loop_states < 0:
            raise ConfigError("loop states must be 0 (off) or more")
        if self.loudness is not None and self.loudness not in LOUDNESS_LEVELS:
            raise ConfigError(f"loudness must be one of {', '.join(LOUDNESS_LEVELS)}, got {self.loudness!r}")

    @property
    def steered(self) -> bool:
        """Whether a control that needs a model with controls is asked for."""
        return self.density is not None or self.register is not None or self.loudness is not None


@dataclass
class GenerationResult(PieceOutputs):
    """A generated piece (seed included or not), in its output key."""

    states: States
    seed_len: int  # how many of ``states`` are the seed (0 if not included)
    key: Key
    bpm: float
    source: str
    guards: list[str] = field(default_factory=list)
    config: GenerateConfig | None = None
    metre: Metre | None = None  # bars and where the first state lies in them (None: inferred from the states)
    seed_metre: Metre | None = None  # the seed's own, from what precedes it alone: the same for every variation
    # what the model read before its new music (the seed and its context), at the seed's pitch: what
    # the new music's replay is measured against (evaluation.figures; None: not kept, e.g. a form's sections)
    history: States | None = None
    loop_breaks: list[LoopBreak] = field(default_factory=list)  # the loops broken in the new music, in order

    @property
    def generated(self) -> States:
        return self.states[self.seed_len :]

    @property
    def seed_end_beat(self) -> float:
        return float(self.states.beats[: self.seed_len].astype(np.float64).sum())

    @property
    def notes(self) -> np.ndarray:
        """(N, 4): start beat, end beat, MIDI pitch, velocity."""
        return states_to_notes(self.states)

    @property
    def seconds(self) -> float:
        return self.states.total_beats * 60.0 / self.bpm

    def score(self, part: str = "all"):
        """The piece (``all``), the ``seed`` or the ``generated`` part as a symusic Score, on the music's
        beat grid with its time and key signatures (:func:`chopinbot.notation.metre.midi_grid`)."""
        st = {"all": self.states, "seed": self.states[: self.seed_len], "generated": self.generated}[part]
        metre = self.metre or infer_states_metre(self.states)
        if part == "seed" and self.seed_metre is not None:
            metre = self.seed_metre
        lead, signatures = midi_grid(metre.shifted(self.seed_end_beat) if part == "generated" else metre)
        return states_to_score(st, bpm=self.bpm, lead_beats=lead, time_signatures=signatures,
                               key_signature=(key_sharps(self.key), int(self.key.minor)))

    def midi_bytes(self, part: str = "all") -> bytes:
        """MIDI of the whole piece (``all``), the ``seed`` or the ``generated`` part."""
        return bytes(self.score(part).dumps_midi())

    def figure(self, title: str | None = None):
        from chopinbot.render.pianoroll import pianoroll_figure  # here: matplotlib loads only for a picture

        return pianoroll_figure(self.notes, bpm=self.bpm, seed_end_beat=self.seed_end_beat if self.seed_len else None,
                                title=title or f"{self.label} in {self.key.name}, {self.bpm:.0f} bpm")

    def summary(self) -> str:
        g = self.generated
        notes = states_to_notes(g)
        poly = g.keys.sum(1)
        guards = "; ".join(self.guards) if self.guards else "none fired"
        return (
            f"{self.summary_lead}{len(g)} new states ({g.total_beats * 60 / self.bpm:.1f} s at {self.bpm:.0f} bpm) "
            f"after the seed {self.source}{'' if self.seed_len else ' (read, not in the output)'}; "
            f"{len(notes)} notes in {self.key.name}; "
            f"polyphony {poly.mean():.1f} keys on average (max {poly.max() if len(poly) else 0}); "
            f"rests {np.mean(poly == 0):.0%} of states; guards: {guards}."
        )


def notatable_origin(seed: Seed, cfg: GenerateConfig) -> int:
    """The grid step of the seed's source that the notatable grid counts from: ``cfg.notatable_origin``,
    or the seed's end (:class:`~chopinbot.compose.processors.NotatableRhythm`)."""
    if cfg.notatable_origin is not None:
        return cfg.notatable_origin
    return history_end_step(seed.history_start_beat, seed.history)


def notatable_phase(seed: Seed, cfg: GenerateConfig) -> int | None:
    """With ``cfg.notatable``: that origin in grid steps from the start of ``seed.history`` (the metre's
    ``grid_phase``); None without."""
    if not cfg.notatable:
        return None
    return notatable_origin(seed, cfg) - int(round(seed.history_start_beat * GRID_PER_BEAT))


def _continue(*args, **kwargs) -> tuple[list[States], list[list[LoopBreak]]]:
    # MKL-DNN's LSTM kernel costs ~5x more than the plain one for a short
    # sequence at batch 1 (8.0 vs 1.6 ms measured here), so it is off while generating.
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        with torch.inference_mode():
            return _continue_steps(*args, **kwargs)
    finally:
        torch.backends.mkldnn.enabled = was


def _continue_steps(model: ChopinLSTM, seeds: list[States], cfg: GenerateConfig, rng: np.random.Generator,
                    steps: int | None, max_beats: float | None, rerun_window: int = 0, start: float = 0.0,
                    stop_when_stuck: bool = False, engine: str = "auto",
                    controls: Controls | None = None) -> tuple[list[States], list[list[LoopBreak]]]:
    """Generate after each seed (all seeds the same length, starting at beat
    ``start`` of their source) by :class:`~chopinbot.compose.decoding.Decoder`; returns the new
    states, and the loops broken in each piece (those within it: a batch's pieces are cut to their own
    length).  With ``stop_when_stuck`` an attempt in which every piece has gone ``STUCK_STATES`` states
    without a struck key ends there (it will be retried), instead of running to full length first.  ``controls``: what a
    model with controls is asked for (in its frame)."""
    B = len(seeds)
    decoder = Decoder(model, seeds, cfg, rng, start, controls, engine, rerun_window)
    stop: list = [StepLimit(steps if steps is not None else MAX_STEPS)]
    if max_beats is not None:
        stop.append(BeatLimit(max_beats, B))
    if stop_when_stuck:
        stop.append(Stuck(B))
    drawn = decoder.run(stop)
    K = np.stack([n.keys for n in drawn], 1)
    onset_steps = np.stack([n.onsets for n in drawn], 1)
    D = np.stack([n.beats for n in drawn], 1).astype(np.float32)
    loud = model.config.loudness
    V = np.stack([n.velocity for n in drawn], 1) if loud else None  # (B, steps) velocities drawn by the loudness head
    result = []
    for b in range(B):
        d = D[b]
        if max_beats is not None:  # trim each piece to its own length
            cut = int(np.searchsorted(np.cumsum(d), max_beats - 1e-9)) + 1
            sl = slice(0, min(cut, len(d)))
        else:
            sl = slice(0, len(d))
        if loud:
            vel = V[b, sl]
        else:
            vel = np.where(onset_steps[b, sl].any(1), seeds[b].velocity[seeds[b].velocity > 0].mean().round()
                           if (seeds[b].velocity > 0).any() else DEFAULT_VELOCITY, 0).astype(np.uint8)
        result.append(States(K[b, sl], onset_steps[b, sl], d[sl], np.zeros(len(d[sl]), np.float32), vel))
    breaks = decoder.loop_breaks()
    return result, [[e for e in breaks[b] if e.state < len(result[b])] for b in range(B)]


def check_guards(new: States, loops: bool = True) -> list[str]:
    """Problems of a generated part, in plain words (empty list = fine).  ``loops``: look for a short
    loop at its end too (off while the loop breaker, ``GenerateConfig.loop_states``, owns loops)."""
    problems = []
    if len(new) == 0 or not new.onsets.any():
        return ["silence: nothing was struck"]
    struck = new.onsets.any(1)
    run = best = 0
    for s in struck:
        run = 0 if s else run + 1
        best = max(best, run)
    if best >= STUCK_STATES:
        problems.append(f"stuck: {best} states in a row with nothing struck")
    if loops and len(new) >= LOOP_WINDOW:
        tail = new[len(new) - LOOP_WINDOW :]
        sig = [hash((tail.keys[i].tobytes(), tail.onsets[i].tobytes(), float(tail.beats[i]))) for i in range(len(tail))]
        for period in (1, 2, 3, 4):
            if all(sig[i] == sig[i - period] for i in range(period, len(sig))):
                problems.append(f"looping: the last {LOOP_WINDOW} states repeat a cycle of {period}")
                break
    return problems


LOOP_BROKEN = "loop broken"  # how the guard line of a loop broken where it started begins


SAID_BREAKS = 4  # the loops broken a guard line describes one by one (the rest are counted)


def describe_break(e: LoopBreak) -> str:
    """What the loop breaker did, in a listener's words."""
    if e.kind == "slide":
        return f"a scale that had gone {e.limit} states one way turned"
    if e.kind == "chopin" and e.period == 1:
        return f"a chord struck {e.limit + 1} times in a row (Chopin's most) was not struck again"
    figure = "a chord struck again and again" if e.period == 1 else f"a figure of {e.period} states"
    if e.kind == "chopin":
        rounds = f"{(e.limit + e.period) / e.period:.1f}".removesuffix(".0")
        return f"{figure} heard {rounds} times in a row (Chopin's most at its length) was not taken round again"
    went = (f"went round for {e.limit} states" if e.kind == "loop"
            else f"filled {e.limit} of the last {LoopBreaker.WINDOW} states")
    return f"{figure} that {went} was stopped and kept out for {LoopBreaker.HOLD} more"


def loop_guard(breaks: list[LoopBreak], seconds: np.ndarray, offset: float = 0.0) -> str:
    """The guard line of a piece in which the loop breaker broke ``breaks`` (``seconds``: each new state's
    length; ``offset``: the seconds before the first, in the piece written), each said with its time."""
    times = "once" if len(breaks) == 1 else f"{len(breaks)} times"
    starts = offset + np.concatenate([[0.0], np.cumsum(np.asarray(seconds, np.float64))])
    said = [f"at {starts[e.state]:.1f} s, {describe_break(e)}" for e in breaks[:SAID_BREAKS]]
    if len(breaks) > SAID_BREAKS:
        said.append(f"and {len(breaks) - SAID_BREAKS} more")
    return f"{LOOP_BROKEN} {times} (at the temperature asked): " + "; ".join(said)


def placed_loop_guards(result: GenerationResult, kept: int, seconds: np.ndarray, offset: float) -> list[str]:
    """``result``'s guards, its loop guard said again for the part of its new music that is kept (the first
    ``kept`` states, lasting ``seconds``) where that part lies in a longer piece, ``offset`` seconds in (a form's
    section, an infilled span; ``generate`` counts from the continuation's own start)."""
    guards = [g for g in result.guards if not g.startswith(LOOP_BROKEN)]
    breaks = [e for e in result.loop_breaks if e.state < kept]
    if breaks:
        guards.append(loop_guard(breaks, seconds, offset))
    return guards


def _adjust(cfg: GenerateConfig, problems: list[str]) -> tuple[GenerateConfig, str]:
    if cfg.threshold is not None and any(p.startswith(("silence", "stuck")) for p in problems):
        t = max(0.05, cfg.threshold - 0.1)
        return replace(cfg, threshold=t), f"threshold lowered to {t:.2f}"
    if cfg.threshold is not None:
        sampled = replace(cfg, threshold=None, temperature=GenerateConfig.temperature)  # the default temperature
        return sampled, "switched from threshold to sampling"
    t = min(cfg.temperature * 1.25, TEMPERATURE_RANGE[1])
    return replace(cfg, temperature=t), f"temperature raised to {t:.2f}"


def output_key(seed: Seed, requested: str | None, guards: list[str]) -> Key:
    """The key a continuation of ``seed`` is written in when ``requested`` (None: the seed's own); a
    request in the other mode gets its relative (a transposition keeps the mode), said in ``guards``."""
    if requested is None:
        return seed.key
    want = parse_key(requested)
    if want.minor != seed.key.minor:
        # Transposition cannot change the mode: keep the signature the user asked for.
        rel = Key((want.tonic + 9) % 12, True) if not want.minor else Key((want.tonic + 3) % 12, False)
        guards.append(f"the seed is in a {'minor' if seed.key.minor else 'major'} key: wrote {rel.name}, "
                      f"the relative of {want.name}")
        return rel
    return want


def requested_controls(model: ChopinLSTM, cfg: GenerateConfig, seed: Seed, key: Key, bpm: float) -> Controls | None:
    """What ``cfg`` asks of a model with controls, in its frame (the seed's home key, beats);
    None for a model without them (which must not be asked: :class:`ConfigError`)."""
    if not model.config.controls:
        if cfg.steered:
            raise ConfigError("density, register and loudness steer a model with controls (e.g. the default "
                              "piano-controls or chopin-controls); this model has none")
        return None
    shift = seed.home.shift_to(key)  # output pitch = model-frame pitch + shift
    own = Controls()
    if cfg.follow_seed:
        h = seed.history
        own = passage_controls(h.onsets, h.beats, h.velocity if (h.velocity > 0).any() else None)
    register = own.register
    if cfg.register is not None:
        lo, hi = (int(np.clip(p - shift - LOWEST_PITCH, 0, N_KEYS - 1)) for p in cfg.register)
        register = (lo, hi)
    return Controls(density=cfg.density * 60.0 / bpm if cfg.density is not None else own.density, register=register,
                    loudness=float(loudness_velocity(cfg.loudness)) if cfg.loudness is not None else own.loudness,
                    key=key_profile(seed.home.minor) if cfg.hold_key else None)


def generate(model: ChopinLSTM, seed: Seed, cfg: GenerateConfig | None = None, batch: int = 1,
             rerun_window: int = 0, engine: str = "auto", controls: Controls | None = None
             ) -> GenerationResult | list[GenerationResult]:
    """Continue ``seed``: one :class:`GenerationResult`, or a list of ``batch``.

    ``rerun_window``: re-read the last this many states from scratch at every
    step, as the original design did (for speed comparisons only).  ``engine``:
    how a step is computed (see :func:`chopinbot.compose.stepper.stepper_for`); every
    engine gives the same music up to float rounding.  ``controls``: what a model
    with controls is asked for, in its frame, instead of what ``cfg`` asks
    (:func:`requested_controls`; e.g. a section in another key or register)."""
    cfg = cfg or GenerateConfig()
    cfg.validate()
    if batch < 1 or batch > 256:
        raise ConfigError("batch must be 1..256")
    if len(seed.states) == 0:
        raise ConfigError("the seed is empty")
    rng = np.random.default_rng(cfg.random_seed)  # None: fresh entropy
    bpm = float(cfg.bpm or seed.bpm)
    max_beats = cfg.seconds * bpm / 60.0 if cfg.seconds is not None else None
    steps = None if cfg.seconds is not None else cfg.steps
    key_guards: list[str] = []
    key = output_key(seed, cfg.key, key_guards)
    if controls is None:
        controls = requested_controls(model, cfg, seed, key, bpm)
    elif not model.config.controls:
        raise ConfigError("controls steer a model with controls; this model has none")
    news, loops = _continue(model, [seed.history] * batch, cfg, rng, steps, max_beats, rerun_window,
                            seed.history_start_beat, stop_when_stuck=cfg.retry and cfg.max_retries > 0 and batch == 1,
                            engine=engine, controls=controls)
    results = []
    seed_metre: Metre | None = None  # computed once: every variation writes the same seed
    for new, broken in zip(news, loops):
        guards = list(key_guards)
        attempt_cfg = cfg
        problems = check_guards(new, loops=not cfg.loop_states)
        tries = 0
        while problems and cfg.retry and tries < cfg.max_retries:
            attempt_cfg, change = _adjust(attempt_cfg, problems)
            guards.append(f"{'; '.join(problems)} -> retried with {change}")
            (new,), (broken,) = _continue(model, [seed.history], attempt_cfg, rng, steps, max_beats, rerun_window,
                                          seed.history_start_beat,
                                          stop_when_stuck=tries + 1 < cfg.max_retries, engine=engine,
                                          controls=controls)
            problems = check_guards(new, loops=not cfg.loop_states)
            tries += 1
        if problems:
            guards.append("; ".join(problems) + (" (kept: --no-retry)" if not cfg.retry else " (after retries)"))
        new.seconds = (new.beats * 60.0 / bpm).astype(np.float32)
        if broken:
            before = float(seed.states.beats.sum()) * 60.0 / bpm if cfg.include_seed else 0.0
            guards.append(loop_guard(broken, new.seconds, before))
        if not new.onsets.any() and not (cfg.include_seed and seed.states.keys.any()):
            raise GenerationError("the model produced only silence, even after retries; try sampling or a lower "
                                  "threshold")
        if seed_metre is None:
            context = seed.history[: len(seed.history) - len(seed.states)]
            seed_metre = continuation_metre(context, seed.history[len(context) :], 0)
        seed_states = seed.states.copy()
        seed_states.seconds = (seed_states.beats * 60.0 / bpm).astype(np.float32)
        full = States.concat([seed_states, new]) if cfg.include_seed else new
        out_states, _ = transpose_states(full, seed.home.shift_to(key))
        # the bars as the seed's source had them (inferred over what the model read and what it wrote)
        metre = continuation_metre(seed.history, new, len(seed.states) if cfg.include_seed else 0,
                                   notatable_phase(seed, cfg))
        results.append(GenerationResult(out_states, len(seed.states) if cfg.include_seed else 0, key, bpm,
                                        seed.source, guards, attempt_cfg, metre, seed_metre, seed.history,
                                        loop_breaks=list(broken)))
    return results[0] if batch == 1 else results
