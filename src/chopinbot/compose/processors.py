"""The decoding rules, each a :class:`StepProcessor`: the hooks the composing loop
(:class:`~chopinbot.compose.decoding.Decoder`) calls at every state, and the rules themselves.

A rule masks the keys' probabilities (a register, a cadence's chord), offers a continuation (a passage heard
before, :mod:`chopinbot.compose.repetition`), tilts or forbids rhythmic values (a density, a notatable
rhythm), rejects a drawn state (a loop, a figure beyond Chopin's runs, a leap), or changes it once drawn (a
held key struck again).  :func:`~chopinbot.compose.decoding.processors_for` turns a ``GenerateConfig`` into
the list; the loop never names a rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chopinbot.compose.guidance import GuidedStepper, KeyDrift
from chopinbot.compose.repetition import LONG_PASSAGE, LONGEST_SLIDE, RepeatBoost
from chopinbot.compose.sampling import DensitySteer
from chopinbot.constants import GRID_PER_BEAT, N_KEYS
from chopinbot.dataset.inputs import NewStates
from chopinbot.music.repeats import moved_by, slide_after
from chopinbot.music.states import States, held_after


class StepProcessor:
    """A decoding rule: a few hooks the loop calls at each state, each a no-op here.

    ``kp``/``op`` are the keys' and onsets' probabilities (n, 88) of the rows being drawn (all the
    pieces, or a joint model's rows still drawing keys), ``prev`` those rows' previous keys."""

    def start(self, stepper) -> None:
        """Once, after the seed is read (``stepper``: what composes, guided or not)."""

    def mask(self, kp: np.ndarray, op: np.ndarray | None, prev: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """The probabilities with the keys this rule forbids (or forces) set to 0 (or 1)."""
        return kp, op

    def propose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """A continuation to offer each piece: keys, onsets (B, 88), rhythmic class (B,) and whether
        there is one (B,); None: none.  The sampler scores it under the model and asks :meth:`accept`."""
        return None

    def accept(self, log_p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) bool: whether to take the proposed continuations whose log probability is ``log_p``."""
        return np.zeros(len(log_p), bool)

    def reject(self, keys: np.ndarray, onsets: np.ndarray) -> np.ndarray:
        """(B,) bool: the drawn states this rule forbids (they are drawn again, as a state that changes
        nothing is; see :meth:`~chopinbot.compose.sampling.Sampler.__call__`)."""
        return np.zeros(len(keys), bool)

    forbids_durations = False  # whether tilt_durations may set a logit to -inf (a value never drawn, nor copied)

    def tilt_durations(self, logits: np.ndarray, struck: np.ndarray) -> np.ndarray:
        """The duration logits (B, V) of states striking ``struck`` (B,) notes, changed or not."""
        return logits

    def settle(self, keys: np.ndarray, onsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The drawn state, changed or not, before its velocity is drawn."""
        return keys, onsets

    def on_state(self, new: NewStates) -> None:
        """After each new state (B pieces; ``new.beats`` in beats)."""


# --------------------------------------------------------------------------- the rules


class RegisterConfinement(StepProcessor):
    """A register asked for (key indices low, high): a key outside it never starts or is struck
    again (one sounding already may go on sounding until released)."""

    def __init__(self, register: tuple[int, int]) -> None:
        k = np.arange(N_KEYS)
        self.outside = (k < register[0]) | (k > register[1])

    def mask(self, kp, op, prev):
        kp = np.where(self.outside & ~prev, 0.0, kp)
        return kp, None if op is None else np.where(self.outside, 0.0, op)


class ChordConfinement(StepProcessor):
    """Only ``allowed`` keys (88,) may sound, and ``bass`` (a key index) is struck in the first state
    (and whenever nothing else sounds): a cadence's chord, its voicing and rhythm the model's."""

    def __init__(self, allowed: np.ndarray, bass: int) -> None:
        self.allowed, self.bass = allowed, bass
        self.force: int | None = bass

    def mask(self, kp, op, prev):
        kp = np.where(self.allowed, kp, 0.0)
        op = None if op is None else np.where(self.allowed, op, 0.0)
        if self.force is not None:
            kp[:, self.force] = 1.0
            if op is not None:
                op[:, self.force] = 1.0
        return kp, op

    def settle(self, keys, onsets):
        keys &= self.allowed
        if self.force is not None or not keys.any():  # the chord's root struck in the bass
            keys[:, self.bass] = onsets[:, self.bass] = True
        onsets &= keys
        return keys, onsets

    def on_state(self, new):
        self.force = None  # the bass is struck once; then the model moves on within the chord


# Per period p = 1..16, the most states in a row repeating the state p before in the 48 performed pieces
# (evaluation.form_measures.loop_runs): one chord 11 (op. 28 no. 17), two states 17 (op. 18); LoopBreaker
LONGEST_RUNS = (11, 17, 11, 27, 20, 38, 14, 39, 26, 33, 11, 37, 13, 14, 15, 31)

LONGEST_HOLD = 13.0  # beats: the longest any key of the 48 pieces sounds without being struck again (the Scherzo of
#                     op. 35; 99th percentile of the pieces' longest 12.5, median 4).  The composer had held chords
#                     for up to 33 beats: 19 of 50 one-minute pieces held a key longer than Chopin ever does


class HoldLimit(StepProcessor):
    """A key sounds at most about ``beats`` beats without being struck again: one that has sounded that long
    and goes on is struck again (released instead, the texture went thin where the chord had stood: valid
    realism +0.027 +- 0.015 against +0.009 +- 0.009 struck again, six paired draws each; off by default, see
    ``GenerateConfig.max_hold``).  ``histories``: what the pieces continue, whose held keys count too."""

    def __init__(self, beats: float, histories: list[States]) -> None:
        self.beats = beats
        self.held = np.zeros((len(histories), N_KEYS))  # beats each key has sounded since it was last struck
        self.struck = np.zeros(len(histories), np.int64)  # states in which a key was struck again so
        keys, onsets = (np.stack([getattr(h, f) for h in histories]).astype(bool) for f in ("keys", "onsets"))
        beats = np.stack([h.beats for h in histories])
        for s in range(keys.shape[1]):  # the histories' states, all pieces at once (as on_state reads them)
            self.held = held_after(self.held, keys[:, s], onsets[:, s], beats[:, s, None])

    def settle(self, keys, onsets):
        over = keys & ~onsets & (self.held >= self.beats)
        if over.any():
            onsets = onsets | over
            self.struck += over.any(-1)
        return keys, onsets

    def on_state(self, new):
        self.held = held_after(self.held, new.keys, new.onsets, new.beats[:, None])


class KeepDensity(StepProcessor):
    """A density asked for, kept by tilting each state's length (:class:`~chopinbot.compose.sampling.DensitySteer`)."""

    def __init__(self, steer: DensitySteer) -> None:
        self.steer = steer

    def tilt_durations(self, logits, struck):
        return self.steer.tilt(logits, struck)

    def on_state(self, new):
        self.steer.update(new.onsets, new.beats)


class Repeat(StepProcessor):
    """The repeat boost (:class:`~chopinbot.compose.repetition.RepeatBoost`): a passage heard before
    goes on as it went, with its odds multiplied."""

    def __init__(self, boost: RepeatBoost) -> None:
        self.boost = boost

    def propose(self):
        return self.boost.candidates()

    def accept(self, log_p, rng):
        return self.boost.take(log_p, rng)

    def on_state(self, new):
        self.boost.update(new.keys, new.onsets, new.beats)


class FollowKeyDrift(StepProcessor):
    """The key guidance's weight follows the music (:class:`~chopinbot.compose.guidance.KeyDrift`):
    this processor is the only writer of the guided stepper's weight."""

    def __init__(self, drift: KeyDrift) -> None:
        self.drift = drift
        self.stepper: GuidedStepper | None = None

    def start(self, stepper):
        self.stepper = stepper
        stepper.weight = self.drift.weights

    def on_state(self, new):
        self.drift.update(new.keys, new.beats)
        self.stepper.weight = self.drift.weights


@dataclass(frozen=True)
class LoopBreak:
    """One loop the :class:`LoopBreaker` broke, for the user's guard line: where and which rule.

    ``kind``: "chopin" (a figure of ``period`` states stopped where Chopin's longest run at that period,
    ``limit`` states each repeating the one ``period`` before, stops), "loop" (one that went round for
    ``limit`` states), "near" (one heard in ``LoopBreaker.NEAR`` of its last ``WINDOW`` states) or "slide"
    (a scale turned after ``limit`` states one way; ``period`` 1)."""

    state: int  # the first state drawn instead: its index among the new states
    kind: str
    period: int
    limit: int


class LoopBreaker(StepProcessor):
    """A loop is broken where it starts, at the temperature asked, and stays broken a while.

    A loop: the piece's last ``states`` states each repeat the state ``p`` before them in keys and
    onsets (any period ``p`` up to ``MAX_PERIOD``), or ``NEAR`` of its last ``WINDOW`` do (a figure
    going round with a state changed now and then, which a run never reaches).  Then the state that
    would go on with the cycle is forbidden (drawn again); and for the next ``HOLD`` states, so is any
    state that repeats the one ``p`` before, or a multiple of ``p`` before (a two-note trill repeats at
    2, 4, 6, ...).  Broken once and let go, a model that wants the figure goes straight back into it
    (measured: a 42-s trill, the cycle broken every 48 states after a single state drawn again).
    ``HOLD`` is 16 (one cycle of the longest period watched): held for 48 states instead, the valid
    pieces' realism draws were told from Chopin more often (0.837 against 0.825 with nothing held,
    six draws; 16: 0.831), the music scattered where it had looped.

    Calibrated on the 48 pieces of the bundled corpus: their longest run, at any period up to 16, is 39
    states (op. 53, period 8; the figures of op. 25 no. 1 and op. 66: 37 and 24), lengths compared or
    not, and the most of 96 states in a row repeating one period is 76 (op. 28 no. 8; op. 25 no. 1:
    73), so neither 48 nor 84 of 96 fires on real Chopin, while a five-note figure stuck for three
    bars is caught.  Lengths are not compared: a chord struck again and again in varying lengths is a
    loop too.  Constant time per state: a ring of the last ``MAX_PERIOD`` states, and per period a run
    length, the repeats among the last ``WINDOW`` states and the state until which it stays forbidden.

    With ``chopin_runs`` (on by default since figures are helped round only twice) shorter runs are bounded too, each
    period by Chopin's own longest (``LONGEST_RUNS``): a chord struck more than 11 times in a row, two states
    alternating more than 17.  The state that would go one further is drawn again; nothing is held out after
    it (Chopin strikes a chord again soon after his longest run, so a hold would fire on real music: 86
    states of the 48 pieces), and the 48-state rule above still catches a figure that keeps coming back.
    The composer had struck one chord up to 49 times in a row.

    A slide is a loop moved as it goes: each state the one before moved up (or each down) by one interval,
    a scale.  The model, once in a chromatic scale, went on with it for 61 states down the keyboard,
    three times in a minute; Chopin's go one way for at most 28 states (op. 53; evaluation.form_measures.
    longest_slide).  So after ``MAX_SLIDE`` such states the next may not go on the same way."""

    MAX_PERIOD = LONG_PASSAGE  # a figure; a longer passage is a phrase, whose passes the repeat boost limits
    HOLD = MAX_PERIOD  # states a broken cycle stays forbidden: one whole cycle of the longest period watched
    WINDOW = 96  # states (evaluation.form_measures.FIGURE_WINDOW)
    NEAR = 84  # of the last WINDOW states repeating one period: a loop (real Chopin: at most 76)
    MAX_SLIDE = LONGEST_SLIDE  # states in a row each moving the one before the same way (real Chopin: at most 28)

    def __init__(self, states: int, histories: list[States], chopin_runs: bool = False) -> None:
        self.states = states
        B, P, W = len(histories), self.MAX_PERIOD, self.WINDOW
        # per period: the most states in a row that may repeat the state p before (Chopin's longest at p with
        # chopin_runs, else ``states``); never above ``states``: a run at a loop's length is at its limit too
        self.limits = np.minimum(states, LONGEST_RUNS[:P]) if chopin_runs else np.full(P, states)
        self.ring = np.zeros((B, P, 2 * N_KEYS // 8), np.uint8)  # the last P states, newest first, packed
        self.runs = np.zeros((B, P), np.int64)  # for each period p: states in a row equal to the one p before
        self.repeats = np.zeros((B, P, W), bool)  # for each period: which of the last W states repeated (by t % W)
        self.counts = np.zeros((B, P), np.int64)  # ... and how many
        self.forbidden_until = np.zeros((B, P), np.int64)  # for each period: the state count it is forbidden to
        self.multiples = (np.arange(1, P + 1)[None, :] % np.arange(1, P + 1)[:, None]) == 0  # [p, q]: p divides q
        self.breaks = np.zeros(B, np.int64)  # new states drawn while a loop was forbidden
        packed = np.stack([self._pack(h.keys, h.onsets) for h in histories])  # (B, S, bytes)
        S = packed.shape[1]
        for p in range(1, min(P, S - 1) + 1):  # each period's run and repeats at the histories' end
            same = (packed[:, p:] == packed[:, :-p]).all(-1)  # (B, S - p): state p + i repeats state i
            last_break = np.where(~same, np.arange(S - p), -1).max(-1)
            self.runs[:, p - 1] = S - p - 1 - last_break
            pos = np.arange(max(p, S - W), S)  # the states of the window that have one p before
            self.repeats[:, p - 1, pos % W] = same[:, pos - p]
        self.counts = self.repeats.sum(-1)
        k = min(P, S)
        self.ring[:, :k] = packed[:, ::-1][:, :k]
        self.t = S  # states read (the histories' included)
        self.t0 = S  # ... before the first new one
        # the slide at the histories' end: how many states in a row moved the one before which way (-1, 0, 1)
        self.last = np.stack([h.keys[-1] for h in histories]).astype(bool)
        self.slide, self.direction = np.zeros(B, np.int64), np.zeros(B, np.int64)
        self.turned = np.zeros(B, bool)  # this state: a draw would have gone on sliding past MAX_SLIDE
        # this state: the shortest period at which a draw would have gone round a figure past its limit (0: none)
        self.stopped_period = np.zeros(B, np.int64)
        self.events: list[list[LoopBreak]] = [[] for _ in range(B)]  # each loop broken, for the guard line
        tail = np.stack([h.keys[-self.MAX_SLIDE - 1:] for h in histories]).astype(bool)
        for i in range(1, tail.shape[1]):
            self._slid(np.sign(moved_by(tail[:, i - 1], tail[:, i])))

    @property
    def loops(self) -> np.ndarray:
        """(B,) loops broken in each piece: a cycle reached ``states``, ``NEAR`` or its period's limit, or a slide."""
        return np.array([len(e) for e in self.events], np.int64)

    @staticmethod
    def _pack(keys: np.ndarray, onsets: np.ndarray) -> np.ndarray:
        """(B, bytes): each state's keys and onsets, packed to compare at once."""
        return np.concatenate([np.packbits(keys.astype(bool), -1), np.packbits(onsets.astype(bool), -1)], 1)

    def _reached(self) -> np.ndarray:
        """(B, P): the cycles that have gone on long enough to be a loop."""
        return (self.runs >= self.states) | (self.counts >= self.NEAR)

    def _slid(self, step: np.ndarray) -> None:
        """One more state, which moved the one before it ``step`` (B,) -1 (down), 1 (up) or 0 (not a move)."""
        self.slide = slide_after(self.slide, self.direction, step)
        self.direction = step

    def reject(self, keys, onsets):
        bad = np.zeros(len(keys), bool)
        if self.slide.max() >= self.MAX_SLIDE:  # (a scalar test: this runs at every draw)
            bad = (self.slide >= self.MAX_SLIDE) & (np.sign(moved_by(self.last, keys)) == self.direction)
            self.turned |= bad  # a draw (or a copy) that would have gone on sliding: the slide is turned
        # (B, P): the periods at which the next state may not repeat the state that far before: a run as long
        # as it may go (``states``, or with chopin_runs Chopin's at that period), a loop of NEAR, one held out
        at_limit = self.runs >= self.limits
        looping = at_limit | (self.counts >= self.NEAR) | (self.t < self.forbidden_until)
        if not looping.any():
            return bad
        # the cycle of period p goes on with the state p - 1 before the newest: ring row p - 1
        same = (self.ring == self._pack(keys, onsets)[:, None]).all(-1)
        hit = same & at_limit
        first = hit.any(-1) & (self.stopped_period == 0)
        self.stopped_period = np.where(first, hit.argmax(-1) + 1, self.stopped_period)
        return bad | (same & looping).any(-1)

    def _event(self, b: int, reached: np.ndarray) -> LoopBreak:
        """The loop piece ``b`` broke at this state (``reached``: (P,) its cycles that had become loops)."""
        state = self.t - self.t0
        if self.turned[b]:
            return LoopBreak(state, "slide", 1, self.MAX_SLIDE)
        if self.stopped_period[b]:
            p = int(self.stopped_period[b])
            limit = int(self.limits[p - 1])
            return LoopBreak(state, "chopin" if limit < self.states else "loop", p, limit)
        p = int(reached.argmax()) + 1
        if self.runs[b, p - 1] >= self.states:
            return LoopBreak(state, "loop", p, self.states)
        return LoopBreak(state, "near", p, self.NEAR)

    def on_state(self, new):
        reached, held = self._reached(), self.t < self.forbidden_until
        at_limit = self.runs >= self.limits  # a run at its period's limit (``reached``'s runs among them)
        self.breaks += (at_limit | reached | held).any(-1) | (self.slide >= self.MAX_SLIDE)
        # a new loop or a figure stopped at its period's limit (not one held out already); a slide turned
        broke = ((reached.any(-1) | (self.stopped_period > 0)) & ~held.any(-1)) | self.turned
        for b in np.flatnonzero(broke):  # seldom: a few times a piece at most
            self.events[b].append(self._event(b, reached[b]))
        self.stopped_period[:] = 0
        self.turned[:] = False
        self._slid(np.sign(moved_by(self.last, new.keys)))
        self.last = np.asarray(new.keys, bool)
        triggered = reached.astype(np.int64) @ self.multiples > 0  # (B, P): the cycles and their multiples
        self.forbidden_until = np.where(triggered, self.t + 1 + self.HOLD, self.forbidden_until)
        rows = self._pack(new.keys, new.onsets)
        same = (self.ring == rows[:, None]).all(-1)
        self.runs = np.where(same, self.runs + 1, 0)
        slot = self.t % self.WINDOW
        self.counts += same.astype(np.int64) - self.repeats[:, :, slot]
        self.repeats[:, :, slot] = same
        self.ring[:, 1:] = self.ring[:, :-1]
        self.ring[:, 0] = rows
        self.t += 1


class MelodyLeap(StepProcessor):
    """The top voice climbs at most ``semitones`` at a time: while keys sound, no key more than that
    above the highest of them may start.  Chopin's top voice moves 4.3 semitones a step on average,
    the model's 6.3 (docs/report): most of the difference is leaps up into a new register.  A leap
    down is left alone (the top voice falls when its note is released, which no mask can stop)."""

    def __init__(self, semitones: int) -> None:
        self.semitones = semitones

    def mask(self, kp, op, prev):
        sounding = prev.any(-1)
        top = np.where(sounding, N_KEYS - 1 - np.argmax(prev[:, ::-1], -1), N_KEYS)  # (n,) highest key sounding
        above = np.arange(N_KEYS) > (top + self.semitones)[:, None]  # never true for a row with nothing sounding
        kp = np.where(above & ~prev, 0.0, kp)
        return kp, None if op is None else np.where(above, 0.0, op)


class NotatableRhythm(StepProcessor):
    """Every new state boundary lands where a score writes it exactly: on the 1/24-beat grid (an
    even number of the 48 steps: sixteenths, thirty-seconds, triplets and sextuplets, not
    sixty-fourths) counted from where the composing starts (the seed's end, wherever that lies).
    Each beat of the score is then all on the triplet grid or all on the plain one
    (:mod:`chopinbot.notation.rhythm`), wherever its metre puts the beat on that grid
    (:func:`~chopinbot.notation.metre.infer_metre`'s ``grid_phase``).  A value that would leave the
    grid is never drawn (its logit -inf), and a passage the repeat boost copies goes on with each
    length moved to the nearest allowed one (``forbids_durations``: the sampler checks copies too).
    Composed freely, the shipped model draws a boundary the score must move at about 1 % of them (a
    5/48-beat value, or a sixty-fourth in a beat that also has a triplet); in the corpus 1.7 % of the
    boundaries fall on a sixty-fourth and 3.8 % on no written value at all.  When no value fits (a
    model whose values are all odd) the model's own choice stands."""

    forbids_durations = True

    def __init__(self, batch: int, class_beats: np.ndarray, end_steps: np.ndarray | None = None,
                 origin: int | None = None) -> None:
        """``end_steps``: where each history ends, in grid steps of its source; ``origin``: the step the
        grid counts from (a form's sections and cadence keep the grid of the seed's end); None: each
        history's end."""
        self.units = np.round(np.asarray(class_beats, np.float64) * GRID_PER_BEAT).astype(np.int64)  # (V,)
        self.pos = np.zeros(batch, np.int64)  # (B,) grid steps from the origin, modulo 2
        if origin is not None and end_steps is not None:
            self.pos = (np.asarray(end_steps, np.int64) - origin) % 2

    def allowed(self) -> np.ndarray:
        """(B, V) bool: the values each piece may take next."""
        return (self.pos[:, None] + self.units[None, :]) % 2 == 0

    def tilt_durations(self, logits, struck):
        ok = self.allowed()
        ok |= ~ok.any(-1, keepdims=True)  # nothing fits: the model's own choice
        return np.where(ok, logits, -np.inf)

    def on_state(self, new):
        self.pos = (self.pos + np.round(np.asarray(new.beats, np.float64) * GRID_PER_BEAT).astype(np.int64)) % 2
