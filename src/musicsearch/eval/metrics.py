"""Evaluation metrics as pure functions on numpy arrays (tagging, retrieval, classification).

Conventions shared by every function here:

* Scores are "higher means more relevant / more likely positive"; any real numbers (cosines, logits,
  probabilities). They must be finite.
* Label matrices ``y_true`` are (N, C) with values 0/1 (bool, int or float): N tracks, C labels (tags).
* Every score is returned as a fraction in [0, 1] (the paper prints percent), except ranks.
* Ties are handled explicitly and the rule is stated in each docstring. ROC-AUC, PR-AUC and best-threshold F1
  treat tied scores as one threshold (exactly as scikit-learn does); retrieval ranks take a ``ties`` rule.
* A label column with no positive (or, for ROC-AUC, no negative) has no defined score: it is *skipped*
  (NaN in per-label outputs, left out of macro means) and *counted* (``n_labels_skipped``).

Large label matrices are processed in column blocks, so memory stays bounded (ECALS test: 34,631 x 1,054).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from musicsearch.errors import MusicSearchError

TieRule = Literal["pessimistic", "optimistic", "mean", "stable"]
TIE_RULES: tuple[str, ...] = ("pessimistic", "optimistic", "mean", "stable")

_COLUMN_BLOCK = 128  # label columns processed at once by the vectorised curve code
_QUERY_BLOCK = 1024  # queries processed at once by rank_of_relevant


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------
def _as_label_matrix(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (label matrix, score matrix) pair; 1-D inputs become one column."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if s.ndim == 1:
        s = s[:, None]
    if y.ndim != 2 or s.shape != y.shape:
        raise MusicSearchError(
            f"y_true {np.shape(y_true)} and scores {np.shape(scores)} must be (N, C) arrays of the same shape"
        )
    if y.shape[0] == 0:
        raise MusicSearchError("y_true and scores are empty; metrics need at least one track")
    if not np.isfinite(s).all():
        raise MusicSearchError("scores contain NaN or infinity; check the model outputs")
    yb = y.astype(bool)
    if not np.array_equal(yb, y.astype(np.float64)):
        raise MusicSearchError("y_true must hold only 0/1 (or booleans)")
    return yb, s


# ----------------------------------------------------------------------------------------------------------------
# the shared curve machinery: columns sorted by descending score, tied scores grouped into one threshold
# ----------------------------------------------------------------------------------------------------------------
def _descending_groups(y: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
    """Per-column cumulative counts over scores sorted in descending order, with tie groups.

    For a column sorted by descending score, position i (0-based) belongs to a tie group (a run of equal
    scores). Returned arrays are all (N, C):

    * ``sorted``: the sorted scores; ``end``: True at the last position of each tie group;
    * ``tp``/``fp``: positives/negatives at positions <= i (cumulative);
    * ``tp_before``/``fp_before``: positives/negatives strictly above the group of position i.

    At a group end, ``tp``/``fp`` are the true/false positives of the threshold "score >= that group's score".
    """
    n = s.shape[0]
    order = np.argsort(-s, axis=0, kind="stable")  # (N, C)
    ss = np.take_along_axis(s, order, axis=0)
    ys = np.take_along_axis(y, order, axis=0)
    tp = np.cumsum(ys, axis=0, dtype=np.int64)
    fp = np.arange(1, n + 1, dtype=np.int64)[:, None] - tp
    new = np.ones_like(ss, dtype=bool)
    new[1:] = ss[1:] != ss[:-1]  # first position of a tie group
    end = np.ones_like(ss, dtype=bool)
    end[:-1] = new[1:]  # last position of a tie group
    idx = np.arange(n)[:, None]
    start = np.maximum.accumulate(np.where(new, idx, 0), axis=0)  # group start index of every position
    zeros = np.zeros((1, s.shape[1]), dtype=np.int64)
    tp_before = np.take_along_axis(np.vstack([zeros, tp]), start, axis=0)
    fp_before = np.take_along_axis(np.vstack([zeros, fp]), start, axis=0)
    return {"sorted": ss, "end": end, "tp": tp, "fp": fp, "tp_before": tp_before, "fp_before": fp_before}


def _column_blocks(c: int) -> list[slice]:
    return [slice(i, min(i + _COLUMN_BLOCK, c)) for i in range(0, c, _COLUMN_BLOCK)]


# ----------------------------------------------------------------------------------------------------------------
# tagging: ROC-AUC, PR-AUC (average precision), best-threshold F1
# ----------------------------------------------------------------------------------------------------------------
def roc_auc_per_label(y_true: Any, scores: Any) -> np.ndarray:
    """Area under the ROC curve of each label column.

    Formula (Mann-Whitney): for a column with P positives and M negatives,
    ``AUC = (1 / (P M)) * sum_{i pos, j neg} [s_i > s_j] + 0.5 [s_i == s_j]``, i.e. the probability that a random
    positive scores above a random negative, a tie counting one half. This equals the trapezoidal area under the
    ROC curve with tied scores as one threshold, which is what ``sklearn.metrics.roc_auc_score`` computes.

    Args:
        y_true: (N, C) 0/1 labels (or (N,) for one column).
        scores: (N, C) real scores, higher = more likely positive.

    Returns:
        (C,) float64; NaN for a column with no positive or no negative (undefined).

    Raises:
        MusicSearchError: on mismatched shapes, non-binary labels or non-finite scores.
    """
    y, s = _as_label_matrix(y_true, scores)
    out = np.full(y.shape[1], np.nan)
    for sl in _column_blocks(y.shape[1]):
        g = _descending_groups(y[:, sl], s[:, sl])
        end = g["end"]
        pos_in_group = g["tp"] - g["tp_before"]
        neg_in_group = g["fp"] - g["fp_before"]
        # each negative of a group is beaten by every positive above the group and half-beaten by the tied ones
        credit = np.where(end, neg_in_group * (g["tp_before"] + 0.5 * pos_in_group), 0.0).sum(axis=0)
        p = g["tp"][-1].astype(np.float64)
        m = g["fp"][-1].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sl] = np.where((p > 0) & (m > 0), credit / (p * m), np.nan)
    return out


def pr_auc_per_label(y_true: Any, scores: Any) -> np.ndarray:
    """Average precision (PR-AUC) of each label column, exactly as ``sklearn.metrics.average_precision_score``.

    Formula: with thresholds at the distinct scores (descending), ``AP = sum_n (R_n - R_{n-1}) P_n``, where
    ``P_n``/``R_n`` are precision/recall of "score >= n-th threshold". Tied scores form one threshold, so a
    group of tied items enters with the precision of the whole group (no interpolation).

    Args:
        y_true: (N, C) 0/1 labels (or (N,)).
        scores: (N, C) real scores.

    Returns:
        (C,) float64; NaN for a column with no positive (undefined; scikit-learn would warn and return 0).

    Raises:
        MusicSearchError: on mismatched shapes, non-binary labels or non-finite scores.
    """
    y, s = _as_label_matrix(y_true, scores)
    out = np.full(y.shape[1], np.nan)
    n_at = np.arange(1, y.shape[0] + 1, dtype=np.float64)[:, None]  # items with score >= threshold at a group end
    for sl in _column_blocks(y.shape[1]):
        g = _descending_groups(y[:, sl], s[:, sl])
        recall_gain = (g["tp"] - g["tp_before"]).astype(np.float64)  # new positives of the group (x 1/P below)
        precision = g["tp"] / n_at
        total = np.where(g["end"], recall_gain * precision, 0.0).sum(axis=0)
        p = g["tp"][-1].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sl] = np.where(p > 0, total / p, np.nan)
    return out


def best_f1_thresholds(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-label threshold that maximises F1 on the given data, and that F1.

    A track is predicted positive for label c when ``score >= threshold[c]``. Candidate thresholds are the
    distinct scores of the column (tied scores are one candidate); F1 = 2 TP / (2 TP + FP + FN). When several
    thresholds reach the same best F1, the highest threshold (fewest predicted positives) is chosen.

    Note: the paper's release picks the threshold the same way (via ``precision_recall_curve``) but then
    predicts with ``score > threshold``, which drops the items at the threshold; we keep ``>=``, the rule the
    threshold was chosen for.

    Args:
        y_true: (N, C) 0/1 labels (or (N,)).
        scores: (N, C) real scores.

    Returns:
        ``(thresholds, f1)``, both (C,) float64. A column with no positive gets threshold ``+inf`` (predict
        none) and F1 NaN (undefined, skipped by :func:`macro_f1`).

    Raises:
        MusicSearchError: on mismatched shapes, non-binary labels or non-finite scores.
    """
    y, s = _as_label_matrix(y_true, scores)
    c = y.shape[1]
    thresholds = np.full(c, np.inf)
    f1 = np.full(c, np.nan)
    k = np.arange(1, y.shape[0] + 1, dtype=np.float64)[:, None]  # predicted positives at a group end
    for sl in _column_blocks(c):
        g = _descending_groups(y[:, sl], s[:, sl])
        p = g["tp"][-1].astype(np.float64)  # (c,)
        cand = np.where(g["end"], 2.0 * g["tp"] / (k + p[None, :]), -np.inf)  # F1 = 2TP / (predicted + P)
        best = np.argmax(cand, axis=0)  # first maximum in descending order = highest threshold
        cols = np.arange(cand.shape[1])
        has_pos = p > 0
        thresholds[sl] = np.where(has_pos, g["sorted"][best, cols], np.inf)
        f1[sl] = np.where(has_pos, cand[best, cols], np.nan)
    return thresholds, f1


