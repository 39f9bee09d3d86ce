"""ECALS (Doh et al. 2023): the paper's training and test corpus, read from its public release layout.

Expected layout (the annotation release on Zenodo, record 7107130; MSD audio is not public and comes from
elsewhere)::

    ROOT/ecals_annotation/annotation.json         # msd id -> {"tag": [...], "title", "artist_name", "release",
                                                  #            "year", "track_id"}
    ROOT/ecals_annotation/ecals_track_split.json  # {"train_track": [...], "extra_track": [...],
                                                  #  "valid_track": [...], "test_track": [...]}
    ROOT/ecals_annotation/ecals_tags.json         # the 1,054-tag vocabulary (a JSON list)
    ROOT/ecals_annotation/multiquery_samples.json # test msd id -> caption (the 1,000-pair sentence test)
    NPY_DIR/<msd id>.npy                          # 30 s of 16 kHz mono float32 (default NPY_DIR: ROOT/npy)

``ROOT`` may also be the ``ecals_annotation`` folder itself. Splits: ``train_track`` and ``extra_track`` become
``"train"``, ``valid_track`` ``"valid"``, ``test_track`` ``"test"``. :func:`~musicsearch.audio.io.load_audio`
reads the ``.npy`` files directly, so the audio needs no conversion.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from musicsearch.data.manifest import SPLITS, Track
from musicsearch.errors import ManifestError

__all__ = ["ANNOTATION_DIR", "SPLIT_KEYS", "EcalsCorpus", "normalize_tag", "read_ecals"]

logger = logging.getLogger(__name__)

ANNOTATION_DIR = "ecals_annotation"
#: Keys of ``ecals_track_split.json`` and the split each becomes.
SPLIT_KEYS: dict[str, str] = {
    "train_track": "train",
    "extra_track": "train",
    "valid_track": "valid",
    "test_track": "test",
}

_APOSTROPHES = re.compile(r"['\u2018\u2019`]")
_BRACKETS = re.compile(r"[()\[\]{}]")


class EcalsCorpus(NamedTuple):
    """What :func:`read_ecals` returns.

    Attributes:
        tracks: one track per msd id of the split file, ordered train, valid, test (file order within each).
        tags: the tag vocabulary, in the order of ``ecals_tags.json``.
    """

    tracks: list[Track]
    tags: list[str]


def normalize_tag(tag: str) -> str:
    """Normalise a tag the way ECALS built its vocabulary.

    Lower-case; drop apostrophes and brackets; ``/`` and ``-`` become spaces; ``&`` becomes ``n``; runs of
    whitespace collapse to one space, trimmed. Other punctuation stays (``"l.a. punk"``).

    Examples: ``"R&B"`` -> ``"rnb"``, ``"Hip-Hop"`` -> ``"hip hop"``, ``"90's"`` -> ``"90s"``.
    """
    t = tag.lower()
    t = _APOSTROPHES.sub("", t)
    t = _BRACKETS.sub("", t)
    t = t.replace("/", " ").replace("-", " ").replace("&", "n")
    return " ".join(t.split())


def _annotation_dir(root: Path) -> Path:
    if (root / ANNOTATION_DIR).is_dir():
        return root / ANNOTATION_DIR
    if (root / "annotation.json").is_file():
        return root
    raise ManifestError(
        f"{root} does not hold the ECALS release: expected {root / ANNOTATION_DIR}/annotation.json "
        f"(download ecals_annotation from Zenodo record 7107130)"
    )


def _load_json(path: Path, kind: type) -> Any:
    if not path.is_file():
        raise ManifestError(f"ECALS file {path} is missing; the release's ecals_annotation folder must include it")
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"ECALS file {path} is not valid JSON ({exc}); download it again") from None
    if not isinstance(data, kind):
        raise ManifestError(f"ECALS file {path} should hold a JSON {kind.__name__}, found {type(data).__name__}")
    return data


def _caption_of(value: Any) -> str | None:
    """A caption from a ``multiquery_samples.json`` value: a string, a tag list, or an object holding either."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(v.strip() for v in value if v.strip()) or None
    if isinstance(value, dict):
        for key in ("caption", "text", "query", "tag", "tags"):
            if key in value:
                return _caption_of(value[key])
    return None


def _year(value: Any) -> int | None:
    try:
        year = int(value)
    except (TypeError, ValueError):
        return None
    return year if year > 0 else None  # MSD writes 0 for an unknown year


