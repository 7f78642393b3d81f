"""The documented error types. Anything a user can cause ends in one of these."""

from __future__ import annotations


class ChopinBotError(Exception):
    """Base class: a problem the user can fix, with a readable message."""


class MidiError(ChopinBotError):
    """A MIDI file that cannot be used (not MIDI, truncated, empty, no piano notes...)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


class ConfigError(ChopinBotError):
    """A setting, flag or model configuration that is invalid."""


class ModelFileError(ChopinBotError):
    """A model file that is missing, malformed, or does not match its config."""


class DatasetError(ChopinBotError):
    """A dataset folder that is missing or inconsistent."""