def f1_at_thresholds(y_true: Any, scores: Any, thresholds: Any) -> np.ndarray:
    """Per-label F1 of the decisions ``score >= thresholds[c]`` (e.g. thresholds tuned on another split).

    F1 = 2 TP / (2 TP + FP + FN); NaN when the denominator is 0 (no positive and nothing predicted).
    A column with no positive but some predicted positives scores 0.

    Args:
        y_true: (N, C) 0/1 labels.
        scores: (N, C) real scores.
        thresholds: (C,) thresholds (``+inf`` predicts none).

    Returns:
        (C,) float64 per-label F1.

    Raises:
        MusicSearchError: on mismatched shapes.
    """
    y, s = _as_label_matrix(y_true, scores)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.shape[0] != y.shape[1]:
        raise MusicSearchError(f"thresholds has {t.shape[0]} values but there are {y.shape[1]} label columns")
    pred = s >= t[None, :]
    tp = (pred & y).sum(axis=0).astype(np.float64)
    fp = (pred & ~y).sum(axis=0)
    fn = (~pred & y).sum(axis=0)
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def _nanmean(values: np.ndarray) -> float:
    ok = ~np.isnan(values)
    return float(values[ok].mean()) if ok.any() else float("nan")


def macro_roc_auc(y_true: Any, scores: Any) -> float:
    """Macro ROC-AUC: mean of :func:`roc_auc_per_label` over the columns where it is defined.

    Columns with no positive or no negative are skipped (see :func:`count_skipped_labels`). Returns NaN if no
    column is defined. Equals ``roc_auc_score(y, s, average="macro")`` when no column is skipped.
    """
    return _nanmean(roc_auc_per_label(y_true, scores))


