"""The source of an indexing run: the tracks of a folder of audio files or of a JSONL manifest.

:func:`collect_source` lists them as :class:`SourceItem` (path, segment, tags, display metadata), rejecting
symlinks that lead outside the folder; :func:`content_key` is what the store records to tell a changed track
from an unchanged one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from musicsearch.data.manifest import read_manifest
from musicsearch.data.scan import find_audio_files, path_metadata

__all__ = ["FailedFile", "SourceItem", "collect_source", "content_key"]


@dataclass(frozen=True)
class FailedFile:
    """A file that was not indexed, and why."""

    track_id: str
    path: str
    reason: str


@dataclass(frozen=True)
class SourceItem:
    """One track to index.

    Attributes:
        track_id: unique id: the path relative to the folder (``/``-separated, with its suffix), or the
            manifest's ``track_id``.
        path: the audio file.
        start, end: segment bounds in seconds (manifests only), or ``None``.
        tags: labels.
        title, artist, album, year, folder: metadata for display and filters.
    """

    track_id: str
    path: str
    start: float | None = None
    end: float | None = None
    tags: tuple[str, ...] = ()
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    year: int | None = None
    folder: str | None = None

    def meta_digest(self) -> str:
        """Short hash of everything but the audio bytes (so editing a tag re-indexes the track)."""
        obj = [self.start, self.end, sorted(self.tags), self.title, self.artist, self.album, self.year, self.folder]
        return hashlib.sha256(json.dumps(obj, ensure_ascii=False).encode()).hexdigest()[:12]


def content_key(sha256: str, item: SourceItem) -> str:
    """The ``content_hash`` stored for a track: ``sha256:<file hash>;meta:<digest of segment and metadata>``."""
    return f"sha256:{sha256};meta:{item.meta_digest()}"


def _year(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(str(value)[:4])
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def collect_source(source: str | os.PathLike[str]) -> tuple[list[SourceItem], list[FailedFile]]:
    """The tracks of a folder (found recursively, see :func:`musicsearch.data.scan.find_audio_files`) or of a
    JSONL manifest.

    For a folder: ``track_id`` is the relative path, metadata comes from the path convention
    ``Artist/Album/NN Title.ext`` (:func:`musicsearch.data.scan.path_metadata`), ``folder`` is the relative parent
    folder; a symlink whose target lies outside the folder is rejected (it would let the server reach outside
    the collection). For a manifest: its fields, ``metadata`` giving title/artist/album/year/folder.

    Returns:
        ``(items, rejected)``.

    Raises:
        ManifestError: ``source`` is neither a folder nor a readable manifest.
    """
    src = Path(source).expanduser()
    items: list[SourceItem] = []
    rejected: list[FailedFile] = []
    if src.is_dir():
        root = Path(os.path.abspath(src))
        real_root = os.path.realpath(root)
        for path in find_audio_files(root):
            rel = path.relative_to(root).as_posix()
            real = os.path.realpath(path)
            if os.path.commonpath([real_root, real]) != real_root:
                rejected.append(FailedFile(rel, str(path), f"symlink points outside the collection (to {real})"))
                continue
            meta = path_metadata(rel)
            items.append(
                SourceItem(
                    track_id=rel,
                    path=str(path),
                    title=_text(meta.get("title")),
                    artist=_text(meta.get("artist")),
                    album=_text(meta.get("album")),
                    folder=str(meta.get("folder", "")),
                )
            )
        return items, rejected
    for t in read_manifest(src):
        m = t.metadata
        items.append(
            SourceItem(
                track_id=t.track_id,
                path=t.audio_path,
                start=t.start,
                end=t.end,
                tags=tuple(t.tags),
                title=_text(m.get("title")),
                artist=_text(m.get("artist")),
                album=_text(m.get("album")),
                year=_year(m.get("year")),
                folder=_text(m.get("folder")) if m.get("folder") is not None else os.path.dirname(t.audio_path),
            )
        )
    return items, rejected
