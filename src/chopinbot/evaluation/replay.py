"""Replay: how much of an excerpt was already heard just before it.

A continuation can pass for Chopin by playing back the piece its seed came
from (its context of up to ``WARM_STATES`` states is read before composing,
and the repeats input and boost copy what they find there).  Real Chopin
replays too: a reprise, a repeated period.  So each excerpt, generated and
real, gets a *replay share*: the share of its ``REPLAY_NGRAM``-state n-grams
(keys and rhythmic value, :func:`~chopinbot.evaluation.musicstats.ngram_overlap`)
found, at any transposition, in what precedes it -- the seed and its context
for a generated excerpt, the same span of the piece (as many states as a
seed and its context) for a real one.  Excerpts that replay at most
``COMPOSED_REPLAY`` are *composed*: the realism test is run on those alone
(:mod:`chopinbot.evaluation.composed`), so that the figure says how the model's
own music sounds, apart from what it replays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from chopinbot.compose.seeds import Seed
from chopinbot.constants import SEED_STATES, WARM_STATES
from chopinbot.dataset.store import Dataset, Segment
from chopinbot.evaluation.continuations import performed_chopin
from chopinbot.evaluation.excerpts import EXCERPT_SECONDS, excerpt_windows
from chopinbot.evaluation.musicstats import CorpusIndex, ngram_overlap
from chopinbot.music.states import States, transpose_states

REPLAY_NGRAM = 8  # states: replay is measured on 8-state n-grams, as copying from the training pieces is
COMPOSED_REPLAY = 0.2  # an excerpt replaying at most this share of its n-grams counts as composed
MOSTLY_REPLAYED = 0.8  # ... and one above this is mostly played back (the distribution's tail)
HISTORY_STATES = WARM_STATES + SEED_STATES  # what a generated excerpt's seed and context hold at most


def history_index(history: States, shift: int = 0, transposed: bool = True) -> CorpusIndex:
    """``history`` moved up ``shift`` semitones (into the excerpt's key), indexed for n-gram lookups;
    with ``transposed``, also at every other transposition within an octave either way."""
    moved = [("history", transpose_states(history, shift)[0])]
    if transposed:
        moved += [(f"history {t:+d}", transpose_states(history, shift + t)[0]) for t in range(-11, 12) if t]
    return CorpusIndex(moved)


def replay_share(states: States, index: CorpusIndex, n: int = REPLAY_NGRAM) -> float:
    """The share of the n-grams of ``states`` found in ``index`` (NaN with fewer than ``n`` states)."""
    return ngram_overlap(states, index, n)


def time_ranges(states: States, count: int, seconds: float = EXCERPT_SECONDS) -> list[tuple[int, int]]:
    """The states of each of the first ``count`` excerpts of :func:`~chopinbot.evaluation.excerpts.time_excerpts`:
    those starting in ``[k * seconds, (k + 1) * seconds)``."""
    starts = np.concatenate([[0.0], np.cumsum(states.seconds.astype(np.float64))])[:-1]
    edges = np.searchsorted(starts, np.arange(count + 1) * seconds - 1e-9)
    return [(int(edges[k]), int(edges[k + 1])) for k in range(count)]


def continuation_replays(seed: Seed, states: States, count: int, seconds: float = EXCERPT_SECONDS,
                         n: int = REPLAY_NGRAM) -> list[float]:
    """The replay share of each of the ``count`` excerpts of a continuation (in ``seed.key``) of ``seed``:
    its n-grams found, at any transposition, in the seed and its context."""
    if count == 0:
        return []
    index = history_index(seed.history, seed.home.shift_to(seed.key))
    return [replay_share(states[a:b], index, n) for a, b in time_ranges(states, count, seconds)]


def piece_states(ds: Dataset, segments: Sequence[Segment]) -> dict[str, tuple[States, dict[int, int]]]:
    """Each piece of ``segments``, whole: its key segments in order, each in its own key, and where each
    segment (by its first row) begins in it."""
    by_piece: dict[str, list[Segment]] = {}
    for seg in segments:
        by_piece.setdefault(seg.piece, []).append(seg)
    out = {}
    for piece, segs in by_piece.items():
        segs = sorted(segs, key=lambda s: s.start)
        parts = [transpose_states(ds.states(s), -s.shift)[0] for s in segs]
        offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        out[piece] = States.concat(parts), {s.start: int(o) for s, o in zip(segs, offsets)}
    return out


def piece_replays(ds: Dataset, split: str, seconds: float = EXCERPT_SECONDS, first: int = 0,
                  before: int = HISTORY_STATES, n: int = REPLAY_NGRAM, keep=performed_chopin) -> list[float]:
    """The replay share of every excerpt of the ``split`` pieces, in the order of
    :func:`~chopinbot.evaluation.realism.split_excerpts` (``first=0``) or of the true windows of
    :func:`~chopinbot.evaluation.continuations.held_out_seeds` (``first=SEED_STATES``): its n-grams
    found, at any transposition, in the ``before`` states of the piece just before it.  The piece, not
    its key segment: a reprise after a middle section in another key is in a segment of its own, whose
    first excerpt had nothing before it.  Every 60-s window of the 48 pieces' segments after their first 16
    states, read within its segment, replayed 0.112 on average (0.012 of them over 0.8); read with the piece
    before it, 0.123 (0.024).  (Laid across whole pieces, :func:`every_window_replays`: 0.154, 0.020.)"""
    out = []
    segments = list(filter(keep, ds.segments(split)))
    pieces = piece_states(ds, segments)
    for seg in segments:
        whole, starts = pieces[seg.piece]
        at = starts[seg.start]
        states = whole[at: at + (seg.stop - seg.start)]
        for a, b in excerpt_windows(states, seconds, first):
            out.append(replay_share(states[a:b], history_index(whole[max(0, at + a - before): at + a]), n))
    return out


def every_window_replays(ds: Dataset, split: str, seconds: float, first: int = SEED_STATES,
                         before: int = HISTORY_STATES, n: int = REPLAY_NGRAM, keep=performed_chopin) -> list[float]:
    """Every window of ``seconds`` laid across each whole ``split`` piece from its state ``first`` on (the
    first state a continuation may start at: after a seed), read as a continuation is: its n-grams found,
    at any transposition, in the ``before`` states of the piece before it.  The every-window reference
    of how much of a minute Chopin plays back; :func:`piece_replays`' windows are the realism test's
    excerpts, laid per key segment, the first of each piece with nothing before it to replay."""
    out = []
    for whole, _ in piece_states(ds, list(filter(keep, ds.segments(split)))).values():
        for a, b in excerpt_windows(whole, seconds, first):
            out.append(replay_share(whole[a:b], history_index(whole[max(0, a - before):a]), n))
    return out


def true_continuation_replays(ds: Dataset, split: str, seeds: Sequence[Seed], count: int,
                              seconds: float = EXCERPT_SECONDS, seed_len: int = SEED_STATES,
                              windows: float | None = None, keep=performed_chopin) -> list[float]:
    """What really followed each of ``seeds`` (those of
    :func:`~chopinbot.evaluation.continuations.held_out_seeds` over the same ``split``, ``seed_len``,
    windows of ``windows`` seconds (default ``seconds``) and segments ``keep`` accepts, in order),
    measured as a continuation of it is: the replay share of each of its first ``count`` excerpts of
    ``seconds`` against the seed and its context.  The like-for-like reference for the generated
    continuations, where :func:`every_window_replays` is the reference of every window of the pieces."""
    after = []  # the piece from each seed's end, in the piece's own key (as continuations are)
    for seg in filter(keep, ds.segments(split)):
        original, _ = transpose_states(ds.states(seg), -seg.shift)
        after += [original[a:] for a, _ in excerpt_windows(original, windows or seconds, first=seed_len)]
    if len(after) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds given, {len(after)} windows of the {split} pieces: "
                         "not held_out_seeds' own")
    return [r for seed, states in zip(seeds, after) for r in continuation_replays(seed, states, count, seconds)]


def replay_distribution(shares: Sequence[float]) -> dict:
    """Quartiles, mean and the share above :data:`MOSTLY_REPLAYED` (NaN shares, too short to say, left out)."""
    x = np.asarray([s for s in shares if s is not None and not math.isnan(s)], np.float64)
    if x.size == 0:
        return {"n": 0}
    q1, q2, q3 = np.quantile(x, (0.25, 0.5, 0.75))
    return {"n": int(x.size), "mean": float(x.mean()), "q1": float(q1), "median": float(q2), "q3": float(q3),
            "above_0.8": float((x > MOSTLY_REPLAYED).mean()), "composed": float((x <= COMPOSED_REPLAY).mean())}
