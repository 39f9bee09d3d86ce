"""Emotify (Aljanaki et al. 2016): 400 one-minute excerpts, listener votes on the nine GEMS moods.

Layout expected under ``root`` (the original distribution)::

    data.csv                          one row per listener vote; header (the real file has a space after each
                                      comma, handled): track id, genre, amazement, solemnity, tenderness,
                                      nostalgia, calmness, power, joyful_activation, tension, sadness, mood,
                                      liked, disliked, age, gender, mother tongue
    emotifymusic/<genre>/<n>.mp3      genres classical, rock, electronic, pop; n = 1..100 in each

Track ``t`` (1..400) is file ``(t - 1) % 100 + 1`` in the folder of *its genre as the CSV gives it*; the adapter
checks that every genre's track ids fill one block of 100 (classical 1-100, rock 101-200, electronic 201-300,
pop 301-400 in the real file), so the rule is sound, and fails otherwise. (The public benchmark code maps 27
tracks to the wrong files; this rule does not.)

Label: the arg-max of the mean of the nine GEMS vote columns over the track's votes (a tie goes to the first
mood in the order above). Emotify has no official split: a seeded split stratified by label (60/20/20,
``split_seed``) is made, or pass ``splits=`` (track id -> split). Zero-shot uses all 400 tracks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import (
    LabelledDataset,
    check_audio_files,
    column_index,
    log_loaded,
    read_csv_rows,
    seeded_split,
    splits_from_mapping,
)
from musicsearch.data.sources.registry import DATASETS
from musicsearch.errors import ManifestError

GEMS: tuple[str, ...] = (
    "amazement",
    "solemnity",
    "tenderness",
    "nostalgia",
    "calmness",
    "power",
    "joyful_activation",
    "tension",
    "sadness",
)
TRACKS_PER_GENRE = 100


def file_number(track: int) -> int:
    """Emotify's file rule: track ``t`` (1-based) is ``<genre>/<(t - 1) % 100 + 1>.mp3``."""
    return (track - 1) % TRACKS_PER_GENRE + 1


@DATASETS.register("emotify")
def load_emotify(
    root: str | os.PathLike[str],
    *,
    audio_dir: str | os.PathLike[str] | None = None,
    splits: Mapping[str, str] | None = None,
    split_seed: int = 0,
    check_audio: bool = True,
) -> LabelledDataset:
    """Read Emotify (single-label, 9 GEMS moods, metric accuracy).

    Args:
        root: folder holding ``data.csv`` and ``emotifymusic/``.
        audio_dir: the folder holding the genre folders; default ``root/emotifymusic``.
        splits: track id ("1".."400") -> ``train``/``valid``/``test``; default a seeded stratified split.
        split_seed: seed of the default split.
        check_audio: fail early if an audio file is missing.

    Raises:
        ManifestError: naming a missing or malformed ``data.csv``, or a genre whose track ids do not fill one
            block of 100.
    """
    base = Path(root)
    path = base / "data.csv"
    expected = f"Emotify's data.csv (one vote a row; columns track id, genre, the nine GEMS moods, ...) at {path}"
    header, rows = read_csv_rows(path, dataset="emotify", expected=expected)
    i_track = column_index(header, "track id", path=path, dataset="emotify")
    i_genre = column_index(header, "genre", path=path, dataset="emotify")
    i_moods = [column_index(header, m, path=path, dataset="emotify") for m in GEMS]
    audio_base = Path(audio_dir) if audio_dir is not None else base / "emotifymusic"

    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    genre_of: dict[int, str] = {}
    for r, row in enumerate(rows):
        where = f"{path}:{r + 2}"
        if len(row) < len(header):
            raise ManifestError(f"emotify: {where} has {len(row)} cells, the header has {len(header)}")
        try:
            t = int(row[i_track])
            votes = np.array([float(row[i]) for i in i_moods], dtype=np.float64)
        except ValueError:
            raise ManifestError(f"emotify: {where}: track id and mood votes must be numbers") from None
        if t < 1:
            raise ManifestError(f"emotify: {where}: track id {t} must be >= 1")
        genre = row[i_genre].lower()
        if genre_of.setdefault(t, genre) != genre:
            raise ManifestError(f"emotify: {where}: track {t} is {genre!r} here but {genre_of[t]!r} earlier")
        sums[t] = sums.get(t, np.zeros(len(GEMS))) + votes
        counts[t] = counts.get(t, 0) + 1
    if not sums:
        raise ManifestError(f"emotify: {path} has no vote rows; expected {expected}")
    # the file rule (t-1) % 100 + 1 is only sound if each genre's ids lie in one block of 100
    blocks: dict[str, set[int]] = {}
    for t, g in genre_of.items():
        blocks.setdefault(g, set()).add((t - 1) // TRACKS_PER_GENRE)
    owner: dict[int, str] = {}
    for g, bs in sorted(blocks.items()):
        if len(bs) != 1 or owner.setdefault(next(iter(bs)), g) != g:
            raise ManifestError(
                f"emotify: {path}: the track ids of genre {g!r} do not fill one block of 100 "
                "(expected classical 1-100, rock 101-200, electronic 201-300, pop 301-400); "
                "the file rule (t-1) % 100 + 1 cannot be applied"
            )

    track_ids = sorted(sums)
    means = np.stack([sums[t] / counts[t] for t in track_ids])  # (N, 9)
    labels = np.argmax(means, axis=1).astype(np.int64)  # ties -> first mood in GEMS order
    ids = [str(t) for t in track_ids]
    if splits is None:
        assigned = seeded_split(ids, strata=labels.tolist(), seed=split_seed)
        split_note = f"seeded stratified 60/20/20 (seed {split_seed}); Emotify has no official split"
    else:
        assigned = splits_from_mapping(ids, splits, dataset="emotify")
        split_note = "given"
    tracks = [
        Track(
            track_id=str(t),
            audio_path=str(audio_base / genre_of[t] / f"{file_number(t)}.mp3"),
            tags=(GEMS[int(lab)],),
            split=assigned[str(t)],
            metadata={"genre": genre_of[t], "n_votes": counts[t], "mean_votes": [round(float(v), 6) for v in m]},
        )
        for t, lab, m in zip(track_ids, labels, means)
    ]
    if check_audio:
        check_audio_files(tracks, dataset="emotify", expected=f"emotifymusic/<genre>/<n>.mp3 under {base}")
    return log_loaded(
        LabelledDataset(
            name="emotify",
            task="multiclass",
            label_names=GEMS,
            tracks=tuple(tracks),
            labels=labels,
            metric="accuracy",
            root=str(base),
            info={"split": split_note, "label": "argmax of mean GEMS votes (ties to the first mood)"},
        )
    )