def macro_pr_auc(y_true: Any, scores: Any) -> float:
    """Macro PR-AUC (mean average precision over label columns); columns with no positive skipped; NaN if none."""
    return _nanmean(pr_auc_per_label(y_true, scores))


def macro_f1(per_label_f1: Any) -> float:
    """Mean of per-label F1 values, NaN (undefined) entries skipped; NaN if all are undefined."""
    return _nanmean(np.asarray(per_label_f1, dtype=np.float64))


def macro_best_f1(y_true: Any, scores: Any) -> float:
    """Macro F1 at per-label best thresholds chosen on the same data (the paper's KVT convention; optimistic)."""
    return macro_f1(best_f1_thresholds(y_true, scores)[1])


def count_skipped_labels(y_true: Any) -> tuple[int, int]:
    """Label columns that ROC-AUC must skip, and those PR-AUC / F1 must skip.

    Args:
        y_true: (N, C) 0/1 labels.

    Returns:
        ``(n_roc_skipped, n_pr_skipped)``: columns with no positive or no negative, and columns with no positive.
    """
    y = np.asarray(y_true).astype(bool)
    if y.ndim == 1:
        y = y[:, None]
    pos = y.sum(axis=0)
    return int(((pos == 0) | (pos == y.shape[0])).sum()), int((pos == 0).sum())


