"""What a generated piece measures on the controls' own scales: density, register, loudness, key hold.

The figures a user steers by (``--density``, ``--register``, ``--loudness``,
``--key``), measured on the new music the way the requests are worded: notes
per second, MIDI pitches, the mean velocity and its nearest dynamic mark, and
the share of 20-s excerpts whose detected key lies within one fifth of the
piece's stated key (the realism report's key hold rate).  The CLI prints
them, the app shows them beside each piece, and the compliance check
(``chopinbot evaluate --suite controls``) counts how often they meet the request.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from chopinbot.compose.repetition import CHOPIN_REPEAT_SPAN
from chopinbot.evaluation.excerpts import EXCERPT_SECONDS, detected_key, time_excerpts
from chopinbot.evaluation.form_measures import CHOPIN_PHRASE_PASSES, beyond_chopin_phrase, beyond_chopin_run
from chopinbot.evaluation.replay import MOSTLY_REPLAYED, REPLAY_NGRAM, history_index, replay_share
from chopinbot.music.controls import LOUDNESS_LEVELS
from chopinbot.music.keys import Key, pitch_name, within_a_fifth
from chopinbot.music.states import States, states_to_notes

# A piece shorter than one excerpt is judged whole if it lasts at least this long (a key needs a few bars).
MIN_KEY_SECONDS = 5.0


def nearest_mark(velocity: float) -> str:
    """The dynamic mark (pp..ff) whose level is nearest a mean velocity."""
    return min(LOUDNESS_LEVELS, key=lambda m: abs(LOUDNESS_LEVELS[m] - velocity))


@dataclass(frozen=True)
class PieceFigures:
    """A piece's figures on the controls' scales (NaN where the piece has no notes or is too short)."""

    seconds: float
    notes: int
    density: float  # notes per second
    lowest: int  # MIDI pitch (-1: no notes)
    highest: int
    loudness: float  # mean velocity of the notes
    key_hold: float  # share of 20-s excerpts within one fifth of the stated key
    key_excerpts: int  # how many excerpts that share is of
    inside_register: float | None = None  # with a requested register: the share of notes inside it
    # the share of the new music's 8-state figures found, at any pitch, in the seed and its context: how much
    # it played back rather than composed (evaluation.replay; None: no history kept, NaN: under 8 states)
    replayed: float | None = None
    # the figure (period p <= 16 states) that went round furthest beyond Chopin's longest run at its period, as
    # (p, states in a row repeating the one p before, Chopin's most); None: none did (form_measures.loop_runs)
    beyond_chopin_run: tuple[int, int, int] | None = None
    # the passage longer than a figure that went round more times in a row than any in Chopin's pieces, as (its
    # length in states, passes: 1.0 = heard twice in full); None: none did (form_measures.longest_phrase)
    beyond_chopin_phrase: tuple[int, float] | None = None

    @property
    def register_names(self) -> str:
        return f"{pitch_name(self.lowest)}-{pitch_name(self.highest)}" if self.notes else "-"

    @property
    def loudness_mark(self) -> str:
        return nearest_mark(self.loudness) if self.notes else "-"

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line, in the requests' words."""
        hold = f"{self.key_hold:.0%} of {self.key_excerpts} excerpts" if self.key_excerpts else "too short to judge"
        inside = f" ({self.inside_register:.0%} inside the requested register)" if self.inside_register is not None \
            else ""
        extra = "".join(f"; {text}" for text in self.remarks)
        return (f"density {self.density:.1f} notes/s; register {self.register_names}{inside}; loudness "
                f"{self.loudness:.0f} ({self.loudness_mark}); key held: {hold}{extra}")

    @property
    def remarks(self) -> list[str]:
        """What the piece did that Chopin never does, and how much of it was replayed: the lines after the
        controls' figures, where there are any (the command line's summary and the page both list them)."""
        return [text for text in (self.run_text, self.phrase_text, self.replay_text) if text]

    @property
    def run_text(self) -> str:
        """A figure repeated beyond anything in Chopin, said in its words ("" when none was)."""
        if self.beyond_chopin_run is None:
            return ""
        p, run, most = self.beyond_chopin_run
        if p == 1:
            return f"one chord struck {run + 1} times in a row (Chopin: at most {most + 1})"
        return f"a figure of {p} states going round for {run} states in a row (Chopin: at most {most})"

    @property
    def phrase_text(self) -> str:
        """A phrase repeated beyond anything in Chopin, said in its words ("" when none was)."""
        if self.beyond_chopin_phrase is None:
            return ""
        p, passes = self.beyond_chopin_phrase
        return (f"a passage of {p} states heard {passes + 1:.1f} times in a row (Chopin: at most "
                f"{CHOPIN_PHRASE_PASSES + 1:.1f})")

    @property
    def mostly_replayed(self) -> bool:
        """Whether the new music mostly played back what the model read first (over ``MOSTLY_REPLAYED``)."""
        return self.replayed is not None and not math.isnan(self.replayed) and self.replayed > MOSTLY_REPLAYED

    @property
    def replay_text(self) -> str:
        """How much of the new music was composed and how much replayed ("" when not measured)."""
        if self.replayed is None or math.isnan(self.replayed):
            return ""
        return (f"composed {1 - self.replayed:.0%}, replayed {self.replayed:.0%} (of its {REPLAY_NGRAM}-state "
                f"figures, those found at any pitch in what the model read first: the seed and its context)")


