"""Preparing a dataset: MIDI files (or scores) -> key segments of states, on disk.

``prepare`` turns each file into states (see :mod:`chopinbot.music.states`), splits
the piece where its key signature changes, finds each segment's key
(:mod:`chopinbot.music.keys`), transposes it to C major / A minor and writes
them as a dataset folder (``states.npy`` + ``manifest.json``, the format of
:mod:`chopinbot.dataset.store`).  Files are streamed: memory does not grow with
the corpus.

Each file carries its work, composer and source (:mod:`chopinbot.dataset.corpus`).
Splits are by *work*, never by window or file (overlapping windows in train
and valid made the original design's validation scores meaningless; an
edition of a test work in training would leak it): files whose notes are the
same music are one work (:mod:`chopinbot.dataset.works`), and a work sits in
one split with all its editions and sources.  A file whose velocities never
vary (a score: the NIFC editions are all 90) has no dynamics; its states'
velocities are stored as 0, "unknown", which the loudness loss skips.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import textwrap
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from chopinbot import __version__
from chopinbot.constants import (
    DEFAULT_CORPUS,
    DEFAULT_DATASET_DIR,
    MAX_KEY_SEGMENTS,
    MAX_MIDI_BYTES,
    N_KEYS,
)
from chopinbot.dataset.corpus import ComposerStyle, CorpusFile, corpus_sources, list_corpus, resolve_composer
from chopinbot.dataset.splits import FOLDER_SPLITS, committed_splits, work_splits
from chopinbot.dataset.store import (
    DEFAULT_SETTINGS,
    FORMAT_VERSION,
    Dataset,
    PrepareSettings,
    StatesWriter,
    split_totals,
    write_fingerprints,
)
from chopinbot.dataset.works import fingerprint
from chopinbot.errors import ChopinBotError, DatasetError, MidiError
from chopinbot.io_utils import atomic_write, sha256_file
from chopinbot.music.keys import Key, detect_key, pitch_class_histogram
from chopinbot.music.scores import MAX_SCORE_BYTES, SCORE_SUFFIXES, read_notes
from chopinbot.music.states import States, notes_to_states, transpose_states


@dataclass
class FileResult:
    """What preparing one file gives (or why it could not be used)."""

    name: str
    sha256: str
    error: str | None = None
    segments: list[tuple[States, Key, int, int]] = field(default_factory=list)  # states, key, shift, first state
    octave_moves: int = 0
    n_states: int = 0
    beats: float = 0.0
    seconds: float = 0.0
    piece_beats: float = 0.0  # first onset to last note end, from the notes
    piece_seconds: float = 0.0
    key_use_original: np.ndarray | None = None  # (88,) onsets per key before transposition
    key_use_transposed: np.ndarray | None = None
    segment_keys: list[tuple[str, int, bool, int, int]] = field(default_factory=list)  # key, tonic, minor, shift, first
    rows: list[tuple[int, int]] = field(default_factory=list)  # rows in states.npy, once written
    dynamics: bool = True  # whether its velocities vary (else they are stored as 0, unknown)
    fingerprint: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # works.fingerprint


def _dedupe_key_changes(keysigs: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(tick, sharps) where the signature really changes (last event at a tick wins)."""
    at_tick: dict[int, int] = {}
    for tick, sharps, _ in keysigs:
        at_tick[tick] = sharps
    out: list[tuple[int, int]] = []
    for tick in sorted(at_tick):
        if not out or out[-1][1] != at_tick[tick]:
            out.append((tick, at_tick[tick]))
    return out


