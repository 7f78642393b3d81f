"""Does a model copy its own training music?  ``chopinbot evaluate`` checks the generated
pieces against the training pieces of the dataset it evaluates on (the 48 performed pieces);
a model trained on a larger corpus (the Chopin editions, other composers) is checked here
against that corpus's training pieces too.

    .venv/bin/python scripts/copy_check.py --model piano-controls --corpus runs/corpus/piano

The same 20 pieces as the report's statistics (256 states after a 16-state test seed, random
seeds 0..19, the default decoding); prints the share of 8-state n-grams found verbatim in a
training piece and the longest copied run.
"""

from __future__ import annotations

import argparse

from chopinbot.dataset.prepare import load_or_prepare
from chopinbot.evaluation.musicstats import CorpusIndex
from chopinbot.evaluation.report import EvalSettings, musical_statistics
from chopinbot.model.formats import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder or bundled name (default: the shipped model)")
    p.add_argument("--corpus", required=True, help="the prepared dataset the model was trained on")
    p.add_argument("--data", default=None, help="the dataset whose test seeds are continued (default: bundled)")
    args = p.parse_args()
    model = load_model(args.model)
    corpus = load_or_prepare(args.corpus, progress=False)
    index = CorpusIndex([(s.piece, corpus.states(s)) for s in corpus.segments("train")])
    stats = musical_statistics(model, load_or_prepare(args.data, progress=False), EvalSettings(progress=False),
                               train_index=index)
    o = stats["originality"]
    run = o["longest_run"]
    print(f"{len(corpus.segments('train'))} training segments of {args.corpus}: 8-state n-grams found verbatim "
          f"{o['mean_overlap_8']:.1%} (worst piece {o['max_overlap_8']:.1%}); longest copied run {run['states']} "
          f"states, {run['seconds']:.2f} s, from {run['piece']}")


if __name__ == "__main__":
    main()
