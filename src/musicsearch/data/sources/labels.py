"""The labelled-dataset contract shared by the downstream dataset adapters, and helpers they share.

An adapter reads a dataset as its owners distribute it and returns a :class:`LabelledDataset`: the tracks (as
:class:`musicsearch.data.manifest.Track`, each with its split set), the label names, and a label array that is
either a (N, C) multi-hot matrix (``task="multilabel"``) or (N,) class indices (``task="multiclass"``).

Label names stay as the dataset spells them (``joyful_activation``, ``hiphop``, ``noVocals``); what a text encoder
reads for zero-shot is :attr:`LabelledDataset.label_texts`: the adapter's own ``label_text`` entry for a name where
it has one (GTZAN ``hiphop`` -> ``hip hop``), else :func:`natural_label_text` (``joyful_activation`` -> ``joyful
activation``, ``noVocals`` -> ``no vocals``, ``husky/throaty`` -> ``husky or throaty``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from musicsearch.data.manifest import SPLITS, Track
from musicsearch.errors import ManifestError

logger = logging.getLogger(__name__)

Task = Literal["multilabel", "multiclass"]
METRICS: tuple[str, ...] = ("roc_auc", "accuracy", "f1")
"""Primary metric of a dataset: ``roc_auc`` (macro ROC-AUC, PR-AUC reported beside it), ``accuracy``
(arg-max, single-label) or ``f1`` (macro F1 at per-label best thresholds, as the paper used for KVT)."""


def natural_label_text(name: str) -> str:
    """The default natural text of a label name, as a text encoder should read it.

    Underscores become spaces, a lower-to-upper case step becomes a space (``noVocals`` -> ``no vocals``), a slash
    between alternatives becomes ``or`` (``mild/soft`` -> ``mild or soft``), then the text is lower-cased and its
    spaces collapsed. Hyphens and other characters stay (``low-range``, ``r&b``).

    Args:
        name: a label name as a dataset spells it.

    Returns:
        The text (never empty for a name with a letter or digit).
    """
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    text = text.replace("_", " ")
    text = re.sub(r"\s*/\s*", " or ", text)
    return " ".join(text.lower().split())


@dataclass(frozen=True, eq=False)
class LabelledDataset:
    """A downstream evaluation dataset: tracks, label vocabulary, labels and the metric it is scored with.

    Attributes:
        name: registry name (``"gtzan"``, ``"mtg-genre"``, ...).
        task: ``"multilabel"`` or ``"multiclass"``.
        label_names: the C label names, in column / class-index order (used as zero-shot text).
        tracks: the N tracks, in label-row order, each with ``split`` set (``None`` only for a generic manifest
            without splits).
        labels: (N, C) float32 multi-hot for ``multilabel``; (N,) int64 class indices for ``multiclass``.
        metric: primary metric, one of :data:`METRICS`.
        root: where the dataset was read from.
        info: free notes about how it was read (split rule, files used), JSON-serialisable.
        label_text: the adapter's natural texts of label names that :func:`natural_label_text` would not get
            right (``{"hiphop": "hip hop"}``); keys outside ``label_names`` are ignored.
    """

    name: str
    task: Task
    label_names: tuple[str, ...]
    tracks: tuple[Track, ...]
    labels: np.ndarray
    metric: str
    root: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    label_text: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, c = len(self.tracks), len(self.label_names)
        empty = [k for k, v in self.label_text.items() if not str(v).strip()]
        if empty:
            raise ManifestError(f"dataset {self.name}: empty label text for {empty[:3]}; give each label a text")
        if self.task not in ("multilabel", "multiclass"):
            raise ManifestError(f"dataset {self.name}: task must be 'multilabel' or 'multiclass', got {self.task!r}")
        if self.metric not in METRICS:
            raise ManifestError(f"dataset {self.name}: metric must be one of {METRICS}, got {self.metric!r}")
        if len(set(self.label_names)) != c:
            raise ManifestError(f"dataset {self.name}: label names are not unique")
        if self.task == "multilabel":
            if self.labels.shape != (n, c) or self.labels.dtype != np.float32:
                raise ManifestError(
                    f"dataset {self.name}: multilabel labels must be float32 ({n}, {c}), "
                    f"got {self.labels.dtype} {self.labels.shape}"
                )
        else:
            if self.labels.shape != (n,) or self.labels.dtype != np.int64:
                raise ManifestError(
                    f"dataset {self.name}: class labels must be int64 ({n},), "
                    f"got {self.labels.dtype} {self.labels.shape}"
                )
            if n and (self.labels.min() < 0 or self.labels.max() >= c):
                raise ManifestError(f"dataset {self.name}: class index out of range [0, {c})")
        ids = [t.track_id for t in self.tracks]
        if len(set(ids)) != n:
            raise ManifestError(f"dataset {self.name}: duplicate track ids")

    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def label_texts(self) -> tuple[str, ...]:
        """The C texts that zero-shot embeds, in label order: ``label_text[name]``, else
        :func:`natural_label_text` of the name."""
        return tuple(self.label_text.get(n) or natural_label_text(n) for n in self.label_names)

    @property
    def num_labels(self) -> int:
        """C, the number of labels / classes."""
        return len(self.label_names)

    def split_indices(self, split: str) -> np.ndarray:
        """(n,) int64 row indices of the tracks of one split (``"train"``, ``"valid"``, ``"test"``)."""
        if split not in SPLITS:
            raise ManifestError(f"unknown split {split!r}; use one of {SPLITS}")
        return np.array([i for i, t in enumerate(self.tracks) if t.split == split], dtype=np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledDataset:
        """A dataset of the given rows (same labels, metric and name)."""
        idx = np.asarray(indices, dtype=np.int64)
        return replace(self, tracks=tuple(self.tracks[i] for i in idx), labels=self.labels[idx])

    def split(self, split: str) -> LabelledDataset:
        """The tracks of one split, as a dataset."""
        return self.subset(self.split_indices(split))

    def label_matrix(self) -> np.ndarray:
        """(N, C) float32 multi-hot labels (one-hot for a multiclass dataset)."""
        if self.task == "multilabel":
            return self.labels
        out = np.zeros((len(self.tracks), self.num_labels), dtype=np.float32)
        out[np.arange(len(self.tracks)), self.labels] = 1.0
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for logs and reports: tracks per split, labels, task, metric."""
        per_split = {s: int(sum(t.split == s for t in self.tracks)) for s in SPLITS}
        return {
            "name": self.name,
            "task": self.task,
            "metric": self.metric,
            "n_tracks": len(self.tracks),
            "n_labels": self.num_labels,
            "splits": per_split,
            "root": self.root,
        }