def process_file(path: str | os.PathLike, settings: PrepareSettings = DEFAULT_SETTINGS) -> FileResult:
    """Read one MIDI file and build its transposed key segments (never raises
    for a bad file: the reason goes into ``FileResult.error``)."""
    path = Path(path)
    try:
        if not path.is_file():
            return FileResult(path.name, "", error="not a regular file")
        limit = MAX_SCORE_BYTES if path.suffix.lower() in SCORE_SUFFIXES else MAX_MIDI_BYTES
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # for the hash (the readers check sizes themselves)
    except OSError as e:
        return FileResult(path.name, "", error=f"cannot read file ({e.strerror})")
    res = FileResult(path.name, hashlib.sha256(data).hexdigest())
    try:
        notes = read_notes(path)
        states, bound_ticks, moves = notes_to_states(
            notes, settings.grid_per_beat, settings.pedal, settings.min_state_beats, settings.max_states
        )
        if len(states) > settings.max_states:
            raise MidiError(f"too many states ({len(states):,}; limit {settings.max_states:,})")
    except ChopinBotError as e:
        res.error = getattr(e, "reason", str(e))
        return res
    res.octave_moves = moves
    res.n_states = len(states)
    res.fingerprint = fingerprint(notes)
    res.dynamics = bool(np.unique(notes.velocity).size > 1)
    if not res.dynamics:
        states.velocity[:] = 0  # unknown: a score's one velocity says nothing of how it is played
    # exact: whole grid steps, not a float32 sum
    res.beats = float(states.grid_units(settings.grid_per_beat).sum() / settings.grid_per_beat)
    res.seconds = states.total_seconds
    tpq = notes.ticks_per_quarter
    step = tpq / settings.grid_per_beat
    first = np.round(notes.start.min() / step) * step
    last = max(np.round(notes.end / step).max(), np.round(notes.start / step).max() + 1) * step
    res.piece_beats = float((last - first) / tpq)
    res.piece_seconds = float(notes.seconds_at(np.array([last]))[0] - notes.seconds_at(np.array([first]))[0])
    res.key_use_original = states.onsets.sum(axis=0).astype(np.int64)
    res.key_use_transposed = np.zeros(N_KEYS, np.int64)
    # Split where the signature changes: at the first state starting at or after the event.
    changes = _dedupe_key_changes(notes.key_signatures)
    cuts = [0]
    sharps_of = [changes[0][1] if changes else None]
    for tick, sharps in changes[1:]:
        i = int(np.searchsorted(bound_ticks[:-1], tick - 1e-9))
        if cuts[-1] < i < len(states):
            cuts.append(i)
            sharps_of.append(sharps)
        elif i <= cuts[-1]:
            sharps_of[-1] = sharps  # the change comes before any state of the segment
    cuts.append(len(states))
    if len(cuts) - 1 > MAX_KEY_SEGMENTS:
        res.error = f"too many key-signature changes ({len(cuts) - 1:,} segments; limit {MAX_KEY_SEGMENTS})"
        return res
    for (a, b), sharps in zip(zip(cuts[:-1], cuts[1:]), sharps_of):
        seg = states[a:b]
        key = detect_key(pitch_class_histogram(seg.keys, seg.beats), sharps)
        shifted, seg_moves = transpose_states(seg, key.shift_home)
        res.octave_moves += seg_moves
        res.key_use_transposed += shifted.onsets.sum(axis=0)
        res.segments.append((shifted, key, key.shift_home, a))
        res.segment_keys.append((key.name, key.tonic, key.minor, key.shift_home, a))
    return res


