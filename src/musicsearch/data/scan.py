"""Build a manifest from a folder of audio files (``musicsearch scan``).

Files are found recursively (hidden files and folders skipped) and listed in sorted relative-path order, so a
scan is deterministic. Each readable file becomes one :class:`~musicsearch.data.manifest.Track`:

- ``track_id``: the path relative to the folder, ``/``-separated, without its suffix (``Artist/Album/01 Song``).
  When two files differ only by suffix (``a.flac`` and ``a.mp3``) both keep their suffix in the id.
- ``metadata``: ``duration`` (seconds) and ``sample_rate`` from the file header, ``folder`` (the relative parent
  folder, ``""`` at the top), ``title`` (the file stem without a leading track number), and from the path
  convention ``Artist/Album/NN Title.ext`` (at least two folders deep): ``artist`` (the grandparent folder),
  ``album`` (the parent folder) and ``track_number`` (the leading number of the file name, when there is one).
- ``split``: from the tags CSV when given there; otherwise ``train``/``valid``/``test`` chosen by a hash of the
  seed and the track id, so a track keeps its split when files are added or removed.

The optional tags CSV has a header row with a ``path`` column (relative to the folder, or a bare file name when
that name is unique, or a track id) and any of: ``tags`` (separated by ``;`` or, when there is no ``;``, by
``,``), ``captions`` (separated by ``|``), ``split``, ``artist``, ``album``, ``year``. Its values override what the
path convention gives.

Unreadable files (corrupt, empty, unsupported) never stop a scan: they are listed with the reason in
:attr:`ScanReport.skipped`.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from musicsearch.audio.io import AUDIO_EXTENSIONS, audio_info
from musicsearch.data.manifest import SPLITS, Track
from musicsearch.errors import AudioError, ConfigError, ManifestError

__all__ = [
    "DEFAULT_SPLIT_RATIOS",
    "ScanReport",
    "TagRow",
    "assign_split",
    "find_audio_files",
    "parse_split_ratios",
    "path_metadata",
    "read_tags_csv",
    "scan_directory",
]

logger = logging.getLogger(__name__)

#: Default train / valid / test fractions.
DEFAULT_SPLIT_RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)

_TRACK_NUMBER = re.compile(r"^(\d{1,3})(?:\s*[-._)]\s*|\s+)(?=\S)")
_CSV_COLUMNS = ("path", "tags", "captions", "split", "artist", "album", "year")


@dataclass
class ScanReport:
    """What a scan found.

    Attributes:
        tracks: one track per readable audio file, in sorted path order.
        skipped: ``(relative path, reason)`` of every audio file that could not be read.
        unmatched_tags: ``path`` values of tags-CSV rows that matched no audio file.
    """

    tracks: list[Track] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unmatched_tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TagRow:
    """One row of a tags CSV (``where`` is ``file.csv:LINE`` for messages)."""

    path: str
    where: str
    tags: tuple[str, ...] = ()
    captions: tuple[str, ...] = ()
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def parse_split_ratios(value: str | Sequence[float]) -> tuple[float, float, float]:
    """Parse and check train/valid/test fractions.

    Args:
        value: ``"0.8,0.1,0.1"`` or a sequence of three numbers.

    Returns:
        Three non-negative fractions summing to 1 (within 1e-6; then renormalised exactly).

    Raises:
        ConfigError: if there are not three non-negative numbers summing to 1.
    """
    try:
        parts = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
    except ValueError:
        raise ConfigError(f"split ratios {value!r} must be three numbers like 0.8,0.1,0.1") from None
    if len(parts) != 3 or any(not (p >= 0) for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise ConfigError(
            f"split ratios {value!r} must be three non-negative numbers (train, valid, test) summing to 1, "
            f"like 0.8,0.1,0.1"
        )
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def assign_split(track_id: str, ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS, seed: int = 0) -> str:
    """Choose a split from a hash of ``seed`` and ``track_id`` (stable, independent of the other tracks).

    Args:
        track_id: the track's id.
        ratios: train, valid and test fractions (summing to 1).
        seed: changes the assignment as a whole.

    Returns:
        ``"train"``, ``"valid"`` or ``"test"``: with ``u`` the first 8 bytes of SHA-256(``"seed:track_id"``)
        read as a fraction of 2**64, ``train`` if ``u < ratios[0]``, ``valid`` if ``u < ratios[0] + ratios[1]``,
        else ``test``.
    """
    digest = hashlib.sha256(f"{seed}:{track_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < ratios[0]:
        return SPLITS[0]
    if u < ratios[0] + ratios[1]:
        return SPLITS[1]
    return SPLITS[2]


def find_audio_files(root: str | os.PathLike[str]) -> list[Path]:
    """Audio files under ``root`` (suffix in :data:`~musicsearch.audio.io.AUDIO_EXTENSIONS`, any case).

    Hidden files and folders (names starting with ``.``) are skipped; symlinked folders are not followed.

    Returns:
        Absolute paths (symlinks not resolved) sorted by their ``/``-separated path relative to ``root``.

    Raises:
        ManifestError: if ``root`` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise ManifestError(f"{base} is not a folder; give the folder that holds your audio files")
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            full = Path(dirpath) / name
            found.append((full.relative_to(base).as_posix(), Path(os.path.abspath(full))))
    found.sort(key=lambda item: item[0])
    return [p for _, p in found]


