"""Key NLL of a model that listens (model.adaptation) at several learning rates and block sizes.

    PYTHONPATH=src python scripts/listening_likelihood.py piano-transformer valid --lr 0,3e-4,1e-3,3e-3 --block 16,32

Each piece of the split is read as the composer reads a primer (each block scored, then learnt, through
the first 512 states; the weights fixed after); lr 0: the model as trained.  It reads runs/dataset
(`make run` prepares it).  Choose on valid; the report scores the default once on test.
"""

from __future__ import annotations

import argparse

import torch

from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.store import Dataset
from chopinbot.model.adaptation import LISTEN_STATES, listening_outputs
from chopinbot.model.formats import load_model
from chopinbot.model.loss import HARSHNESS
from chopinbot.model.predict import batch_outputs, compute_losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("split", choices=("valid", "test"))
    ap.add_argument("--lr", default="0,3e-4,1e-3,3e-3")
    ap.add_argument("--block", default="16")
    ap.add_argument("--states", type=int, default=LISTEN_STATES)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model).eval()
    data = SplitData(Dataset("runs/dataset"), args.split, model.config.vocab)
    for block in (int(b) for b in args.block.split(",")):
        for lr in (float(v) for v in args.lr.split(",")):
            total = n = 0.0
            for chunk in data.whole_segments():
                x, t = data.batch([chunk], **model.config.scoring_blocks)
                if lr > 0:
                    out = listening_outputs(model, x, t.keys, t.onsets, t.mask, args.states, block, lr)
                else:
                    with torch.no_grad():
                        out = batch_outputs(model, x, t)
                k = float(t.mask.sum())
                total += compute_losses(model, out, t, HARSHNESS, True)["key_nll"].item() * k
                n += k
            print(f"{args.model} {args.split}: lr {lr:g}, blocks of {block}: key NLL {total / n:.3f}", flush=True)


if __name__ == "__main__":
    main()
