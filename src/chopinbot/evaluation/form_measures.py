"""Measuring a form (:mod:`chopinbot.compose.form`): does the reprise come back, do the sections contrast,
does the piece end on its tonic chord (`chopinbot evaluate --suite form`; docs/controls.md, "Form")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chopinbot.compose.form import FormResult
from chopinbot.compose.processors import LONGEST_RUNS
from chopinbot.compose.repetition import LONG_PASSAGE, LONGEST_SLIDE
from chopinbot.constants import LOWEST_PITCH
from chopinbot.evaluation.excerpts import detected_key
from chopinbot.music.keys import Key
from chopinbot.music.repeats import find_continuations, moved_by, slide_after
from chopinbot.music.states import States, held_after, states_to_notes

MIN_MATCH = 4  # states: a lookup this long or longer is the opening's material recognised (not one chord)


@dataclass(frozen=True)
class RepriseMatch:
    """How the repeats lookup hears the last section: its states whose longest earlier match
    (exact, at least ``MIN_MATCH`` states) lies in an A section before it."""

    found: bool  # at least one such state
    states: int  # how many
    share: float  # of the last section's states
    beyond_replay: int  # of them, after the replayed opening: the model following the reprise on its own
    beyond_share: float  # of the last section's states after the replayed opening


def reprise_matches(result: FormResult, min_length: int = MIN_MATCH) -> RepriseMatch:
    """:class:`RepriseMatch` of ``result`` (the lookup run over the whole output, as the model's is)."""
    st = result.states
    cont, length, _ = find_continuations("exact", st.keys, st.onsets, st.beats)
    last = result.sections[-1]
    a_states = np.zeros(len(st) + 1, bool)
    for s in result.sections[:-1]:
        if s.label.startswith("A"):
            a_states[s.start_state : s.end_state] = True
    idx = np.arange(last.start_state, last.end_state)
    # the matched passage ends at cont - 1 and starts length - 1 states before: all of it in an A
    src_end, src_start = cont[idx] - 1, cont[idx] - length[idx]
    hit = (length[idx] >= min_length) & a_states[np.maximum(src_end, 0)] & a_states[np.maximum(src_start, 0)]
    after = idx >= last.start_state + last.replayed_states
    n_after = int(after.sum())
    return RepriseMatch(bool(hit.any()), int(hit.sum()), float(hit.mean()) if len(idx) else 0.0,
                        int((hit & after).sum()), float((hit & after).sum() / n_after) if n_after else 0.0)


@dataclass(frozen=True)
class SectionProfile:
    """What a section plays: how much, how high, how loud, in what key."""

    label: str
    notes_per_second: float
    mean_pitch: float  # MIDI, over its notes
    low: float  # MIDI: its notes' 5th and 95th percentile pitch
    high: float
    velocity: float  # mean, over its notes
    key: Key  # the best of the 24 keys by its pitch-class profile


def section_profiles(result: FormResult) -> list[SectionProfile]:
    """A :class:`SectionProfile` of each section of ``result``."""
    out = []
    for s in result.sections:
        part = result.states[s.start_state : s.end_state]
        notes = states_to_notes(part)
        secs = max(s.end_seconds - s.start_seconds, 1e-9)
        if len(notes) == 0:
            out.append(SectionProfile(s.label, 0.0, np.nan, np.nan, np.nan, np.nan, s.key))
            continue
        p = notes[:, 2]
        out.append(SectionProfile(s.label, len(notes) / secs, float(p.mean()), float(np.percentile(p, 5)),
                                  float(np.percentile(p, 95)), float(notes[:, 3].mean()), detected_key(notes)))
    return out


def ends_on_tonic_chord(states: States, key: Key, min_beats: float = 1.0) -> bool:
    """Whether the last state is the tonic triad of ``key`` (its root in the bass; root, third and fifth
    sounding, no other pitch class) lasting at least ``min_beats``."""
    if len(states) == 0 or not states.keys[-1].any() or states.beats[-1] < min_beats - 1e-6:
        return False
    k = np.flatnonzero(states.keys[-1])
    pcs = set(((k + LOWEST_PITCH) % 12).tolist())
    triad = {key.tonic, (key.tonic + (3 if key.minor else 4)) % 12, (key.tonic + 7) % 12}
    return (k[0] + LOWEST_PITCH) % 12 == key.tonic and pcs == triad


FIGURE_WINDOW = 96  # states: about 10-20 s of a piece
CHOPIN_FIGURE_SHARE = 76 / 96  # the most of any 96 states in a row repeating one figure in the 48 pieces (op. 28 no. 8)


def figure_loop_share(states: States, window: int = FIGURE_WINDOW, max_period: int = 16) -> float:
    """The largest share of any ``window`` states in a row (all of them, if fewer) that each repeat the
    state ``p`` before them in keys and onsets, for one period ``p`` up to ``max_period``: how long the
    music goes round one figure, allowing the odd state that differs (which :func:`loop_runs`, a run,
    does not).  In the 48 performed pieces of the corpus it is at most 0.79 (``CHOPIN_FIGURE_SHARE``);
    a piece above that is stuck in a figure as no Chopin piece is."""
    n = len(states)
    if n < 2:
        return 0.0
    x = np.concatenate([states.keys, states.onsets], 1).astype(bool)
    span = min(window, n)
    best = 0
    for p in range(1, min(max_period, n - 1) + 1):
        same = np.zeros(n, np.int64)
        same[p:] = (x[p:] == x[:-p]).all(1)
        total = np.concatenate([[0], np.cumsum(same)])
        best = max(best, int((total[span:] - total[:-span]).max()))
    return best / span


CHOPIN_LOOP_RUNS = LONGEST_RUNS  # per period, the most in the 48 performed pieces (compose.decoding)


def loop_runs(states: States, max_period: int = 16) -> np.ndarray:
    """(max_period,): for each period ``p``, the most states in a row that each repeat the state ``p`` before
    them in keys and onsets (lengths not compared, as the loop breaker compares them): a chord hammered
    shows at period 1, a trill at 2."""
    x = np.concatenate([states.keys, states.onsets], 1).astype(bool)
    out = np.zeros(max_period, np.int64)
    for p in range(1, min(max_period, len(x) - 1) + 1):
        same = np.concatenate([[False], (x[p:] == x[:-p]).all(1), [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))  # starts and ends of the runs, alternately
        out[p - 1] = (edges[1::2] - edges[::2]).max(initial=0)
    return out


def beyond_chopin_run(states: States) -> tuple[int, int, int] | None:
    """The figure of up to 16 states that went round furthest beyond Chopin's longest run at its period (by
    the ratio of the two, :data:`CHOPIN_LOOP_RUNS`), as (period, its run, Chopin's most); None: none did."""
    runs, most = loop_runs(states), np.asarray(CHOPIN_LOOP_RUNS)
    if not (runs > most).any():
        return None
    i = int(np.argmax(runs / most))
    return i + 1, int(runs[i]), int(most[i])


PHRASE_PERIODS = (LONG_PASSAGE + 1, 256)  # states: passages longer than a figure, up to a section
# the most in the 48 performed pieces: 1.62 (the Mazurka op. 7 no. 1), half of their key segments under
# 0.78; a figure of up to 16 states goes round far more (an accompaniment's), and figure_loop_share watches it
CHOPIN_PHRASE_PASSES = 1.62


def phrase_passes(states: States, periods: tuple[int, int] = PHRASE_PERIODS, figure_period: int = LONG_PASSAGE
                  ) -> float:
    """How many times in a row a passage longer than a figure went round again: the longest run of states
    each repeating, in keys and onsets, the state ``p`` before, divided by ``p``, the most over the periods
    ``p`` in ``periods``.  1.0: a phrase heard twice in full (A A); 3.0: four times.  A run in which every
    state also repeats the state ``q <= figure_period`` before is a figure going round (a trill, an
    ostinato: figure_loop_share's), not a phrase, and is not counted."""
    return longest_phrase(states, periods, figure_period)[1]


def beyond_chopin_phrase(states: States) -> tuple[int, float] | None:
    """The phrase that went round more times in a row than any in the 48 pieces (``CHOPIN_PHRASE_PASSES``), as
    (its length in states, its passes); None: none did."""
    period, passes = longest_phrase(states)
    return (period, passes) if passes > CHOPIN_PHRASE_PASSES else None


def longest_phrase(states: States, periods: tuple[int, int] = PHRASE_PERIODS, figure_period: int = LONG_PASSAGE
                   ) -> tuple[int, float]:
    """:func:`phrase_passes` with the period that went round so (0, 0.0: no phrase went round)."""
    x = np.packbits(np.concatenate([states.keys, states.onsets], 1).astype(bool), axis=1)
    n, best, best_p = len(states), 0.0, 0
    figure = np.zeros(n, bool)  # the states that repeat one of the figure_period before them
    for q in range(1, min(figure_period, n - 1) + 1):
        figure[q:] |= (x[q:] == x[:-q]).all(1)
    not_figure = np.concatenate([[0], np.cumsum(~figure)])
    for p in range(periods[0], min(periods[1], n - 1) + 1):
        same = (x[p:] == x[:-p]).all(1)
        if not same.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], same.view(np.int8), [0]])))
        start, stop = edges[::2] + p, edges[1::2] + p  # the runs, as indices of the repeating states
        phrase = not_figure[stop] - not_figure[start] > 0
        passes = float((stop - start)[phrase].max()) / p if phrase.any() else 0.0
        if passes > best:
            best, best_p = passes, p
    return best_p, best