def list_midi_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The note files (MIDI or scores) among ``inputs`` (files and folders)."""
    return [f.path for f in list_corpus(inputs)]


def split_warnings(totals: dict) -> list[str]:
    """What a dataset's split totals (``manifest["totals"]``) lack for training, each with how to fix
    it: `chopinbot train` needs pieces in train (to learn from) and valid (to choose the epoch and
    the threshold); an empty test split only leaves nothing to report held-out figures on.  The
    same sentences go into the manifest (``warnings``) for other stages to repeat."""
    pieces = {split: totals.get(split, {}).get("pieces", 0) for split in ("train", "valid", "test")}
    n = sum(pieces.values())
    empty = [split for split in ("train", "valid", "test") if pieces[split] == 0]
    if not empty:
        return []
    fix = (f"To fix it, give more files (with {n} usable piece{'s' if n != 1 else ''}, the stated rule cannot "
           f"fill every split: it holds out 1 piece for test from 2, and 1 for valid only from 3), or put a "
           f"{FOLDER_SPLITS} beside the files naming the pieces to hold out, e.g. "
           '{"valid": ["a.musicxml"], "test": ["b.musicxml"]} (file names or work ids), and prepare again.')
    out = []
    for split in empty:
        why = {"train": "there is nothing to train on", "valid": "`chopinbot train` needs valid pieces to choose "
               "the epoch and the decision threshold, and stops", "test": "no held-out figures or seeds "
               "(`--seeds-from` then takes the valid pieces)"}[split]
        out.append(f"the {split} split is empty ({pieces['train']} train, {pieces['valid']} valid, "
                   f"{pieces['test']} test pieces): {why}.")
    return [" ".join(out) + " " + fix]


@dataclass
class PrepareReport:
    out_dir: Path
    rebuilt: bool
    files: int  # pieces used
    skipped: int  # files that could not be used (their reasons are in the manifest)
    rows: int  # states written
    _manifest: dict | None = field(default=None, repr=False)
    composer_style: ComposerStyle | None = None  # what --composer was taken as (None: not given)

    @property
    def warnings(self) -> list[str]:
        """What the dataset lacks for training, with how to fix it (:func:`split_warnings`)."""
        return split_warnings(self.manifest["totals"])

    @property
    def manifest(self) -> dict:
        """The dataset's manifest (read from disk on first use: for a large
        corpus it is the largest thing prepare makes, and is never held while
        preparing)."""
        if self._manifest is None:
            self._manifest = json.loads((self.out_dir / "manifest.json").read_text())
        return self._manifest


def prepare(
    inputs: Iterable[str | os.PathLike] | None = None,
    out_dir: str | os.PathLike = "runs/dataset",
    settings: PrepareSettings = DEFAULT_SETTINGS,
    jobs: int = 1,
    strict: bool = False,
    force: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    corpus: str | None = None,
    composer: str | None = None,
) -> PrepareReport:
    """Prepare a dataset folder from MIDI files or scores (default: the bundled
    corpus ``corpus``, :data:`~chopinbot.dataset.corpus.CORPORA`).

    ``composer`` names the composer of input files that no ``corpus.tsv``
    describes: a name standing for a style the bundled corpus and models know
    ("Franz Schubert", "F. Schubert") is written as that style's composer
    ("Schubert"), any other name makes a new style
    (:func:`~chopinbot.dataset.corpus.resolve_composer`; the report's
    ``composer_style`` says which).  Rebuilds only when an input file, its description or a setting
    changed (compared through the manifest).  ``shard=(i, n)`` prepares only
    the files whose position in the sorted input list is ``i`` modulo ``n``
    (one part per machine; join the parts with
    :func:`~chopinbot.dataset.store.merge_datasets`, which splits the works
    again over the whole).  Files are processed in a stream (``jobs`` worker
    processes) and their states appended to disk as they come, so memory does
    not grow with the corpus.  Raises :class:`DatasetError` when no file is
    usable, or :class:`MidiError` on the first bad file with ``strict``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: exists and is not a folder")
    if inputs and corpus:
        raise DatasetError("give input files or a bundled corpus, not both")
    taken = resolve_composer(composer) if composer else None
    files = list_corpus(list(inputs) if inputs else corpus_sources(corpus or DEFAULT_CORPUS),
                        taken.composer if taken else None)
    if not files:
        raise DatasetError("no MIDI files or scores found in the inputs")
    committed = committed_splits(files)
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise DatasetError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
        files = sorted(files, key=lambda f: f.name)[i::n]
        if not files:
            raise DatasetError(f"shard {i}/{n} holds no file")
    shas = {f.name: sha256_file(f.path) for f in files}
    described = sorted([f.name, f.work, f.composer, f.source] for f in files)
    manifest_path = out_dir / "manifest.json"
    if not force and manifest_path.exists() and (out_dir / "states.npy").exists():
        try:
            old = json.loads(manifest_path.read_text())
            same_inputs = sorted((f["name"], f["sha256"]) for f in old["files"] + old.get("skipped", [])) == sorted(
                shas.items()
            )
            same_files = sorted([f["name"], f["declared_work"], f["composer"], f["source"]]
                                for f in old["files"] + old.get("skipped", [])) == described
            if (same_inputs and same_files and old["settings"] == asdict(settings)
                    and old.get("format") == FORMAT_VERSION):
                return PrepareReport(out_dir, False, len(old["files"]), len(old.get("skipped", [])), old["rows"], old,
                                     taken)
        except (KeyError, ValueError, TypeError):
            pass  # unreadable or older manifest: rebuild
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = StatesWriter(out_dir)
    # Memory stays flat in the number of files: states go to disk as they come
    # and so does each file's manifest entry (JSON lines in a temp file); kept
    # are only what the split assignment and the totals need (states, seconds
    # and the fingerprint of each file) and the skipped files.
    entries = tempfile.TemporaryFile("w+", encoding="utf-8", dir=out_dir, prefix=".files.")
    used: list[dict] = []
    fingerprints: list[np.ndarray] = []
    skipped: list[dict] = []
    key_use = np.zeros((2, N_KEYS), np.int64)  # onsets per key, before and after transposition
    about = {f.name: f for f in files}
    try:
        for r in _process_stream([f.path for f in files], settings, jobs, progress):
            f = about[r.name]
            if r.error and strict:
                raise MidiError(r.error, r.name)
            if r.error is None:
                r.rows = writer.add(st for st, _, _, _ in r.segments)
                key_use += (r.key_use_original, r.key_use_transposed)
                entries.write(json.dumps(_file_entry(r, f)) + "\n")
                used.append(dict(name=r.name, declared_work=f.work, states=r.n_states, seconds=round(r.seconds, 3)))
                fingerprints.append(r.fingerprint)
            else:
                skipped.append(dict(name=r.name, sha256=r.sha256, reason=r.error, declared_work=f.work,
                                    composer=f.composer, source=f.source))
        if not used:
            reasons = "; ".join(f"{s['name']}: {s['reason']}" for s in skipped[:5])
            raise DatasetError(f"no usable MIDI file or score among {len(skipped)} ({reasons})")
        work_splits(used, fingerprints, committed)
        states_sha = writer.finish()
        write_fingerprints(out_dir, [u["name"] for u in used], fingerprints)
        header = dict(
            format=FORMAT_VERSION,
            chopinbot=__version__,
            settings=asdict(settings),
            states_sha256=states_sha,
            rows=writer.n_rows,
            totals=split_totals(used),
            key_use={"original": key_use[0].tolist(), "transposed": key_use[1].tolist()},
            committed_splits=committed,
            warnings=split_warnings(split_totals(used)),
        )
        if taken is not None:
            header["composer_style"] = asdict(taken)
        entries.seek(0)
        _write_manifest(out_dir / "manifest.json", header, entries, {u["name"]: u for u in used}, skipped)
    except BaseException:
        writer.abort()
        raise
    finally:
        entries.close()
    return PrepareReport(out_dir, True, len(used), len(skipped), writer.n_rows, composer_style=taken)


