"""GTZAN genre collection with the fault-filtered split (Kereliuk et al. 2015; lists by jongpillee).

Layout expected under ``root``::

    genres/<genre>/<genre>.000NN.wav     (the lists name .wav; Marsyas' original .au files are found too)

``root`` may also be the ``genres`` folder itself, or a folder holding ``genres_original/`` (the Kaggle copy).
Split: the shipped lists ``{train,valid,test}_filtered.txt`` (443 / 197 / 290 tracks); the other 70 tracks of
GTZAN are not used. Labels: the genre folder, one of the ten genres in alphabetical order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import (
    LabelledDataset,
    asset_path,
    check_audio_files,
    log_loaded,
    read_lines,
)
from musicsearch.data.sources.registry import DATASETS
from musicsearch.errors import ManifestError

GENRES: tuple[str, ...] = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)
LABEL_TEXT: dict[str, str] = {"hiphop": "hip hop"}
"""Natural texts of the genre names the default normaliser would leave as they are (zero-shot reads these)."""
SPLIT_FILES: dict[str, str] = {s: f"{s}_filtered.txt" for s in ("train", "valid", "test")}


def _genres_dir(base: Path) -> Path:
    if (base / GENRES[0]).is_dir():  # root is the genres folder itself
        return base
    for cand in (base / "genres_original", base / "Data" / "genres_original"):
        if cand.is_dir():
            return cand
    return base / "genres"


def _audio_file(genres_dir: Path, rel: str) -> Path:
    p = genres_dir / rel
    if not p.is_file() and p.suffix == ".wav" and p.with_suffix(".au").is_file():
        return p.with_suffix(".au")
    return p


@DATASETS.register("gtzan")
def load_gtzan(
    root: str | os.PathLike[str],
    *,
    split_lists: Mapping[str, str | os.PathLike[str]] | None = None,
    check_audio: bool = True,
) -> LabelledDataset:
    """Read GTZAN with the fault-filtered split (single-label, 10 classes, metric accuracy).

    Args:
        root: folder holding ``genres/`` (or the ``genres`` folder itself).
        split_lists: ``{"train": path, "valid": path, "test": path}`` to use other split lists of the same
            format (``<genre>/<genre>.000NN.wav`` per line); default the shipped fault-filtered lists.
        check_audio: fail early if an audio file is missing.

    Raises:
        ManifestError: naming a missing list or a malformed line.
    """
    base = Path(root)
    genres_dir = _genres_dir(base)
    tracks: list[Track] = []
    labels: list[int] = []
    for split, fname in SPLIT_FILES.items():
        path = Path(split_lists[split]) if split_lists is not None else asset_path("splits", "gtzan", fname)
        for lineno, rel in enumerate(read_lines(path, dataset="gtzan", expected="one '<genre>/<file>' a line"), 1):
            genre = rel.split("/", 1)[0]
            if "/" not in rel or genre not in GENRES:
                raise ManifestError(f"gtzan: {path}:{lineno}: {rel!r} is not '<genre>/<genre>.000NN.wav'")
            tracks.append(
                Track(
                    track_id=Path(rel).stem,
                    audio_path=str(_audio_file(genres_dir, rel)),
                    tags=(genre,),
                    split=split,
                    metadata={"path": rel},
                )
            )
            labels.append(GENRES.index(genre))
    if check_audio:
        check_audio_files(tracks, dataset="gtzan", expected=f"genres/<genre>/<genre>.000NN.wav under {base}")
    return log_loaded(
        LabelledDataset(
            name="gtzan",
            task="multiclass",
            label_names=GENRES,
            tracks=tuple(tracks),
            labels=np.asarray(labels, dtype=np.int64),
            metric="accuracy",
            root=str(base),
            info={"split": "fault-filtered (443/197/290)" if split_lists is None else "given lists"},
            label_text=LABEL_TEXT,
        )
    )