# ----------------------------------------------------------------------------------------------------------------
# helpers for adapters
# ----------------------------------------------------------------------------------------------------------------
def asset_path(*parts: str) -> Path:
    """Path of a file shipped in ``musicsearch/eval/assets/`` (split lists, tag lists, published results).

    Resolved from the installed package without importing ``musicsearch.eval``.
    """
    return Path(str(resources.files("musicsearch"))) / "eval" / "assets" / Path(*parts)


def require_file(path: Path, *, dataset: str, expected: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`ManifestError` naming it and the expected layout."""
    if not path.is_file():
        raise ManifestError(f"{dataset}: missing file {path}; expected {expected}")
    return path


def read_lines(path: Path, *, dataset: str, expected: str) -> list[str]:
    """Non-empty stripped lines of a text file (missing file -> :class:`ManifestError`)."""
    require_file(path, dataset=dataset, expected=expected)
    with path.open(encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def read_csv_rows(
    path: Path, *, dataset: str, expected: str, delimiter: str = ",", strip_names: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Read a delimited text file into (header, rows); names and cells are stripped of surrounding spaces.

    Raises:
        ManifestError: if the file is missing, empty or not decodable.
    """
    require_file(path, dataset=dataset, expected=expected)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter, skipinitialspace=True)
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"{dataset}: cannot read {path} ({exc}); expected {expected}") from None
    if not rows:
        raise ManifestError(f"{dataset}: {path} is empty; expected {expected}")
    header = [h.strip() if strip_names else h for h in rows[0]]
    return header, [[cell.strip() for cell in row] for row in rows[1:]]


