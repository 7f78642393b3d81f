"""Write ``src/chopinbot/data/splits.json``: the bundled corpora's held-out works.

Run once by hand when a bundled source changes (``python scripts/make_splits.py``);
the result is committed, so splits never move with the code.  The rule:

* the works of the 48 piano-midi.de Chopin pieces keep the splits they had
  (``data/chopin/splits.json``): 5 test, 6 valid, so figures stay comparable;
* of the NIFC works we did not have, ordered by the sha256 of their work id,
  the first 10 % go to test and the next 10 % to valid;
* of every other composer with at least 5 works, likewise 10 % (at least one)
  to test and as many to valid; composers with fewer works train only.

Works that hold the same music under other ids are pulled into the held-out
split by ``prepare`` itself (:func:`chopinbot.dataset.splits.work_splits`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

from chopinbot.dataset.corpus import BUNDLED_SOURCES, COMMITTED_SPLITS, read_table
from chopinbot.io_utils import atomic_write_json

HELD_OUT_SHARE = 0.10
MIN_COMPOSER_WORKS = 5


def _ordered(works: set[str]) -> list[str]:
    return sorted(works, key=lambda w: hashlib.sha256(w.encode()).hexdigest())


def main() -> None:
    chopin = read_table(BUNDLED_SOURCES["chopin"])
    old = json.loads((BUNDLED_SOURCES["chopin"] / "splits.json").read_text())
    work_of = {f.name: f.work for f in chopin}
    test = [work_of[n] for n in old["test"]]
    valid = [work_of[n] for n in old["valid"]]
    known = set(work_of.values())
    nifc = {f.work for f in read_table(BUNDLED_SOURCES["nifc"])} - known
    order = _ordered(nifc)
    k = round(HELD_OUT_SHARE * len(order))
    test += order[:k]
    valid += order[k : 2 * k]
    by_composer: dict[str, set[str]] = defaultdict(set)
    for f in read_table(BUNDLED_SOURCES["piano-midi.de"]):
        by_composer[f.composer].add(f.work)
    for composer in sorted(by_composer):
        works = _ordered(by_composer[composer])
        if len(works) < MIN_COMPOSER_WORKS:
            continue
        k = max(1, round(HELD_OUT_SHARE * len(works)))
        test += works[:k]
        valid += works[k : 2 * k]
    rule = (__doc__ or "").split("The rule:", 1)[1].split("Works that", 1)[0]
    atomic_write_json(COMMITTED_SPLITS, {"rule": " ".join(rule.split()), "test": test, "valid": valid})
    print(f"{len(test)} test and {len(valid)} valid works -> {COMMITTED_SPLITS}")


if __name__ == "__main__":
    main()
