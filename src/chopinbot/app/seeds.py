"""Where a visitor's piece starts: a window of a held-out test piece, or an uploaded primer.

Uploads are checked (size cap, MIDI header, usable notes) and turned into
friendly :class:`UploadError` messages; their bytes stay in memory and their
names are only ever used as labels (:func:`safe_upload_name`).
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


class UploadError(ChopinBotError):
    """An uploaded primer that cannot be used; the message says why, in plain words."""


def seed_infos(entry: ModelEntry) -> list[SeedInfo]:
    """The test-piece seed windows for this model's state settings."""
    return list_seeds(SEED_STATES, entry.settings)


def pick_random_seed(entry: ModelEntry, rng: np.random.Generator | None = None, key: str | None = None) -> int:
    """A random seed window; of the mode of ``key`` when one is given, so that
    the key can be honoured by transposition alone."""
    minor = parse_key(key).minor if key else None
    return random_seed_index(rng or np.random.default_rng(), SEED_STATES, minor, entry.settings)


_UNSAFE = re.compile(r"[^\w.\- ()+]")


def safe_upload_name(name: str | None, limit: int = 60) -> str:
    """A display label for an uploaded file: its base name only, without
    folders, control or odd characters, at most ``limit`` characters.

    Upload names are never used as paths (uploads are never written to disk);
    this only keeps labels and download names tidy."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _UNSAFE.sub("_", base).strip(" ._") or "primer.mid"
    return base[:limit]


def check_upload(data: bytes, name: str | None = None, max_bytes: int = MAX_UPLOAD_BYTES) -> bytes:
    """The uploaded bytes if they may be a MIDI file, else :class:`UploadError` (size cap, header)."""
    label = safe_upload_name(name)
    if not data:
        raise UploadError(f"“{label}” is empty. Upload a standard MIDI file (.mid).")
    if len(data) > max_bytes:
        raise UploadError(f"“{label}” is {len(data) / 1e6:.1f} MB; primers are limited to "
                          f"{max_bytes / 1024 / 1024:.0f} MB. A few bars of MIDI are enough.")
    if not data.startswith(b"MThd"):
        raise UploadError(f"“{label}” is not a MIDI file (it does not start with a MIDI header). "
                          "Upload a standard MIDI file (.mid), such as one exported from a notation program.")
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
        raise UploadError(f"“{label}” cannot be used as a primer: {reason}. Upload a MIDI file with piano "
                          "notes (any pitched instrument; drums are ignored).") from None


def infill_source(data: bytes, name: str | None, entry: ModelEntry, max_bytes: int = MAX_UPLOAD_BYTES) -> SourcePiece:
    """An uploaded piece read for infilling (:func:`~chopinbot.compose.infill.read_source`), or :class:`UploadError`."""
    label = safe_upload_name(name)
    check_upload(data, name, max_bytes)
    try:
        return read_source(bytes(data), entry.settings, name=label)
    except MidiError as e:
        reason = getattr(e, "reason", str(e))
        raise UploadError(f"“{label}” cannot be infilled: {reason}. Upload a MIDI file with piano notes "
                          "(any pitched instrument; drums are ignored).") from None
