"""Where a generation starts: a window of a held-out test piece, or the
user's own MIDI (a *primer*), always brought into C major / A minor.

Test seeds are built in memory from the bundled corpus's test pieces (no
dataset folder needed, nothing written), with the state settings the model
was trained with.
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
from chopinbot.dataset.store import DEFAULT_SETTINGS, PrepareSettings
from chopinbot.errors import ConfigError, MidiError
from chopinbot.music.keys import Key, detect_key, pitch_class_histogram
from chopinbot.music.midi import read_midi, read_midi_bytes
from chopinbot.music.states import States, notes_to_states, transpose_states


@dataclass
class Seed:
    """Seed states in the model's home key (C major / A minor) and where they came from.

    ``context`` is what precedes the seed window in its source (at most
    ``WARM_STATES`` states): the model reads it before the seed, so that its
    state and its repeat lookups know the piece, but it is not part of the
    output (``include_seed`` adds only the window)."""

    states: States
    key: Key  # the key of the source (the output goes back to it unless told otherwise)
    bpm: float  # the source's tempo around the seed
    source: str  # e.g. "chpn-p24.mid @ state 160" or "primer my.mid (last 16 states)"
    start_beat: float = 0.0  # where the seed starts, in beats from its source's start (the metre's phase)
    context: States | None = None  # the states just before the window, read first (None: none)

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


def _tempo(states: States) -> float:
    secs = float(states.seconds.astype(np.float64).sum())
    beats = float(states.beats.astype(np.float64).sum())
    return float(np.clip(60.0 * beats / secs, 30, 240)) if secs > 0 else 100.0


@functools.lru_cache(maxsize=4)
def _test_segments(settings: PrepareSettings) -> tuple[tuple[str, Key, States], ...]:
    split = json.loads((BUNDLED_CORPUS_DIR / "splits.json").read_text())
    out = []
    for name in split["test"]:
        res = process_file(BUNDLED_CORPUS_DIR / name, settings)
        for states, key, _, _ in res.segments:
            out.append((name, key, states))
    return tuple(out)


def list_seeds(seed_len: int = SEED_STATES, settings: PrepareSettings = DEFAULT_SETTINGS) -> list[SeedInfo]:
    """Non-overlapping windows of ``seed_len`` states of the test pieces that
    start with at least one struck key."""
    if seed_len < 1:
        raise ConfigError("seed length must be at least 1 state")
    infos = []
    for name, key, states in _test_segments(settings):
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
    return Seed(window, key, _tempo(window), f"{piece} ({key.name}) @ state {position}", start, context)


def seed_from_test(index: int, seed_len: int = SEED_STATES, settings: PrepareSettings = DEFAULT_SETTINGS,
                   context_states: int = WARM_STATES) -> Seed:
    """Test window ``index`` (see :func:`list_seeds`), with up to ``context_states``
    states of its key segment before it as the seed's context."""
    if context_states < 0:
        raise ConfigError("context states must be 0 or more")
    infos = list_seeds(seed_len, settings)
    if not 0 <= index < len(infos):
        raise ConfigError(f"seed index {index} out of range: there are {len(infos)} seeds (0..{len(infos) - 1})")
    info = infos[index]
    for name, key, states in _test_segments(settings):
        if name == info.piece and key.name == info.key and info.position + seed_len <= len(states):
            seed = window_seed(states, key, info.position, seed_len, info.piece, context_states)
            if np.isclose(seed.states.total_beats, info.beats):
                return seed
    raise ConfigError(f"seed {index} not found")  # pragma: no cover -- infos come from the same segments


def random_seed_index(rng: np.random.Generator, seed_len: int = SEED_STATES, minor: bool | None = None,
                      settings: PrepareSettings = DEFAULT_SETTINGS) -> int:
    """A random test seed, of the given mode if asked (so a requested key's
    mode can be honoured by transposition alone)."""
    infos = list_seeds(seed_len, settings)
    if not infos:
        raise ConfigError(f"no test window of {seed_len} states: use a shorter --seed-len")
    pool = [i.index for i in infos if minor is None or ("minor" in i.key) == minor] or [i.index for i in infos]
    return int(rng.choice(pool))


def seed_from_primer(
    primer: str | os.PathLike | bytes,
    primer_states: int = SEED_STATES,
    settings: PrepareSettings = DEFAULT_SETTINGS,
    name: str | None = None,
    context_states: int = WARM_STATES,
) -> Seed:
    """The last ``primer_states`` states of the user's MIDI, in the model's home key,
    with up to ``context_states`` states of the primer before them as context.

    The primer's key comes from its last key signature (major or relative minor
    by the pitch-class profile) or, without one, from the profile over all 24
    keys. Raises :class:`MidiError` for anything unusable.
    """
    if primer_states < 1:
        raise ConfigError("--primer-states must be at least 1")
    if context_states < 0:
        raise ConfigError("context states must be 0 or more")
    if isinstance(primer, (bytes, bytearray)):
        label = name or "uploaded primer"
        notes = read_midi_bytes(bytes(primer), label)
    else:
        label = Path(primer).name
        notes = read_midi(primer)
    try:
        states, _, _ = notes_to_states(notes, settings.grid_per_beat, settings.pedal, settings.min_state_beats,
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
    return Seed(tail, key, _tempo(tail), f"primer {label} ({key.name}, last {len(tail)} states)", start, context)
