"""Musical statistics of a piece, and how much of it is copied from the corpus.

The statistics follow the definitions of ``muspy.metrics`` (H.-W. Dong,
K. Chen, J. McAuley, T. Berg-Kirkpatrick, "MusPy: A Toolkit for Symbolic Music
Generation", ISMIR 2020), re-implemented on ChopinBot's note arrays so that
muspy is not a dependency.  Each function's docstring names the muspy metric it
follows and any place where it deliberately differs.

Notes are the ``(N, 4)`` arrays of :func:`chopinbot.music.states.states_to_notes`:
columns start beat, end beat, MIDI pitch, velocity.  Statistics that look at
time (polyphony, polyphony rate, empty beats) use a piano roll of
``GRID_PER_BEAT`` (48) steps per beat starting at beat 0, as muspy uses the
file's resolution: 48 is the grid the states are built on, so for notes that
come from states this roll is exact (no note is moved or lost by sampling).

Originality compares the generated states with the corpus's states, a state
being identified by its set of sounding keys and its length in grid steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from chopinbot.constants import GRID_PER_BEAT
from chopinbot.music.midi import PianoNotes
from chopinbot.music.states import States, notes_to_states

# muspy's scale masks, rooted on C (``muspy.metrics._get_scale``).
_MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], bool)
_NATURAL_MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], bool)
# (24, 12): the 12 major then the 12 minor scales, as muspy loops over them.
SCALE_MASKS = np.array([np.roll(m, r) for m in (_MAJOR, _NATURAL_MINOR) for r in range(12)])

# Readable names for the report and the web app, in display order.
STAT_LABELS: dict[str, str] = {
    "pitch_range": "pitch range (semitones)",
    "n_pitches_used": "pitches used",
    "n_pitch_classes_used": "pitch classes used",
    "pitch_class_entropy": "pitch-class entropy (bits)",
    "scale_consistency": "scale consistency",
    "polyphony": "polyphony (pitches sounding)",
    "polyphony_rate": "polyphony rate",
    "empty_beat_rate": "empty-beat rate",
    "notes_per_second": "notes per second",
    "rest_fraction": "rest states (fraction)",
    "rhythm_entropy": "state-length entropy (bits)",
}


# --- pitch statistics ---------------------------------------------------------


def _pitches(notes: np.ndarray) -> np.ndarray:
    return np.asarray(notes, np.float64).reshape(-1, 4)[:, 2].astype(np.int64)


def pitch_range(notes: np.ndarray) -> int:
    """Highest minus lowest pitch used (``muspy.metrics.pitch_range``); 0 with no notes."""
    p = _pitches(notes)
    return int(p.max() - p.min()) if p.size else 0


def n_pitches_used(notes: np.ndarray) -> int:
    """Number of distinct pitches (``muspy.metrics.n_pitches_used``)."""
    return int(np.unique(_pitches(notes)).size)


def n_pitch_classes_used(notes: np.ndarray) -> int:
    """Number of distinct pitch classes (``muspy.metrics.n_pitch_classes_used``)."""
    return int(np.unique(_pitches(notes) % 12).size)


def _pitch_class_histogram(notes: np.ndarray) -> np.ndarray:
    """Notes per pitch class: every note counts once, whatever its length (as muspy)."""
    return np.bincount(_pitches(notes) % 12, minlength=12).astype(np.float64)


def pitch_class_entropy(notes: np.ndarray) -> float:
    """Shannon entropy in bits of the pitch-class histogram of the notes.

    ``muspy.metrics.pitch_class_entropy``: 0 for one pitch class, log2(12) for
    all twelve equally often; NaN with no notes.
    """
    h = _pitch_class_histogram(notes)
    if h.sum() == 0:
        return math.nan
    p = h[h > 0] / h.sum()
    return float(-(p * np.log2(p)).sum())


def scale_consistency(notes: np.ndarray) -> float:
    """Largest fraction of notes inside one scale, over all 12 major and 12 minor scales.

    ``muspy.metrics.scale_consistency`` (minor = natural minor, as muspy);
    NaN with no notes.
    """
    h = _pitch_class_histogram(notes)
    if h.sum() == 0:
        return math.nan
    return float((SCALE_MASKS @ h).max() / h.sum())


# --- time statistics (piano roll at `resolution` steps per beat) ----------------


def _to_steps(notes: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    start = np.round(n[:, 0] * resolution).astype(np.int64)
    end = np.round(n[:, 1] * resolution).astype(np.int64)
    return start, end, n[:, 2].astype(np.int64)


def _merged_intervals(start: np.ndarray, end: np.ndarray, pitch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The union of each pitch's notes as disjoint [start, end) intervals.

    A piano roll is boolean per pitch (muspy sets ``roll[start:end, pitch] = 1``),
    so two overlapping notes of one pitch sound as one pitch, not two.
    """
    keep = end > start  # a zero-length note fills no step of the roll
    start, end, pitch = start[keep], end[keep], pitch[keep]
    if start.size == 0:
        return start, end
    order = np.lexsort((start, pitch))
    s, e, p = start[order], end[order], pitch[order]
    # Running maximum of the end within each pitch: offsetting by pitch * span
    # keeps every pitch's values above all lower pitches' in one accumulate.
    span = int(e.max()) + 1
    run_end = np.maximum.accumulate(e + p * span) - p * span
    new = np.ones(s.size, bool)
    new[1:] = (p[1:] != p[:-1]) | (s[1:] > run_end[:-1])
    group = np.cumsum(new) - 1
    merged_end = np.zeros(group[-1] + 1, np.int64)
    np.maximum.at(merged_end, group, e)
    return s[new], merged_end


