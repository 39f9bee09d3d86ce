"""The one error type for bad user input, and its few specialisations.

Every message says what was wrong (naming the file, field or value) and what to do about it.
"""

from __future__ import annotations


class MusicSearchError(ValueError):
    """Bad input or an impossible request; the message names the input and says what to do."""


class AudioError(MusicSearchError):
    """An audio file could not be read, or holds nothing usable (empty, silent, corrupt)."""


class ManifestError(MusicSearchError):
    """A manifest (JSONL track list) is missing, malformed or lacks a required field."""


class ConfigError(MusicSearchError):
    """A model, training or evaluation configuration is unknown or inconsistent."""


class CheckpointError(MusicSearchError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""