def evaluate_tagging(
    y_true: Any,
    scores: Any,
    *,
    label_names: Sequence[str] | None = None,
    with_f1: bool = False,
) -> dict[str, Any]:
    """All tagging scores of a (tracks x labels) score matrix, as a JSON-ready dict.

    Args:
        y_true: (N, C) 0/1 labels.
        scores: (N, C) real scores (cosine with tag embeddings, classifier logits, ...).
        label_names: C names for the per-label table (default ``"0"``, ``"1"``, ...).
        with_f1: also compute macro F1 at per-label best thresholds chosen on this same data.

    Returns:
        ``{"roc_auc", "pr_auc", "n_tracks", "n_labels", "n_labels_scored_roc", "n_labels_skipped_roc",
        "n_labels_scored_pr", "n_labels_skipped_pr", "skipped_labels", "per_label": {name: {"roc_auc", "pr_auc",
        "n_positive"[, "f1", "threshold"]}}[, "f1_best_threshold"]}``; undefined per-label values are ``None``.

    Raises:
        MusicSearchError: on bad inputs or a wrong number of label names.
    """
    y, s = _as_label_matrix(y_true, scores)
    c = y.shape[1]
    names = [str(i) for i in range(c)] if label_names is None else [str(n) for n in label_names]
    if len(names) != c:
        raise MusicSearchError(f"{len(names)} label names for {c} label columns")
    roc = roc_auc_per_label(y, s)
    pr = pr_auc_per_label(y, s)
    n_roc_skip, n_pr_skip = count_skipped_labels(y)
    npos = y.sum(axis=0)
    out: dict[str, Any] = {
        "roc_auc": _nanmean(roc),
        "pr_auc": _nanmean(pr),
        "n_tracks": int(y.shape[0]),
        "n_labels": c,
        "n_labels_scored_roc": c - n_roc_skip,
        "n_labels_skipped_roc": n_roc_skip,
        "n_labels_scored_pr": c - n_pr_skip,
        "n_labels_skipped_pr": n_pr_skip,
        "skipped_labels": [names[i] for i in range(c) if np.isnan(roc[i])],
    }
    per: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        per[name] = {"roc_auc": _none_if_nan(roc[i]), "pr_auc": _none_if_nan(pr[i]), "n_positive": int(npos[i])}
    if with_f1:
        thr, f1 = best_f1_thresholds(y, s)
        out["f1_best_threshold"] = macro_f1(f1)
        for i, name in enumerate(names):
            per[name]["f1"] = _none_if_nan(f1[i])
            per[name]["threshold"] = None if not np.isfinite(thr[i]) else float(thr[i])
    out["per_label"] = per
    return out