def read_ecals(
    root: str | os.PathLike[str],
    *,
    npy_dir: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = SPLITS,
    require_audio: bool = False,
) -> EcalsCorpus:
    """Read the ECALS release into tracks and the tag vocabulary.

    Args:
        root: the folder holding ``ecals_annotation/`` (or that folder itself).
        npy_dir: folder of ``<msd id>.npy`` waveforms (default ``root/npy``). The files are not opened.
        splits: which splits to return.
        require_audio: drop tracks whose ``.npy`` file does not exist (one ``stat`` per track; the count is
            logged). Off by default, since a missing file only matters when it is read.

    Returns:
        An :class:`EcalsCorpus`. Each track has ``track_id`` = msd id, ``audio_path`` = ``npy_dir/<msd id>.npy``,
        the tags of the vocabulary that the annotation gives it (in annotation order), for test tracks of
        ``multiquery_samples.json`` its caption, and metadata ``msd_id``, ``title``, ``artist``, ``album``
        (the annotation's ``release``) and ``year`` (when known).

    Raises:
        ManifestError: naming the file, if a release file is missing, not JSON, or malformed (a split key
            missing, an annotation without a tag list, a track in two splits).
    """
    base = Path(root)
    ann_dir = _annotation_dir(base)
    npy = Path(npy_dir) if npy_dir is not None else base / "npy"
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ManifestError(f"unknown ECALS split(s) {unknown}; choose from {', '.join(SPLITS)}")

    annotation_path = ann_dir / "annotation.json"
    annotation = _load_json(annotation_path, dict)
    split_path = ann_dir / "ecals_track_split.json"
    split_lists = _load_json(split_path, dict)
    tags_path = ann_dir / "ecals_tags.json"
    vocabulary = _load_json(tags_path, list)
    if not all(isinstance(t, str) for t in vocabulary):
        raise ManifestError(f"ECALS file {tags_path} should be a list of tag strings")
    mq_path = ann_dir / "multiquery_samples.json"
    multiquery = _load_json(mq_path, dict)
    vocab_set = set(vocabulary)

    split_of: dict[str, str] = {}
    for key, split in SPLIT_KEYS.items():
        ids = split_lists.get(key)
        if not isinstance(ids, list):
            raise ManifestError(f"ECALS file {split_path} lacks the list {key!r} (expected keys {list(SPLIT_KEYS)})")
        for msd_id in ids:
            if not isinstance(msd_id, str):
                raise ManifestError(f"ECALS file {split_path}: {key} holds a non-string id {msd_id!r}")
            if msd_id in split_of and split_of[msd_id] != split:
                raise ManifestError(
                    f"ECALS file {split_path}: track {msd_id} is in both {split_of[msd_id]} and {split}"
                )
            split_of[msd_id] = split

    captions: dict[str, str] = {}
    for msd_id, value in multiquery.items():
        caption = _caption_of(value)
        if caption is None:
            raise ManifestError(f"ECALS file {mq_path}: entry {msd_id!r} holds no caption ({value!r:.80})")
        captions[msd_id] = caption
    not_test = sum(1 for m in captions if split_of.get(m) != "test")
    if not_test:
        logger.warning("%s: %d captions belong to tracks outside the test split", mq_path, not_test)

    order = {s: i for i, s in enumerate(SPLITS)}
    wanted = [m for m in split_of if split_of[m] in splits]
    wanted.sort(key=lambda m: order[split_of[m]])  # stable: file order within a split
    tracks: list[Track] = []
    n_unannotated = n_dropped_tags = n_no_audio = 0
    for msd_id in wanted:
        entry = annotation.get(msd_id)
        if entry is None:
            n_unannotated += 1
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("tag", []), list):
            raise ManifestError(f"ECALS file {annotation_path}: entry {msd_id!r} must be an object with a 'tag' list")
        raw_tags = [t for t in entry.get("tag", []) if isinstance(t, str)]
        tags = tuple(dict.fromkeys(t for t in raw_tags if t in vocab_set))
        n_dropped_tags += len(raw_tags) - len(tags)
        audio_path = npy / f"{msd_id}.npy"
        if require_audio and not audio_path.is_file():
            n_no_audio += 1
            continue
        metadata: dict[str, Any] = {"msd_id": msd_id}
        for src, dst in (("title", "title"), ("artist_name", "artist"), ("release", "album")):
            if isinstance(entry.get(src), str) and entry[src]:
                metadata[dst] = entry[src]
        year = _year(entry.get("year"))
        if year is not None:
            metadata["year"] = year
        tracks.append(
            Track(
                track_id=msd_id,
                audio_path=str(audio_path),
                tags=tags,
                captions=(captions[msd_id],) if msd_id in captions else (),
                split=split_of[msd_id],
                metadata=metadata,
            )
        )
    if n_unannotated:
        logger.warning("%s: %d tracks of the split file have no annotation; skipped", annotation_path, n_unannotated)
    if n_dropped_tags:
        logger.info("ECALS: dropped %d tag assignments outside the %d-tag vocabulary", n_dropped_tags, len(vocabulary))
    if n_no_audio:
        logger.warning("ECALS: %d tracks have no audio in %s; skipped", n_no_audio, npy)
    logger.info("ECALS: %d tracks, %d tags", len(tracks), len(vocabulary))
    return EcalsCorpus(tracks=tracks, tags=list(vocabulary))
