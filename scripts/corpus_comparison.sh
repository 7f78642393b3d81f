#!/bin/sh
# The three training sets of docs/corpus.md, at equal CPU time (15 CPU-minutes each, one thread, low priority),
# then one evaluation of all of them (and the previous default) on the same held-out Chopin test works.
# Resumable: a run folder that holds a finished run is kept (delete it to train again).
set -e
B=${BUDGET:-15}
mkdir -p runs/corpus
for c in chopin48 chopin piano; do
  .venv/bin/chopinbot prepare --corpus $c --out runs/corpus/$c --quiet
done
# --epochs: the cosine schedule should end near the budget; an epoch of the larger corpora is longer
# (measured: ~5, ~25 and ~70 CPU-s per epoch), so each gets the epochs that fit.
train() {  # corpus, epochs
  if [ -f runs/corpus/m-$1/best/config.json ] && grep -q . runs/corpus/m-$1/done 2>/dev/null; then return; fi
  if [ -d runs/corpus/m-$1/last ]; then resume=--resume; else resume=--force; fi
  nice -n 5 .venv/bin/chopinbot train --data runs/corpus/$1 --out runs/corpus/m-$1 --cpu-minutes $B --threads 1 \
    --seed 0 --epochs $2 --quiet $resume
  echo done > runs/corpus/m-$1/done
}
train chopin48 60
train chopin 36
train piano 13
