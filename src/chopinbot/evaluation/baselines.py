"""Baselines computed on the same held-out states as the models.

* copy: the next state is the current one.  As a probability model (for its
  NLL) a sounding key stays on with probability 1 - p_off and a silent key
  comes on with probability p_on, both rates measured on the training pieces.
  Its duration guess is the current state's length.
* frequency: each key is on with its training frequency, whatever came
  before; its duration guess is the most common rhythmic value.
* repeat: the next state is the one that followed the last occurrence of the
  longest passage matching the one just heard (:mod:`chopinbot.music.repeats`; the
  transposed match where it is the longer), else the current state -- the
  model's repeats input used on its own, with nothing learnt.  As a
  probability model a key is on with the training rate of keys that are on
  where the guess says on (or off); its duration guess is the guessed state's.
"""

from __future__ import annotations

import numpy as np

from chopinbot.constants import N_KEYS
from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.inputs import split_repeats
from chopinbot.dataset.store import unpack_states
from chopinbot.model.metrics import KeyCounts
from chopinbot.music.repeats import shift_keys


def _pairs(data: SplitData):
    for a, b in data.segments:
        s = unpack_states(data.records[a:b])
        yield s.keys[:-1], s.keys[1:], s.beats[:-1].astype(np.float64), s.beats[1:].astype(np.float64)


def _repeat_guesses(data: SplitData):
    """Per segment: the repeat baseline's guessed next keys and lengths, with the true ones."""
    exact, moved = split_repeats(data, "exact"), split_repeats(data, "transposed")
    for a, b in data.segments:
        s = unpack_states(data.records[a:b])
        (rows_e, len_e, _), (rows_t, len_t, shift_t) = ((v[a : b - 1] for v in r) for r in (exact, moved))
        use_t = len_t > len_e
        rows, found = np.where(use_t, rows_t, rows_e), np.maximum(len_e, len_t) > 0
        cont = unpack_states(data.records[np.maximum(rows, 0)])
        guess = np.where(found[:, None], shift_keys(cont.keys, np.where(use_t, shift_t, 0)), s.keys[:-1])
        d_guess = np.where(found, cont.beats, s.beats[:-1]).astype(np.float64)
        yield guess, s.keys[1:], d_guess, s.beats[1:].astype(np.float64)


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
    hit = said_on = miss = said_off = 0
    for guess, nxt, _, _ in _repeat_guesses(train):
        hit += int((guess & nxt).sum())
        said_on += int(guess.sum())
        miss += int((~guess & nxt).sum())
        said_off += int((~guess).sum())
    return {"p_stay": on_stay / max(on_n, 1), "p_on": off_on / max(off_n, 1), "freq": freq / max(n, 1),
            "mode_beats": vals[counts.argmax()] / 48, "p_guess_on": hit / max(said_on, 1),
            "p_guess_off": miss / max(said_off, 1)}


def baseline_metrics(name: str, data: SplitData, rates: dict, threshold: float | None = None) -> dict[str, float]:
    """Key P/R/F1 (at 0.5 and at ``threshold`` or the split's own best),
    key NLL per state (nats) and duration error of a baseline on ``data``."""
    kc = KeyCounts()
    nll = dur_err = 0.0
    n = 0
    if name not in ("copy", "frequency", "repeat"):
        raise ValueError(name)
    for cur, nxt, d_cur, d_next in (_repeat_guesses(data) if name == "repeat" else _pairs(data)):
        if name == "copy":
            p = np.where(cur, rates["p_stay"], rates["p_on"])
            d_pred = d_cur
        elif name == "frequency":
            p = np.broadcast_to(rates["freq"], nxt.shape)
            d_pred = np.full_like(d_next, rates["mode_beats"])
        else:  # cur is the guess
            p = np.where(cur, rates["p_guess_on"], rates["p_guess_off"])
            d_pred = d_cur
        kc.update(p.ravel(), nxt.ravel())
        nll += _bernoulli_nll(p, nxt)
        dur_err += float((2 * np.abs(d_next - d_pred) / (d_next + d_pred)).sum())
        n += len(nxt)
    t = kc.best_threshold() if threshold is None else threshold
    p5, r5, f5 = kc.at(0.5)
    pb, rb, fb = kc.at(t)
    return {"precision": p5, "recall": r5, "f1": f5, "best_threshold": t, "precision_best": pb, "recall_best": rb,
            "f1_best": fb, "key_nll": nll / max(n, 1), "dur_error": dur_err / max(n, 1), "states": n}