CHOPIN_SLIDE_STATES = LONGEST_SLIDE  # the most in the 48 performed pieces (compose.repetition)


def longest_slide(states: States) -> int:
    """The most states in a row that each move the state before them up (or each down) by some interval,
    every key sounding by the same one (:func:`~chopinbot.music.repeats.moved_by`): a scale or a run in
    octaves, one key or a chord at a time.  Chopin's go on for at most 28 states (``CHOPIN_SLIDE_STATES``); a
    chromatic scale over the whole keyboard is 87."""
    keys = np.asarray(states.keys, bool)
    steps = np.sign(moved_by(keys[:-1], keys[1:])) if len(keys) > 1 else np.zeros(0, np.int64)
    best = run = direction = 0
    for step in steps:
        run, direction = int(slide_after(run, direction, step)), step
        best = max(best, run)
    return int(best)


def longest_hold(states: States) -> float:
    """The most beats any key sounds without being struck again.  Chopin's: at most 13 (the Scherzo of op. 35;
    median over the pieces 4), the composer's :data:`~chopinbot.compose.processors.LONGEST_HOLD`."""
    keys, onsets = np.asarray(states.keys, bool), np.asarray(states.onsets, bool)
    held, best = np.zeros(keys.shape[1]), 0.0
    for k, o, length in zip(keys, onsets, np.asarray(states.beats, np.float64)):
        held = held_after(held, k, o, length)
        best = max(best, float(held.max(initial=0.0)))
    return best
