"""Where a generation starts: a window of a held-out piece, or the user's own
MIDI or score (a *primer*), always brought into C major / A minor.

Held-out pieces are, by default, the bundled corpus's test pieces, built in
memory (no dataset folder needed, nothing written) with the state settings
the model was trained with.  ``seeds_from`` names a prepared dataset folder
instead: its own held-out pieces (its test split, else its valid split), so
that a model fine-tuned on a user's music starts from that music, not from
Chopin (``chopinbot generate --seeds-from runs/mine``).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from chopinbot.constants import BUNDLED_CORPUS_DIR, SEED_STATES, WARM_STATES
from chopinbot.dataset.prepare import process_file
from chopinbot.dataset.store import DEFAULT_SETTINGS, Dataset, PrepareSettings
from chopinbot.errors import ConfigError, DatasetError, MidiError
from chopinbot.music.keys import Key, detect_key, pitch_class_histogram
from chopinbot.music.scores import read_notes, read_notes_bytes
from chopinbot.music.states import States, notes_to_states, transpose_states

HELD_OUT_SPLITS = ("test", "valid")  # a dataset's seeds: its test pieces, else its valid ones


@dataclass
class Seed:
    """Seed states in the model's home key (C major / A minor) and where they came from.

    ``context`` is what precedes the seed window in its source (at most
    ``WARM_STATES`` states): the model reads it before the seed, so that its
    state and its repeat lookups know the piece, but it is not part of the
    output (``include_seed`` adds only the window)."""

    states: States
    key: Key  # the key of the source (the output goes back to it unless told otherwise)
    bpm: float  # the source's tempo where the seed ends (:func:`source_tempo`)
    source: str  # e.g. "chpn-p24.mid @ state 160" or "primer my.mid (last 16 states)"
    start_beat: float = 0.0  # where the seed starts, in beats from its source's start (the metre's phase)
    context: States | None = None  # the states just before the window, read first (None: none)
    time_signature: tuple[int, int] | None = None  # the source's metre at the seed (numerator, denominator), if known

    @property
    def home(self) -> Key:
        return self.key.home

    @property
    def history(self) -> States:
        """Everything the model reads before composing: the context, then the window."""
        if self.context is None or len(self.context) == 0:
            return self.states
        return States.concat([self.context, self.states])

    @property
    def history_start_beat(self) -> float:
        """Where :attr:`history` starts, in beats from the source's start."""
        before = float(self.context.beats.astype(np.float64).sum()) if self.context is not None else 0.0
        return self.start_beat - before


@dataclass(frozen=True)
class SeedInfo:
    index: int
    piece: str
    position: int  # first state of the window in the piece's key segment
    key: str
    beats: float
    seconds: float


TEMPO_BEATS = 16.0  # a seed's tempo is read over this many beats of its source (about four bars)


def source_tempo(states: States, last_beats: float = TEMPO_BEATS) -> float:
    """The tempo (bpm, clipped to 30..240) of the last ``last_beats`` beats of ``states``: the tempo
    at which the median beat of them is played.

    The median, not beats over seconds, because a source's last states are often its final
    ritardando or a held chord: the end of Schubert's D 760, second movement, read as 16 states
    (two beats) gave 34 bpm, and a continuation crawling at half the piece's tempo; its last 16
    beats' median is 61 bpm, the piece's own (its mean over the whole piece 64)."""
    beats = states.beats.astype(np.float64)
    secs = states.seconds.astype(np.float64)
    timed = (beats > 0) & (secs > 0)
    if not timed.any():
        return 100.0
    beats, secs = beats[timed], secs[timed]
    n = min(len(beats), int(np.searchsorted(np.cumsum(beats[::-1]), last_beats)) + 1)  # states in the last beats
    beats, secs = beats[-n:], secs[-n:]
    bpm = 60.0 * beats / secs
    order = np.argsort(bpm)
    covered = np.cumsum(beats[order])
    median = bpm[order][int(np.searchsorted(covered, covered[-1] / 2))]
    return float(np.clip(median, 30, 240))