def path_metadata(rel: str | PurePosixPath) -> dict[str, Any]:
    """Metadata implied by a relative path under the convention ``Artist/Album/NN Title.ext``.

    Args:
        rel: ``/``-separated path relative to the scanned folder.

    Returns:
        ``folder`` and ``title`` always; ``track_number`` when the name starts with a number followed by a
        separator (``"01 Title"``, ``"01 - Title"``, ``"1. Title"``); ``artist`` and ``album`` when the file is at
        least two folders deep (the grandparent and parent folder names).
    """
    p = PurePosixPath(rel)
    parent = p.parent.as_posix()
    meta: dict[str, Any] = {"folder": "" if parent == "." else parent}
    stem = p.stem
    m = _TRACK_NUMBER.match(stem)
    if m:
        meta["track_number"] = int(m.group(1))
        stem = stem[m.end() :]
    meta["title"] = stem.strip()
    if len(p.parts) >= 3:
        meta["artist"] = p.parts[-3]
        meta["album"] = p.parts[-2]
    return meta


def _split_list(text: str, seps: Sequence[str]) -> tuple[str, ...]:
    for sep in seps:
        if sep in text:
            return tuple(s.strip() for s in text.split(sep) if s.strip())
    return (text.strip(),) if text.strip() else ()


def _normalise_rel(path: str) -> str:
    rel = path.strip().replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    return rel