def _file_entry(r: FileResult, f: CorpusFile) -> dict:
    """A used file's manifest entry, without its split and work (assigned at the end)."""
    segs = [dict(start=a, stop=b, first_state=first, key=key, tonic=tonic, minor=minor, shift=shift)
            for (a, b), (key, tonic, minor, shift, first) in zip(r.rows, r.segment_keys)]
    return dict(
        name=r.name, sha256=r.sha256, declared_work=f.work, composer=f.composer, source=f.source, title=f.title,
        dynamics=r.dynamics, key=segs[0]["key"] if segs else None,
        shift=segs[0]["shift"] if segs else 0, octave_moves=r.octave_moves, states=r.n_states,
        beats=round(r.beats, 6), seconds=round(r.seconds, 3), piece_beats=round(r.piece_beats, 6),
        piece_seconds=round(r.piece_seconds, 3), segments=segs,
    )


_FILES_MARK = "\u0000files\u0000"


def _write_manifest(path: Path, header: dict, entries, works: dict[str, dict], skipped: list[dict]) -> None:
    """Write ``manifest.json`` (as ``json.dumps(manifest, indent=2)`` would) with
    the file entries streamed from the JSON-lines file ``entries``, one at a
    time, each given its split and work from ``works`` (by name)."""
    text = json.dumps({**header, "files": _FILES_MARK, "skipped": skipped}, indent=2) + "\n"
    before, after = text.split(json.dumps(_FILES_MARK), 1)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(before + "[\n")
            for i, line in enumerate(entries):
                e = json.loads(line)
                name, sha = e.pop("name"), e.pop("sha256")
                e = {"name": name, "sha256": sha, "split": works[name]["split"], "work": works[name]["work"], **e}
                out.write((",\n" if i else "") + textwrap.indent(json.dumps(e, indent=2), "    "))
            out.write("\n  ]" + after)

    atomic_write(path, write)


def _process_stream(files, settings, jobs, progress) -> Iterator[FileResult]:
    from chopinbot.progress import Progress  # tqdm's import is paid only when files are read

    bar = Progress(len(files), desc="prepare", unit="files", enabled=progress, leave=False)
    try:
        if jobs > 1:
            # At most a few files in flight per worker: ``pool.map`` would submit
            # every file at once, and results (states included) that come back
            # faster than they are written would pile up in memory.
            # Files go in batches of up to 8 (fewer round trips to the workers).
            size = max(1, min(8, len(files) // (4 * jobs)))
            batches = (files[i : i + size] for i in range(0, len(files), size))
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                pending = deque(pool.submit(_process_files, b, settings) for b in itertools.islice(batches, 3 * jobs))
                while pending:
                    done = pending.popleft().result()
                    nxt = next(batches, None)
                    if nxt is not None:
                        pending.append(pool.submit(_process_files, nxt, settings))
                    for r in done:
                        bar.update()
                        yield r
        else:
            for f in files:
                bar.update()
                yield process_file(f, settings)
    finally:
        bar.close()


def _process_files(files: list[Path], settings: PrepareSettings) -> list[FileResult]:
    return [process_file(f, settings) for f in files]


def load_or_prepare(data: str | os.PathLike | None, progress: bool = True) -> Dataset:
    """The dataset at ``data``, or the default bundled corpus prepared (once) into the default folder."""
    if data is not None and (Path(data) / "manifest.json").exists():
        return Dataset(data)
    if data is not None and Path(data).exists() and not Path(data).is_dir():
        raise DatasetError(f"{data}: not a dataset folder")
    out = Path(data) if data is not None else DEFAULT_DATASET_DIR
    prepare(None, out, progress=progress)
    return Dataset(out)
