"""Typed JSONL manifests: the data contract between corpora, training, evaluation and indexing.

One JSON object a line::

    {"track_id": "t0001", "audio_path": "audio/t0001.flac", "tags": ["jazz", "piano"],
     "captions": ["a relaxed jazz trio with piano"], "split": "train", "start": null, "end": null,
     "metadata": {"artist": "...", "album": "...", "year": 1999, "duration": 31.2}}

``track_id`` and ``audio_path`` are required; everything else is optional. A relative ``audio_path`` is
resolved against the manifest's own folder, so a corpus folder can be moved as a whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from musicsearch.errors import ManifestError
from musicsearch.fileio import atomic_write

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Track:
    """One track (or one segment of a file, with ``start``/``end`` in seconds) of a corpus.

    Attributes:
        track_id: unique id within the manifest.
        audio_path: path of the audio file (absolute once read through :func:`read_manifest`).
        tags: labels, in the corpus vocabulary.
        captions: free-text descriptions, if any.
        split: ``"train"``, ``"valid"``, ``"test"`` or ``None``.
        start: segment start in seconds, or ``None`` for the file start.
        end: segment end in seconds, or ``None`` for the file end.
        metadata: anything else (artist, album, year, duration, title, ...), JSON-serialisable.
    """

    track_id: str
    audio_path: str
    tags: tuple[str, ...] = ()
    captions: tuple[str, ...] = ()
    split: str | None = None
    start: float | None = None
    end: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self, *, relative_to: Path | None = None) -> dict[str, Any]:
        """The manifest line for this track; ``audio_path`` made relative to ``relative_to`` if inside it."""
        path = self.audio_path
        if relative_to is not None:
            try:
                path = os.path.relpath(Path(path).resolve(), relative_to.resolve())
                if path.startswith(".."):
                    path = str(Path(self.audio_path).resolve())
            except ValueError:
                path = self.audio_path
        out: dict[str, Any] = {"track_id": self.track_id, "audio_path": path, "tags": list(self.tags)}
        if self.captions:
            out["captions"] = list(self.captions)
        if self.split is not None:
            out["split"] = self.split
        if self.start is not None:
            out["start"] = self.start
        if self.end is not None:
            out["end"] = self.end
        if self.metadata:
            out["metadata"] = self.metadata
        return out


def track_from_json(obj: Any, *, base_dir: Path | None = None, where: str = "manifest") -> Track:
    """Build a :class:`Track` from one parsed manifest line.

    Args:
        obj: the parsed JSON object.
        base_dir: folder against which a relative ``audio_path`` is resolved.
        where: position used in error messages (``"file.jsonl:12"``).

    Raises:
        ManifestError: naming the line and the missing or malformed field.
    """
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("track_id", "audio_path"):
        if key not in obj or obj[key] in (None, ""):
            raise ManifestError(f"{where}: missing required field {key!r}; every line needs track_id and audio_path")
    tags = obj.get("tags") or []
    captions = obj.get("captions") or []
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise ManifestError(f"{where}: field 'tags' must be a list of strings, got {tags!r}")
    if isinstance(captions, str):
        captions = [captions]
    if not all(isinstance(c, str) for c in captions):
        raise ManifestError(f"{where}: field 'captions' must be a list of strings")
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise ManifestError(f"{where}: field 'split' must be one of {SPLITS} or absent, got {split!r}")
    path = str(obj["audio_path"])
    if base_dir is not None and not os.path.isabs(path):
        path = str((base_dir / path).resolve())
    start, end = obj.get("start"), obj.get("end")
    try:
        start = None if start is None else float(start)
        end = None if end is None else float(end)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: 'start'/'end' must be numbers of seconds") from None
    if start is not None and end is not None and end <= start:
        raise ManifestError(f"{where}: 'end' ({end}) must be after 'start' ({start})")
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ManifestError(f"{where}: field 'metadata' must be an object")
    return Track(
        track_id=str(obj["track_id"]),
        audio_path=path,
        tags=tuple(tags),
        captions=tuple(captions),
        split=split,
        start=start,
        end=end,
        metadata=metadata,
    )


def iter_manifest(path: str | os.PathLike[str]) -> Iterator[Track]:
    """Yield the tracks of a JSONL manifest lazily (blank lines and ``#`` comments skipped).

    Raises:
        ManifestError: if the file is missing, a line is not JSON, or a field is missing or malformed.
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"manifest {p} does not exist; make one with `musicsearch scan DIR` or `musicsearch synth`")
    base = p.parent
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            yield track_from_json(obj, base_dir=base, where=where)


def read_manifest(path: str | os.PathLike[str], *, split: str | None = None) -> list[Track]:
    """Read a whole manifest, optionally keeping one split; duplicate ids are an error.

    Raises:
        ManifestError: as :func:`iter_manifest`, or on a duplicate ``track_id``.
    """
    tracks: list[Track] = []
    seen: set[str] = set()
    for t in iter_manifest(path):
        if t.track_id in seen:
            raise ManifestError(f"manifest {path}: duplicate track_id {t.track_id!r}; ids must be unique")
        seen.add(t.track_id)
        if split is None or t.split == split:
            tracks.append(t)
    return tracks


def write_manifest(path: str | os.PathLike[str], tracks: Iterable[Track]) -> int:
    """Write tracks as JSONL atomically, paths relative to the manifest's folder when inside it.

    Returns:
        The number of tracks written.
    """
    p = Path(path)
    n = 0
    with atomic_write(p) as fh:
        for t in tracks:
            fh.write(json.dumps(t.to_json(relative_to=p.parent), ensure_ascii=False) + "\n")
            n += 1
    return n


def tag_vocabulary(tracks: Sequence[Track]) -> list[str]:
    """Tags of the tracks, most frequent first (ties alphabetical)."""
    counts: dict[str, int] = {}
    for t in tracks:
        for tag in t.tags:
            counts[tag] = counts.get(tag, 0) + 1
    return sorted(counts, key=lambda k: (-counts[k], k))
