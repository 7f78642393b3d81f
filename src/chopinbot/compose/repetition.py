"""Repetition at the draw: a passage heard before is more likely to go on as it went.

Chopin repeats: an accompaniment figure every beat, a motif a bar later, a
sequence a step higher.  In the valid pieces 61 % of the states continue an
exact earlier passage (63 % a transposed one); in the shipped model's
continuations only 9 % (8 %), and the realism classifier's strongest cue was
exactly that (recurring top-voice and bass 4-interval figures, 0.05 against
0.40).  The model reads the continuation of the longest earlier match (its
repeats input, :mod:`chopinbot.music.repeats`), and copies it where it has
matched long enough; but a sampled state rarely equals an earlier one to
begin with, so matches seldom start and the input is seldom on.

:class:`RepeatBoost` multiplies the odds of that continuation by ``boost``
at the draw.  With ``P`` the model's probability of the continuation
(keys jointly, onsets, rhythmic value: one more conditional evaluation of a
joint model), it is taken with probability ``boost*P / (1 + (boost-1)*P)``,
otherwise the state is drawn from the model as usual.  It is a cache model
(Grave et al., 2017) mixed in by product rather than by sum: a continuation
the model finds implausible (a harmony that has moved on, a key outside the
register asked for) stays implausible, and one it already expects becomes
likely.  It applies to models whose durations are rhythmic classes (every
model since the first; the original design's 20-node duration head has no
class to copy, and composes without it).
"""

from __future__ import annotations

import numpy as np

from chopinbot.music.repeats import ContinuationTracker

KINDS = ("exact", "transposed")
# The boost helps a passage -- a figure or a phrase -- go round at most ``passes`` times in a row; after that
# the model alone decides.  In the 48 pieces a passage longer than 16 states never went round twice in full
# (the most: 1.27 times for 17-64 states, 1.62 beyond; one time = a repeat heard once, A A), where the boost
# alone took a 7-s phrase round 8 times.  A figure of up to 16 states goes round more (an accompaniment:
# 2.2 times in a row in the median piece, 11 at most), and the boost used to help it round freely: the
# model, helped at every round, then stayed in it.  Of 50 one-minute pieces from the valid seeds (seed alone /
# 512 states of context), helped twice and then left to the model: pieces going round a figure longer than
# Chopin ever does at its length 40 -> 33 / 40 -> 29, loops run into the loop breaker's 48 states 75 -> 23 /
# 72 -> 21, pieces holding a key beyond his 13 beats 18 -> 8 / 20 -> 10; the Mozart style came nearer Mozart
# (valid margin 0.049 -> 0.081).  The realism test was level overall (-0.003 +- 0.014, twelve paired draws)
# and a little against it from the seed alone (+0.023 +- 0.009), where a chord struck again and again reads
# as a steady bass under a top voice that hardly moves (docs/training-history.md).  LONG_PASSAGE is where a
# figure ends and a phrase begins: figures are the loop breaker's (compose.processors.LoopBreaker), phrases are
# measured by evaluation.form_measures.phrase_passes
LONG_PASSAGE = 16
# A slide (each state the one before moved up, or each down: a scale) goes on for at most this many states in the
# 48 pieces (the Polonaise op. 53; 24 in the Prelude op. 28 no. 24, over 68 semitones; half their key segments at
# most 2): the loop breaker turns one there, and evaluation.form_measures.longest_slide is measured against it
LONGEST_SLIDE = 28

# How long a repeat goes on.  In the 37 training pieces of the 48, a repeat of a passage more than LONG_PASSAGE
# states back that has gone on 8 states stops within 32 states 79 % of the time, within 64 93 %, within 96 97 %
# (566 such repeats; the longest 409).  The model alone, trained on them, copies almost nothing (whole minutes
# from the piano corpus's valid seeds: a mean replay of 0.005 against 0.110 for what really followed), because
# a sampled state seldom starts a match; boosted at every state, a repeat it has found seldom stops: 13 of 276
# minutes were over 80 % played back, 10 of them where the piece itself moved on.  Helped for at most this many
# states (``span``): 3 of 276, a mean of 0.116 (scripts/replay_spread.py).  The realism test liked the copies
# better (docs/training-history.md), so the limit is an option (GenerateConfig.repeat_span)
CHOPIN_REPEAT_SPAN = 96


