"""Diagnostic: how well does a model rank the next state's keys, per kind of key?

For every valid state and key, two sub-tasks decide the key F1 against the
copy baseline: will a *held* key keep sounding (continuation), and will a
*silent* key start (a new note)?  This prints the ROC AUC of a trained model
on each, beside a gradient-boosted tree on a few per-key features, with and
without the key's *recency* (beats since it was last struck, sounding or not,
and its previous inter-onset interval; capped at 16 beats).

    .venv/bin/pip install scikit-learn      # not a dependency of chopinbot
    .venv/bin/chopinbot prepare --out runs/dataset
    .venv/bin/python scripts/key_auc.py [--model joint-loudness] [--data runs/dataset]

Measured on the valid pieces (see docs/training.md):

| model | new-key onsets | continuation |
|---|---|---|
| shipped model of 2026-11-25 morning (no recency input) | 0.839 | 0.542 |
| tree, base features / + recency | 0.860 / 0.910 | |
| shipped model of 2026-11-25 evening (recency input) | 0.898 | 0.586 |
| shipped model of 2026-12-01 (recency and repeats inputs) | **0.960** | **0.925** |

The first row led to the recency input; the continuation column, which
recency did not move, to the repeats input.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from chopinbot import load_model
from chopinbot.dataset.store import Dataset

CAP = 16.0  # beats


def silent_key_rows(ds: Dataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per (state, silent key): [pitch, keys sounding within an octave, phase in
    the beat, polyphony, recency, previous interval, recency - interval] and
    whether the key sounds in the next state."""
    X, Y = [], []
    for seg in ds.segments(split):
        st = ds.states(seg)
        keys, ons, beats = st.keys, st.onsets, st.beats.astype(np.float64)
        if len(beats) < 3:
            continue
        t_end = np.cumsum(beats)
        t_start = t_end - beats
        last = np.full(88, -1e9)
        last2 = np.full(88, -1e9)
        prev = np.zeros(88, bool)
        for t in range(len(beats) - 1):
            strike = ons[t] | (keys[t] & ~prev)
            last2 = np.where(strike, last, last2)
            last = np.where(strike, t_start[t], last)
            prev = keys[t]
            idx = np.flatnonzero(~keys[t])
            rec = np.minimum(t_end[t] - last[idx], CAP)
            per = np.minimum(last[idx] - last2[idx], CAP)
            near = np.array([keys[t][max(0, k - 12) : k + 13].sum() for k in idx])
            base = np.stack([idx, near, np.full(len(idx), t_end[t] % 1.0), np.full(len(idx), keys[t].sum())], 1)
            X.append(np.concatenate([base, rec[:, None], per[:, None], (rec - per)[:, None]], 1))
            Y.append(keys[t + 1][idx])
    return np.concatenate(X), np.concatenate(Y)


def model_aucs(ds: Dataset, model, split: str) -> tuple[float, float]:
    """The model's AUC on new-key onsets (silent keys) and on continuation (held keys)."""
    p_new, y_new, p_held, y_held = [], [], [], []
    with torch.inference_mode():
        for seg in ds.segments(split):
            st = ds.states(seg)
            if len(st.beats) < 3:
                continue
            x = model.config.layout.sequence_rows(st.keys, st.onsets, st.beats)
            out, _ = model(torch.from_numpy(x)[None])
            p = torch.sigmoid(out.key_logits[0]).numpy()[:-1]
            now, nxt = st.keys[:-1], st.keys[1:]
            p_new.append(p[~now]), y_new.append(nxt[~now])
            p_held.append(p[now]), y_held.append(nxt[now])
    cat = np.concatenate
    return roc_auc_score(cat(y_new), cat(p_new)), roc_auc_score(cat(y_held), cat(p_held))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--data", default="runs/dataset", help="prepared dataset (default: %(default)s)")
    args = ap.parse_args()
    ds = Dataset(args.data)
    new_auc, held_auc = model_aucs(ds, load_model(args.model), "valid")
    print(f"model: new-key onsets AUC {new_auc:.3f}, continuation AUC {held_auc:.3f}")
    x_tr, y_tr = silent_key_rows(ds, "train")
    x_va, y_va = silent_key_rows(ds, "valid")
    for name, cols in (("tree, base features", [0, 1, 2, 3]), ("tree, + recency", [0, 1, 2, 3, 4, 5, 6])):
        tree = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(x_tr[::4, cols], y_tr[::4])
        print(f"{name}: new-key onsets AUC {roc_auc_score(y_va, tree.predict_proba(x_va[:, cols])[:, 1]):.3f}")


if __name__ == "__main__":
    main()
