"""The stored dataset: a folder of key segments of states, memory-mapped.

A dataset folder (written by :func:`chopinbot.dataset.prepare.prepare` or
:func:`merge_datasets`) holds:

* ``states.npy`` -- one structured array, a record of 31 bytes per state (keys
  and onsets bit-packed into 11 bytes each, beats and seconds float32, velocity
  uint8).  It is memory-mapped when loaded, so a corpus larger than RAM works
  and nothing is copied until a batch asks for it.
* ``manifest.json`` -- every source file with its sha256, work, composer,
  source, whether it has dynamics, key, shift, octave moves, states, seconds
  and split; each segment's rows; the settings used.
* ``works.npz`` -- each file's fingerprint (:mod:`chopinbot.dataset.works`):
  what the split by work was decided on, kept so that merging parts can
  decide it again over the whole, and so that leakage can be checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chopinbot import __version__
from chopinbot.constants import GRID_PER_BEAT, MAX_STATES_PER_FILE, MIN_STATE_BEATS, N_KEYS, PEDAL_MODE
from chopinbot.dataset.splits import work_splits
from chopinbot.errors import DatasetError
from chopinbot.io_utils import atomic_write, atomic_write_json
from chopinbot.music.states import States

FORMAT_VERSION = 1
STATE_DTYPE = np.dtype(
    [("keys", "u1", (11,)), ("onsets", "u1", (11,)), ("beats", "<f4"), ("seconds", "<f4"), ("velocity", "u1")]
)
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that changes the prepared states (stored in the manifest)."""

    grid_per_beat: int = GRID_PER_BEAT
    pedal: str = PEDAL_MODE
    min_state_beats: float = MIN_STATE_BEATS
    max_states: int = MAX_STATES_PER_FILE


DEFAULT_SETTINGS = PrepareSettings()  # frozen, so one shared instance is a safe default argument


@dataclass
class Segment:
    """A stretch of one piece in one key, transposed to C major / A minor."""

    piece: str
    start: int  # first row in states.npy
    stop: int  # one past the last row
    key: str  # the key found, e.g. "F# minor"
    tonic: int
    minor: bool
    shift: int  # semitones applied to reach C major / A minor
    split: str = "train"
    composer: str = "unknown"  # of its file (chopinbot.dataset.corpus)
    dynamics: bool = True  # whether its file has dynamics (else its velocities are 0, unknown)

    def __len__(self) -> int:
        return self.stop - self.start


def pack_states(states: States) -> np.ndarray:
    """States -> records of :data:`STATE_DTYPE` (keys and onsets bit-packed)."""
    rec = np.zeros(len(states), STATE_DTYPE)
    rec["keys"] = np.packbits(states.keys, axis=1)
    rec["onsets"] = np.packbits(states.onsets, axis=1)
    rec["beats"] = states.beats
    rec["seconds"] = states.seconds
    rec["velocity"] = states.velocity
    return rec


def unpack_states(rec: np.ndarray) -> States:
    """Records of :data:`STATE_DTYPE` (or a memory-mapped slice of them) -> States."""
    return States(
        np.unpackbits(np.asarray(rec["keys"]), axis=1, count=N_KEYS).astype(bool),
        np.unpackbits(np.asarray(rec["onsets"]), axis=1, count=N_KEYS).astype(bool),
        np.asarray(rec["beats"], np.float32),
        np.asarray(rec["seconds"], np.float32),
        np.asarray(rec["velocity"], np.uint8),
    )


class StatesWriter:
    """Appends packed states to a temp file, then writes ``states.npy``
    (header + the streamed rows) atomically."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        fd, self.raw = tempfile.mkstemp(prefix=".states.", suffix=".raw", dir=out_dir)
        self.f = os.fdopen(fd, "wb")
        self.n_rows = 0
        self.sha = hashlib.sha256()

    def add(self, segments: Iterable[States]) -> list[tuple[int, int]]:
        """Append each segment's states; returns the rows each one took."""
        rows = []
        for st in segments:
            data = pack_states(st).tobytes()
            self.f.write(data)
            self.sha.update(data)
            rows.append((self.n_rows, self.n_rows + len(st)))
            self.n_rows += len(st)
        return rows

    def add_bytes(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)
        self.n_rows += len(data) // STATE_DTYPE.itemsize

    def finish(self) -> str:
        """Write ``states.npy``; returns the sha256 of its rows."""
        self.f.close()

        def write(tmp: str) -> None:
            with open(tmp, "wb") as out, open(self.raw, "rb") as src:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": np.lib.format.dtype_to_descr(STATE_DTYPE), "fortran_order": False,
                          "shape": (self.n_rows,)})
                shutil.copyfileobj(src, out, 1 << 20)

        atomic_write(self.out_dir / "states.npy", write)
        os.unlink(self.raw)
        return self.sha.hexdigest()

    def abort(self) -> None:
        self.f.close()
        if os.path.exists(self.raw):
            os.unlink(self.raw)


def split_totals(files_meta: list[dict]) -> dict:
    """The manifest's ``totals``: pieces, states and seconds per split."""
    return {
        s: dict(
            pieces=sum(1 for f in files_meta if f["split"] == s),
            states=sum(f["states"] for f in files_meta if f["split"] == s),
            seconds=round(sum(f["seconds"] for f in files_meta if f["split"] == s), 1),
        )
        for s in SPLITS
    }


