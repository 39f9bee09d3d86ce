"""Zero-shot transfer: a dataset's label names, embedded as text, score its tracks with no training.

The paper's protocol (section 9): each label is embedded as a bare string -- its natural text,
:attr:`~musicsearch.data.sources.labels.LabelledDataset.label_texts` (Emotify's ``joyful_activation`` is read as
"joyful activation", GTZAN's ``hiphop`` as "hip hop"); a prompt template such as ``"a {} song"`` is an option
here -- and scored by cosine with the track embedding; single-label datasets are scored
by the accuracy of the arg-max, multi-label datasets by macro ROC-AUC / PR-AUC, and KVT by macro F1 at per-label
best thresholds (tuned on the scored data itself, the release's convention; with a validation split we also
report F1 at thresholds tuned on it).

Classification models score the labels that their tag vocabulary holds (by name, else by natural text) with their
classifier rows; other labels cannot be scored: multi-label metrics then cover only the known labels, and
single-label accuracy counts every track whose true class is unknown to the model as an error. ``coverage`` says
how many labels were scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.errors import MusicSearchError
from musicsearch.eval import metrics
from musicsearch.eval.retrieval import is_classification, query_scores

__all__ = ["NO_OFFICIAL_SPLIT", "evaluate_zeroshot", "label_scores", "zeroshot_rows"]

NO_OFFICIAL_SPLIT: frozenset[str] = frozenset({"emotify"})
"""Datasets without an official split: zero-shot runs on all their tracks (the paper used all 400 Emotify clips)."""


def zeroshot_rows(dataset: LabelledDataset, split: str | None = None) -> tuple[np.ndarray, str]:
    """Row indices of the tracks to score, and the split's name.

    Args:
        dataset: the dataset.
        split: ``"test"``, ``"valid"``, ``"train"`` or ``"all"``; default ``"all"`` for the datasets of
            :data:`NO_OFFICIAL_SPLIT` and for datasets without test tracks, else ``"test"``.
    """
    if split is None:
        has_test = any(t.split == "test" for t in dataset.tracks)
        split = "all" if dataset.name in NO_OFFICIAL_SPLIT or not has_test else "test"
    if split == "all":
        return np.arange(len(dataset), dtype=np.int64), "all"
    return dataset.split_indices(split), split


def label_scores(
    model: Any, track_emb: np.ndarray, dataset: LabelledDataset, *, prompt: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, C)`` zero-shot scores of tracks for the dataset's labels, and ``(C,)`` which labels could be scored.

    Text models embed :attr:`LabelledDataset.label_texts` (with ``prompt``); classification models look each
    label up in their vocabulary by its name and, failing that, by its natural text.
    """
    texts = list(dataset.label_texts)
    if not is_classification(model):
        return query_scores(model, track_emb, texts, prompt=prompt)
    scores, covered = query_scores(model, track_emb, list(dataset.label_names))
    if not covered.all():
        by_text, text_covered = query_scores(model, track_emb, texts)
        take = ~covered & text_covered
        scores[:, take] = by_text[:, take]
        covered = covered | text_covered
    return scores, covered


def _multiclass_scores(scores: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Scores where an unscorable class can never win the arg-max (finite, below every covered score)."""
    out = scores.astype(np.float64)
    if not covered.all():
        floor = float(out[:, covered].min()) - 1.0
        out[:, ~covered] = floor
    return out


def evaluate_zeroshot(
    model: Any,
    embeddings: Any,
    dataset: LabelledDataset,
    *,
    split: str | None = None,
    prompt: str | None = None,
    ok: Any = None,
) -> dict[str, Any]:
    """Zero-shot scores of a model on a labelled dataset.

    Args:
        model: the model.
        embeddings: ``(N, D)`` track embeddings in the dataset's track order.
        dataset: the dataset (its ``task`` and ``metric`` choose the scores).
        split: which tracks to score (see :func:`zeroshot_rows`).
        prompt: optional template for the label texts (``"a {} song"``); ignored by classification models.
        ok: ``(N,)`` bool, False for tracks to leave out (unreadable audio); default all.

    Returns:
        ``{"dataset", "split", "n_tracks", "task", "metric", "prompt", "label_texts", "coverage",
        "unscored_labels", ...}`` (``label_texts``: label name -> the text embedded) and
        the scores: ``accuracy`` and ``per_class`` (single-label); ``roc_auc``, ``pr_auc``, ``per_label`` and
        counts of skipped labels (multi-label); for ``f1`` datasets also ``f1`` (thresholds tuned on the scored
        tracks, the paper's KVT number) and, with a validation split, ``f1_valid_threshold``.

    Raises:
        MusicSearchError: if the embeddings do not match the dataset, no track is left, or no label can be
            scored.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(dataset):
        raise MusicSearchError(f"{len(dataset)} tracks in {dataset.name} but embeddings of shape {x.shape}")
    keep = np.ones(len(dataset), dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    rows, split_name = zeroshot_rows(dataset, split)
    rows = rows[keep[rows]]
    if rows.size == 0:
        raise MusicSearchError(f"{dataset.name}: no readable track in split {split_name!r} to score")
    labels = list(dataset.label_names)
    scores, covered = label_scores(model, x[rows], dataset, prompt=prompt)  # (n, C), (C,)
    if not covered.any():
        raise MusicSearchError(
            f"{dataset.name}: the classification model knows none of the labels {labels[:5]}...; "
            "zero-shot needs a model with a text encoder"
        )
    out: dict[str, Any] = {
        "dataset": dataset.name,
        "split": split_name,
        "n_tracks": int(rows.size),
        "n_excluded": int((~keep).sum()),
        "task": dataset.task,
        "metric": dataset.metric,
        "prompt": None if is_classification(model) else prompt,
        "scoring": "classifier logits" if is_classification(model) else "cosine(track, label text)",
        "label_texts": dict(zip(labels, dataset.label_texts)),
        "coverage": float(covered.mean()),
        "unscored_labels": [n for n, c in zip(labels, covered) if not c],
    }
    if dataset.task == "multiclass":
        out.update(metrics.evaluate_classification(dataset.labels[rows], _multiclass_scores(scores, covered),
                                                   label_names=labels))  # fmt: skip
        return out
    y = dataset.labels[rows][:, covered]
    names = [n for n, c in zip(labels, covered) if c]
    tagging = metrics.evaluate_tagging(y, scores[:, covered], label_names=names, with_f1=dataset.metric == "f1")
    out.update(tagging)
    if dataset.metric == "f1":
        out["f1"] = tagging["f1_best_threshold"]
        out["f1_note"] = "per-label thresholds tuned on the scored tracks themselves (the paper's convention)"
        valid = dataset.split_indices("valid")
        valid = valid[keep[valid]] if valid.size else valid
        if split_name == "test" and valid.size:
            v_scores, _ = label_scores(model, x[valid], dataset, prompt=prompt)
            thr, _ = metrics.best_f1_thresholds(dataset.labels[valid][:, covered], v_scores[:, covered])
            out["f1_valid_threshold"] = metrics.macro_f1(metrics.f1_at_thresholds(y, scores[:, covered], thr))
    for key in ("roc_auc", "pr_auc", "f1", "f1_best_threshold", "f1_valid_threshold"):
        if isinstance(out.get(key), float) and np.isnan(out[key]):
            out[key] = None
    return out
