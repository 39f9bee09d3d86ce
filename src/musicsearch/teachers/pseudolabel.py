"""Pseudo-labels for unlabelled audio from the two musicnn teachers (MagnaTagATune and Million Song Dataset).

Every window of a recording (the student's window length, one every ``hop_seconds``) gets the probabilities of
both teachers' 50 tags, merged into one vocabulary (near-synonyms such as MTT ``female``/``woman``/``female
voice`` and MSD ``female vocalists`` become ``female vocals``; a merged tag takes the highest probability of its
sources; the MSD decade tags ``00s`` ... ``90s`` say when a record was released, not how it sounds, and are
dropped). A window longer than a teacher patch (3 s) averages the probabilities of the patches inside it.

Per-tag thresholds are calibrated without labels by *rate matching*: a teacher trained with binary cross-entropy
is roughly calibrated, so the expected number of windows carrying tag ``k`` is ``sum_i p_ik``; the threshold is the
probability that admits that many windows, clamped to ``[floor, ceiling]`` (a window at or above ``ceiling`` keeps
the tag whatever the rate; one below ``floor`` never gets it). The confident tags of a window are those at or
above their threshold, strongest (``p / threshold``) first.

>>> labels = pseudo_label(tracks, "runs/adapt/labels", window_seconds=3.0, hop_seconds=9.0)   # doctest: +SKIP
>>> thresholds = calibrate_thresholds(labels.probs)                                           # doctest: +SKIP
>>> windows = pseudo_tracks(labels, thresholds)                                               # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from musicsearch.audio.io import load_audio
from musicsearch.data.manifest import Track
from musicsearch.errors import AudioError, ConfigError
from musicsearch.fileio import atomic_write
from musicsearch.teachers.tagger import MusicnnTagger

__all__ = [
    "TEACHERS",
    "PseudoLabels",
    "calibrate_thresholds",
    "canonical_tag",
    "confident_tags",
    "merged_vocabulary",
    "pseudo_label",
    "pseudo_tracks",
]

log = logging.getLogger(__name__)

#: The two teachers, both musicnn (the better of the shipped architectures on both datasets).
TEACHERS: tuple[str, ...] = ("MTT_musicnn", "MSD_musicnn")

#: Lower-cased teacher tag -> the tag the student is taught (near-synonyms merged).
_MERGE: dict[str, str] = {
    "vocal": "vocals",
    "singing": "vocals",
    "voice": "vocals",
    "female": "female vocals",
    "woman": "female vocals",
    "female vocal": "female vocals",
    "female voice": "female vocals",
    "female vocalists": "female vocals",
    "female vocalist": "female vocals",
    "male": "male vocals",
    "man": "male vocals",
    "male vocal": "male vocals",
    "male voice": "male vocals",
    "male vocalists": "male vocals",
    "no vocals": "instrumental",
    "no vocal": "instrumental",
    "no voice": "instrumental",
    "classic": "classical",
    "beat": "beats",
    "choral": "choir",
    "chill": "chillout",
    "hip-hop": "hip hop",
    "rnb": "r&b",
}
_DROP = re.compile(r"^\d0s$")  # release decades: not a property of the sound


def canonical_tag(tag: str) -> str | None:
    """The student's tag for a teacher tag (lower case, near-synonyms merged), or None for a dropped tag.

    >>> canonical_tag("Female vocalists"), canonical_tag("no voice"), canonical_tag("80s")
    ('female vocals', 'instrumental', None)
    """
    t = tag.strip().lower()
    if _DROP.match(t):
        return None
    return _MERGE.get(t, t)


def merged_vocabulary(teacher_tags: Sequence[Sequence[str]]) -> tuple[list[str], list[list[int]]]:
    """The merged vocabulary of several teachers and, per teacher, the merged column of each of its tags.

    Args:
        teacher_tags: each teacher's tags in its column order.

    Returns:
        ``(vocabulary, columns)``: the merged tags in first-seen order, and ``columns[t][j]`` the vocabulary
        index of teacher ``t``'s tag ``j`` (``-1`` for a dropped tag).
    """
    vocab: list[str] = []
    where: dict[str, int] = {}
    columns: list[list[int]] = []
    for tags in teacher_tags:
        cols = []
        for tag in tags:
            c = canonical_tag(tag)
            if c is None:
                cols.append(-1)
                continue
            if c not in where:
                where[c] = len(vocab)
                vocab.append(c)
            cols.append(where[c])
        columns.append(cols)
    return vocab, columns


def merge_probs(teacher_probs: Sequence[np.ndarray], columns: Sequence[Sequence[int]], size: int) -> np.ndarray:
    """``(N, size)`` merged probabilities: each merged tag takes the maximum of its source columns.

    Args:
        teacher_probs: per teacher ``(N, n_tags)`` probabilities.
        columns: as returned by :func:`merged_vocabulary`.
        size: the merged vocabulary's size.
    """
    n = teacher_probs[0].shape[0]
    out = np.zeros((n, size), dtype=np.float32)
    for probs, cols in zip(teacher_probs, columns):
        for j, c in enumerate(cols):
            if c >= 0:
                np.maximum(out[:, c], probs[:, j], out=out[:, c])
    return out


@dataclass(frozen=True)
class PseudoLabels:
    """Teacher probabilities for every labelled window of a collection.

    Attributes:
        tags: the merged vocabulary, in column order.
        track_ids: ``(N,)`` the id of each window's track.
        audio_paths: ``(N,)`` the file of each window.
        starts: ``(N,)`` window start in seconds from the file start.
        window_seconds: window length in seconds.
        probs: ``(N, len(tags))`` float32 merged probabilities.
        failed: ``(track_id, reason)`` for the tracks that could not be labelled.
    """

    tags: list[str]
    track_ids: list[str]
    audio_paths: list[str]
    starts: np.ndarray
    window_seconds: float
    probs: np.ndarray
    failed: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.track_ids)


def _window_starts(duration: float, window: float, hop: float) -> np.ndarray:
    """Window starts in seconds: every ``hop`` while a whole window fits, and one window for a short track."""
    if duration <= window:
        return np.zeros(1)
    return np.arange(0.0, duration - window + 1e-9, hop)


def _label_key(track: Track, teachers: Sequence[str], window: float, hop: float) -> str:
    text = json.dumps([track.track_id, str(Path(track.audio_path).resolve()), track.start, track.end, list(teachers),
                       window, hop])  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _teacher_probs(tagger: MusicnnTagger, wave: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """``(W, 50)`` probabilities of each window (mean over the teacher patches inside it), all windows' patches
    run as one batch."""
    cut = [tagger.patches(wave[round(s * 16000) : round(s * 16000) + window]) for s in starts]
    probs, _ = tagger.run_patches(torch.cat(cut))
    owner = np.repeat(np.arange(len(cut)), [p.shape[0] for p in cut])
    out = np.zeros((len(cut), probs.shape[1]), dtype=np.float32)
    np.add.at(out, owner, probs)
    return out / np.bincount(owner, minlength=len(cut))[:, None]


def pseudo_label(
    tracks: Sequence[Track],
    out_dir: str | os.PathLike[str],
    *,
    window_seconds: float = 3.0,
    hop_seconds: float = 9.0,
    teachers: Sequence[str] = TEACHERS,
    taggers: Sequence[MusicnnTagger] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PseudoLabels:
    """Label windows of every track with the teachers; resumable (one ``.npz`` per track in ``out_dir``).

    Args:
        tracks: the recordings (a track with ``start``/``end`` is labelled inside that segment).
        out_dir: folder for the per-track results; a second call labels only what is missing.
        window_seconds: window length (the student's window: 3 s for ``small``, 10 s for ``paper``).
        hop_seconds: seconds between window starts (``window_seconds`` labels every window without overlap).
        teachers: musicnn model names (see :data:`TEACHERS`).
        taggers: already loaded taggers, in ``teachers`` order (tests; default: load them).
        progress: called with ``(done, total)`` after each track.

    Returns:
        The :class:`PseudoLabels` of all tracks that could be decoded; the others are in ``failed`` (and logged),
        the batch goes on.

    Raises:
        ConfigError: non-positive window or hop, or no teacher.
    """
    if not window_seconds > 0 or not hop_seconds > 0:
        raise ConfigError(f"window_seconds and hop_seconds must be positive, got {window_seconds}, {hop_seconds}")
    if not teachers:
        raise ConfigError("pseudo-labelling needs at least one teacher")
    loaded = list(taggers) if taggers is not None else [MusicnnTagger.load(name) for name in teachers]
    vocab, columns = merged_vocabulary([t.tags for t in loaded])
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    window = round(window_seconds * 16000)
    ids: list[str] = []
    paths: list[str] = []
    starts: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    for n, track in enumerate(tracks, 1):
        path = folder / f"{_label_key(track, teachers, window_seconds, hop_seconds)}.npz"
        try:
            if path.is_file():
                with np.load(path) as z:
                    s, p = z["starts"], z["probs"]
            else:
                offset = track.start or 0.0
                duration = None if track.end is None else track.end - offset
                wave = load_audio(track.audio_path, offset=offset, duration=duration)
                if wave.size == 0:
                    raise AudioError(f"audio file {track.audio_path} decodes to no samples")
                s_rel = _window_starts(wave.size / 16000.0, window_seconds, hop_seconds)
                p = merge_probs([_teacher_probs(t, wave, s_rel, window) for t in loaded], columns, len(vocab))
                s = s_rel + offset
                with atomic_write(path, "wb") as fh:
                    np.savez(fh, starts=s, probs=p)
        except (AudioError, OSError, ValueError) as exc:
            log.warning("cannot pseudo-label %s (%s): %s; skipping it", track.track_id, track.audio_path, exc)
            failed.append((track.track_id, str(exc)))
        else:
            ids.extend([track.track_id] * len(s))
            paths.extend([track.audio_path] * len(s))
            starts.append(np.asarray(s, dtype=np.float64))
            probs.append(np.asarray(p, dtype=np.float32))
        if progress is not None:
            progress(n, len(tracks))
    return PseudoLabels(
        tags=vocab,
        track_ids=ids,
        audio_paths=paths,
        starts=np.concatenate(starts) if starts else np.zeros(0),
        window_seconds=float(window_seconds),
        probs=np.concatenate(probs) if probs else np.zeros((0, len(vocab)), dtype=np.float32),
        failed=failed,
    )


def calibrate_thresholds(probs: np.ndarray, *, floor: float = 0.1, ceiling: float = 0.5) -> np.ndarray:
    """Per-tag thresholds by rate matching (module docstring), clamped to ``[floor, ceiling]``.

    Args:
        probs: ``(N, K)`` probabilities of N windows.
        floor: a probability below this never makes a tag.
        ceiling: a probability at or above this always makes a tag.

    Returns:
        ``(K,)`` float64 thresholds (exact input values, so ``p >= t`` admits the counted windows); a tag
        whose expected count ``sum_i p_ik`` rounds to 0 gets ``ceiling``.

    Raises:
        ConfigError: empty input or ``0 < floor <= ceiling <= 1`` violated.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ConfigError(f"calibration needs (N, K) probabilities of at least one window, got shape {p.shape}")
    if not 0.0 < floor <= ceiling <= 1.0:
        raise ConfigError(f"need 0 < floor <= ceiling <= 1, got floor={floor}, ceiling={ceiling}")
    expected = np.rint(p.sum(axis=0)).astype(int)
    ranked = -np.sort(-p, axis=0)  # each column descending
    out = np.full(p.shape[1], ceiling, dtype=np.float64)
    has = expected > 0
    out[has] = ranked[np.minimum(expected[has], p.shape[0]) - 1, np.flatnonzero(has)]
    return np.clip(out, floor, ceiling)


def confident_tags(probs: np.ndarray, tags: Sequence[str], thresholds: np.ndarray, *, max_tags: int = 10) -> list[str]:
    """The tags of one window at or above their threshold, strongest (``p / threshold``) first, at most ``max_tags``.

    Args:
        probs: ``(K,)`` probabilities of the window.
        tags: the K tag names.
        thresholds: ``(K,)`` thresholds (:func:`calibrate_thresholds`).
        max_tags: keep at most this many.
    """
    ratio = np.asarray(probs, dtype=np.float64) / np.asarray(thresholds, dtype=np.float64)
    keep = np.flatnonzero(ratio >= 1.0)
    order = keep[np.argsort(-ratio[keep], kind="stable")][: max(0, max_tags)]
    return [tags[int(i)] for i in order]


def pseudo_tracks(
    labels: PseudoLabels,
    thresholds: np.ndarray,
    *,
    max_tags: int = 10,
    splits: dict[str, str] | None = None,
    id_prefix: str = "",
) -> list[Track]:
    """One manifest track per window that has confident tags (segment ``start``/``end``, tags strongest first).

    Args:
        labels: the teachers' probabilities.
        thresholds: per-tag thresholds.
        max_tags: most tags a window keeps.
        splits: track id -> split for the windows of that track (default: no split).
        id_prefix: prepended to every window id (``<prefix><track id>@<start>``).

    Returns:
        The tracks, in label order; windows without a confident tag are left out.
    """
    out: list[Track] = []
    for i, tid in enumerate(labels.track_ids):
        tags = confident_tags(labels.probs[i], labels.tags, thresholds, max_tags=max_tags)
        if not tags:
            continue
        start = float(labels.starts[i])
        out.append(
            Track(
                track_id=f"{id_prefix}{tid}@{start:.2f}",
                audio_path=labels.audio_paths[i],
                tags=tuple(tags),
                split=None if splits is None else splits.get(tid),
                start=start,
                end=start + labels.window_seconds,
                metadata={"source": "pseudo-label", "track": tid},
            )
        )
    return out