@functools.lru_cache(maxsize=4)
def _test_segments(settings: PrepareSettings) -> tuple[tuple[str, Key, States], ...]:
    split = json.loads((BUNDLED_CORPUS_DIR / "splits.json").read_text())
    out = []
    for name in split["test"]:
        res = process_file(BUNDLED_CORPUS_DIR / name, settings)
        for states, key, _, _ in res.segments:
            out.append((name, key, states))
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _dataset_segments(folder: str, states_sha: str, settings: PrepareSettings) -> tuple[tuple[str, Key, States], ...]:
    """The key segments of a dataset's held-out pieces (``states_sha`` keys the cache: a rebuilt
    dataset is read again)."""
    ds = Dataset(folder)
    if ds.settings != settings:
        raise ConfigError(f"{folder} was prepared with other state settings ({ds.settings}) than the model was "
                          f"trained with ({settings}): prepare it again with the model's settings")
    for split in HELD_OUT_SPLITS:
        segments = ds.segments(split)
        if segments:
            return tuple((seg.piece, Key(seg.tonic, seg.minor), ds.states(seg)) for seg in segments)
    raise DatasetError(f"{folder} holds no held-out piece (its test and valid splits are empty): give `chopinbot "
                       "prepare` more files, or a splits.json naming the pieces to hold out")


def held_out_segments(settings: PrepareSettings = DEFAULT_SETTINGS,
                      seeds_from: str | os.PathLike | None = None) -> tuple[tuple[str, Key, States], ...]:
    """(piece, key, states in the home key) of every key segment seeds are taken from: the bundled
    test pieces, or with ``seeds_from`` that dataset folder's test pieces (its valid pieces when it
    has no test piece).  Raises :class:`DatasetError` for a folder that is no dataset or holds none."""
    if seeds_from is None:
        return _test_segments(settings)
    folder = Path(seeds_from)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise DatasetError(f"{folder}: not a prepared dataset (no manifest.json): --seeds-from takes a folder made "
                           "by `chopinbot prepare`")
    try:
        sha = json.loads(manifest.read_text())["states_sha256"]
    except (ValueError, KeyError, TypeError):
        raise DatasetError(f"{manifest}: not a readable dataset manifest") from None
    return _dataset_segments(str(folder.resolve()), sha, settings)


def model_dataset(meta: dict) -> Path | None:
    """The dataset folder a model was trained on (its config's ``train.data``), when it is still
    there and still the same data (its ``states_sha256`` as the model recorded it); else None.
    A relative folder is taken from the current directory, as `chopinbot train` was given it."""
    train = meta.get("train") if isinstance(meta, dict) else None
    data = train.get("data") if isinstance(train, dict) else None
    if not isinstance(data, str) or not data:
        return None
    folder = Path(data)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    recorded = meta.get("dataset_sha256")
    if recorded and isinstance(manifest, dict) and manifest.get("states_sha256") != recorded:
        return None  # prepared again since: not the data the model learnt
    return folder


def seeds_label(seeds_from: str | os.PathLike | None) -> str:
    """Where seeds come from, in words: "the bundled test pieces" or "runs/mine's held-out pieces"."""
    return "the bundled test pieces" if seeds_from is None else f"{Path(seeds_from).name}'s held-out pieces"


def list_seeds(seed_len: int = SEED_STATES, settings: PrepareSettings = DEFAULT_SETTINGS,
               seeds_from: str | os.PathLike | None = None) -> list[SeedInfo]:
    """Non-overlapping windows of ``seed_len`` states of the held-out pieces
    (:func:`held_out_segments`) that start with at least one struck key."""
    if seed_len < 1:
        raise ConfigError("seed length must be at least 1 state")
    infos = []
    for name, key, states in held_out_segments(settings, seeds_from):
        for pos in range(0, len(states) - seed_len + 1, seed_len):
            w = states[pos : pos + seed_len]
            if w.onsets.any():
                infos.append(SeedInfo(len(infos), name, pos, key.name, w.total_beats, w.total_seconds))
    return infos


def window_seed(states: States, key: Key, position: int, seed_len: int, piece: str,
                context_states: int = WARM_STATES) -> Seed:
    """The seed of ``seed_len`` states at ``position`` of a key segment's ``states`` (in the
    model's home key), with up to ``context_states`` states before it as its context."""
    window = states[position : position + seed_len]
    start = float(states.beats[:position].astype(np.float64).sum())
    context = states[max(0, position - context_states) : position]
    return Seed(window, key, source_tempo(states[: position + len(window)]),
                f"{piece} ({key.name}) @ state {position}, {len(window)} states", start, context)