def _none_if_nan(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


# ----------------------------------------------------------------------------------------------------------------
# retrieval: ranks of one relevant item per query
# ----------------------------------------------------------------------------------------------------------------
def rank_of_relevant(scores: Any, relevant_index: Any = None, *, ties: TieRule = "pessimistic") -> np.ndarray:
    """1-based rank of each query's one relevant item among N candidates.

    With ``s`` the query's scores, ``r`` its relevant item, ``G = #{j : s_j > s_r}`` (strictly better items) and
    ``E = #{j != r : s_j == s_r}`` (items tied with it), the rank is

    * ``"pessimistic"`` (default): ``G + E + 1`` -- every tie is ranked above the relevant item (a tie never
      helps the model; a constant scorer gets rank N);
    * ``"optimistic"``: ``G + 1`` -- every tie is ranked below it;
    * ``"mean"``: ``G + E / 2 + 1`` -- the expected rank when ties are broken uniformly at random
      (may be fractional);
    * ``"stable"``: ``G + #{j < r : s_j == s_r} + 1`` -- the position in a stable descending sort
      (``np.argsort(-s, kind="stable")``), i.e. ties broken by candidate index. The paper's release ranks with
      a non-stable pandas sort, so its order among ties is unspecified; with continuous cosine scores ties do
      not occur and all rules agree.

    Args:
        scores: (Q, N) scores of Q queries against N candidates (higher = more relevant).
        relevant_index: (Q,) index in [0, N) of each query's relevant candidate; default ``arange(Q)`` (the
            diagonal of a paired text -> audio matrix, Q <= N).
        ties: the tie rule above.

    Returns:
        (Q,) float64 ranks in [1, N] (integers except under ``"mean"``).

    Raises:
        MusicSearchError: on bad shapes, out-of-range indices, non-finite scores or an unknown tie rule.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise MusicSearchError(f"scores must be a non-empty (Q, N) matrix, got shape {s.shape}")
    q, n = s.shape
    if relevant_index is None:
        if q > n:
            raise MusicSearchError(f"default relevant_index is the diagonal, which needs Q <= N (got {q} x {n})")
        rel = np.arange(q)
    else:
        rel = np.asarray(relevant_index).astype(np.int64, copy=False).reshape(-1)
        if rel.shape[0] != q:
            raise MusicSearchError(f"relevant_index has {rel.shape[0]} entries for {q} queries")
        if (rel < 0).any() or (rel >= n).any():
            raise MusicSearchError(f"relevant_index values must lie in [0, {n})")
    if ties not in TIE_RULES:
        raise MusicSearchError(f"unknown tie rule {ties!r}; use one of {TIE_RULES}")
    if not np.isfinite(s).all():
        raise MusicSearchError("scores contain NaN or infinity; check the embeddings")
    ranks = np.empty(q, dtype=np.float64)
    cols = np.arange(n)
    for a in range(0, q, _QUERY_BLOCK):
        b = min(a + _QUERY_BLOCK, q)
        block = s[a:b]  # (q', N)
        r = rel[a:b]
        target = block[np.arange(b - a), r][:, None]  # (q', 1)
        greater = (block > target).sum(axis=1)
        if ties == "optimistic":
            ranks[a:b] = greater + 1
            continue
        equal_mask = block == target
        equal = equal_mask.sum(axis=1) - 1  # excluding the relevant item itself
        if ties == "pessimistic":
            ranks[a:b] = greater + equal + 1
        elif ties == "mean":
            ranks[a:b] = greater + equal / 2.0 + 1
        else:  # stable
            before = (equal_mask & (cols[None, :] < r[:, None])).sum(axis=1)
            ranks[a:b] = greater + before + 1
    return ranks


def _check_ranks(ranks: Any) -> np.ndarray:
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise MusicSearchError("no ranks given")
    if (r < 1).any() or not np.isfinite(r).all():
        raise MusicSearchError("ranks must be 1-based (>= 1) and finite")
    return r


def recall_at_k(ranks: Any, k: int) -> float:
    """Recall@K with one relevant item per query: the share of queries whose 1-based rank is <= K."""
    if k < 1:
        raise MusicSearchError(f"K must be >= 1, got {k}")
    return float((_check_ranks(ranks) <= k).mean())


def map_at_k(ranks: Any, k: int = 10) -> float:
    """mAP@K with one relevant item per query: mean of ``1 / rank`` if ``rank <= K`` else 0.

    With a single relevant item, average precision at K is the reciprocal rank cut at K, which is what the
    paper's release computes for its "mAP@10".
    """
    if k < 1:
        raise MusicSearchError(f"K must be >= 1, got {k}")
    r = _check_ranks(ranks)
    return float(np.where(r <= k, 1.0 / r, 0.0).mean())


def mean_reciprocal_rank(ranks: Any) -> float:
    """MRR: mean of ``1 / rank`` over queries (1-based ranks)."""
    return float((1.0 / _check_ranks(ranks)).mean())


def median_rank(ranks: Any, *, zero_based: bool = False) -> float:
    """Median of the ranks, counted from 1 (default) or from 0 (``zero_based=True``, the release's convention).

    With an even number of queries this is the mean of the two middle ranks (so it may end in .5, as the
    release's 19.5). ``median_rank(r, zero_based=True) == median_rank(r) - 1``.

    Args:
        ranks: (Q,) 1-based ranks, e.g. from :func:`rank_of_relevant`.
        zero_based: count the first position as 0.
    """
    m = float(np.median(_check_ranks(ranks)))
    return m - 1.0 if zero_based else m


def evaluate_retrieval(
    scores: Any,
    relevant_index: Any = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    map_k: int = 10,
    ties: TieRule = "pessimistic",
) -> dict[str, Any]:
    """All retrieval scores of a (queries x candidates) score matrix with one relevant candidate per query.

    Args:
        scores: (Q, N) scores, e.g. caption -> track cosine similarities.
        relevant_index: (Q,) relevant candidate of each query; default the diagonal.
        ks: the K of each Recall@K.
        map_k: the K of mAP@K.
        ties: tie rule of :func:`rank_of_relevant`.

    Returns:
        ``{"R@1", "R@5", "R@10", "mAP@10", "MRR", "median_rank_1based", "median_rank_0based",
        "mean_rank_1based", "n_queries", "n_candidates", "tie_rule"}`` (keys follow ``ks``/``map_k``);
        recalls, mAP and MRR are fractions.
    """
    ranks = rank_of_relevant(scores, relevant_index, ties=ties)
    out: dict[str, Any] = {f"R@{k}": recall_at_k(ranks, k) for k in ks}
    out[f"mAP@{map_k}"] = map_at_k(ranks, map_k)
    out["MRR"] = mean_reciprocal_rank(ranks)
    out["median_rank_1based"] = median_rank(ranks)
    out["median_rank_0based"] = median_rank(ranks, zero_based=True)
    out["mean_rank_1based"] = float(ranks.mean())
    out["n_queries"] = int(ranks.shape[0])
    out["n_candidates"] = int(np.shape(scores)[1])
    out["tie_rule"] = ties
    return out


# ----------------------------------------------------------------------------------------------------------------
# single-label classification
# ----------------------------------------------------------------------------------------------------------------
def predict_classes(scores: Any) -> np.ndarray:
    """Arg-max class of each row of (N, C) scores; a tie goes to the lowest class index (``np.argmax``)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise MusicSearchError(f"scores must be an (N, C) matrix, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise MusicSearchError("scores contain NaN or infinity")
    return np.argmax(s, axis=1)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of tracks whose predicted class equals the true class.

    Args:
        y_true: (N,) integer class indices.
        y_pred: (N,) integer predicted class indices (e.g. :func:`predict_classes`).
    """
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape or t.size == 0:
        raise MusicSearchError(f"y_true {t.shape} and y_pred {p.shape} must be non-empty and of the same length")
    return float((t == p).mean())


def mean_class_recall(per_class: Mapping[str, Mapping[str, Any]]) -> float:
    """Balanced accuracy from :func:`evaluate_classification`'s ``per_class``: the mean of the classes' recalls
    (their ``accuracy``), over the classes present (a ``None`` recall is a class absent from the labels).

    Raises:
        MusicSearchError: no class is present.
    """
    recalls = [float(v["accuracy"]) for v in per_class.values() if v.get("accuracy") is not None]
    if not recalls:
        raise MusicSearchError("balanced accuracy needs at least one class with tracks")
    return float(np.mean(recalls))


def evaluate_classification(y_true: Any, scores: Any, *, label_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Single-label scores of an (N, C) score matrix: accuracy of the arg-max (ties to the lowest index).

    Returns:
        ``{"accuracy", "balanced_accuracy", "n_tracks", "n_classes", "per_class": {name: {"n", "accuracy"}}}``
        (per-class accuracy is the recall of that class, ``None`` for a class absent from ``y_true``; balanced
        accuracy is the mean recall over the classes present, so a constant answer scores ``1 / classes``
        however the classes are balanced, where plain accuracy gives it the majority class's share).
    """
    t = np.asarray(y_true).astype(np.int64).reshape(-1)
    pred = predict_classes(scores)
    c = np.shape(scores)[1]
    if t.shape[0] != pred.shape[0]:
        raise MusicSearchError(f"{t.shape[0]} labels for {pred.shape[0]} score rows")
    if (t < 0).any() or (t >= c).any():
        raise MusicSearchError(f"class indices must lie in [0, {c})")
    names = [str(i) for i in range(c)] if label_names is None else [str(n) for n in label_names]
    if len(names) != c:
        raise MusicSearchError(f"{len(names)} class names for {c} score columns")
    per: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        m = t == i
        per[name] = {"n": int(m.sum()), "accuracy": float((pred[m] == i).mean()) if m.any() else None}
    return {
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": mean_class_recall(per),
        "n_tracks": int(t.shape[0]),
        "n_classes": c,
        "per_class": per,
    }
