"""The composing loop: one loop, with the decoding rules as a list of small processors.

Every piece of music ChopinBot composes -- a continuation (:func:`~chopinbot.compose.generate.generate`),
each section of a form and its cadence (:mod:`chopinbot.compose.form`), an infill's candidates
(:mod:`chopinbot.compose.infill`) -- is drawn by :class:`Decoder`, state after state:

1. the :class:`~chopinbot.compose.sampling.Sampler` draws the next state from the step's outputs,
   asking each processor to ``mask`` the keys' probabilities (and each conditional of a joint model),
   to ``propose`` a continuation (a passage heard before), and to ``tilt_durations``;
2. each processor may ``settle`` the drawn state (a cadence's chord root struck);
3. a loudness model's velocity is drawn;
4. each processor sees the new state (``on_state``: trackers, the key guidance's weight);
5. the stopping criteria (a list too: :class:`StepLimit`, :class:`BeatLimit`, :class:`Stuck`) decide
   whether to go on; if so, the state is fed to the model (one step).

The loop never names a rule (Hugging Face's ``LogitsProcessorList`` and ``StoppingCriteriaList`` have
this shape).  :func:`processors_for` is the one factory that turns a ``GenerateConfig`` (and the controls
asked) into the processor list and the stepper (guidance stays a stepper wrapper, :func:`guided_stepper`:
it changes the rows stepped).  A new decoding rule is one
:class:`~chopinbot.compose.processors.StepProcessor` class (the rules live in
:mod:`chopinbot.compose.processors`), one config field and one line in :func:`processors_for`, and it then
applies everywhere, cadences included.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from chopinbot.compose.guidance import STYLE_GUIDANCE, GuidedStepper, KeyDrift, key_request_columns
from chopinbot.compose.processors import (
    FollowKeyDrift,
    HoldLimit,
    KeepDensity,
    LoopBreak,
    LoopBreaker,
    MelodyLeap,
    NotatableRhythm,
    RegisterConfinement,
    Repeat,
    StepProcessor,
)
from chopinbot.compose.repetition import RepeatBoost
from chopinbot.compose.sampling import DecodingSettings, DensitySteer, Sampler
from chopinbot.compose.stepper import InputBuilder, NumpyStepper, stepper_for
from chopinbot.constants import GRID_PER_BEAT
from chopinbot.dataset.conditioning import StyleBlock
from chopinbot.dataset.inputs import NewStates, continuation_trackers
from chopinbot.errors import ConfigError
from chopinbot.model.adaptation import listened
from chopinbot.music.controls import Controls
from chopinbot.music.keys import ALL_KEYS, histogram_key_correlations
from chopinbot.music.states import States

STUCK_STATES = 24  # this many states in a row with nothing struck = stuck


# --------------------------------------------------------------------------- stopping


class StopCriterion(Protocol):
    def __call__(self, new: NewStates, count: int) -> bool:
        """After the ``count``-th new state: whether to stop (every piece of the batch is done)."""
        ...


class StepLimit:
    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, new, count):
        return count >= self.steps


class BeatLimit:
    """Stop once every piece lasts ``beats``."""

    def __init__(self, beats: float, batch: int) -> None:
        self.beats, self.total = beats, np.zeros(batch)

    def __call__(self, new, count):
        self.total += new.beats
        return bool((self.total >= self.beats).all())


class Stuck:
    """Stop once every piece has gone ``STUCK_STATES`` states without a struck key (it will be retried)."""

    def __init__(self, batch: int, states: int = STUCK_STATES) -> None:
        self.states, self.quiet = states, np.zeros(batch, np.int64)

    def __call__(self, new, count):
        self.quiet = np.where(new.onsets.any(-1), 0, self.quiet + 1)
        return bool((self.quiet >= self.states).all())


# --------------------------------------------------------------------------- the factory


class ComposeSettings(DecodingSettings, Protocol):
    """What the factory reads of a :class:`~chopinbot.compose.generate.GenerateConfig`."""

    style: str | None
    style_guidance: float | None
    key_guidance: float
    key_guidance_drift: float
    register: tuple[int, int] | None
    confine_register: bool
    keep_density: bool
    repeat_boost: float
    repeat_passes: int
    repeat_span: int
    listen: bool
    loop_states: int
    chopin_runs: bool
    max_hold: float
    max_leap: int | None
    notatable: bool
    notatable_origin: int | None


def guided_stepper(model, layout, cfg: ComposeSettings, controls: Controls | None, engine: str, batch: int):
    """The stepper that composes ``batch`` pieces: the model's own, or guided (:mod:`chopinbot.compose.guidance`)
    towards the style asked (``style_guidance``) and the key held (``key_guidance``), each guidance
    doubling the rows stepped."""
    guides = []  # (columns of the row that say what is asked, weight, name), innermost first
    styled = any(isinstance(b, StyleBlock) for b in layout.blocks)
    style_weight = cfg.style_guidance
    if style_weight is None:  # the default: guided when another style than the model's own is asked for
        home = cfg.style is None or cfg.style == model.config.default_style
        style_weight = STYLE_GUIDANCE if styled and not home else 0.0
    if style_weight:
        if not styled:
            raise ConfigError("style guidance needs a model with a style input (see `chopinbot styles`)")
        guides.append((layout.style_columns(), style_weight, "style"))
    if (cfg.key_guidance or cfg.key_guidance_drift) and controls is not None and controls.key is not None:
        guides.append((key_request_columns(layout), cfg.key_guidance, "key"))
    rows = batch * 2 ** len(guides)
    # a batch-1 piece's guided rows step fastest in NumPy too (as batch 1 does)
    if guides and engine == "auto" and batch == 1 and NumpyStepper.supports(model):
        engine = "numpy"
    stepper = stepper_for(model, engine, rows)
    for columns, weight, name in guides:
        stepper = GuidedStepper(stepper, columns, weight, name)
    return stepper


def history_end_step(start_beat: float, history: States) -> int:
    """Where ``history`` (starting at beat ``start_beat`` of its source) ends, in grid steps of its source."""
    return int(round(start_beat * GRID_PER_BEAT)) + int(history.grid_units().sum())


def processors_for(model, cfg: ComposeSettings, controls: Controls | None, stepper, histories: list[States],
                   start_beat: float = 0.0, inputs: InputBuilder | None = None) -> list[StepProcessor]:
    """The decoding rules ``cfg`` asks for, as processors, for pieces continuing ``histories`` (the
    model's frame, starting at beat ``start_beat`` of their source) with ``controls`` (a model with
    controls; None: none) composed by ``stepper``, whose input rows ``inputs`` builds (the repeat boost
    reads the repeats its input blocks look up; None: it looks them up itself)."""
    B = len(histories)
    keys = np.stack([h.keys for h in histories])
    processors: list[StepProcessor] = []
    if controls is not None and cfg.register is not None and cfg.confine_register:  # only a register asked for
        processors.append(RegisterConfinement(controls.register))
    if controls is not None and controls.density is not None and cfg.keep_density:
        processors.append(KeepDensity(DensitySteer(controls.density, B, model.config.duration_classes)))
    if cfg.repeat_boost > 1.0 and model.config.duration_head == "classes":  # the original's seed head has no class
        trackers = None if inputs is None else continuation_trackers(inputs.trackers)
        processors.append(Repeat(RepeatBoost(cfg.repeat_boost, keys.astype(bool),
                                             np.stack([h.onsets for h in histories]).astype(bool),
                                             np.stack([h.beats for h in histories]), model.config.duration_classes,
                                             cfg.repeat_passes, trackers, span=cfg.repeat_span)))
    if cfg.loop_states:
        processors.append(LoopBreaker(cfg.loop_states, histories, cfg.chopin_runs))
    if cfg.max_hold:
        processors.append(HoldLimit(cfg.max_hold, histories))
    if cfg.max_leap is not None:
        processors.append(MelodyLeap(cfg.max_leap))
    if cfg.notatable and model.config.duration_head == "classes":
        ends = [history_end_step(start_beat, h) for h in histories]
        processors.append(NotatableRhythm(B, model.config.duration_classes, np.asarray(ends), cfg.notatable_origin))
    if isinstance(stepper, GuidedStepper) and stepper.name == "key" and cfg.key_guidance_drift != cfg.key_guidance:
        # the key the requested pitch-class shares fit best (C major or A minor in the model's frame)
        asked = ALL_KEYS[int(histogram_key_correlations(np.asarray(controls.key)).argmax())]
        processors.append(FollowKeyDrift(KeyDrift(asked, keys, np.stack([h.beats for h in histories]),
                                                  cfg.key_guidance, cfg.key_guidance_drift)))
    return processors


# --------------------------------------------------------------------------- the loop


class Decoder:
    """Composes after ``histories`` (the model's frame, all the same length, starting at beat
    ``start_beat`` of their source), with the stepper and the processors :func:`guided_stepper` and
    :func:`processors_for` build from ``cfg``; :meth:`run` draws states until a
    stopping criterion says so, and may be called again to go on (with other extra processors)."""

    def __init__(self, model, histories: list[States], cfg: ComposeSettings, rng: np.random.Generator,
                 start_beat: float = 0.0, controls: Controls | None = None, engine: str = "auto",
                 rerun_window: int = 0) -> None:
        B = len(histories)
        self.model, self.cfg, self.rng = model, cfg, rng
        self.inputs = InputBuilder(model, np.stack([h.keys for h in histories]),
                                   np.stack([h.onsets for h in histories]), np.stack([h.beats for h in histories]),
                                   start_beat, np.stack([h.velocity for h in histories]), style=cfg.style,
                                   controls=controls)
        x_seed = self.inputs.seed_inputs
        if cfg.listen:  # the note head learns the primer first (a model that cannot listen composes as it is)
            # generate's rows share one primer (its variations): it is learnt once
            one = all(h is histories[0] for h in histories)
            rows = slice(0, 1) if one else slice(None)
            model = listened(model, x_seed[rows], np.stack([h.keys for h in histories])[rows],
                             np.stack([h.onsets for h in histories])[rows])
        self.stepper = guided_stepper(model, self.inputs.layout, cfg, controls, engine, B)
        self.out = self.stepper.start(x_seed)  # the seed is read in one call; then each step feeds one new state
        self.processors = processors_for(model, cfg, controls, self.stepper, histories, start_beat, self.inputs)
        for p in self.processors:
            p.start(self.stepper)
        self.sampler = Sampler(model, cfg, rng, self.stepper)
        self.prev = np.stack([h.keys[-1] for h in histories]).astype(bool)
        self.class_beats = np.asarray(model.config.duration_classes)
        self.rerun_window = rerun_window
        self.window = list(x_seed.transpose(1, 0, 2)) if rerun_window else []
        self.pending: NewStates | None = None  # the last state drawn, not yet fed to the model

    def loop_breaks(self) -> list[list[LoopBreak]]:
        """Each piece's loops broken, in order: where, and which rule (none with the breaker off)."""
        breakers = [p for p in self.processors if isinstance(p, LoopBreaker)]
        return [sorted((e for p in breakers for e in p.events[b]), key=lambda e: e.state)
                for b in range(len(self.prev))]

    def _feed(self, new: NewStates) -> None:
        x = self.inputs(new.keys, new.onsets, new.cls, new.velocity)
        if self.rerun_window:  # the original's way, for comparison: re-read the last window from scratch
            self.window.append(x)
            self.out = self.stepper.rerun(np.stack(self.window[-self.rerun_window :], 1))
        else:
            self.out = self.stepper.step(x)

    def run(self, stop: list[StopCriterion], extra: list[StepProcessor] | tuple = ()) -> list[NewStates]:
        """New states, one :class:`NewStates` (B pieces) each, until one of ``stop`` says so; ``extra``:
        processors for this run only, after the config's own."""
        processors = [*self.processors, *extra]
        self.sampler.processors = processors
        loud = self.model.config.loudness
        drawn: list[NewStates] = []
        while True:
            if self.pending is not None:
                self._feed(self.pending)
                self.pending = None
            keys, onsets, cls = self.sampler(*self.out, self.prev)
            for p in processors:
                keys, onsets = p.settle(keys, onsets)
            vel = self.sampler.loudness(self.stepper.loudness, onsets.any(-1)) if loud else None
            new = NewStates(keys, onsets, cls, self.class_beats[cls], vel)
            drawn.append(new)
            for p in processors:
                p.on_state(new)
            self.prev = keys
            self.pending = new
            if any([s(new, len(drawn)) for s in stop]):  # a list: every criterion counts every state
                return drawn