def seed_from_test(index: int, seed_len: int = SEED_STATES, settings: PrepareSettings = DEFAULT_SETTINGS,
                   context_states: int = WARM_STATES, seeds_from: str | os.PathLike | None = None) -> Seed:
    """Held-out window ``index`` (see :func:`list_seeds`; ``seeds_from``: of that dataset's
    held-out pieces), with up to ``context_states`` states of its key segment before it as the
    seed's context."""
    if context_states < 0:
        raise ConfigError("context states must be 0 or more")
    infos = list_seeds(seed_len, settings, seeds_from)
    if not infos:
        raise ConfigError(f"no window of {seed_len} states in {seeds_label(seeds_from)}: use a shorter --seed-len")
    if not 0 <= index < len(infos):
        raise ConfigError(f"seed index {index} out of range: {seeds_label(seeds_from)} give {len(infos)} seeds "
                          f"(0..{len(infos) - 1})")
    info = infos[index]
    piece = info.piece if seeds_from is None else f"{Path(seeds_from).name}/{info.piece}"
    for name, key, states in held_out_segments(settings, seeds_from):
        if name == info.piece and key.name == info.key and info.position + seed_len <= len(states):
            seed = window_seed(states, key, info.position, seed_len, piece, context_states)
            if np.isclose(seed.states.total_beats, info.beats):
                return seed
    raise ConfigError(f"seed {index} not found")  # pragma: no cover -- infos come from the same segments


def seed_from_dataset(folder: str | os.PathLike, index: int, seed_len: int = SEED_STATES,
                      settings: PrepareSettings = DEFAULT_SETTINGS, context_states: int = WARM_STATES) -> Seed:
    """Window ``index`` of a prepared dataset's own held-out pieces (:func:`seed_from_test` with ``seeds_from``)."""
    return seed_from_test(index, seed_len, settings, context_states, seeds_from=folder)


def random_seed_index(rng: np.random.Generator, seed_len: int = SEED_STATES, minor: bool | None = None,
                      settings: PrepareSettings = DEFAULT_SETTINGS, seeds_from: str | os.PathLike | None = None) -> int:
    """A random held-out seed (``seeds_from``: of that dataset), of the given mode if asked (so a
    requested key's mode can be honoured by transposition alone)."""
    infos = list_seeds(seed_len, settings, seeds_from)
    if not infos:
        raise ConfigError(f"no window of {seed_len} states in {seeds_label(seeds_from)}: use a shorter --seed-len")
    pool = [i.index for i in infos if minor is None or ("minor" in i.key) == minor] or [i.index for i in infos]
    return int(rng.choice(pool))


def seed_from_primer(
    primer: str | os.PathLike | bytes,
    primer_states: int = SEED_STATES,
    settings: PrepareSettings = DEFAULT_SETTINGS,
    name: str | None = None,
    context_states: int = WARM_STATES,
) -> Seed:
    """The last ``primer_states`` states of the user's MIDI file or score (MusicXML, ``.mxl``,
    Humdrum: read as ``chopinbot prepare`` reads them, :func:`~chopinbot.music.scores.read_notes`),
    in the model's home key, with up to ``context_states`` states of the primer before them as context.

    The primer's key comes from its last key signature (major or relative minor
    by the pitch-class profile) or, without one, from the profile over all 24
    keys; its metre at the seed is kept in ``time_signature``, and the seed's
    place in it in ``start_beat``.  Uploaded bytes are read by their ``name``'s
    suffix, else by their content.  Raises :class:`MidiError` for anything unusable.
    """
    if primer_states < 1:
        raise ConfigError("--primer-states must be at least 1")
    if context_states < 0:
        raise ConfigError("context states must be 0 or more")
    if isinstance(primer, (bytes, bytearray)):
        label = name or "uploaded primer"
        notes = read_notes_bytes(bytes(primer), label)
    else:
        label = Path(primer).name
        notes = read_notes(primer)
    try:
        states, bounds, _ = notes_to_states(notes, settings.grid_per_beat, settings.pedal, settings.min_state_beats,
                                       settings.max_states)
    except MidiError as e:
        raise MidiError(e.reason, label) from None
    sharps = notes.key_signatures[-1][1] if notes.key_signatures else None
    key = detect_key(pitch_class_histogram(states.keys, states.beats), sharps)
    home, _ = transpose_states(states, key.shift_home)
    first = max(0, len(home) - primer_states)
    tail = home[first:]
    if not tail.keys.any():
        raise MidiError("the primer's last states hold no notes", label)
    start = float(home.beats[:first].astype(np.float64).sum())
    context = home[max(0, first - context_states) : first]
    metre = None
    if notes.time_signatures:  # the metre in force where the seed starts
        at = bounds[first] if first < len(bounds) else 0
        metre = next(((n, d) for t, n, d in reversed(notes.time_signatures) if t <= at), notes.time_signatures[0][1:])
    return Seed(tail, key, source_tempo(home), f"primer {label} ({key.name}, last {len(tail)} states)", start, context,
                metre)