class RepeatBoost:
    """The continuation of each piece's longest earlier match, and the odds boost at its draw."""

    # a passage of at most this many states that repeats in place goes round freely with the boost's help (0: none;
    # LONG_PASSAGE until figures were limited too, see above: the tests that replay pieces heard then set it back)
    FREE_PERIOD = 0

    def __init__(self, boost: float, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray,
                 classes: np.ndarray, passes: int = 0, trackers: dict[str, ContinuationTracker] | None = None,
                 *, span: int = 0) -> None:
        """``keys``/``onsets`` (B, S, 88) and ``beats`` (B, S): the history so far (context and seed);
        ``classes``: the model's rhythmic values, in beats; ``passes``: how many times in a row a passage
        (a figure or a phrase) is helped to go round again (0: no limit);
        ``trackers``: lookups of each kind that the model's inputs already keep over the same states (and
        step before each draw), read instead of keeping our own: the same matches, found once;
        ``span``: for how many states in a row a repeat is helped to go on (0: no limit; see
        :data:`CHOPIN_REPEAT_SPAN`)."""
        self.boost = float(boost)
        self.passes = int(passes)
        self.span = int(span)
        self.classes = np.asarray(classes, np.float64)
        if trackers is not None and all(kind in trackers for kind in KINDS):
            self.own = None
            self.sources = [(trackers[kind], 0) for kind in KINDS]  # (tracker, the kind's index in it)
        else:
            self.own = ContinuationTracker(keys, onsets, beats, kinds=KINDS)
            self.sources = [(self.own, k) for k in range(len(KINDS))]

    def candidates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The continuation to boost for each piece: keys, onsets (B, 88), rhythmic class (B,) and
        whether there is one (B,); the longer match of the two kinds (exact on a tie)."""
        (te, ke), (tm, km) = self.sources
        exact, moved = te.last[ke], tm.last[km]
        use_moved = moved.length > exact.length
        keys = np.where(use_moved[:, None], moved.keys, exact.keys)
        onsets = np.where(use_moved[:, None], moved.onsets, exact.onsets) & keys
        beats = np.where(use_moved, moved.beats, exact.beats)
        found = np.maximum(exact.length, moved.length) > 0
        run = np.where(use_moved, tm.run[km], te.run[ke])  # states in a row gone on as the passage went
        if self.passes:
            # a passage that has already gone round ``passes`` times at this distance (the run as long as the
            # distance times passes) gets no help to go round again: the model alone decides.  A figure, a
            # phrase, and a passage that moves as it repeats (a sequence; a scale, one state moved a step each
            # time, which the boost had slid to the end of the keyboard and back) alike
            period = np.where(use_moved, tm.period[km], te.period[ke])
            free = (period <= self.FREE_PERIOD) & ~(use_moved & (tm.shift[km] != 0))
            found &= free | (run < self.passes * period)
        if self.span:  # a repeat already ``span`` states long goes on only if the model alone takes it on
            found &= run < self.span
        cls = np.abs(np.log(np.maximum(beats, 1e-6))[:, None] - np.log(self.classes)[None, :]).argmin(-1)
        return keys, onsets, cls, found

    def take(self, log_p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) bool: whether to take the continuation, given its log probability under the model."""
        # boost*P / (1 + (boost-1)*P) as a logistic of the boosted log-odds
        log_p = np.minimum(log_p, -1e-9)
        logit = np.log(self.boost) + log_p - np.log1p(-np.exp(log_p))
        return rng.random(len(log_p)) < 1.0 / (1.0 + np.exp(-logit))

    def update(self, keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray) -> None:
        """After new states (B, 88) lasting ``beats`` (B,) (shared lookups are stepped by their owner)."""
        if self.own is not None:
            self.own.step(keys, onsets, beats)