def _sounding_segments(notes: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Run-length form of the piano roll's per-step pitch count.

    Returns ``(count, length, total)``: consecutive segments of the roll from
    step 0 to the last note end, the number of pitches sounding in each, its
    length in steps, and the roll's total length.  Equivalent to summing a
    ``(total, 128)`` boolean roll along pitch, without building it.
    """
    start, end, pitch = _to_steps(notes, resolution)
    s, e = _merged_intervals(start, end, pitch)
    total = int(e.max()) if e.size else 0
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    times = np.unique(np.concatenate([[0, total], s, e]))
    delta = np.zeros(times.size, np.int64)
    np.add.at(delta, np.searchsorted(times, s), 1)
    np.add.at(delta, np.searchsorted(times, e), -1)
    return np.cumsum(delta)[:-1], np.diff(times), total


def polyphony(notes: np.ndarray, resolution: int = GRID_PER_BEAT) -> float:
    """Mean number of pitches sounding, over the time steps where at least one sounds.

    ``muspy.metrics.polyphony``; NaN with no notes.
    """
    count, length, _ = _sounding_segments(notes, resolution)
    on = count > 0
    if not on.any():
        return math.nan
    return float((count * length).sum() / length[on].sum())


def polyphony_rate(notes: np.ndarray, resolution: int = GRID_PER_BEAT, threshold: int = 2) -> float:
    """Fraction of all time steps (from beat 0 to the last note end) with more than
    ``threshold`` pitches sounding.

    ``muspy.metrics.polyphony_rate`` exactly, including its default
    ``threshold=2``: muspy's docstring says "multiple pitches" but its code
    counts steps where ``count > threshold``, i.e. three or more pitches;
    ``threshold=1`` gives the "two or more" reading.  NaN with no notes.
    """
    count, length, total = _sounding_segments(notes, resolution)
    if total == 0:
        return math.nan
    return float(length[count > threshold].sum() / total)


def empty_beat_rate(notes: np.ndarray) -> float:
    """Fraction of the beats, from beat 0 to the last note end, in which no note sounds.

    Follows ``muspy.metrics.empty_beat_rate`` ("the ratio of empty beats, where
    no note is played, to the total number of beats"), with one deliberate
    difference: muspy marks beats ``start // res`` to ``end // res``
    *inclusive*, so a note ending exactly on a beat line also fills the next
    beat (a one-beat rest between notes that end and start on beat lines
    counts as not empty there) and one beat past the end is counted.  Here a
    note sounding over ``[start, end)`` fills the beats it overlaps, and the
    piece has ``ceil(last end)`` beats.  NaN with no notes.
    """
    start, end, pitch = _to_steps(notes, GRID_PER_BEAT)
    s, e = _merged_intervals(start, end, pitch)
    if e.size == 0:
        return math.nan
    n_beats = -(-int(e.max()) // GRID_PER_BEAT)
    first = s // GRID_PER_BEAT
    last = -(-e // GRID_PER_BEAT)  # one past the last beat the note touches
    cover = np.zeros(n_beats + 1, np.int64)
    np.add.at(cover, first, 1)
    np.add.at(cover, last, -1)
    return float((np.cumsum(cover)[:n_beats] == 0).mean())


# --- state statistics ----------------------------------------------------------


def states_from_notes(notes: np.ndarray, bpm: float = 120.0) -> States:
    """The canonical states of a notes array (played at a steady ``bpm``)."""
    tpq = 480  # a multiple of the 48-step grid, so snapping moves nothing
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    start = np.round(n[:, 0] * tpq).astype(np.int64)
    pn = PianoNotes(
        start=start,
        end=np.maximum(np.round(n[:, 1] * tpq).astype(np.int64), start),
        pitch=n[:, 2].astype(np.int16),
        velocity=n[:, 3].astype(np.int16),
        ticks_per_quarter=tpq,
        tempo_qpm=np.full(1, float(bpm)),
    )
    return notes_to_states(pn)[0]


def rest_fraction(states: States) -> float:
    """Fraction of the states in which no key sounds (counted in states, not time)."""
    return float((~states.keys.any(axis=1)).mean()) if len(states) else math.nan


def _beats_label(units: int) -> str:
    value = Fraction(int(units), GRID_PER_BEAT)
    return f"{value} beat" if value <= 1 else f"{value} beats"


def rhythm_distribution(states: States, top: int = 8) -> dict[str, float]:
    """How often each state length occurs, as ``{'1/4 beat': fraction, ...}``.

    Lengths are whole grid steps (1/48 beat), so triplet values stay exact
    (``'1/12 beat'``).  The ``top`` most common values come first, most common
    first; the rest are summed under ``'other'``.
    """
    if len(states) == 0:
        return {}
    values, counts = np.unique(states.grid_units(), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    frac = counts / counts.sum()
    out = {_beats_label(values[i]): float(frac[i]) for i in order[:top]}
    rest = float(frac[order[top:]].sum())
    if rest > 0:
        out["other"] = rest
    return out


def rhythm_entropy(states: States) -> float:
    """Shannon entropy in bits of the distribution of state lengths (grid steps).

    Not a muspy metric: a one-number summary of :func:`rhythm_distribution`
    (0 when every state has the same length).
    """
    if len(states) == 0:
        return math.nan
    _, counts = np.unique(states.grid_units(), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def piece_stats(notes: np.ndarray, bpm: float | None, states: States | None = None) -> dict[str, float]:
    """All statistics of one piece, keyed as in :data:`STAT_LABELS`.

    ``bpm`` times the piece for ``notes_per_second``; with ``bpm=None`` the
    seconds come from ``states.seconds`` (a real piece's own tempo map), and
    are NaN without states.  ``states`` default to the canonical states of
    ``notes``; pass the piece's own states when you have them.
    """
    notes = np.asarray(notes, np.float64).reshape(-1, 4)
    if states is None:
        states = states_from_notes(notes, bpm or 120.0) if len(notes) else States.empty()
    if bpm is not None:
        seconds = (notes[:, 1].max() if len(notes) else 0.0) * 60.0 / bpm
    else:
        seconds = states.total_seconds if len(states) else math.nan
    return {
        "pitch_range": float(pitch_range(notes)),
        "n_pitches_used": float(n_pitches_used(notes)),
        "n_pitch_classes_used": float(n_pitch_classes_used(notes)),
        "pitch_class_entropy": pitch_class_entropy(notes),
        "scale_consistency": scale_consistency(notes),
        "polyphony": polyphony(notes),
        "polyphony_rate": polyphony_rate(notes),
        "empty_beat_rate": empty_beat_rate(notes),
        "notes_per_second": len(notes) / seconds if seconds and seconds > 0 else math.nan,
        "rest_fraction": rest_fraction(states),
        "rhythm_entropy": rhythm_entropy(states),
    }


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def compare_stats(generated: list[dict[str, float]], real: list[dict[str, float]],
                  order: Sequence[str] | None = None) -> list[dict]:
    """One row per statistic: generated vs real mean and standard deviation.

    Rows are ``{stat, gen_mean, gen_sd, real_mean, real_sd, flagged}``, for the
    statistics present in every dict, in ``order`` (default :data:`STAT_LABELS`;
    statistics not named there follow, sorted).  ``flagged``
    is true when the generated mean lies outside the real mean ± one real
    (sample) standard deviation.  NaN values (e.g. entropy of an empty piece)
    are left out of the means.
    """
    dicts = list(generated) + list(real)
    if not dicts:
        return []
    common = set.intersection(*(set(d) for d in dicts))
    known = list(STAT_LABELS if order is None else order)
    names = [k for k in known if k in common] + sorted(common - set(known))
    rows = []
    for stat in names:
        gm, gs = _mean_sd([d[stat] for d in generated])
        rm, rs = _mean_sd([d[stat] for d in real])
        flagged = bool(not (math.isnan(gm) or math.isnan(rm)) and abs(gm - rm) > rs)
        rows.append({"stat": stat, "gen_mean": gm, "gen_sd": gs, "real_mean": rm, "real_sd": rs, "flagged": flagged})
    return rows


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def format_stats_table(rows: list[dict]) -> str:
    """The rows of :func:`compare_stats` as a Markdown table."""
    lines = [
        "| statistic | generated (mean ± sd) | real (mean ± sd) | outside real ± 1 sd |",
        "|---|---|---|---|",
    ]
    for r in rows:
        label = STAT_LABELS.get(r["stat"], r["stat"])
        gen = f"{_fmt(r['gen_mean'])} ± {_fmt(r['gen_sd'])}"
        real = f"{_fmt(r['real_mean'])} ± {_fmt(r['real_sd'])}"
        lines.append(f"| {label} | {gen} | {real} | {'**yes**' if r['flagged'] else 'no'} |")
    return "\n".join(lines) + "\n"


# --- originality -----------------------------------------------------------------


def _state_codes(states: States) -> np.ndarray:
    """One 16-byte code per state: its 88 keys as 11 bytes, then its length in grid steps.

    Exact (no hashing): two states have equal codes iff they have the same
    keys and the same length to the 1/48 beat.
    """
    n = len(states)
    keys = np.packbits(states.keys, axis=1)  # (n, 11)
    units = states.grid_units().astype("<u8").view(np.uint8).reshape(n, 8)[:, :5]
    raw = np.ascontiguousarray(np.concatenate([keys, units], axis=1))
    return raw.view(np.dtype((np.void, 16))).reshape(n)


class CorpusIndex:
    """The corpus's states, indexed once for fast exact copy detection.

    Build it once and pass it to :func:`ngram_overlap` and
    :func:`longest_copied_run` for many generated pieces; both also accept the
    plain ``[(name, states), ...]`` list and then build the index themselves.
    """

    def __init__(self, corpus: Sequence[tuple[str, States]]) -> None:
        self.names = [name for name, _ in corpus]
        lengths = np.array([len(s) for _, s in corpus], np.int64)
        # Pieces are laid end to end with one unused position between them,
        # so that a run of matching positions can never cross into the next piece.
        self.starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]]).astype(np.int64)
        if lengths.sum() == 0:
            self._table = np.zeros(0, np.dtype((np.void, 16)))
            self._sorted_ids = self._sorted_pos = np.zeros(0, np.int64)
            return
        codes = np.concatenate([_state_codes(s) for _, s in corpus])
        positions = np.concatenate([start + np.arange(n) for start, n in zip(self.starts, lengths)])
        self._table, ids = np.unique(codes, return_inverse=True)
        order = np.argsort(ids.ravel(), kind="stable")
        self._sorted_ids = ids.ravel()[order]
        self._sorted_pos = positions[order]

    def _ids(self, states: States) -> np.ndarray:
        """Index of each state in the corpus's table of distinct states; -1 if absent."""
        codes = _state_codes(states)
        if self._table.size == 0:
            return np.full(codes.size, -1, np.int64)
        i = np.minimum(np.searchsorted(self._table, codes), self._table.size - 1)
        return np.where(self._table[i] == codes, i, -1)

    def forward_matches(self, states: States) -> tuple[np.ndarray, np.ndarray]:
        """For each generated position ``i``: the longest run starting at ``i`` that
        occurs verbatim in one corpus piece, and the corpus position where it starts.

        Every pair (generated position, corpus position) with equal states is
        a point on a diagonal; runs of consecutive points on one diagonal are
        the copied passages.  All pairs are handled as arrays, no Python loop.
        """
        m = len(states)
        best = np.zeros(m, np.int64)
        where = np.full(m, -1, np.int64)
        ids = self._ids(states)
        lo = np.searchsorted(self._sorted_ids, ids, side="left")
        hi = np.searchsorted(self._sorted_ids, ids, side="right")
        count = np.where(ids >= 0, hi - lo, 0)
        if count.sum() == 0:
            return best, where
        gi = np.repeat(np.arange(m), count)
        # index into the sorted corpus arrays: lo[i], lo[i]+1, ..., hi[i]-1 for each i
        within = np.arange(gi.size) - np.repeat(np.cumsum(count) - count, count)
        cj = self._sorted_pos[np.repeat(lo, count) + within]
        diag = cj - gi
        order = np.lexsort((gi, diag))
        gi, cj, diag = gi[order], cj[order], diag[order]
        new_run = np.ones(gi.size, bool)
        new_run[1:] = (diag[1:] != diag[:-1]) | (gi[1:] != gi[:-1] + 1)
        run = np.cumsum(new_run) - 1
        run_start = np.flatnonzero(new_run)
        run_len = np.diff(np.append(run_start, gi.size))
        forward = run_len[run] - (np.arange(gi.size) - run_start[run])
        np.maximum.at(best, gi, forward)
        # corpus start for the best run at each i (any one of the longest)
        is_best = forward == best[gi]
        where[gi[is_best]] = cj[is_best]
        return best, where

    def locate(self, position: int) -> tuple[str, int]:
        """(piece name, state index in that piece) of a global corpus position."""
        k = int(np.searchsorted(self.starts, position, side="right") - 1)
        return self.names[k], int(position - self.starts[k])


def _index(corpus: Sequence[tuple[str, States]] | CorpusIndex) -> CorpusIndex:
    return corpus if isinstance(corpus, CorpusIndex) else CorpusIndex(corpus)


def ngram_overlap(generated: States, corpus: Sequence[tuple[str, States]] | CorpusIndex, n: int = 8) -> float:
    """Fraction of the generated piece's n-grams of states found verbatim in a corpus piece.

    An n-gram is ``n`` consecutive states, compared on their key sets and
    their lengths (to the 1/48 beat); onsets and velocity are ignored.  The
    test is exact (no hash collisions).  1.0 means every passage of ``n``
    states is a quotation; NaN when the piece has fewer than ``n`` states.
    Exclude the seed from ``generated`` if it was taken from the corpus.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    m = len(generated)
    if m < n:
        return math.nan
    best, _ = _index(corpus).forward_matches(generated)
    return float((best[: m - n + 1] >= n).mean())


def longest_copied_run(generated: States, corpus: Sequence[tuple[str, States]] | CorpusIndex) -> dict:
    """The longest run of consecutive generated states equal to a run in one corpus piece.

    Returns ``{states, beats, seconds, piece, position, generated_position}``:
    the run's length in states, in beats and in seconds (from
    ``generated.seconds``), the corpus piece's name and the state index where
    the run starts in it, and where it starts in the generated piece.  With
    no state in common: 0 states, ``piece=None``, positions -1.
    """
    index = _index(corpus)
    best, where = index.forward_matches(generated)
    if best.size == 0 or best.max() == 0:
        return {"states": 0, "beats": 0.0, "seconds": 0.0, "piece": None, "position": -1, "generated_position": -1}
    i = int(np.argmax(best))
    length = int(best[i])
    piece, position = index.locate(int(where[i]))
    run = generated[i : i + length]
    return {
        "states": length,
        "beats": run.total_beats,
        "seconds": run.total_seconds,
        "piece": piece,
        "position": position,
        "generated_position": i,
    }
