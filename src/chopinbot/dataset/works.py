"""Works: which files hold the same music, found by their notes.

The same work reaches the corpus in several forms: a performance from
piano-midi.de and two or three first editions from the NIFC, sometimes under
different numbers (the editions of op. 33 number the mazurkas differently;
one edition prints op. 7 no. 5 as op. 6 no. 5).  Names cannot be trusted to
say which files are one work, so the notes decide:

* a file's *fingerprint* is the set of 6-interval figures of its top line (the
  highest note at each onset, on a 16th grid): intervals, so a transposed copy
  has the same fingerprint; figures of fewer than three distinct intervals
  (scales, trills, repeated notes) are left out, as every piece has them;
* two files are one work when at least ``SAME_WORK_SHARE`` of the smaller
  fingerprint lies in the other (containment, so a movement found inside a
  longer file, or a score without its repeats, still matches).

Measured on the 48 piano-midi.de files, the 375 NIFC edition files and 289
files of 24 other composers (712 files, 253k pairs): editions and
performances of one work share 0.40--1.0 of their figures (median 0.88);
different works at most 0.24 (two Promenades of *Pictures at an Exhibition*;
next Godowsky's arrangement of an Albéniz tango, 0.16), and 99.8 % of pairs
below 0.05.  ``SAME_WORK_SHARE`` = 0.3 sits between the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from chopinbot.music.midi import PianoNotes

FIGURE_INTERVALS = 6  # intervals per figure
FIGURE_GRID = 4  # onsets are grouped on a 16th grid (4 per beat)
MIN_DISTINCT_INTERVALS = 3  # figures with fewer are too common to tell works apart
SAME_WORK_SHARE = 0.3  # containment at which two files are one work
MIN_FIGURES = 20  # a file with fewer figures is never matched (too little to judge)
_INTERVAL_CLIP = 24  # leaps beyond two octaves count as two octaves


def top_line(notes: PianoNotes, grid: int = FIGURE_GRID) -> np.ndarray:
    """The highest pitch at each onset (onsets snapped to 1/``grid`` beat), in time order."""
    if len(notes) == 0:
        return np.zeros(0, np.int64)
    step = notes.ticks_per_quarter / grid
    onset = np.round(notes.start / step).astype(np.int64)
    order = np.lexsort((-notes.pitch.astype(np.int64), onset))
    onset, pitch = onset[order], notes.pitch[order].astype(np.int64)
    first = np.r_[True, onset[1:] != onset[:-1]]
    return pitch[first]


def fingerprint(notes: PianoNotes) -> np.ndarray:
    """The sorted, unique int64 codes of the file's top-line figures (see the module docstring)."""
    iv = np.clip(np.diff(top_line(notes)), -_INTERVAL_CLIP, _INTERVAL_CLIP) + _INTERVAL_CLIP
    n = FIGURE_INTERVALS
    m = len(iv) - n + 1
    if m <= 0:
        return np.zeros(0, np.int64)
    figures = np.stack([iv[i : m + i] for i in range(n)], axis=1)
    codes = np.zeros(m, np.int64)
    for i in range(n):
        codes = codes * (2 * _INTERVAL_CLIP + 1) + figures[:, i]
    ordered = np.sort(figures, axis=1)
    distinct = 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)
    return np.unique(codes[distinct >= MIN_DISTINCT_INTERVALS])


def shared_share(fingerprints: Sequence[np.ndarray], others: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """(n, m) containment: the share of the smaller fingerprint found in the
    other, for every pair of ``fingerprints`` (with themselves, or with
    ``others``).  Pairs where either has fewer than ``MIN_FIGURES`` figures are 0.
    One sparse product, so 700 files take well under a second."""
    others = fingerprints if others is None else others
    codes = np.unique(np.concatenate([np.zeros(0, np.int64), *fingerprints, *others]))

    def matrix(fps: Sequence[np.ndarray]) -> scipy.sparse.csr_matrix:
        cols = [np.searchsorted(codes, f) for f in fps]
        rows = np.concatenate([np.zeros(0, np.int64)] + [np.full(len(c), i) for i, c in enumerate(cols)])
        data = np.ones(len(rows), np.float32)
        return scipy.sparse.csr_matrix((data, (rows, np.concatenate([np.zeros(0, np.int64), *cols]))),
                                       shape=(len(fps), len(codes)))

    shared = (matrix(fingerprints) @ matrix(others).T).toarray()
    a = np.array([len(f) for f in fingerprints], np.float64)
    b = np.array([len(f) for f in others], np.float64)
    smaller = np.minimum(a[:, None], b[None, :])
    share = shared / np.maximum(smaller, 1.0)
    share[(a[:, None] < MIN_FIGURES) | (b[None, :] < MIN_FIGURES)] = 0.0
    return share


def group_works(fingerprints: Sequence[np.ndarray], declared: Sequence[str] | None = None,
                threshold: float = SAME_WORK_SHARE) -> list[int]:
    """For each file, the index of the first file of its work: files whose
    fingerprints share at least ``threshold``, or that ``declared`` the same
    work id, are one work, and so is any chain of such pairs (connected
    components).  A wrong declaration can only hold more out, never leak."""
    n = len(fingerprints)
    if n == 0:
        return []
    share = shared_share(fingerprints)
    np.fill_diagonal(share, 0.0)
    same = share >= threshold
    if declared is not None:
        ids = np.unique(np.asarray(declared), return_inverse=True)[1].ravel()
        same |= ids[:, None] == ids[None, :]
    _, labels = scipy.sparse.csgraph.connected_components(scipy.sparse.csr_matrix(same), directed=False)
    first: dict[int, int] = {}
    return [first.setdefault(int(lab), i) for i, lab in enumerate(labels)]