def span_would_help(figures: PieceFigures, cfg, states: int) -> bool:
    """Whether a piece of ``states`` new states composed with ``cfg`` (a GenerateConfig) mostly played back
    what it read first, the repeat boost helping repeats all the way, and is longer than
    :data:`~chopinbot.compose.repetition.CHOPIN_REPEAT_SPAN`: that span would leave the rest to the model
    (the command line and the page say so)."""
    return (figures.mostly_replayed and states > CHOPIN_REPEAT_SPAN and not cfg.repeat_span
            and cfg.repeat_boost > 1 and cfg.threshold is None)


def key_hold(notes: np.ndarray, key: Key, seconds: float = EXCERPT_SECONDS,
             total: float | None = None) -> tuple[float, int]:
    """The share of consecutive ``seconds``-long excerpts of ``notes`` (N, 4: start and end in
    seconds, pitch, velocity) whose detected key lies within one fifth of ``key``, and their
    count; a piece shorter than one excerpt (but at least MIN_KEY_SECONDS) is one excerpt.
    ``total``: the piece's length in seconds (a closing rest included; None: its last note's end)."""
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    if len(n) == 0:
        return math.nan, 0
    excerpts = [e.notes for e in time_excerpts(n, "", key, seconds, total) if len(e.notes)]
    if not excerpts and n[:, 1].max() >= MIN_KEY_SECONDS:
        excerpts = [n]
    if not excerpts:
        return math.nan, 0
    return float(np.mean([within_a_fifth(detected_key(e), key) for e in excerpts])), len(excerpts)


def piece_figures(states: States, bpm: float, key: Key, register: tuple[int, int] | None = None) -> PieceFigures:
    """The figures of ``states`` (a piece in ``key``, played at ``bpm``); ``register`` (MIDI low,
    high): also the share of its notes inside it."""
    notes = states_to_notes(states).astype(np.float64)
    notes[:, :2] *= 60.0 / bpm  # beats -> seconds
    seconds = states.total_beats * 60.0 / bpm
    if len(notes) == 0:
        return PieceFigures(seconds, 0, 0.0, -1, -1, math.nan, math.nan, 0, None if register is None else math.nan)
    pitch = notes[:, 2].astype(np.int64)
    hold, count = key_hold(notes, key, total=seconds)
    inside = None
    if register is not None:
        inside = float(((pitch >= register[0]) & (pitch <= register[1])).mean())
    return PieceFigures(seconds, len(notes), len(notes) / max(seconds, 1e-9), int(pitch.min()), int(pitch.max()),
                        float(notes[:, 3].mean()), hold, count, inside, beyond_chopin_run=beyond_chopin_run(states),
                        beyond_chopin_phrase=beyond_chopin_phrase(states))


def result_figures(result, register: tuple[int, int] | None = None) -> PieceFigures:
    """:func:`piece_figures` of a :class:`~chopinbot.compose.generate.GenerationResult`'s new music
    (``register`` default: the one it was asked for)."""
    if register is None and result.config is not None:
        register = result.config.register
    figures = piece_figures(result.generated, result.bpm, result.key, register)
    history = getattr(result, "history", None)
    if history is None or len(history) == 0:
        return figures
    return replace(figures, replayed=replay_share(result.generated, history_index(history)))
