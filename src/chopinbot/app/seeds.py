"""Where a visitor's piece starts: a window of a held-out piece (the bundled test pieces, or the
model's own dataset's), or an uploaded primer (MIDI or a score).

Uploads are checked (size cap, a MIDI or score file, usable notes) and turned into
friendly :class:`UploadError` messages; their bytes stay in memory (a score is read by the same
child-process reader as ``chopinbot prepare`` uses, from memory) and their
names are only ever used as labels and to tell the format (:func:`safe_upload_name`).
"""

from __future__ import annotations

import re

import numpy as np

from chopinbot.app.registry import ModelEntry
from chopinbot.app.settings import MAX_UPLOAD_BYTES
from chopinbot.compose.infill import SourcePiece, read_source
from chopinbot.compose.seeds import Seed, SeedInfo, list_seeds, random_seed_index, seed_from_primer
from chopinbot.constants import SEED_STATES
from chopinbot.errors import ChopinBotError, MidiError
from chopinbot.music.keys import parse_key
from chopinbot.music.midi import sniff_format
from chopinbot.music.scores import ACCEPTED, MIDI_SUFFIXES, NOTE_SUFFIXES

UPLOAD_TYPES = [suffix.lstrip(".") for suffix in NOTE_SUFFIXES]  # what the upload widget takes


class UploadError(ChopinBotError):
    """An uploaded primer that cannot be used; the message says why, in plain words."""


def seed_infos(entry: ModelEntry, seeds_from: str | None = None) -> list[SeedInfo]:
    """The held-out seed windows for this model's state settings: the bundled test pieces, or
    (``seeds_from``, e.g. :attr:`ModelEntry.dataset`) a dataset's own held-out pieces."""
    return list_seeds(SEED_STATES, entry.settings, seeds_from)


def pick_random_seed(entry: ModelEntry, rng: np.random.Generator | None = None, key: str | None = None,
                     seeds_from: str | None = None) -> int:
    """A random seed window; of the mode of ``key`` when one is given, so that
    the key can be honoured by transposition alone."""
    minor = parse_key(key).minor if key else None
    return random_seed_index(rng or np.random.default_rng(), SEED_STATES, minor, entry.settings, seeds_from)


_UNSAFE = re.compile(r"[^\w.\- ()+]")


def safe_upload_name(name: str | None, limit: int = 60) -> str:
    """A display label for an uploaded file: its base name only, without
    folders, control or odd characters, at most ``limit`` characters.

    Upload names are never used as paths (uploads are never written to disk);
    this only keeps labels and download names tidy."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("_", base).strip(" ._") or "primer.mid"
    if len(base) > limit:  # keep the suffix: it tells a score from a MIDI file
        stem, dot, suffix = base.rpartition(".")
        base = stem[: limit - len(suffix) - 1] + dot + suffix if dot and len(suffix) < 10 else base[:limit]
    return base


def check_upload(data: bytes, name: str | None = None, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The uploaded bytes if they may be a MIDI file or a score, else :class:`UploadError` (size cap, format)."""
    label = safe_upload_name(name)
    if not data:
        raise UploadError(f"“{label}” is empty. Upload {ACCEPTED}.")
    if len(data) > max_bytes:
        raise UploadError(f"“{label}” is {len(data) / 1e6:.1f} MB; primers are limited to "
                          f"{max_bytes / 1024 / 1024:.0f} MB. A few bars are enough.")
    if sniff_format(data) is None:
        what = ("is not a MIDI file (it does not start with a MIDI header)" if label.lower().endswith(MIDI_SUFFIXES)
                else "is neither a MIDI file nor a score (it starts with no MIDI header, MusicXML or **kern)")
        raise UploadError(f"“{label}” {what}. Upload {ACCEPTED}, such as one exported from a notation program.")
    return data


def primer_seed(data: bytes, name: str | None, entry: ModelEntry, primer_states: int = SEED_STATES,
                max_bytes: int = MAX_UPLOAD_BYTES) -> Seed:
    """A seed from an uploaded primer, or :class:`UploadError`."""
    label = safe_upload_name(name)
    check_upload(data, name, max_bytes)
    try:
        return seed_from_primer(bytes(data), primer_states, entry.settings, name=label)
    except MidiError as e:
        reason = getattr(e, "reason", str(e))
        raise UploadError(f"“{label}” cannot be used as a primer: {reason}. Upload a MIDI file or a score with "
                          "piano notes (any pitched instrument; drums are ignored).") from None


def infill_source(data: bytes, name: str | None, entry: ModelEntry, max_bytes: int = MAX_UPLOAD_BYTES) -> SourcePiece:
    """An uploaded piece read for infilling (:func:`~chopinbot.compose.infill.read_source`), or :class:`UploadError`."""
    label = safe_upload_name(name)
    check_upload(data, name, max_bytes)
    try:
        return read_source(bytes(data), entry.settings, name=label)
    except MidiError as e:
        reason = getattr(e, "reason", str(e))
        raise UploadError(f"“{label}” cannot be infilled: {reason}. Upload a MIDI file or a score with piano "
                          "notes (any pitched instrument; drums are ignored).") from None
