"""Which hand (staff) plays each note: by register, with voice-leading continuity.

A fixed split at middle C puts an alto line's notes on both staves in turn and a left-hand
leap into the treble on the wrong staff.  Instead, the notes struck together are split into a
lower and an upper group at the place that costs least, where the cost of a split is:

* how far each hand's notes lie from where that hand has just been playing (its running centre,
  which drifts back to its home register, C3 or C5, while the hand rests);
* a stretch wider than a hand spans (``MAX_SPAN`` semitones) within one hand;
* the left hand above ``LEFT_CEILING``, the right hand below ``RIGHT_FLOOR``;
* notes that lie below a key the right hand still holds, or above one the left hand holds,
  given to the other hand (the hands do not cross without need).

Measured against the NIFC editions' staves in docs/sheet-music.md.
"""

from __future__ import annotations

import numpy as np

from chopinbot.constants import GRID_PER_BEAT

LEFT_HOME, RIGHT_HOME = 48.0, 72.0  # C3, C5
MAX_SPAN = 14  # semitones one hand takes without a penalty (a ninth; Chopin asks a tenth at most)
LEFT_CEILING, RIGHT_FLOOR = 72, 53  # C5, F3
HOME_HALF_LIFE = 4.0  # beats: a resting hand's centre drifts home
FOLLOW = 0.5  # how far a hand's centre moves to the notes it just played
RIGHT_REACH, LEFT_REACH = 7, 12  # semitones below a held right-hand note / above a held left-hand one, freely
BUSY = 3.0  # the weight of such a stretch (a semitone beyond the reach costs what 2 semitones off the centre do)
RECENT = 1.0  # beats: a note struck this recently counts as held, for the stretch


def split_hands(starts: np.ndarray, ends: np.ndarray, pitches: np.ndarray) -> np.ndarray:
    """Staff (1 = right hand, treble; 2 = left hand, bass) of each note, given in grid steps, sorted by start."""
    n = len(pitches)
    staff = np.ones(n, np.int64)
    centre = [LEFT_HOME, RIGHT_HOME]  # left, right
    last = [0.0, 0.0]
    held: list[tuple[float, int, int, float]] = []  # (end, pitch, hand, start) of notes still sounding
    recent: list[tuple[float, int, int, float]] = []  # ... and of those struck in the last RECENT steps
    i = 0
    while i < n:
        j = i
        while j < n and starts[j] == starts[i]:
            j += 1
        t = float(starts[i]) / GRID_PER_BEAT
        recent = [h for h in recent if h[3] > t - RECENT or h[0] > t]
        busy_notes = recent
        held = [h for h in held if h[0] > t]
        for hand, home in ((0, LEFT_HOME), (1, RIGHT_HOME)):
            w = 0.5 ** ((t - last[hand]) / HOME_HALF_LIFE)
            centre[hand] = w * centre[hand] + (1 - w) * home
        order = np.argsort(pitches[i:j], kind="stable")
        p = pitches[i:j][order].astype(np.float64)
        right_low = min((h[1] for h in held if h[2] == 1), default=None)
        left_high = max((h[1] for h in held if h[2] == 0), default=None)
        right_high = max((h[1] for h in busy_notes if h[2] == 1), default=None)
        left_low = min((h[1] for h in busy_notes if h[2] == 0), default=None)
        best_k, best_cost = 0, np.inf
        for k in range(len(p) + 1):  # p[:k] left hand, p[k:] right hand
            lo, hi = p[:k], p[k:]
            cost = 0.0
            for grp, hand in ((lo, 0), (hi, 1)):
                if grp.size:
                    cost += np.abs(grp - centre[hand]).sum() / 6.0
                    cost += 2.0 * max(0.0, grp.max() - grp.min() - MAX_SPAN)
            if lo.size:
                cost += np.maximum(lo - LEFT_CEILING, 0).sum() / 2.0
                if right_low is not None:
                    cost += 3.0 * (lo > right_low).sum()
                if left_low is not None:  # the left hand holds a note: a stretch above it
                    cost += np.maximum(lo - left_low - LEFT_REACH, 0).sum() / 3.0
            if hi.size:
                cost += np.maximum(RIGHT_FLOOR - hi, 0).sum() / 2.0
                if left_high is not None:
                    cost += 3.0 * (hi < left_high).sum()
                if right_high is not None:  # the right hand holds a note: a stretch below it
                    cost += BUSY * np.maximum(right_high - hi - RIGHT_REACH, 0).sum() / 3.0
            if cost < best_cost:
                best_k, best_cost = k, cost
        hands = np.empty(j - i, np.int64)
        hands[order] = (np.arange(len(p)) >= best_k).astype(np.int64)  # 1 right, 0 left
        for hand in (0, 1):
            mine = p[(np.arange(len(p)) >= best_k) == bool(hand)]
            if mine.size:
                centre[hand] = (1 - FOLLOW) * centre[hand] + FOLLOW * float(mine.mean())
                last[hand] = t
        staff[i:j] = np.where(hands == 1, 1, 2)
        for q in range(i, j):
            note = (float(ends[q]) / GRID_PER_BEAT, int(pitches[q]), int(staff[q] == 1), t)
            recent.append(note)
            held.append(note)
        i = j
    return staff
