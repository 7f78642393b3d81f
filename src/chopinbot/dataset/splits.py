"""Splits by work: which works train, which are held out.

A work sits in one split with all its files (editions, sources).  Files are
one work when they declare the same work id or hold the same music
(:func:`chopinbot.dataset.works.group_works`).  The bundled corpora's splits
are committed (``data/splits.json``, by work id: today's test pieces stayed in
test when the corpus grew, so figures stay comparable); any other corpus is
split by a stated rule (:func:`assign_splits`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from chopinbot.constants import MIN_SPLIT_PIECES, TEST_FRACTION, VALID_FRACTION
from chopinbot.dataset.corpus import COMMITTED_SPLITS, CorpusFile, is_bundled
from chopinbot.dataset.works import group_works
from chopinbot.errors import DatasetError

FOLDER_SPLITS = "splits.json"  # a user's folder may hold its own


def assign_splits(sizes: dict[str, int], committed: dict | None = None) -> dict[str, str]:
    """Work (or piece) -> split, for works of ``sizes`` states.

    With a committed list (the bundled corpora's ``data/splits.json``) use it.
    Otherwise a stated rule: order works by the sha256 of their name and
    fill test, then valid, until each holds ``TEST_FRACTION``/``VALID_FRACTION``
    of the states and at least ``MIN_SPLIT_PIECES`` pieces (fewer only when
    the corpus is too small to leave most pieces for training).
    """
    if committed:
        out = {p: "train" for p in sizes}
        for split in ("valid", "test"):
            for p in committed.get(split, []):
                if p in out:
                    out[p] = split
        return out
    order = sorted(sizes, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    total = sum(sizes.values())
    n = len(order)
    min_pieces = min(MIN_SPLIT_PIECES, max(0, (n - 1) // 5)) if n >= 3 else 0
    out = {}
    i = 0
    for split, frac in (("test", TEST_FRACTION), ("valid", VALID_FRACTION)):
        got, cnt = 0, 0
        while i < n and n - i > 1 and (got < frac * total or cnt < min_pieces) and (cnt < max(1, n // 3)):
            if n >= 3 or split == "test":
                out[order[i]] = split
                got += sizes[order[i]]
                cnt += 1
                i += 1
            else:
                break
    for p in order[i:]:
        out[p] = "train"
    return out


def work_splits(entries: list[dict], fingerprints: list[np.ndarray], committed: dict | None) -> None:
    """Give each file entry (``name``, ``work``, ``states``) its ``split`` and
    its ``work`` as a whole: files with the same declared work or the same
    music by their ``fingerprints`` are one work (named by its smallest
    declared id), and a work takes the most held-out split any of its declared
    ids has in ``committed`` (test, then valid), or the hash rule of
    :func:`assign_splits` without one.  Entries are updated in place."""
    first = group_works(fingerprints, [e["declared_work"] for e in entries])
    members: dict[int, list[int]] = {}
    for i, r in enumerate(first):
        members.setdefault(r, []).append(i)
    work_of = {r: min(entries[i]["declared_work"] for i in ms) for r, ms in members.items()}
    if committed:
        held = {w: s for s in ("valid", "test") for w in committed.get(s, [])}  # test written last: it wins
        split_of = {}
        for r, ms in members.items():
            got = {held.get(entries[i]["declared_work"], "train") for i in ms}
            split_of[r] = "test" if "test" in got else "valid" if "valid" in got else "train"
    else:
        sizes = {work_of[r]: sum(entries[i]["states"] for i in ms) for r, ms in members.items()}
        by_work = assign_splits(sizes)
        split_of = {r: by_work[work_of[r]] for r in members}
    for r, ms in members.items():
        for i in ms:
            entries[i]["work"] = work_of[r]
            entries[i]["split"] = split_of[r]


def committed_splits(files: list[CorpusFile]) -> dict | None:
    """The committed split: the bundled works' (``data/splits.json``) when every
    input is bundled; else a ``splits.json`` beside the inputs, when they all
    sit in one folder that has one (``{"test": [...], "valid": [...]}``, file
    names or work ids: how a user holds out pieces of their own); else None."""
    if not files:
        return None
    if is_bundled(files) and COMMITTED_SPLITS.exists():
        return json.loads(COMMITTED_SPLITS.read_text())
    folders = {f.path.parent.resolve() for f in files}
    own = next(iter(folders)) / FOLDER_SPLITS if len(folders) == 1 else None
    if own is None or not own.is_file():
        return None
    try:
        listed = json.loads(own.read_text())
        work_of = {f.name: f.work for f in files}
        return {s: [work_of.get(n, n) for n in listed.get(s, [])] for s in ("valid", "test")}
    except (ValueError, AttributeError, TypeError) as e:
        raise DatasetError(f"{own}: not a splits file ({e}); expected {{\"test\": [names], \"valid\": [names]}}") \
            from None
