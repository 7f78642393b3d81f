"""Measure the constants of chopinbot.music.controls on a prepared dataset.

    python scripts/measure_controls.py runs/corpus/chopin

Prints the percentiles of the 8-beat windows' mean velocity (files with dynamics: the
performed pieces) behind LOUDNESS_LEVELS, and the mean pitch-class shares of the windows
in major and in minor segments behind MAJOR_PROFILE and MINOR_PROFILE.
"""

from __future__ import annotations

import sys

import numpy as np

from chopinbot.dataset.store import Dataset
from chopinbot.music.controls import window_controls


def main(path: str) -> None:
    ds = Dataset(path)
    loud, prof = [], {False: [], True: []}
    for seg in ds.segments():
        st = ds.states(seg)
        w = window_controls(st.onsets, st.beats, st.velocity if seg.dynamics else None)
        loud.append(w.loudness[~np.isnan(w.loudness)])
        prof[seg.minor].append(w.key[~np.isnan(w.key).any(1)])
    v = np.concatenate(loud)
    print("loudness percentiles 10/30/50/70/90:", np.round(np.percentile(v, [10, 30, 50, 70, 90])).astype(int).tolist(),
          f"({len(v):,} windows)")
    for minor in (False, True):
        p = np.concatenate(prof[minor]).mean(0)
        print("minor" if minor else "major", "profile:", tuple(np.round(p / p.sum(), 3).tolist()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/corpus/chopin")
