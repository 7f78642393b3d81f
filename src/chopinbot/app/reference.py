"""What each piece is measured against: the real music of the style asked for, and the threshold guide.

A piece's statistics are shown beside real music of its style (:func:`style_reference`): the
held-out pieces of that composer in the model's own dataset when it has some (a model fine-tuned
on a user's Schubert is compared with the user's held-out Schubert), else the bundled corpus's
held-out pieces of that composer, else real Chopin.  Both are costly (the held-out pieces are
prepared and scored) and the same for every visitor, so each is computed once per model or
length class and kept in a thread-safe cache (:class:`_Memo`) shared by the worker threads.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chopinbot.app.registry import ModelEntry
from chopinbot.app.rendering import figure_png
from chopinbot.compose.seeds import HELD_OUT_SPLITS
from chopinbot.constants import BUNDLED_CORPUS_DIR
from chopinbot.dataset.batches import SplitData
from chopinbot.dataset.corpus import BUNDLED_SOURCES, COMMITTED_SPLITS, UNKNOWN_COMPOSER, read_table, style_name
from chopinbot.dataset.prepare import prepare, process_file
from chopinbot.dataset.store import Dataset, PrepareSettings
from chopinbot.evaluation.musicstats import piece_stats
from chopinbot.model.predict import evaluate_split
from chopinbot.music.states import States, states_to_notes
from chopinbot.render.plots import threshold_guide_figure


class _Memo:
    """A thread-safe cache in which each value is computed once: callers asking
    for a key being computed wait for that computation instead of repeating it."""

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._values: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = compute()
            with self._lock:
                if len(self._values) >= self.maxsize:
                    self._values.pop(next(iter(self._values)))
                self._values[key] = value
                self._locks.pop(key, None)
            return value


_test_states_memo = _Memo(4)
_reference_memo = _Memo(256)
_curve_memo = _Memo(8)
_guide_memo = _Memo(8)
_style_states_memo = _Memo(16)
MIN_REFERENCE_EXCERPTS = 3  # fewer real excerpts than this say little: the next source is used instead


def _split_names() -> dict[str, list[str]]:
    return json.loads((BUNDLED_CORPUS_DIR / "splits.json").read_text())


def _test_states(settings: PrepareSettings) -> list[States]:
    """The key segments of the bundled test pieces (model's home key), computed once per settings."""
    def compute() -> list[States]:
        segs = []
        for name in _split_names()["test"]:
            segs += [st for st, _, _, _ in process_file(BUNDLED_CORPUS_DIR / name, settings).segments]
        return segs

    return _test_states_memo.get(settings, compute)


def reference_length(n_states: int) -> int:
    """The excerpt length a piece of ``n_states`` states is compared with:
    rounded to 16 states (64 above 256), so that the real excerpts' statistics
    are computed once per length class, not once per request (the statistics
    change little within a few percent of length)."""
    step = 16 if n_states <= 256 else 64
    return max(step, step * int(round(n_states / step)))


def reference_stats(settings: PrepareSettings, n_states: int) -> list[dict[str, float]]:
    """Musical statistics of real Chopin: non-overlapping excerpts of ``n_states``
    states of the held-out test pieces (as ``chopinbot evaluate`` compares), or
    their whole key segments when none is that long.  Cached."""
    n = int(n_states)

    def compute() -> list[dict[str, float]]:
        return _excerpt_stats(_test_states(settings), n)

    return _reference_memo.get((settings, n), compute)


@dataclass(frozen=True)
class Reference:
    """Real music a piece is compared with: who (``label``, e.g. "real Schubert"), from where
    (``source``, in words) and its excerpts' statistics."""

    label: str
    source: str
    stats: list[dict[str, float]]


def _excerpt_stats(segs: list[States], n: int) -> list[dict[str, float]]:
    excerpts = [s[a : a + n] for s in segs for a in range(0, len(s) - n + 1, n)] or segs
    return [piece_stats(states_to_notes(e), None, e) for e in excerpts]


def _dataset_style_states(folder: Path, style: str | None,
                          settings: PrepareSettings) -> tuple[str, list[States]] | None:
    """(composer, key segments) of a dataset's held-out pieces (test and valid) in ``style`` (None: all
    of them, when they are one composer's), or None when it has none; cached per dataset contents."""
    def compute() -> tuple[str, list[States]] | None:
        ds = Dataset(folder)
        if ds.settings != settings:
            return None
        segs = [seg for split in HELD_OUT_SPLITS for seg in ds.segments(split)
                if style is None or style_name(seg.composer) == style]
        composers = sorted({seg.composer for seg in segs})
        return (composers[0], [ds.states(seg) for seg in segs]) if segs and len(composers) == 1 else None

    try:
        stamp = (folder / "manifest.json").stat().st_mtime_ns  # a dataset prepared again is read again
    except OSError:
        return None
    return _style_states_memo.get(("dataset", str(folder.resolve()), stamp, style, settings), compute)


def _bundled_style_states(style: str, settings: PrepareSettings) -> tuple[str, list[States]] | None:
    """(composer, key segments) of the bundled corpora's held-out pieces (``data/splits.json``: test and
    valid) by ``style``'s composer, or None when the bundled corpora have none."""
    def compute() -> tuple[str, list[States]] | None:
        split = json.loads(COMMITTED_SPLITS.read_text())
        held = {work for name in HELD_OUT_SPLITS for work in split.get(name, [])}
        chosen = [f for folder in BUNDLED_SOURCES.values() if (folder / "corpus.tsv").is_file()
                  for f in read_table(folder) if style_name(f.composer) == style and f.work in held]
        if not chosen:
            return None
        return chosen[0].composer, [st for f in chosen for st, _, _, _ in process_file(f.path, settings).segments]

    return _style_states_memo.get(("bundled", style, settings), compute)


def style_reference(entry: ModelEntry, style: str | None, n_states: int) -> Reference:
    """Real music of ``style`` (None: the model's own style) to set a piece of ``n_states`` states
    beside: the held-out pieces of that composer in the model's own dataset (:attr:`ModelEntry.dataset`),
    else the bundled corpora's held-out pieces of that composer, else real Chopin
    (:func:`reference_stats`); a source giving fewer than ``MIN_REFERENCE_EXCERPTS`` excerpts is
    passed over.  Non-overlapping excerpts of ``n_states`` states; cached."""
    style = style or entry.default_style
    n = int(n_states)
    if entry.dataset is not None:
        found = _dataset_style_states(Path(entry.dataset), style, entry.settings)
        if found is not None:
            composer, segs = found
            stamp = (Path(entry.dataset) / "manifest.json").stat().st_mtime_ns
            key = ("dataset-stats", str(Path(entry.dataset).resolve()), stamp, style, entry.settings, n)
            stats = _reference_memo.get(key, lambda: _excerpt_stats(segs, n))
            if len(stats) >= MIN_REFERENCE_EXCERPTS:
                who = "real music" if composer == UNKNOWN_COMPOSER else f"real {composer}"
                return Reference(who, f"the held-out pieces of {Path(entry.dataset).name}, the model's own data",
                                 stats)
    if style and style != "chopin":
        found = _bundled_style_states(style, entry.settings)
        if found is not None:
            composer, segs = found
            key = ("bundled-stats", style, entry.settings, n)
            stats = _reference_memo.get(key, lambda: _excerpt_stats(segs, n))
            if len(stats) >= MIN_REFERENCE_EXCERPTS:
                return Reference(f"real {composer}", "the bundled corpus's held-out pieces", stats)
    return Reference("real Chopin", "the held-out test pieces", reference_stats(entry.settings, n))


def threshold_curve(entry: ModelEntry) -> dict[str, list[float]]:
    """Key precision, recall and F1 against the decision threshold, on the
    bundled corpus's valid pieces (those the threshold is chosen on).

    The model's config.json stores only the best threshold, not the curve, so
    the valid pieces are prepared (with the model's settings) in a private
    temporary folder, removed at once, and scored with
    :func:`~chopinbot.model.predict.evaluate_split`.  Computed once per model."""
    def compute() -> dict[str, list[float]]:
        files = [BUNDLED_CORPUS_DIR / n for n in _split_names()["valid"]]
        with tempfile.TemporaryDirectory(prefix="chopinbot-guide-") as tmp:
            prepare(files, tmp, settings=entry.settings, progress=False)
            data = SplitData(Dataset(tmp), "valid", entry.model.config.vocab)
            metrics = evaluate_split(entry.model, data)
        return {k: np.asarray(v).tolist() for k, v in metrics.keys.curve().items()}

    return _curve_memo.get(entry.key, compute)


def threshold_guide_png(entry: ModelEntry) -> bytes:
    """The threshold guide of a model as PNG bytes (:func:`~chopinbot.render.plots.threshold_guide_figure`). Cached."""
    def compute() -> bytes:
        curve = {k: np.asarray(v) for k, v in threshold_curve(entry).items()}
        return figure_png(lambda: threshold_guide_figure(curve, title=f"Choosing the decision threshold "
                                                                      f"({entry.label})"))

    return _guide_memo.get((entry.key, entry.label), compute)
