"""Package data shipped with musicsearch: eight real, licensed music recordings for the demo and the tests.

Each ``.ogg`` (Ogg Vorbis, 22,050 Hz mono) sits beside a ``.txt`` naming its author, source and licence, and
``README.md`` describes them all. Several are licensed for non-commercial use only.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["librosa_music_dir", "librosa_music_files"]

_LIBROSA_MUSIC = Path(__file__).resolve().parent / "librosa_music"


def librosa_music_dir() -> Path:
    """The folder holding the eight recordings, their licence files and ``README.md``.

    Returns:
        An absolute path inside the installed package.
    """
    return _LIBROSA_MUSIC


def librosa_music_files() -> list[Path]:
    """The eight ``.ogg`` recordings, sorted by file name.

    Returns:
        Absolute paths of the audio files (each has a licence ``.txt`` beside it).
    """
    return sorted(_LIBROSA_MUSIC.glob("*.ogg"))