def merge_datasets(parts: Iterable[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Join prepared parts (e.g. shards from several machines) into one dataset.

    Settings must match; the works and their splits are decided again over
    the whole (an edition in one part and another edition of the same work in
    another are one work); the states are streamed, not loaded."""
    parts = [Path(p) for p in parts]
    manifests = []
    for p in parts:
        try:
            manifests.append(json.loads((p / "manifest.json").read_text()))
        except (OSError, ValueError) as e:
            raise DatasetError(f"{p}: not a prepared dataset ({e})") from None
    if not manifests:
        raise DatasetError("nothing to merge")
    settings = manifests[0]["settings"]
    for p, m in zip(parts, manifests):
        if m["settings"] != settings or m.get("format") != FORMAT_VERSION:
            raise DatasetError(f"{p}: prepared with other settings ({m['settings']} vs {settings})")
    names = [f["name"] for m in manifests for f in m["files"]]
    if len(set(names)) != len(names):
        raise DatasetError("the parts share pieces: " + ", ".join(sorted({n for n in names if names.count(n) > 1})[:5]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = StatesWriter(out)
    files, skipped = [], []
    key_use = {"original": np.zeros(N_KEYS, np.int64), "transposed": np.zeros(N_KEYS, np.int64)}
    try:
        for p, m in zip(parts, manifests):
            offset = writer.n_rows
            rec = np.load(p / "states.npy", mmap_mode="r")
            for a in range(0, len(rec), 1 << 16):
                writer.add_bytes(np.ascontiguousarray(rec[a : a + (1 << 16)]).tobytes())
            for f in m["files"]:
                segments = [dict(s, start=s["start"] + offset, stop=s["stop"] + offset) for s in f["segments"]]
                files.append(dict(f, segments=segments))
            skipped += m.get("skipped", [])
            for k in key_use:
                key_use[k] += np.asarray(m.get("key_use", {}).get(k, np.zeros(N_KEYS)), np.int64)
        prints = {}
        for p in parts:
            prints.update(read_fingerprints(p))
        fingerprints = [prints.get(f["name"], np.zeros(0, np.int64)) for f in files]
        for f in files:
            f.setdefault("declared_work", f.get("work", Path(f["name"]).stem))
        work_splits(files, fingerprints, manifests[0].get("committed_splits"))
        sha = writer.finish()
        write_fingerprints(out, [f["name"] for f in files], fingerprints)
    except BaseException:
        writer.abort()
        raise
    manifest = dict(format=FORMAT_VERSION, chopinbot=__version__, settings=settings, states_sha256=sha,
                    rows=writer.n_rows, totals=split_totals(files), key_use={k: v.tolist() for k, v in key_use.items()},
                    files=files, skipped=skipped, merged_from=[str(p) for p in parts],
                    committed_splits=manifests[0].get("committed_splits"))
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


FINGERPRINTS_FILE = "works.npz"


def write_fingerprints(out_dir: Path, names: list[str], fingerprints: list[np.ndarray]) -> None:
    """Store each file's fingerprint (``works.npz``: names, codes, offsets)."""
    offsets = np.cumsum([0] + [len(f) for f in fingerprints]).astype(np.int64)
    codes = np.concatenate([np.zeros(0, np.int64), *fingerprints]).astype(np.int64)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(names, dtype=str), codes=codes, offsets=offsets)

    atomic_write(Path(out_dir) / FINGERPRINTS_FILE, write)


def read_fingerprints(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """File name -> fingerprint, as :func:`write_fingerprints` stored them ({} if none)."""
    path = Path(folder) / FINGERPRINTS_FILE
    if not path.exists():
        return {}
    with np.load(path, allow_pickle=False) as z:
        names, codes, offsets = z["names"].tolist(), z["codes"], z["offsets"]
    return {n: codes[offsets[i] : offsets[i + 1]] for i, n in enumerate(names)}


class Dataset:
    """A prepared dataset folder, memory-mapped.

    ``segments(split)`` lists the key segments of a split; ``states(seg)``
    unpacks one segment (or a slice of it) into :class:`States`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.exists():
            raise DatasetError(f"{self.path}: not a prepared dataset (no manifest.json); run `chopinbot prepare`")
        self.manifest = json.loads(mpath.read_text())
        if self.manifest.get("format") != FORMAT_VERSION:
            raise DatasetError(f"{self.path}: dataset format {self.manifest.get('format')} is not {FORMAT_VERSION}")
        self.records = np.load(self.path / "states.npy", mmap_mode="r")
        self._segments = [
            Segment(f["name"], s["start"], s["stop"], s["key"], s["tonic"], s["minor"], s["shift"], f["split"],
                    f.get("composer", "unknown"), f.get("dynamics", True))
            for f in self.manifest["files"]
            for s in f["segments"]
        ]

    @property
    def settings(self) -> PrepareSettings:
        return PrepareSettings(**self.manifest["settings"])

    @property
    def manifest_hash(self) -> str:
        return self.manifest["states_sha256"]

    def segments(self, split: str | None = None) -> list[Segment]:
        return [s for s in self._segments if split is None or s.split == split]

    def pieces(self, split: str | None = None) -> list[str]:
        return [f["name"] for f in self.manifest["files"] if split is None or f["split"] == split]

    def states(self, seg: Segment, start: int = 0, stop: int | None = None) -> States:
        stop = len(seg) if stop is None else stop
        return unpack_states(self.records[seg.start + start : seg.start + stop])

    def split_states(self, split: str) -> list[States]:
        return [self.states(s) for s in self.segments(split)]

    @property
    def nbytes(self) -> int:
        return int(self.records.nbytes)
