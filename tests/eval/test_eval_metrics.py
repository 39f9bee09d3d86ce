"""Metrics against scikit-learn, brute-force loops and hand-worked examples (ties included)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from musicsearch.errors import MusicSearchError
from musicsearch.eval import metrics as M


def _random_tagging(rng: np.random.Generator, n: int, c: int, *, quantise: bool) -> tuple[np.ndarray, np.ndarray]:
    y = (rng.random((n, c)) < rng.uniform(0.05, 0.5, size=c)).astype(np.int64)
    s = rng.normal(size=(n, c)) + 0.8 * y
    if quantise:  # many ties
        s = np.round(s * 2) / 2
    return y, s


# ---------------------------------------------------------------------------------------------------- hand-worked
def test_hand_worked_tagging_example_with_a_tie() -> None:
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.9, 0.5, 0.1])
    # pairs (pos, neg): (0.9 vs 0.9) tie -> 0.5, (0.9 vs 0.1) 1, (0.5 vs 0.9) 0, (0.5 vs 0.1) 1 -> 2.5 / 4
    assert M.roc_auc_per_label(y, s)[0] == pytest.approx(0.625)
    # thresholds 0.9 (P=1/2, R=1/2), 0.5 (P=2/3, R=1), 0.1 (R=1): AP = 1/2*1/2 + 1/2*2/3 = 7/12
    assert M.pr_auc_per_label(y, s)[0] == pytest.approx(7 / 12)
    # F1 at >= 0.9: 2/4; at >= 0.5: 4/5; at >= 0.1: 4/6 -> best 0.8 at threshold 0.5
    thr, f1 = M.best_f1_thresholds(y, s)
    assert thr[0] == 0.5 and f1[0] == pytest.approx(0.8)


def test_best_threshold_tie_in_f1_takes_the_highest_threshold() -> None:
    # >= 0.8 -> TP 1 FP 0 FN 1: F1 2/3; >= 0.2 -> TP 2 FP 2 FN 0: F1 4/6 = 2/3 as well
    y = np.array([1, 0, 0, 1])
    s = np.array([0.8, 0.5, 0.2, 0.2])
    thr, f1 = M.best_f1_thresholds(y, s)
    assert f1[0] == pytest.approx(2 / 3) and thr[0] == 0.8


def test_hand_worked_ranks_under_each_tie_rule() -> None:
    scores = np.array([[0.5, 0.5, 0.9, 0.5]])
    # relevant item 3: one strictly better item (0.9), two tied with it (items 0 and 1), both before it
    assert M.rank_of_relevant(scores, [3], ties="pessimistic")[0] == 4
    assert M.rank_of_relevant(scores, [3], ties="optimistic")[0] == 2
    assert M.rank_of_relevant(scores, [3], ties="mean")[0] == 3
    assert M.rank_of_relevant(scores, [3], ties="stable")[0] == 4
    # relevant item 0: the ties come after it in index order
    assert M.rank_of_relevant(scores, [0], ties="stable")[0] == 2
    assert M.rank_of_relevant(scores, [0], ties="pessimistic")[0] == 4
    # the best item is rank 1 under every rule
    for rule in M.TIE_RULES:
        assert M.rank_of_relevant(scores, [2], ties=rule)[0] == 1


def test_constant_scorer_is_worst_under_pessimistic_and_random_under_mean() -> None:
    scores = np.zeros((5, 5))
    assert (M.rank_of_relevant(scores, ties="pessimistic") == 5).all()
    assert (M.rank_of_relevant(scores, ties="mean") == 3).all()
    assert (M.rank_of_relevant(scores, ties="optimistic") == 1).all()
    assert M.rank_of_relevant(scores, ties="stable").tolist() == [1, 2, 3, 4, 5]


def test_hand_worked_rank_summaries() -> None:
    ranks = np.array([1, 2, 3, 10])
    assert M.recall_at_k(ranks, 1) == 0.25
    assert M.recall_at_k(ranks, 5) == 0.75
    assert M.median_rank(ranks) == 2.5
    assert M.median_rank(ranks, zero_based=True) == 1.5
    assert M.map_at_k([1, 4, 11], 10) == pytest.approx((1 + 0.25 + 0) / 3)
    assert M.mean_reciprocal_rank([1, 4, 11]) == pytest.approx((1 + 0.25 + 1 / 11) / 3)


def test_evaluate_retrieval_labels_both_median_conventions() -> None:
    scores = np.eye(4) + 0.01
    scores[3, 3] = 0.0  # the last query's item falls to the bottom (rank 4)
    out = M.evaluate_retrieval(scores)
    assert out["R@1"] == 0.75 and out["R@5"] == 1.0
    assert out["median_rank_1based"] == 1.0 and out["median_rank_0based"] == 0.0
    assert out["mAP@10"] == pytest.approx((3 + 0.25) / 4)
    assert out["tie_rule"] == "pessimistic" and out["n_queries"] == 4 and out["n_candidates"] == 4


# ---------------------------------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("quantise", [False, True])
def test_roc_and_pr_match_sklearn_per_column(quantise: bool) -> None:
    rng = np.random.default_rng(0 if quantise else 1)
    y, s = _random_tagging(rng, 300, 40, quantise=quantise)
    y[:, 0] = 0  # no positive: skipped
    y[:, 1] = 1  # no negative: skipped by ROC only
    roc = M.roc_auc_per_label(y, s)
    pr = M.pr_auc_per_label(y, s)
    assert np.isnan(roc[0]) and np.isnan(roc[1]) and np.isnan(pr[0]) and not np.isnan(pr[1])
    for c in range(2, y.shape[1]):
        assert roc[c] == pytest.approx(roc_auc_score(y[:, c], s[:, c]), abs=1e-12)
        assert pr[c] == pytest.approx(average_precision_score(y[:, c], s[:, c]), abs=1e-12)
    assert pr[1] == pytest.approx(average_precision_score(y[:, 1], s[:, 1]), abs=1e-12)
    # macro over defined columns equals sklearn's macro on those columns
    keep = slice(2, None)
    assert M.macro_roc_auc(y, s) == pytest.approx(roc_auc_score(y[:, keep], s[:, keep], average="macro"))
    assert M.count_skipped_labels(y) == (2, 1)


def test_column_blocks_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    y, s = _random_tagging(rng, 120, 37, quantise=True)
    full = (M.roc_auc_per_label(y, s), M.pr_auc_per_label(y, s), M.best_f1_thresholds(y, s))
    monkeypatch.setattr(M, "_COLUMN_BLOCK", 5)
    blocked = (M.roc_auc_per_label(y, s), M.pr_auc_per_label(y, s), M.best_f1_thresholds(y, s))
    np.testing.assert_array_equal(full[0], blocked[0])
    np.testing.assert_array_equal(full[1], blocked[1])
    np.testing.assert_array_equal(full[2][0], blocked[2][0])


@pytest.mark.parametrize("quantise", [False, True])
def test_best_f1_matches_brute_force_over_all_thresholds(quantise: bool) -> None:
    rng = np.random.default_rng(3)
    y, s = _random_tagging(rng, 80, 12, quantise=quantise)
    y[:, 0] = 0
    thr, f1 = M.best_f1_thresholds(y, s)
    assert np.isnan(f1[0]) and thr[0] == np.inf
    for c in range(1, y.shape[1]):
        cands = np.unique(s[:, c])[::-1]  # highest first, so the first maximum is the highest threshold
        values = [f1_score(y[:, c], s[:, c] >= t) for t in cands]
        best = int(np.argmax(values))
        assert f1[c] == pytest.approx(values[best], abs=1e-12)
        assert thr[c] == cands[best]
    # the per-label F1 at those thresholds, computed independently, gives the same numbers
    np.testing.assert_allclose(M.f1_at_thresholds(y, s, thr)[1:], f1[1:])
    assert M.macro_best_f1(y, s) == pytest.approx(np.mean(f1[1:]))


def test_f1_at_thresholds_matches_sklearn() -> None:
    rng = np.random.default_rng(4)
    y, s = _random_tagging(rng, 60, 6, quantise=False)
    t = rng.normal(size=6)
    ours = M.f1_at_thresholds(y, s, t)
    for c in range(6):
        assert ours[c] == pytest.approx(f1_score(y[:, c], s[:, c] >= t[c], zero_division=0.0))
    # a column with no positive: F1 0 if something is predicted, undefined if nothing is
    y0 = np.zeros((3, 1))
    assert M.f1_at_thresholds(y0, [[0.1], [0.2], [0.3]], [0.25])[0] == 0.0
    assert np.isnan(M.f1_at_thresholds(y0, [[0.1], [0.2], [0.3]], [np.inf])[0])


@pytest.mark.parametrize("rule", M.TIE_RULES)
def test_ranks_match_a_brute_force_loop(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "_QUERY_BLOCK", 7)  # exercise the query blocks too
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(size=(30, 25)), 1)  # ties on purpose
    rel = rng.integers(0, 25, size=30)
    ranks = M.rank_of_relevant(scores, rel, ties=rule)  # type: ignore[arg-type]
    for q in range(30):
        row, r = scores[q], rel[q]
        if rule == "stable":
            order = np.argsort(-row, kind="stable")
            expected = float(np.nonzero(order == r)[0][0] + 1)
        else:
            positions = [i + 1 for i, j in enumerate(np.argsort(-row, kind="stable")) if row[j] == row[r]]
            lo, hi = min(positions), max(positions)  # the block of positions the tied group occupies
            expected = {"optimistic": lo, "pessimistic": hi, "mean": (lo + hi) / 2}[rule]
        assert ranks[q] == expected


def test_continuous_scores_make_all_tie_rules_agree_with_argsort() -> None:
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(50, 50))
    base = M.rank_of_relevant(scores, ties="pessimistic")
    for rule in M.TIE_RULES:
        np.testing.assert_array_equal(M.rank_of_relevant(scores, ties=rule), base)  # type: ignore[arg-type]
    argsort_rank = np.array([np.nonzero(np.argsort(-scores[q]) == q)[0][0] + 1 for q in range(50)])
    np.testing.assert_array_equal(base, argsort_rank)


def test_classification_accuracy_and_argmax_tie() -> None:
    scores = np.array([[0.2, 0.2, 0.1], [0.0, 1.0, 0.0], [0.3, 0.1, 0.9]])
    assert M.predict_classes(scores).tolist() == [0, 1, 2]  # the tie in row 0 goes to class 0
    out = M.evaluate_classification([1, 1, 2], scores, label_names=["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["per_class"]["a"] == {"n": 0, "accuracy": None}
    assert out["per_class"]["b"]["accuracy"] == 0.5
    assert out["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # classes b and c; a is absent


def test_balanced_accuracy_matches_sklearn_and_scores_a_constant_answer_at_chance() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(4)
    truth = rng.choice(3, size=60, p=[0.7, 0.2, 0.1])
    scores = rng.normal(size=(60, 3))
    out = M.evaluate_classification(truth, scores)
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, M.predict_classes(scores)))
    always_majority = np.tile([1.0, 0.0, 0.0], (60, 1))
    constant = M.evaluate_classification(truth, always_majority)
    assert constant["accuracy"] == pytest.approx(np.mean(truth == 0))  # the majority's share ...
    assert constant["balanced_accuracy"] == pytest.approx(1 / 3)  # ... but chance when balanced
    assert M.mean_class_recall(constant["per_class"]) == constant["balanced_accuracy"]
    with pytest.raises(MusicSearchError, match="balanced accuracy"):
        M.mean_class_recall({"a": {"n": 0, "accuracy": None}})


def test_evaluate_tagging_reports_skipped_labels_and_per_label_values() -> None:
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    s = np.array([[0.9, 0.1, 0.3], [0.2, 0.2, 0.2], [0.8, 0.3, 0.1], [0.1, 0.4, 0.0]])
    out = M.evaluate_tagging(y, s, label_names=["rock", "jazz", "pop"], with_f1=True)
    assert out["roc_auc"] == 1.0 and out["n_labels_scored_roc"] == 1 and out["n_labels_skipped_roc"] == 2
    assert out["skipped_labels"] == ["jazz", "pop"]
    assert out["per_label"]["jazz"]["roc_auc"] is None and out["per_label"]["pop"]["pr_auc"] == 1.0
    assert out["per_label"]["rock"]["threshold"] == 0.8 and out["f1_best_threshold"] == 1.0


def test_bad_inputs_raise_project_errors() -> None:
    with pytest.raises(MusicSearchError, match="same shape"):
        M.roc_auc_per_label(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(MusicSearchError, match="0/1"):
        M.pr_auc_per_label(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(MusicSearchError, match="NaN"):
        M.roc_auc_per_label(np.array([0, 1]), np.array([np.nan, 0.2]))
    with pytest.raises(MusicSearchError, match="tie rule"):
        M.rank_of_relevant(np.zeros((2, 2)), ties="random")  # type: ignore[arg-type]
    with pytest.raises(MusicSearchError, match=r"\[0, 2\)"):
        M.rank_of_relevant(np.zeros((1, 2)), [2])
    with pytest.raises(MusicSearchError, match="1-based"):
        M.median_rank([0, 1])
