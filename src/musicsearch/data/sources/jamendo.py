"""MTG-Jamendo auto-tagging subsets (split-0), as distributed by MTG (github.com/MTG/mtg-jamendo-dataset).

Layout expected under ``root`` (a clone of the dataset repository, with the audio beside it)::

    data/splits/split-0/autotagging_<subset>-{train,validation,test}.tsv
        tab-separated; header TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAGS; the TAGS column spans the rest of
        the line, one tag per cell, as "<category>---<tag>" (genre---rock, instrument---piano, mood/theme---sad)
    audio/NN/<id>.mp3           (PATH is relative to the audio folder: "14/214.mp3"; the low-quality
                                 download's "14/214.low.mp3" is found too)

``subset`` is ``top50tags``, ``genre``, ``instrument`` or ``moodtheme`` (registered as ``mtg-top50``,
``mtg-genre``, ``mtg-instrument``, ``mtg-moodtheme``). Labels: every tag occurring in the three files, sorted by
their full "<category>---<tag>" key; label names are the bare tag ("rock"), which is what zero-shot embeds.
Expected sizes: 50, 87, 40 and 56 labels.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import (
    LabelledDataset,
    check_audio_files,
    log_loaded,
    multi_hot,
    natural_label_text,
    require_file,
)
from musicsearch.data.sources.registry import DATASETS
from musicsearch.errors import ManifestError

logger = logging.getLogger(__name__)

SUBSETS: dict[str, int] = {"top50tags": 50, "genre": 87, "instrument": 40, "moodtheme": 56}
"""Subset name in the file names -> number of tags in the official split-0 files."""
REGISTRY_NAMES: dict[str, str] = {
    "mtg-top50": "top50tags",
    "mtg-genre": "genre",
    "mtg-instrument": "instrument",
    "mtg-moodtheme": "moodtheme",
}
FILE_SPLITS: dict[str, str] = {"train": "train", "validation": "valid", "test": "test"}
HEADER = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]
LABEL_TEXT: dict[str, str] = {
    # genre
    "acidjazz": "acid jazz", "alternativerock": "alternative rock", "bluesrock": "blues rock",
    "bossanova": "bossa nova", "classicrock": "classic rock", "darkambient": "dark ambient",
    "darkwave": "dark wave", "deephouse": "deep house", "drumnbass": "drum and bass",
    "easylistening": "easy listening", "edm": "electronic dance music", "electropop": "electro pop",
    "hardrock": "hard rock", "heavymetal": "heavy metal", "hiphop": "hip hop", "idm": "intelligent dance music",
    "instrumentalpop": "instrumental pop", "instrumentalrock": "instrumental rock", "jazzfusion": "jazz fusion",
    "newage": "new age", "newwave": "new wave", "popfolk": "pop folk", "poprock": "pop rock",
    "postrock": "post rock", "punkrock": "punk rock", "rnb": "r&b", "rocknroll": "rock and roll",
    "singersongwriter": "singer songwriter", "synthpop": "synth pop", "triphop": "trip hop",
    "worldfusion": "world fusion",
    # instrument
    "acousticbassguitar": "acoustic bass guitar", "acousticguitar": "acoustic guitar",
    "classicalguitar": "classical guitar", "doublebass": "double bass", "drummachine": "drum machine",
    "electricguitar": "electric guitar", "electricpiano": "electric piano", "pipeorgan": "pipe organ",
}  # fmt: skip
"""Natural texts of the bare tags written as one word (``easylistening``); the other tags read as they are."""


def bare_tag(key: str) -> str:
    """``"mood/theme---happy"`` -> ``"happy"``."""
    return key.split("---", 1)[1] if "---" in key else key


def _read_split_file(path: Path, dataset: str) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    expected = f"the MTG-Jamendo split file with header {' '.join(HEADER)} (tab-separated)"
    require_file(path, dataset=dataset, expected=expected)
    out = []
    with path.open(encoding="utf-8") as fh:
        lines = [ln.rstrip("\n").rstrip("\r") for ln in fh]
    if not lines or [c.strip() for c in lines[0].split("\t")] != HEADER:
        raise ManifestError(f"{dataset}: {path} does not start with the header {' '.join(HEADER)}; expected {expected}")
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 6 or not cells[0].startswith("track_"):
            raise ManifestError(f"{dataset}: {path}:{lineno} is malformed (needs TRACK_ID ... PATH DURATION TAGS)")
        tags = [c.strip() for c in cells[5:] if c.strip()]
        if not tags or any("---" not in t for t in tags):
            raise ManifestError(f"{dataset}: {path}:{lineno}: tags must look like 'genre---rock', got {tags!r}")
        try:
            duration = float(cells[4])
        except ValueError:
            raise ManifestError(f"{dataset}: {path}:{lineno}: DURATION {cells[4]!r} is not a number") from None
        meta = {"artist_id": cells[1], "album_id": cells[2], "duration": duration, "path": cells[3]}
        out.append((cells[0], cells[3], tags, meta))
    return out


def _audio_file(audio_base: Path, rel: str) -> Path:
    p = audio_base / rel
    if not p.is_file() and rel.endswith(".mp3"):
        low = audio_base / (rel[: -len(".mp3")] + ".low.mp3")
        if low.is_file():
            return low
    return p


def load_mtg_jamendo(
    root: str | os.PathLike[str],
    *,
    subset: str,
    split_index: int = 0,
    audio_dir: str | os.PathLike[str] | None = None,
    check_audio: bool = True,
) -> LabelledDataset:
    """Read one MTG-Jamendo auto-tagging subset (multi-label, metric ROC-AUC) with its official split.

    Args:
        root: the dataset repository folder (holding ``data/splits/split-<k>/``), or that split folder itself.
        subset: ``top50tags``, ``genre``, ``instrument`` or ``moodtheme``.
        split_index: which official split (the paper uses 0).
        audio_dir: folder holding the ``NN/`` audio folders; default ``root/audio``.
        check_audio: fail early if an audio file is missing.

    Raises:
        ManifestError: naming a missing or malformed split file.
    """
    if subset not in SUBSETS:
        raise ManifestError(f"unknown MTG-Jamendo subset {subset!r}; use one of {sorted(SUBSETS)}")
    name = next(k for k, v in REGISTRY_NAMES.items() if v == subset)
    base = Path(root)
    split_dir = base if base.name == f"split-{split_index}" else base / "data" / "splits" / f"split-{split_index}"
    audio_base = Path(audio_dir) if audio_dir is not None else base / "audio"

    entries: list[tuple[str, str, list[str], dict[str, Any], str]] = []
    for file_split, split in FILE_SPLITS.items():
        path = split_dir / f"autotagging_{subset}-{file_split}.tsv"
        entries.extend((*e, split) for e in _read_split_file(path, name))
    keys = sorted({t for e in entries for t in e[2]})
    bare = [bare_tag(k) for k in keys]
    label_names = bare if len(set(bare)) == len(bare) else keys  # keep prefixes only if bare names collide
    if len(keys) != SUBSETS[subset]:
        logger.warning("%s: %d tags found, the official split-0 files have %d", name, len(keys), SUBSETS[subset])
    name_of = dict(zip(keys, label_names))
    tracks = []
    seen: set[str] = set()
    for tid, rel, tags, meta, split in entries:
        if tid in seen:
            raise ManifestError(f"{name}: track {tid} appears twice in {split_dir}; the split files overlap")
        seen.add(tid)
        tracks.append(
            Track(
                track_id=tid,
                audio_path=str(_audio_file(audio_base, rel)),
                tags=tuple(name_of[t] for t in tags),
                split=split,
                metadata=meta,
            )
        )
    if check_audio:
        check_audio_files(tracks, dataset=name, expected=f"the MTG-Jamendo audio folders NN/ under {audio_base}")
    key_rows = [e[2] for e in entries]
    return log_loaded(
        LabelledDataset(
            name=name,
            task="multilabel",
            label_names=tuple(label_names),
            tracks=tuple(tracks),
            labels=multi_hot(key_rows, keys),
            metric="roc_auc",
            root=str(base),
            info={"split": f"official split-{split_index}", "label_keys": keys},
            label_text={name_of[k]: LABEL_TEXT.get(bare_tag(k), natural_label_text(bare_tag(k))) for k in keys},
        )
    )


for _reg_name, _subset in REGISTRY_NAMES.items():
    DATASETS.add(_reg_name, partial(load_mtg_jamendo, subset=_subset))
