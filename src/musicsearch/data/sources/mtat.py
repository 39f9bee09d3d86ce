"""MagnaTagATune (MTAT), top-50 tags, as distributed by its owners (mirg.city.ac.uk).

Layout expected under ``root``::

    annotations_final.csv      tab-separated (cells may be "quoted"): clip_id, 188 tag columns of 0/1, mp3_path
    0/ 1/ ... f/               the unzipped mp3.zip.001-003 (or the same folders under root/mp3/)
        <artist>-<album>-<n>-<title>-<start>-<end>.mp3

Labels: the top-50 tag list (shipped, from jongpillee/music_dataset_split), in that order; a clip's label row
is its 0/1 values in those 50 columns. Split: the commonly used folder split of the 16 audio folders
(named by the first hex character of ``mp3_path``): ``0``-``b`` train (12 folders), ``c`` valid, ``d``-``f`` test.
Clips with none of the 50 tags are kept unless ``drop_untagged=True`` (some papers drop them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import (
    LabelledDataset,
    asset_path,
    check_audio_files,
    column_index,
    log_loaded,
    read_csv_rows,
    read_lines,
)
from musicsearch.data.sources.registry import DATASETS
from musicsearch.errors import ManifestError

ANNOTATIONS = "annotations_final.csv"
SPLIT_BY_FOLDER: dict[str, str] = {
    **{c: "train" for c in "0123456789ab"},
    "c": "valid",
    **{c: "test" for c in "def"},
}


def top50_tags() -> list[str]:
    """The MagnaTagATune top-50 tags, in the shipped list's order."""
    return read_lines(asset_path("splits", "mtat", "top50_tags.txt"), dataset="mtat", expected="the shipped list")


@DATASETS.register("mtat")
def load_mtat(
    root: str | os.PathLike[str],
    *,
    audio_dir: str | os.PathLike[str] | None = None,
    tags: Sequence[str] | None = None,
    drop_untagged: bool = False,
    check_audio: bool = True,
) -> LabelledDataset:
    """Read MagnaTagATune top-50 (multi-label, metric ROC-AUC) with the 12/1/3 folder split.

    Args:
        root: folder holding ``annotations_final.csv`` (and, by default, the audio folders ``0``..``f``).
        audio_dir: folder holding ``0``..``f``; default ``root/mp3`` if it exists, else ``root``.
        tags: label columns to use (default: the top-50 list).
        drop_untagged: drop clips with none of the tags.
        check_audio: fail early if an audio file is missing.

    Raises:
        ManifestError: naming a missing or malformed file.
    """
    base = Path(root)
    csv_path = base / ANNOTATIONS
    expected = f"MagnaTagATune's tab-separated {ANNOTATIONS} (clip_id, 188 tag columns, mp3_path) in {base}"
    header, rows = read_csv_rows(csv_path, dataset="mtat", expected=expected, delimiter="\t")
    id_col = column_index(header, "clip_id", path=csv_path, dataset="mtat")
    path_col = column_index(header, "mp3_path", path=csv_path, dataset="mtat")
    label_names = list(tags) if tags is not None else top50_tags()
    tag_cols = [column_index(header, t, path=csv_path, dataset="mtat") for t in label_names]
    if audio_dir is not None:
        audio_base = Path(audio_dir)
    else:
        audio_base = base / "mp3" if (base / "mp3").is_dir() else base

    tracks: list[Track] = []
    rows_out: list[list[float]] = []
    for lineno, row in enumerate(rows, 2):
        where = f"{csv_path}:{lineno}"
        if len(row) != len(header):
            raise ManifestError(f"mtat: {where} has {len(row)} cells, the header has {len(header)}; file is malformed")
        mp3 = row[path_col]
        folder = mp3.split("/", 1)[0].lower()
        if "/" not in mp3 or folder not in SPLIT_BY_FOLDER:
            raise ManifestError(f"mtat: {where}: mp3_path {mp3!r} is not '<hex folder>/<file>.mp3'")
        try:
            values = [float(row[j]) for j in tag_cols]
        except ValueError:
            raise ManifestError(f"mtat: {where}: tag cells must be 0 or 1") from None
        if any(v not in (0.0, 1.0) for v in values):
            raise ManifestError(f"mtat: {where}: tag cells must be 0 or 1")
        if drop_untagged and not any(values):
            continue
        tracks.append(
            Track(
                track_id=row[id_col],
                audio_path=str(audio_base / mp3),
                tags=tuple(t for t, v in zip(label_names, values) if v),
                split=SPLIT_BY_FOLDER[folder],
                metadata={"mp3_path": mp3},
            )
        )
        rows_out.append(values)
    if not tracks:
        raise ManifestError(f"mtat: {csv_path} has no clips; expected {expected}")
    if check_audio:
        check_audio_files(tracks, dataset="mtat", expected=f"the mp3 folders 0..f under {audio_base}")
    return log_loaded(
        LabelledDataset(
            name="mtat",
            task="multilabel",
            label_names=tuple(label_names),
            tracks=tuple(tracks),
            labels=np.asarray(rows_out, dtype=np.float32).reshape(len(tracks), len(label_names)),
            metric="roc_auc",
            root=str(base),
            info={"split": "folders 0-b train, c valid, d-f test", "drop_untagged": drop_untagged},
        )
    )
