"""Preparing a dataset: MIDI files -> key segments of states, on disk.

``prepare`` turns each file into states (see :mod:`chopinbot.music.states`), splits
the piece where its key signature changes, finds each segment's key
(:mod:`chopinbot.music.keys`), transposes it to C major / A minor and writes
them as a dataset folder (``states.npy`` + ``manifest.json``, the format of
:mod:`chopinbot.dataset.store`).  Files are streamed: memory does not grow with
the corpus.

Splits are by whole piece, never by window (overlapping windows in train and
valid made the original design's validation scores meaningless).
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
    BUNDLED_CORPUS_DIR,
    DEFAULT_DATASET_DIR,
    MAX_KEY_SEGMENTS,
    MAX_MIDI_BYTES,
    MIN_SPLIT_PIECES,
    N_KEYS,
    TEST_FRACTION,
    VALID_FRACTION,
)
from chopinbot.dataset.store import (
    DEFAULT_SETTINGS,
    FORMAT_VERSION,
    Dataset,
    PrepareSettings,
    StatesWriter,
    split_totals,
)
from chopinbot.errors import ChopinBotError, DatasetError, MidiError
from chopinbot.io_utils import atomic_write, sha256_file
from chopinbot.music.keys import Key, detect_key, pitch_class_histogram
from chopinbot.music.midi import read_midi
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
        with open(path, "rb") as f:
            data = f.read(MAX_MIDI_BYTES + 1)
    except OSError as e:
        return FileResult(path.name, "", error=f"cannot read file ({e.strerror})")
    res = FileResult(path.name, hashlib.sha256(data).hexdigest())
    try:
        notes = read_midi(path)
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


def assign_splits(sizes: dict[str, int], committed: dict | None = None) -> dict[str, str]:
    """Piece -> split.

    With a committed list (the bundled corpus's ``splits.json``) use it.
    Otherwise a stated rule: order pieces by the sha256 of their file name and
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


def list_midi_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.suffix.lower() in (".mid", ".midi") and q.is_file())
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise DatasetError(f"{p}: not a regular file or folder")
        else:
            raise DatasetError(f"{p}: no such file or folder")
    return files


def _read_committed_splits(files: list[Path]) -> dict | None:
    dirs = {f.parent.resolve() for f in files}
    if len(dirs) == 1:
        sp = next(iter(dirs)) / "splits.json"
        if sp.exists():
            return json.loads(sp.read_text())
    return None


