"""FMA (Free Music Archive) small, as distributed by its owners (github.com/mdeff/fma).

Layout expected under ``root``::

    fma_metadata/tracks.csv    comma-separated with a 3-row header: row 1 the column group (album, artist, set,
                               track, ...), row 2 the column (split, subset, genre_top, ...), row 3 "track_id";
                               then one row per track, first cell the integer track id
    fma_small/NNN/NNNNNN.mp3   the audio, the six-digit zero-padded id, NNN its first three digits

Tracks: those whose ``(set, subset)`` is ``small`` (8,000). Split: ``(set, split)``, values ``training`` /
``validation`` / ``test`` (6,400 / 800 / 800). Label: ``(track, genre_top)``, one of 8 genres (single-label);
classes are the genres found, sorted alphabetically.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import LabelledDataset, check_audio_files, log_loaded, require_file
from musicsearch.data.sources.registry import DATASETS
from musicsearch.errors import ManifestError

SPLIT_COLUMN = ("set", "split")
SUBSET_COLUMN = ("set", "subset")
GENRE_COLUMN = ("track", "genre_top")
SUBSET_ORDER: tuple[str, ...] = ("small", "medium", "large")
SPLIT_VALUES: dict[str, str] = {"training": "train", "train": "train", "validation": "valid", "test": "test"}
SMALL_GENRES: tuple[str, ...] = (
    "Electronic",
    "Experimental",
    "Folk",
    "Hip-Hop",
    "Instrumental",
    "International",
    "Pop",
    "Rock",
)
LABEL_TEXT: dict[str, str] = {
    "Hip-Hop": "hip hop",
    "Soul-RnB": "soul and r&b",
    "Old-Time / Historic": "old-time and historic",
}
"""Natural texts of FMA top-genre names that the default normaliser would not get right (medium/large too)."""


def audio_relpath(track_id: int) -> str:
    """``2`` -> ``"000/000002.mp3"`` (FMA's audio layout)."""
    tid = f"{track_id:06d}"
    return f"{tid[:3]}/{tid}.mp3"


@DATASETS.register("fma-small")
def load_fma(
    root: str | os.PathLike[str],
    *,
    subset: str = "small",
    audio_dir: str | os.PathLike[str] | None = None,
    check_audio: bool = True,
) -> LabelledDataset:
    """Read FMA small (single-label genre, metric accuracy) with its official split.

    Args:
        root: folder holding ``fma_metadata/`` and ``fma_<subset>/``.
        subset: ``small`` (the paper's); ``medium`` / ``large`` take every track of that subset and the smaller
            ones, as FMA defines its nested subsets (tracks without a top genre are then skipped).
        audio_dir: the ``fma_<subset>`` audio folder; default ``root/fma_<subset>``.
        check_audio: fail early if an audio file is missing.

    Raises:
        ManifestError: naming a missing or malformed ``tracks.csv``.
    """
    if subset not in SUBSET_ORDER:
        raise ManifestError(f"unknown FMA subset {subset!r}; use one of {SUBSET_ORDER}")
    base = Path(root)
    path = base / "fma_metadata" / "tracks.csv"
    expected = f"FMA's fma_metadata/tracks.csv (3-row header; columns set/split, set/subset, track/genre_top) in {base}"
    require_file(path, dataset="fma", expected=expected)
    audio_base = Path(audio_dir) if audio_dir is not None else base / f"fma_{subset}"
    allowed = set(SUBSET_ORDER[: SUBSET_ORDER.index(subset) + 1])

    rows: list[tuple[int, str, str]] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            top, sub, third = next(reader), next(reader), next(reader)
        except StopIteration:
            raise ManifestError(f"fma: {path} has fewer than 3 header rows; expected {expected}") from None
        if not third or third[0].strip() != "track_id":
            raise ManifestError(f"fma: {path}: third header row must start with 'track_id'; expected {expected}")
        columns = {(a.strip(), b.strip()): i for i, (a, b) in enumerate(zip(top, sub))}
        try:
            i_split, i_subset, i_genre = (columns[k] for k in (SPLIT_COLUMN, SUBSET_COLUMN, GENRE_COLUMN))
        except KeyError as exc:
            raise ManifestError(f"fma: {path} has no column {exc.args[0]}; expected {expected}") from None
        width = max(i_split, i_subset, i_genre) + 1
        for lineno, row in enumerate(reader, 4):
            if not row:
                continue
            if len(row) < width:
                raise ManifestError(f"fma: {path}: row {lineno} has {len(row)} cells, fewer than the header's")
            if row[i_subset].strip() not in allowed:
                continue
            try:
                tid = int(row[0])
            except ValueError:
                raise ManifestError(f"fma: {path}: row {lineno}: track id {row[0]!r} is not an integer") from None
            split = SPLIT_VALUES.get(row[i_split].strip())
            if split is None:
                raise ManifestError(f"fma: {path}: row {lineno}: unknown split {row[i_split]!r}")
            genre = row[i_genre].strip()
            if not genre:
                if subset == "small":
                    raise ManifestError(f"fma: {path}: row {lineno}: small-subset track {tid} has no genre_top")
                continue
            rows.append((tid, split, genre))
    if not rows:
        raise ManifestError(f"fma: {path} has no track of subset {subset!r}; expected {expected}")
    genres = sorted({g for _, _, g in rows})
    index = {g: i for i, g in enumerate(genres)}
    tracks = [
        Track(
            track_id=f"{tid:06d}",
            audio_path=str(audio_base / audio_relpath(tid)),
            tags=(genre,),
            split=split,
            metadata={"fma_track_id": tid},
        )
        for tid, split, genre in rows
    ]
    if check_audio:
        check_audio_files(tracks, dataset="fma", expected=f"fma_{subset}/NNN/NNNNNN.mp3 under {audio_base.parent}")
    return log_loaded(
        LabelledDataset(
            name="fma-small" if subset == "small" else f"fma-{subset}",
            task="multiclass",
            label_names=tuple(genres),
            tracks=tuple(tracks),
            labels=np.asarray([index[g] for _, _, g in rows], dtype=np.int64),
            metric="accuracy",
            root=str(base),
            info={"split": "official (set, split) column", "subset": subset},
            label_text=LABEL_TEXT,
        )
    )
