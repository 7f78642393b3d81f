"""Fixed-length excerpts of pieces and their musical features.

Everything here works on note arrays in **seconds**: ``(N, 4)`` rows of start,
end, MIDI pitch, velocity (:func:`timed_notes` turns states into them), so that
excerpts of real pieces, generated pieces and other composers' files are cut
and measured the same way.  :func:`excerpt_features` gives some fifty numbers
per excerpt, grouped by concern in :data:`FEATURE_GROUPS` (register, voicing,
rhythm, dynamics, tonality, harmony, repetition, polyphony): the input of the
realism test in :mod:`chopinbot.evaluation.realism`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chopinbot.constants import GRID_PER_BEAT
from chopinbot.evaluation import musicstats
from chopinbot.music.keys import ALL_KEYS, Key, fifths_position, histogram_key_correlations
from chopinbot.music.states import States, states_to_notes

EXCERPT_SECONDS = 20.0
ONSET_TOLERANCE = 0.01  # seconds: notes starting this close together form one onset
CHROMA_WINDOW = 1.0  # seconds, for the self-similarity of the pitch-class content

# Features by concern; every one is a float per excerpt (NaN where undefined,
# e.g. intervals of a one-note top voice: the forest handles missing values).
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "register": ("pitch_min", "pitch_max", "pitch_p05", "pitch_p95", "pitch_mean", "pitch_sd", "pitch_range",
                 "n_pitches", "pitch_slope") + tuple(f"octave_c{i}_share" for i in range(1, 8)),
    "voicing": ("spread_mean", "spread_sd", "struck_span_mean", "top_mean", "bass_mean", "top_abs_interval",
                "top_interval_sd", "top_step_share", "top_semitone_share", "top_repeat_share", "top_leap_share",
                "fast_top_share", "bass_abs_interval"),
    "rhythm": ("onsets_per_second", "notes_per_second", "ioi_mean", "ioi_median", "ioi_cv", "ioi_ratio_entropy",
               "dur_mean", "dur_median", "dur_log_sd", "silence_share"),
    "dynamics": ("vel_mean", "vel_sd", "vel_range", "vel_change"),
    "tonality": ("key_clarity", "key_margin", "key_fifths", "pc_entropy", "n_pitch_classes", "scale_consistency"),
    "harmony": tuple(f"ic{i}_share" for i in range(1, 7)) + ("dissonance_share", "harmonic_change_rate"),
    "repetition": ("interval_4gram_recurrence", "bass_4gram_recurrence", "chord_recurrence",
                   "chroma_self_similarity"),
    "polyphony": ("poly_at_onsets", "poly_time", "notes_per_onset", "chord_share"),
}
FEATURE_NAMES: tuple[str, ...] = tuple(f for group in FEATURE_GROUPS.values() for f in group)
VELOCITY_FEATURES = frozenset(FEATURE_GROUPS["dynamics"])

# --- notes in seconds, excerpts --------------------------------------------------


def timed_notes(states: States) -> np.ndarray:
    """The notes of ``states`` as ``(N, 4)``: start and end in seconds (from the
    states' own ``seconds``, so a real piece keeps its rubato), pitch, velocity."""
    notes = states_to_notes(states)
    if len(notes) == 0:
        return notes
    beats = np.concatenate([[0], np.cumsum(states.grid_units())]) / GRID_PER_BEAT
    secs = np.concatenate([[0], np.cumsum(states.seconds.astype(np.float64))])
    out = notes.copy()
    out[:, 0] = np.interp(notes[:, 0], beats, secs)  # boundaries fall on the states' edges: exact
    out[:, 1] = np.interp(notes[:, 1], beats, secs)
    return out


def excerpt_windows(states: States, seconds: float = EXCERPT_SECONDS, first: int = 0) -> list[tuple[int, int]]:
    """Consecutive, non-overlapping ``(start, stop)`` state ranges from state
    ``first`` on, each the fewest states that last at least ``seconds``; a
    shorter remainder at the end is dropped."""
    t = np.concatenate([[0], np.cumsum(states.seconds.astype(np.float64))])
    out, a = [], first
    while a < len(states):
        b = int(np.searchsorted(t, t[a] + seconds - 1e-9))
        if b > len(states):
            break
        out.append((a, b))
        a = b
    return out


def clip_notes(notes: np.ndarray, seconds: float = EXCERPT_SECONDS) -> np.ndarray:
    """The notes that start in ``[0, seconds)``, their ends cut at ``seconds``."""
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    n = n[n[:, 0] < seconds].copy()
    n[:, 1] = np.minimum(n[:, 1], seconds)
    return n


@dataclass
class Excerpt:
    """A fixed-length excerpt: notes in seconds from its start, the piece it comes from, the key it should hold."""

    notes: np.ndarray
    group: str
    key: Key | None = None
    states: States | None = None  # the states it was cut from, where it was cut from states


def steady_tempo(states: States) -> States:
    """The states played at their own mean tempo: the same total time, shared in proportion to the beats."""
    out = states.copy()
    beats = states.total_beats
    if beats > 0:
        out.seconds = (states.beats.astype(np.float64) * states.total_seconds / beats).astype(np.float32)
    return out


def state_excerpts(states: States, group: str, key: Key | None, seconds: float = EXCERPT_SECONDS,
                   first: int = 0, steady: bool = True) -> list[Excerpt]:
    """Every excerpt of :func:`excerpt_windows` as an :class:`Excerpt`; with
    ``steady``, each played at its own mean tempo (:func:`steady_tempo`)."""
    out = []
    for a, b in excerpt_windows(states, seconds, first):
        window = steady_tempo(states[a:b]) if steady else states[a:b]
        out.append(Excerpt(clip_notes(timed_notes(window), seconds), group, key, states[a:b]))
    return out


def time_excerpts(notes: np.ndarray, group: str, key: Key | None, seconds: float = EXCERPT_SECONDS,
                  total: float | None = None) -> list[Excerpt]:
    """Consecutive excerpts ``[k * seconds, (k + 1) * seconds)`` of notes in seconds (a
    generated piece, whose states all play at one tempo): every note sounding in
    a window, cut to it, in seconds from the window's start (a note held into a
    window starts at 0 there, as in :func:`state_excerpts`).  ``total``: the piece's
    length (its states' seconds), so that a piece ending in a rest keeps its last
    excerpt, as a real one cut by :func:`excerpt_windows` does; None: its last note's end."""
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    if total is None:
        total = n[:, 1].max() if len(n) else 0.0
    out = []
    for k in range(int((total + 1e-3) // seconds)):  # 1 ms of slack for float32 state lengths
        a = k * seconds
        w = n[(n[:, 1] > a) & (n[:, 0] < a + seconds)].copy()
        w[:, :2] = np.clip(w[:, :2] - a, 0, seconds)
        out.append(Excerpt(w[np.lexsort((w[:, 2], w[:, 0]))], group, key))
    return out


# --- features ----------------------------------------------------------------------


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else math.nan


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def _sd(x: np.ndarray) -> float:
    return float(x.std()) if x.size > 1 else math.nan


def _entropy(values: np.ndarray) -> float:
    if values.size == 0:
        return math.nan
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def key_correlations(notes: np.ndarray) -> np.ndarray:
    """(24,) Krumhansl–Schmuckler correlation of the duration-weighted pitch-class
    histogram with each key's profile, in the order of ``ALL_KEYS``."""
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    return histogram_key_correlations(
        np.bincount(n[:, 2].astype(np.int64) % 12, weights=np.maximum(n[:, 1] - n[:, 0], 0), minlength=12))


def detected_key(notes: np.ndarray) -> Key:
    """The best of the 24 keys by the profile correlation (as ``detect_key`` without a signature)."""
    return ALL_KEYS[int(np.argmax(key_correlations(notes)))]


def _covered(start: np.ndarray, end: np.ndarray) -> float:
    """Length of the union of the intervals ``[start, end)`` (``start`` sorted)."""
    run_end = np.maximum.accumulate(end)
    gap = np.clip(start[1:] - run_end[:-1], 0, None).sum()
    return float(run_end[-1] - start[0] - gap)


def _onsets(start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Onset times and each note's onset index (notes sorted by start)."""
    new = np.ones(start.size, bool)
    new[1:] = np.diff(start) > ONSET_TOLERANCE
    return start[new], np.cumsum(new) - 1


def _ngram_recurrence(seq: np.ndarray, n: int = 4) -> float:
    """Share of the n-grams of ``seq`` that occur at least twice in it."""
    if seq.size < n:
        return math.nan
    grams = np.lib.stride_tricks.sliding_window_view(seq, n)
    _, inverse, counts = np.unique(grams, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.ravel()] > 1).mean())


def _chroma_self_similarity(start, end, pitch, seconds: float) -> float:
    """Mean cosine similarity of the pitch-class content of 1-s windows at least 2 s apart."""
    w0 = np.arange(0, seconds - 1e-9, CHROMA_WINDOW)
    overlap = np.clip(np.minimum(end[None, :], w0[:, None] + CHROMA_WINDOW) - np.maximum(start[None, :], w0[:, None]),
                      0, None)
    chroma = np.zeros((w0.size, 12))
    for pc in range(12):
        chroma[:, pc] = overlap[:, pitch % 12 == pc].sum(1)
    norm = np.linalg.norm(chroma, axis=1)
    ok = norm > 0
    chroma, idx = chroma[ok] / norm[ok, None], np.flatnonzero(ok)
    far = np.abs(idx[:, None] - idx[None, :]) >= round(2 / CHROMA_WINDOW)
    return float((chroma @ chroma.T)[far].mean()) if far.any() else math.nan


def excerpt_features(notes: np.ndarray, seconds: float = EXCERPT_SECONDS) -> dict[str, float]:
    """The :data:`FEATURE_NAMES` of one excerpt (notes in seconds from its start).

    Voicing looks at each onset (notes starting within 10 ms): the *spread* is
    the highest minus the lowest key sounding then (melody over bass), the
    *struck span* the same over the keys struck then; the *top voice* is the
    sequence of struck notes that are the highest sounding at their onset
    (a skyline), its intervals their successive differences.
    """
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    n = n[np.lexsort((n[:, 2], n[:, 0]))]
    start, end, pitch, vel = n[:, 0], n[:, 1], n[:, 2].astype(np.int64), n[:, 3]
    f: dict[str, float] = dict.fromkeys(FEATURE_NAMES, math.nan)
    f.update(notes_per_second=len(n) / seconds, onsets_per_second=0.0, silence_share=1.0, n_pitches=0.0)
    if len(n) == 0:
        return f
    dur = np.maximum(end - start, 1e-3)
    # register
    p = pitch.astype(np.float64)
    f.update(pitch_min=p.min(), pitch_max=p.max(), pitch_p05=np.percentile(p, 5), pitch_p95=np.percentile(p, 95),
             pitch_mean=p.mean(), pitch_sd=p.std(), pitch_range=p.max() - p.min(), n_pitches=np.unique(pitch).size)
    octave = np.clip((pitch - 24) // 12, 0, 6)  # C1-B1 (and below) ... C7 and above
    f.update({f"octave_c{i + 1}_share": share for i, share in enumerate(np.bincount(octave, minlength=7) / len(n))})
    if np.ptp(start) > 0:
        f["pitch_slope"] = float(np.polyfit(start, p, 1)[0] * 10)  # semitones per 10 s: does the register drift?
    # onsets and what sounds at each
    t, which = _onsets(start)
    sounding = (start[None, :] <= t[:, None] + ONSET_TOLERANCE) & (end[None, :] > t[:, None] + ONSET_TOLERANCE / 2)
    sounding[which, np.arange(len(n))] = True  # a note always sounds at its own onset
    top = np.where(sounding, p[None, :], -np.inf).max(1)
    bass = np.where(sounding, p[None, :], np.inf).min(1)
    struck_top = np.full(t.size, -np.inf)
    struck_low = np.full(t.size, np.inf)
    np.maximum.at(struck_top, which, p)
    np.minimum.at(struck_low, which, p)
    struck_n = np.bincount(which, minlength=t.size)
    spread = top - bass
    is_top = struck_top >= top
    melody = struck_top[is_top]
    iv = np.diff(melody)
    a = np.abs(iv)
    f.update(spread_mean=spread.mean(), spread_sd=_sd(spread), struck_span_mean=(struck_top - struck_low).mean(),
             top_mean=top.mean(), bass_mean=bass.mean(), top_abs_interval=_mean(a), top_interval_sd=_sd(iv),
             top_step_share=_share((a >= 1) & (a <= 2)), top_semitone_share=_share(a == 1),
             top_repeat_share=_share(a == 0), top_leap_share=_share(a >= 7),
             fast_top_share=_share(np.diff(t[is_top]) < 0.1), bass_abs_interval=_mean(np.abs(np.diff(bass))))
    # rhythm
    ioi = np.diff(t)
    ratios = np.round(np.log2(ioi[1:] / ioi[:-1]) * 4) if ioi.size > 1 else np.zeros(0)  # quarter-octave bins
    f.update(onsets_per_second=t.size / seconds, ioi_mean=_mean(ioi), ioi_median=float(np.median(ioi)) if ioi.size
             else math.nan, ioi_cv=_sd(ioi) / _mean(ioi) if ioi.size > 1 else math.nan,
             ioi_ratio_entropy=_entropy(ratios), dur_mean=dur.mean(), dur_median=float(np.median(dur)),
             dur_log_sd=float(np.log(dur).std()), silence_share=max(0.0, 1 - _covered(start, end) / seconds))
    # dynamics
    onset_vel = np.bincount(which, weights=vel, minlength=t.size) / np.maximum(struck_n, 1)
    f.update(vel_mean=vel.mean(), vel_sd=vel.std(), vel_range=np.percentile(vel, 95) - np.percentile(vel, 5),
             vel_change=_mean(np.abs(np.diff(onset_vel))))
    # tonality
    kc = key_correlations(n)
    corr = np.sort(kc)
    fifths = fifths_position(ALL_KEYS[int(np.argmax(kc))])
    f.update(key_clarity=corr[-1], key_margin=corr[-1] - corr[-2], key_fifths=fifths - 12 if fifths > 6 else fifths,
             pc_entropy=musicstats.pitch_class_entropy(n),
             n_pitch_classes=float(musicstats.n_pitch_classes_used(n)),
             scale_consistency=musicstats.scale_consistency(n))
    # harmony: the pitch classes sounding at each onset, and the intervals between them
    chroma = (sounding.astype(np.float64) @ np.eye(12)[pitch % 12]) > 0
    k = chroma.sum(1)
    pairs = (k * (k - 1) / 2).sum()
    # every pair of pitch classes has one interval class 1..6 (a tritone pair is counted from both ends)
    ic = {i: (chroma & np.roll(chroma, -i, axis=1)).sum() / (2 if i == 6 else 1) / pairs if pairs else math.nan
          for i in range(1, 7)}
    f.update({f"ic{i}_share": v for i, v in ic.items()})
    f.update(dissonance_share=ic[1] + ic[2] + ic[6], harmonic_change_rate=(chroma[1:] != chroma[:-1]).any(1).sum()
             / seconds)
    # repetition
    chords = [bytes(pitch[which == i].astype(np.uint8)) for i in range(t.size)]
    seen: set[bytes] = set()
    again = []
    for c in chords:
        again.append(c in seen)
        seen.add(c)
    f.update(interval_4gram_recurrence=_ngram_recurrence(iv), bass_4gram_recurrence=_ngram_recurrence(np.diff(bass)),
             chord_recurrence=_share(np.array(again[1:])),
             chroma_self_similarity=_chroma_self_similarity(start, end, pitch, seconds))
    # polyphony
    f.update(poly_at_onsets=sounding.sum(1).mean(), poly_time=musicstats.polyphony(n, resolution=100),
             notes_per_onset=struck_n.mean(), chord_share=_share(struck_n >= 2))
    return {k: float(v) for k, v in f.items()}


def bass_pulse(notes: np.ndarray) -> float:
    """How regular the bass's onsets are: the share of its inter-onset intervals within 10 % of the one
    before (NaN under 4 bass onsets).  A bass onset is an onset whose lowest struck key is the lowest
    sounding key then (a new bass note, not a melody note over a held bass) and lies below the
    excerpt's median pitch.  A march or waltz bass that keeps its beat scores near 1; bass notes
    scattered at random, near 0.  Not a classifier feature (so the realism figures stay comparable
    with the older ones): a statistic of the report, which the issue on composed music asks to bring
    within one sd of Chopin's."""
    n = np.asarray(notes, np.float64).reshape(-1, 4)
    if len(n) < 4:
        return math.nan
    n = n[np.lexsort((n[:, 2], n[:, 0]))]
    start, end, pitch = n[:, 0], n[:, 1], n[:, 2]
    t, which = _onsets(start)
    struck_low = np.full(t.size, np.inf)
    np.minimum.at(struck_low, which, pitch)
    # the lowest key still sounding from before each onset (a held bass under a new melody note)
    held = (start[None, :] < t[:, None] - ONSET_TOLERANCE) & (end[None, :] > t[:, None] + ONSET_TOLERANCE / 2)
    held_low = np.where(held, pitch[None, :], np.inf).min(1)
    # ... and in the lower half of the excerpt's notes: where no bass sounds, the melody is no bass
    tb = t[(struck_low < held_low) & (struck_low < np.median(pitch))]
    ioi = np.diff(tb)
    ioi = ioi[ioi > ONSET_TOLERANCE]
    if ioi.size < 3:
        return math.nan
    return float((np.abs(np.log(ioi[1:] / ioi[:-1])) < math.log(1.1)).mean())


def feature_matrix(excerpts: Sequence[Excerpt], seconds: float = EXCERPT_SECONDS) -> np.ndarray:
    """``(len(excerpts), len(FEATURE_NAMES))`` float array."""
    rows = [excerpt_features(e.notes, seconds) for e in excerpts]
    return np.array([[r[k] for k in FEATURE_NAMES] for r in rows], np.float64).reshape(len(rows), len(FEATURE_NAMES))
