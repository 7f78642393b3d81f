"""Baselines computed on the same held-out states as the models.

* copy: the next state is the current one.  As a probability model (for its
  NLL) a sounding key stays on with probability 1 - p_off and a silent key
  comes on with probability p_on, both rates measured on the training pieces.
  Its duration guess is the current state's length.
* frequency: each key is on with its training frequency, whatever came
  before; its duration guess is the most common rhythmic value.
"""

from __future__ import annotations

import numpy as np

from .constants import N_KEYS
from .dataset import unpack_states
from .metrics import KeyCounts
from .sequences import SplitData


def _pairs(data: SplitData):
    for a, b in data.segments:
        s = unpack_states(data.records[a:b])
        yield s.keys[:-1], s.keys[1:], s.beats[:-1].astype(np.float64), s.beats[1:].astype(np.float64)


def _bernoulli_nll(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (~y) * np.log(1 - p)).sum())


def fit_rates(train: SplitData) -> dict[str, np.ndarray | float]:
    on_stay = on_n = off_on = off_n = 0
    freq = np.zeros(N_KEYS)
    n = 0
    durs: list[np.ndarray] = []
    for cur, nxt, _, d_next in _pairs(train):
        on_stay += int((cur & nxt).sum())
        on_n += int(cur.sum())
        off_on += int((~cur & nxt).sum())
        off_n += int((~cur).sum())
        freq += nxt.sum(0)
        n += len(nxt)
        durs.append(d_next)
    vals, counts = np.unique(np.round(np.concatenate(durs) * 48).astype(int), return_counts=True)
    return {"p_stay": on_stay / max(on_n, 1), "p_on": off_on / max(off_n, 1), "freq": freq / max(n, 1),
            "mode_beats": vals[counts.argmax()] / 48}


def baseline_metrics(name: str, data: SplitData, rates: dict, threshold: float | None = None) -> dict[str, float]:
    """Key P/R/F1 (at 0.5 and at ``threshold`` or the split's own best),
    key NLL per state (nats) and duration error of a baseline on ``data``."""
    kc = KeyCounts()
    nll = dur_err = 0.0
    n = 0
    for cur, nxt, d_cur, d_next in _pairs(data):
        if name == "copy":
            p = np.where(cur, rates["p_stay"], rates["p_on"])
            d_pred = d_cur
        elif name == "frequency":
            p = np.broadcast_to(rates["freq"], nxt.shape)
            d_pred = np.full_like(d_next, rates["mode_beats"])
        else:
            raise ValueError(name)
        kc.update(p.ravel(), nxt.ravel())
        nll += _bernoulli_nll(p, nxt)
        dur_err += float((2 * np.abs(d_next - d_pred) / (d_next + d_pred)).sum())
        n += len(nxt)
    t = kc.best_threshold() if threshold is None else threshold
    p5, r5, f5 = kc.at(0.5)
    pb, rb, fb = kc.at(t)
    return {"precision": p5, "recall": r5, "f1": f5, "best_threshold": t, "precision_best": pb, "recall_best": rb,
            "f1_best": fb, "key_nll": nll / max(n, 1), "dur_error": dur_err / max(n, 1), "states": n}