@dataclass
class PrepareReport:
    out_dir: Path
    rebuilt: bool
    files: int  # pieces used
    skipped: int  # files that could not be used (their reasons are in the manifest)
    rows: int  # states written
    _manifest: dict | None = field(default=None, repr=False)

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
) -> PrepareReport:
    """Prepare a dataset folder from MIDI files (default: the bundled corpus).

    Rebuilds only when an input file or a setting changed (compared through
    the manifest).  ``shard=(i, n)`` prepares only the files whose position in
    the sorted input list is ``i`` modulo ``n`` (one part per machine; join
    the parts with :func:`merge_datasets`).  Files are processed in a stream
    (``jobs`` worker processes) and their states appended to disk as they
    come, so memory does not grow with the corpus.  Raises
    :class:`DatasetError` when no file is usable, or :class:`MidiError` on the
    first bad file with ``strict``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: exists and is not a folder")
    files = list_midi_files(inputs or [BUNDLED_CORPUS_DIR])
    if not files:
        raise DatasetError("no MIDI files (.mid, .midi) found in the inputs")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"two input files share a name: {', '.join(dup[:5])}")
    committed = _read_committed_splits(files)
    if shard is not None:
        i, n = shard
        if not (n >= 1 and 0 <= i < n):
            raise DatasetError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
        files = sorted(files, key=lambda f: f.name)[i::n]
        if not files:
            raise DatasetError(f"shard {i}/{n} holds no file")
    shas = {f.name: sha256_file(f) for f in files}
    manifest_path = out_dir / "manifest.json"
    if not force and manifest_path.exists() and (out_dir / "states.npy").exists():
        try:
            old = json.loads(manifest_path.read_text())
            same_inputs = sorted((f["name"], f["sha256"]) for f in old["files"] + old.get("skipped", [])) == sorted(
                shas.items()
            )
            if same_inputs and old["settings"] == asdict(settings) and old.get("format") == FORMAT_VERSION:
                return PrepareReport(out_dir, False, len(old["files"]), len(old.get("skipped", [])), old["rows"], old)
        except (KeyError, ValueError, TypeError):
            pass  # unreadable manifest: rebuild
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = StatesWriter(out_dir)
    # Memory stays flat in the number of files: states go to disk as they come
    # and so does each file's manifest entry (JSON lines in a temp file); kept
    # are only what the split assignment and the totals need (states and
    # seconds per piece) and the skipped files.
    entries = tempfile.TemporaryFile("w+", encoding="utf-8", dir=out_dir, prefix=".files.")
    sizes: dict[str, tuple[int, float]] = {}
    skipped: list[dict] = []
    key_use = np.zeros((2, N_KEYS), np.int64)  # onsets per key, before and after transposition
    try:
        for r in _process_stream(files, settings, jobs, progress):
            if r.error and strict:
                raise MidiError(r.error, r.name)
            if r.error is None:
                r.rows = writer.add(st for st, _, _, _ in r.segments)
                key_use += (r.key_use_original, r.key_use_transposed)
                entries.write(json.dumps(_file_entry(r)) + "\n")
                sizes[r.name] = (r.n_states, round(r.seconds, 3))
            else:
                skipped.append(dict(name=r.name, sha256=r.sha256, reason=r.error))
        if not sizes:
            reasons = "; ".join(f"{s['name']}: {s['reason']}" for s in skipped[:5])
            raise DatasetError(f"no usable MIDI file among {len(skipped)} ({reasons})")
        splits = assign_splits({name: n for name, (n, _) in sizes.items()}, committed)
        states_sha = writer.finish()
        header = dict(
            format=FORMAT_VERSION,
            chopinbot=__version__,
            settings=asdict(settings),
            states_sha256=states_sha,
            rows=writer.n_rows,
            totals=split_totals([dict(split=splits[n], states=k, seconds=sec) for n, (k, sec) in sizes.items()]),
            key_use={"original": key_use[0].tolist(), "transposed": key_use[1].tolist()},
        )
        entries.seek(0)
        _write_manifest(out_dir / "manifest.json", header, entries, splits, skipped)
    except BaseException:
        writer.abort()
        raise
    finally:
        entries.close()
    return PrepareReport(out_dir, True, len(sizes), len(skipped), writer.n_rows)


def _file_entry(r: FileResult) -> dict:
    """A used file's manifest entry, without its split (assigned at the end)."""
    segs = [dict(start=a, stop=b, first_state=first, key=key, tonic=tonic, minor=minor, shift=shift)
            for (a, b), (key, tonic, minor, shift, first) in zip(r.rows, r.segment_keys)]
    return dict(
        name=r.name, sha256=r.sha256, key=segs[0]["key"] if segs else None,
        shift=segs[0]["shift"] if segs else 0, octave_moves=r.octave_moves, states=r.n_states,
        beats=round(r.beats, 6), seconds=round(r.seconds, 3), piece_beats=round(r.piece_beats, 6),
        piece_seconds=round(r.piece_seconds, 3), segments=segs,
    )


_FILES_MARK = "\u0000files\u0000"


def _write_manifest(path: Path, header: dict, entries, splits: dict[str, str], skipped: list[dict]) -> None:
    """Write ``manifest.json`` (as ``json.dumps(manifest, indent=2)`` would) with
    the file entries streamed from the JSON-lines file ``entries``, one at a time."""
    text = json.dumps({**header, "files": _FILES_MARK, "skipped": skipped}, indent=2) + "\n"
    before, after = text.split(json.dumps(_FILES_MARK), 1)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(before + "[\n")
            for i, line in enumerate(entries):
                e = json.loads(line)
                name, sha = e.pop("name"), e.pop("sha256")
                e = {"name": name, "sha256": sha, "split": splits[name], **e}
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
    """The dataset at ``data``, or the bundled corpus prepared (once) into the default folder."""
    if data is not None and (Path(data) / "manifest.json").exists():
        return Dataset(data)
    if data is not None and Path(data).exists() and not Path(data).is_dir():
        raise DatasetError(f"{data}: not a dataset folder")
    out = Path(data) if data is not None else DEFAULT_DATASET_DIR
    prepare(None, out, progress=progress)
    return Dataset(out)
