"""KVT (K-pop Vocal Tag dataset; Kim et al., "Semantic Tagging of Singing Voices in Popular Music Recordings",
IEEE/ACM TASLP 2020): 42 vocal tags, scored with F1 at per-label best thresholds.

ASSUMPTION, stated plainly: we do not know the file layout the KVT authors distribute. The paper's release
read a preprocessed copy (``kvt/annotation.json`` + ``track_split.json`` + ``kvt_tags.json`` + ``npy/``) that
is not public in that form. This adapter therefore reads the simplest faithful export of such data -- a table
of tracks with one 0/1 column per vocal tag and an audio folder -- and documents it:

    annotation.csv          comma-separated, header row; columns:
                              track_id   (required) the clip id
                              split      (optional) train / valid (or validation) / test
                              path       (optional) audio path relative to root; default audio/<track_id>.<ext>
                              every other column: one vocal tag, cell a number; >= 0.5 means the tag applies
                              (so 0/1 labels and annotator vote shares both work)
    audio/<track_id>.{wav,mp3,flac,ogg,npy}

Without a ``split`` column, a seeded random split (60/20/20, ``split_seed``) is made and recorded in
``info``: numbers from it are not comparable with the paper's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import (
    LabelledDataset,
    check_audio_files,
    log_loaded,
    read_csv_rows,
    seeded_split,
)
from musicsearch.data.sources.registry import DATASETS
from musicsearch.errors import ManifestError

logger = logging.getLogger(__name__)

RESERVED_COLUMNS: frozenset[str] = frozenset({"track_id", "split", "path", "title", "artist", "start", "end"})
SPLIT_VALUES: dict[str, str] = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".mp3", ".flac", ".ogg", ".npy")

KVT_BENCHMARK_TAGS: tuple[str, ...] = (
    "low-range", "mid-range", "high-range", "husky/throaty", "thick", "thin", "warm", "lonely", "passion",
    "pretty", "sad", "bright", "clear", "relaxed", "cute", "dark", "delicate", "emotional", "energetic", "male",
    "female", "mild/soft", "charismatic", "whisper/quiet", "sharp", "pure", "rich", "robotic/artificial",
    "rounded", "embellishing", "stable", "sweet", "young", "soulful/r&b", "ballad", "shouty", "vibrato",
    "falsetto", "breathy", "compressed", "dynamic", "speech-like",
)  # fmt: skip
"""The 42 tags the paper's release scored on KVT, in the order of its result files (``tags=`` to select them)."""


def _find_audio(base: Path, audio_base: Path, track_id: str, rel: str | None) -> Path:
    if rel:
        return base / rel
    for ext in AUDIO_EXTENSIONS:
        p = audio_base / f"{track_id}{ext}"
        if p.is_file():
            return p
    return audio_base / f"{track_id}.wav"


@DATASETS.register("kvt")
def load_kvt(
    root: str | os.PathLike[str],
    *,
    annotation: str = "annotation.csv",
    audio_dir: str | os.PathLike[str] | None = None,
    tags: Sequence[str] | None = None,
    split_seed: int = 0,
    check_audio: bool = True,
) -> LabelledDataset:
    """Read a KVT table (multi-label vocal tags, metric F1 at per-label best thresholds); layout assumed, see module.

    Args:
        root: folder holding the annotation table and ``audio/``.
        annotation: the table's file name inside ``root``.
        audio_dir: audio folder; default ``root/audio``.
        tags: label columns to use, in this order (e.g. :data:`KVT_BENCHMARK_TAGS`); default every tag column.
        split_seed: seed of the fallback split when the table has no ``split`` column.
        check_audio: fail early if an audio file is missing.

    Raises:
        ManifestError: naming a missing or malformed table.
    """
    base = Path(root)
    path = base / annotation
    expected = f"a CSV with columns track_id[, split][, path] and one 0/1 column per vocal tag, at {path}"
    header, rows = read_csv_rows(path, dataset="kvt", expected=expected)
    lower = [h.lower() for h in header]
    if "track_id" not in lower:
        raise ManifestError(f"kvt: {path} has no 'track_id' column; expected {expected}")
    i_id = lower.index("track_id")
    i_split = lower.index("split") if "split" in lower else None
    i_path = lower.index("path") if "path" in lower else None
    tag_cols = {h: i for i, h in enumerate(header) if h.lower() not in RESERVED_COLUMNS}
    label_names = list(tags) if tags is not None else list(tag_cols)
    missing = [t for t in label_names if t not in tag_cols]
    if missing or not label_names:
        raise ManifestError(f"kvt: {path} lacks tag column(s) {missing or '(none at all)'}; expected {expected}")
    audio_base = Path(audio_dir) if audio_dir is not None else base / "audio"

    ids: list[str] = []
    splits: list[str | None] = []
    values = np.zeros((len(rows), len(label_names)), dtype=np.float32)
    rels: list[str | None] = []
    for r, row in enumerate(rows):
        where = f"{path}:{r + 2}"
        if len(row) != len(header):
            raise ManifestError(f"kvt: {where} has {len(row)} cells, the header has {len(header)}")
        ids.append(row[i_id])
        if i_split is not None:
            split = SPLIT_VALUES.get(row[i_split].lower())
            if split is None:
                raise ManifestError(f"kvt: {where}: split {row[i_split]!r} is not train/valid/test")
            splits.append(split)
        else:
            splits.append(None)
        rels.append(row[i_path] if i_path is not None and row[i_path] else None)
        for j, tag in enumerate(label_names):
            try:
                values[r, j] = float(float(row[tag_cols[tag]]) >= 0.5)
            except ValueError:
                raise ManifestError(f"kvt: {where}: tag {tag!r} cell {row[tag_cols[tag]]!r} is not a number") from None
    if len(set(ids)) != len(ids):
        raise ManifestError(f"kvt: {path} has duplicate track ids")
    info: dict[str, object] = {"layout": "assumed (see musicsearch.data.sources.kvt)"}
    if i_split is None:
        assigned = seeded_split(ids, seed=split_seed)
        splits = [assigned[t] for t in ids]
        info["split"] = f"seeded random 60/20/20 (seed {split_seed}); not the paper's split"
        logger.warning("kvt: %s has no split column; using a seeded random split (seed %d)", path, split_seed)
    else:
        info["split"] = "split column"
    tracks = [
        Track(
            track_id=tid,
            audio_path=str(_find_audio(base, audio_base, tid, rel)),
            tags=tuple(t for t, v in zip(label_names, values[i]) if v),
            split=split,
        )
        for i, (tid, split, rel) in enumerate(zip(ids, splits, rels))
    ]
    if check_audio:
        check_audio_files(tracks, dataset="kvt", expected=f"audio/<track_id>.wav (or mp3/flac/ogg/npy) under {base}")
    return log_loaded(
        LabelledDataset(
            name="kvt",
            task="multilabel",
            label_names=tuple(label_names),
            tracks=tuple(tracks),
            labels=values,
            metric="f1",
            root=str(base),
            info=info,
        )
    )
