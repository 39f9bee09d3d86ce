"""The musicnn teachers as baselines on labelled datasets: probing their penultimate features, and zero-shot
classification where a dataset's label names are (synonyms of) their tags.

Each track is analysed whole (every non-overlapping 3 s patch, up to ``max_seconds``); its feature is the mean
penultimate vector and its tag scores the mean probabilities, so a baseline sees at least as much audio as our
models' 8-window embeddings.

>>> from musicsearch.teachers.tagger import MusicnnTagger                      # doctest: +SKIP
>>> feats = musicnn_features(MusicnnTagger.load("MSD_musicnn"), ds.tracks)     # doctest: +SKIP
>>> musicnn_probe(feats, ds)["accuracy"]                                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicsearch.audio.io import load_audio
from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.errors import AudioError, ConfigError
from musicsearch.eval.probing import paper_grid, probe_dataset
from musicsearch.teachers.pseudolabel import canonical_tag
from musicsearch.teachers.tagger import MusicnnTagger

__all__ = ["TeacherFeatures", "musicnn_features", "musicnn_probe", "musicnn_zeroshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherFeatures:
    """One teacher's view of a dataset's tracks.

    Attributes:
        teacher: the musicnn model's name.
        tags: its 50 tags.
        features: ``(N, D)`` mean penultimate features (zeros where ``ok`` is False).
        probs: ``(N, 50)`` mean tag probabilities.
        ok: ``(N,)`` the track could be decoded.
    """

    teacher: str
    tags: list[str]
    features: np.ndarray
    probs: np.ndarray
    ok: np.ndarray


def musicnn_features(
    tagger: MusicnnTagger,
    tracks: Sequence[Track],
    *,
    max_seconds: float | None = 120.0,
    progress: Callable[[int, int], None] | None = None,
) -> TeacherFeatures:
    """Mean penultimate features and tag probabilities of every track (an unreadable one is logged and skipped).

    Args:
        tagger: the loaded teacher.
        tracks: the tracks (``start``/``end`` segments honoured).
        max_seconds: analyse at most this many seconds from the track's start (None: all).
        progress: called with ``(done, total)`` after each track.
    """
    feats = np.zeros((len(tracks), tagger.embedding_dim), dtype=np.float32)
    probs = np.zeros((len(tracks), len(tagger.tags)), dtype=np.float32)
    ok = np.zeros(len(tracks), dtype=bool)
    for i, t in enumerate(tracks):
        duration = None if t.end is None else t.end - (t.start or 0.0)
        if max_seconds is not None:
            duration = max_seconds if duration is None else min(duration, max_seconds)
        try:
            wave = load_audio(t.audio_path, offset=t.start, duration=duration)
            out = tagger.analyze(wave)
        except AudioError as exc:
            log.warning("baseline: skipping %s: %s", t.track_id, exc)
        else:
            feats[i] = out.embeddings.mean(axis=0)
            probs[i] = out.probs.mean(axis=0)
            ok[i] = True
        if progress is not None:
            progress(i + 1, len(tracks))
    return TeacherFeatures(tagger.name, list(tagger.tags), feats, probs, ok)


def musicnn_probe(
    feats: TeacherFeatures, dataset: LabelledDataset, *, head: str = "mlp", seed: int = 0, max_epochs: int = 200,
    patience: int = 20,
) -> dict[str, Any]:  # fmt: skip
    """Probe the teacher's features with the same grid and split as :func:`musicsearch.eval.suites.probe_suite`.

    Returns:
        ``{"accuracy" | "roc_auc" | ..., "n_tracks", "probe"}`` of the test split.
    """
    keep = np.flatnonzero(feats.ok)
    result = probe_dataset(
        feats.features[keep], dataset.subset(keep), grid=paper_grid(head),  # type: ignore[arg-type]
        max_epochs=max_epochs, patience=patience, seed=seed,
    ).to_json()  # fmt: skip
    out: dict[str, Any] = {"teacher": feats.teacher, "dataset": dataset.name, "n_tracks": int(keep.size)}
    out.update({k: v for k, v in result["test"].items() if k in ("accuracy", "roc_auc", "pr_auc")})
    out["probe"] = result
    return out


def musicnn_zeroshot(
    feats: TeacherFeatures, dataset: LabelledDataset, label_tags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Zero-shot multiclass accuracy on the test split from the teacher's own tag probabilities.

    Args:
        feats: the teacher's view of ``dataset``.
        dataset: a ``multiclass`` dataset.
        label_tags: label name -> teacher tag (default: a label whose name is a teacher tag maps to it).

    Returns:
        ``{"accuracy", "n_tracks", "label_tags"}``; each test track is given the label whose tag scores highest.

    Raises:
        ConfigError: not multiclass, or a label has no teacher tag (the teacher cannot name it).
    """
    if dataset.task != "multiclass":
        raise ConfigError(f"{dataset.name}: teacher zero-shot needs a multiclass dataset")
    index = {canonical_tag(t) or t: j for j, t in enumerate(feats.tags)}
    mapping = dict(label_tags or {})
    cols = []
    for name in dataset.label_names:
        tag = mapping.get(name, name)
        j = index.get(canonical_tag(tag) or tag)
        if j is None:
            raise ConfigError(f"{feats.teacher} has no tag for label {name!r} of {dataset.name}; it cannot name it")
        mapping[name] = feats.tags[j]
        cols.append(j)
    test = np.intersect1d(dataset.split_indices("test"), np.flatnonzero(feats.ok))
    pred = feats.probs[test][:, cols].argmax(axis=1)
    truth = np.asarray(dataset.labels)[test]
    return {
        "teacher": feats.teacher,
        "dataset": dataset.name,
        "accuracy": float((pred == truth).mean()) if test.size else float("nan"),
        "n_tracks": int(test.size),
        "label_tags": mapping,
    }