def column_index(header: Sequence[str], name: str, *, path: Path, dataset: str) -> int:
    """Index of a named column (case-insensitive, spaces stripped), or a ManifestError naming the file."""
    wanted = name.strip().lower()
    for i, h in enumerate(header):
        if h.strip().lower() == wanted:
            return i
    raise ManifestError(
        f"{dataset}: {path} has no column {name!r} (columns: {', '.join(header[:12])}"
        f"{', ...' if len(header) > 12 else ''}); is this the right file?"
    )


def check_audio_files(tracks: Iterable[Track], *, dataset: str, expected: str) -> None:
    """Raise a :class:`ManifestError` if any track's audio file is missing (names the first few and the count)."""
    missing = [t.audio_path for t in tracks if not os.path.isfile(t.audio_path)]
    if missing:
        head = ", ".join(missing[:3])
        raise ManifestError(
            f"{dataset}: {len(missing)} audio file(s) missing, e.g. {head}; expected {expected}. "
            "Pass audio_dir= if the audio lives elsewhere, or check_audio=False to load the labels only."
        )


def multi_hot(tag_lists: Sequence[Sequence[str]], label_names: Sequence[str]) -> np.ndarray:
    """(N, C) float32 multi-hot matrix of tag lists over ``label_names`` (tags outside it are ignored)."""
    index = {name: i for i, name in enumerate(label_names)}
    out = np.zeros((len(tag_lists), len(label_names)), dtype=np.float32)
    for row, tags in enumerate(tag_lists):
        for tag in tags:
            j = index.get(tag)
            if j is not None:
                out[row, j] = 1.0
    return out


def seeded_split(
    ids: Sequence[str],
    *,
    strata: Sequence[int] | None = None,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> dict[str, str]:
    """A reproducible train/valid/test assignment for datasets without an official split.

    Within each stratum (e.g. class) the ids are sorted, shuffled with ``numpy.random.default_rng(seed)`` and cut
    at the cumulative ``fractions`` (rounded), so every class appears in every split when it has >= 3 tracks.

    Args:
        ids: track ids.
        strata: one integer stratum per id, or ``None`` for one stratum.
        fractions: train, valid, test shares (sum 1).
        seed: the seed.

    Returns:
        track id -> ``"train"`` | ``"valid"`` | ``"test"``.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ManifestError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    groups: dict[int, list[str]] = {}
    for i, tid in enumerate(ids):
        groups.setdefault(0 if strata is None else int(strata[i]), []).append(tid)
    out: dict[str, str] = {}
    for key in sorted(groups):
        members = sorted(groups[key])
        perm = rng.permutation(len(members))
        n = len(members)
        cut1 = round(fractions[0] * n)
        cut2 = round((fractions[0] + fractions[1]) * n)
        for rank, j in enumerate(perm):
            out[members[j]] = "train" if rank < cut1 else ("valid" if rank < cut2 else "test")
    return out


def splits_from_mapping(ids: Sequence[str], mapping: Mapping[str, str], *, dataset: str) -> dict[str, str]:
    """Validate a user-given track id -> split mapping (every id covered, values in train/valid/test)."""
    out: dict[str, str] = {}
    for tid in ids:
        split = mapping.get(tid)
        if split not in SPLITS:
            raise ManifestError(
                f"{dataset}: the given split mapping has {split!r} for track {tid!r}; every track needs one of {SPLITS}"
            )
        out[tid] = split
    return out


def log_loaded(ds: LabelledDataset) -> LabelledDataset:
    """Log a one-line summary of a loaded dataset and return it."""
    s = ds.summary()
    logger.info(
        "loaded %s: %d tracks (%s), %d labels, %s, metric %s",
        ds.name,
        s["n_tracks"],
        ", ".join(f"{k} {v}" for k, v in s["splits"].items()),
        s["n_labels"],
        ds.task,
        ds.metric,
    )
    return ds