def read_tags_csv(path: str | os.PathLike[str]) -> list[TagRow]:
    """Read a tags CSV (see the module doc for its columns).

    Returns:
        One :class:`TagRow` per non-empty row, in file order.

    Raises:
        ManifestError: if the file is missing or has no ``path`` column, a row has no path, a path repeats,
            a split is not one of train/valid/test, or a year is not an integer.
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"tags CSV {p} does not exist; give a CSV with a header row `path,tags`")
    rows: list[TagRow] = []
    seen: dict[str, str] = {}
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "path" not in header:
            raise ManifestError(
                f"tags CSV {p} has no 'path' column (header: {reader.fieldnames}); the first row must name the "
                f"columns, e.g. path,tags,captions,split"
            )
        unknown = [h for h in header if h not in _CSV_COLUMNS]
        if unknown:
            logger.warning("tags CSV %s: ignoring unknown columns %s", p, unknown)
        for lineno, raw in enumerate(reader, 2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
            if not any(row.values()):
                continue
            where = f"{p}:{lineno}"
            rel = _normalise_rel(row.get("path", ""))
            if not rel:
                raise ManifestError(f"{where}: empty 'path'; every row needs the file's path relative to the folder")
            if rel in seen:
                raise ManifestError(f"{where}: path {rel!r} already appears at {seen[rel]}; merge the two rows")
            seen[rel] = where
            split = row.get("split") or None
            if split is not None and split not in SPLITS:
                raise ManifestError(f"{where}: split {split!r} must be one of {', '.join(SPLITS)} or empty")
            metadata: dict[str, Any] = {}
            for key in ("artist", "album"):
                if row.get(key):
                    metadata[key] = row[key]
            if row.get("year"):
                try:
                    metadata["year"] = int(row["year"])
                except ValueError:
                    raise ManifestError(f"{where}: year {row['year']!r} must be a whole number like 1999") from None
            rows.append(
                TagRow(
                    path=rel,
                    where=where,
                    tags=_split_list(row.get("tags", ""), (";", ",")),
                    captions=_split_list(row.get("captions", ""), ("|",)),
                    split=split,
                    metadata=metadata,
                )
            )
    return rows


def _track_ids(rels: Sequence[str]) -> list[str]:
    """Relative path without suffix; the suffix is kept for files whose stems collide."""
    stems = [str(PurePosixPath(r).with_suffix("")) for r in rels]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [r if counts[s] > 1 else s for r, s in zip(rels, stems)]


def _match_rows(rows: Sequence[TagRow], rels: Sequence[str], ids: Sequence[str]) -> tuple[dict[int, TagRow], list[str]]:
    """Map file index -> CSV row; also return the paths of rows that matched no file."""
    by_rel = {r: i for i, r in enumerate(rels)}
    by_id = {t: i for i, t in enumerate(ids)}
    by_name: dict[str, list[int]] = {}
    for i, r in enumerate(rels):
        by_name.setdefault(PurePosixPath(r).name, []).append(i)
    matched: dict[int, TagRow] = {}
    unmatched: list[str] = []
    for row in rows:
        if row.path in by_rel:
            idx = by_rel[row.path]
        elif row.path in by_id:
            idx = by_id[row.path]
        elif "/" not in row.path and row.path in by_name:
            candidates = by_name[row.path]
            if len(candidates) > 1:
                options = ", ".join(rels[i] for i in candidates[:5])
                raise ManifestError(
                    f"{row.where}: file name {row.path!r} matches several files ({options}); "
                    f"give its path relative to the scanned folder"
                )
            idx = candidates[0]
        else:
            unmatched.append(row.path)
            continue
        if idx in matched:
            raise ManifestError(
                f"{row.where}: {row.path!r} names the same file as {matched[idx].where}; keep one row per file"
            )
        matched[idx] = row
    return matched, unmatched


def scan_directory(
    root: str | os.PathLike[str],
    *,
    tags_csv: str | os.PathLike[str] | None = None,
    split_ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS,
    seed: int = 0,
    progress: bool = False,
) -> ScanReport:
    """Scan a folder of audio files into tracks (see the module doc for ids, metadata and splits).

    Only file headers are read (no decoding), so a scan costs about a millisecond a file.

    Args:
        root: the folder to scan.
        tags_csv: optional CSV of tags, captions, splits and metadata.
        split_ratios: train/valid/test fractions for tracks without a split in the CSV.
        seed: seed of the split hash.
        progress: show a tqdm progress bar on stderr.

    Returns:
        A :class:`ScanReport` whose tracks hold absolute audio paths.

    Raises:
        ManifestError: if ``root`` is not a folder or the tags CSV is malformed.
        ConfigError: if ``split_ratios`` are not three fractions summing to 1.
    """
    ratios = parse_split_ratios(split_ratios)
    base = Path(root)
    files = find_audio_files(base)
    top = Path(os.path.abspath(base))
    rels = [f.relative_to(top).as_posix() for f in files]
    ids = _track_ids(rels)
    rows = read_tags_csv(tags_csv) if tags_csv is not None else []
    matched, unmatched = _match_rows(rows, rels, ids)
    if unmatched:
        logger.warning("%d rows of %s matched no audio file, e.g. %r", len(unmatched), tags_csv, unmatched[0])
    report = ScanReport(unmatched_tags=unmatched)
    items = zip(files, rels, ids)
    for i, (path, rel, track_id) in enumerate(
        tqdm(items, total=len(files), desc="scan", unit="file", disable=not progress)
    ):
        try:
            info = audio_info(path)
        except AudioError as exc:
            logger.warning("skipping %s: %s", rel, exc)
            report.skipped.append((rel, str(exc)))
            continue
        metadata: dict[str, Any] = {"duration": round(info.duration, 3), "sample_rate": info.sample_rate}
        metadata.update(path_metadata(rel))
        row = matched.get(i)
        if row is not None:
            metadata.update(row.metadata)
        split = row.split if row is not None and row.split else assign_split(track_id, ratios, seed)
        report.tracks.append(
            Track(
                track_id=track_id,
                audio_path=str(path),
                tags=row.tags if row else (),
                captions=row.captions if row else (),
                split=split,
                metadata=metadata,
            )
        )
    return report
