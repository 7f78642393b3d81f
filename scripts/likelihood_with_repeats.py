"""Key NLL of the network alone, and mixed with its repeat lookup as the composer mixes it (RepeatBoost).

The repeat boost offers each state the continuation of the longest earlier match and takes it with
probability q = bP / (1 + (b-1)P) (P: the network's probability of that whole state: keys, onsets,
rhythmic value); otherwise the state is drawn from the network.  The keys' distribution is then
q [keys = offered] + (1 - q) p(keys), a proper distribution, whose NLL per state this prints for each boost
b beside the network's own (the report's key NLL), with the share of states offered a continuation and the
share whose keys it got right.  The offers are RepeatBoost's own, read state by state.

    PYTHONPATH=src python scripts/likelihood_with_repeats.py piano-transformer valid 1,2,4,16 [passes]

It reads runs/dataset (`make run` prepares it).  The composer's other rules (its key truncation, the loop
breaker) are left out: some give a real state probability 0, so they have no likelihood.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from chopinbot.compose.repetition import RepeatBoost
from chopinbot.constants import N_KEYS
from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.store import Dataset
from chopinbot.model.formats import load_model
from chopinbot.model.predict import batch_outputs


def offers(keys: np.ndarray, onsets: np.ndarray, beats: np.ndarray, classes: np.ndarray, passes: int):
    """What the repeat boost offers for each state of a segment after the first, read state by state as the
    composer reads its own: keys, onsets (n-1, 88), rhythmic class and whether there is an offer (n-1,)."""
    # what it offers does not depend on the boost's size (that only weighs the offer: see main)
    boost = RepeatBoost(1.0, keys[None, :1], onsets[None, :1], beats[None, :1], classes, passes)
    out = []
    for i in range(1, len(keys)):
        out.append(boost.candidates())
        boost.update(keys[i : i + 1], onsets[i : i + 1], beats[i : i + 1])
    return tuple(np.concatenate(parts) for parts in zip(*out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("split")
    ap.add_argument("boosts", help="comma-separated, e.g. 1,2,4,16")
    ap.add_argument("passes", type=int, nargs="?", default=2)
    args = ap.parse_args()
    boosts = [float(b) for b in args.boosts.split(",")]
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    data = SplitData(Dataset("runs/dataset"), args.split, model.config.vocab)
    n, offered, right, network, mixed = 0, 0, 0, 0.0, dict.fromkeys(boosts, 0.0)
    for chunk in data.whole_segments():
        rec = data.records[chunk.start : chunk.start + chunk.length + 1]
        keys = np.unpackbits(rec["keys"], axis=1, count=N_KEYS).astype(bool)
        onsets = np.unpackbits(rec["onsets"], axis=1, count=N_KEYS).astype(bool)
        ck, co, cls, found = offers(keys, onsets, np.asarray(rec["beats"], np.float64),
                                    np.asarray(model.config.duration_classes), args.passes)
        prev = keys[:-1]
        co |= ck & ~prev  # a key that starts sounding is struck
        found &= ~(((ck == prev).all(-1)) & ~(co & prev).any(-1))  # an offer that changes nothing is never made
        x, t = data.batch([chunk], **model.config.scoring_blocks)
        with torch.no_grad():
            out = batch_outputs(model, x, t)
            lp_true = -F.binary_cross_entropy_with_logits(out.key_logits[0], t.keys[0], reduction="none").sum(-1)
            k_t, o_t = (torch.from_numpy(a.astype(np.float32))[None] for a in (ck, co))
            offer = model(x, None, (k_t, o_t))[0]  # the joint conditionals given the offer's keys
            lp_keys = -F.binary_cross_entropy_with_logits(offer.key_logits[0], k_t[0], reduction="none").sum(-1)
            kept = k_t[0] * torch.from_numpy(prev.astype(np.float32))  # keys sounding on: struck again or not
            lp_on = -(F.binary_cross_entropy_with_logits(offer.onset_logits[0], o_t[0], reduction="none")
                      * kept).sum(-1)
            lp_cls = torch.log_softmax(out.duration[0].double(), -1)[torch.arange(len(cls)), torch.from_numpy(cls)]
        log_p = lp_true.double().numpy()
        log_offer = np.minimum((lp_keys.double() + lp_on.double() + lp_cls).numpy(), -1e-9)
        same = (ck == keys[1:]).all(-1) & found
        n, offered, right = n + len(log_p), offered + found.sum(), right + same.sum()
        network -= log_p.sum()
        for b in boosts:
            q = np.where(found, 1.0 / (1.0 + np.exp(-(np.log(b) + log_offer - np.log1p(-np.exp(log_offer))))), 0.0)
            p = np.exp(log_p)
            mixed[b] -= np.log(np.maximum(np.where(same, q + (1 - q) * p, (1 - q) * p), 1e-300)).sum()
    print(f"{args.model} {args.split}: {n} states, offered {offered / n:.3f}, right {right / n:.3f}; key NLL: "
          f"network {network / n:.3f}, " + ", ".join(f"boost {b:g} {mixed[b] / n:.3f}" for b in boosts))


if __name__ == "__main__":
    main()
