"""The self-tuning ``nprobe`` of the FAISS backend: the pure tuning function against a brute-force oracle, the
backend's tuning at IVF training, and its survival across save / reopen (old saves without it still open)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import gaussian_mixture_vectors
from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import MANIFEST, create_backend, l2_normalize, open_backend

faiss = pytest.importorskip("faiss")
from musicsearch.index.backends.faiss_backend import (  # noqa: E402
    DEFAULT_TARGET_RECALL,
    FaissBackend,
    NprobeTuning,
    default_nprobe,
    nprobe_ladder,
    recall_at_k,
    tune_nprobe,
)

DIM = 16
K = 10


def clustered(n: int, n_queries: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored vectors from a 40-cluster mixture, and queries from the same mixture moved off it by a shared offset
    (as text queries sit away from the audio vectors), which makes IVF miss neighbours at small ``nprobe``."""
    rng = np.random.default_rng(seed)
    vecs, centers = gaussian_mixture_vectors(n, DIM, rng=rng, n_clusters=40)
    queries, _ = gaussian_mixture_vectors(n_queries, DIM, rng=rng, centers=centers)
    gap = rng.standard_normal(DIM).astype(np.float32)
    return vecs, l2_normalize(queries + 0.8 * gap / np.linalg.norm(gap))


def oracle_recall(got: np.ndarray, exact: np.ndarray) -> float:
    """Mean ``|got ∩ exact| / k`` over queries: the textbook recall@k by ids."""
    return float(np.mean([len(set(g) & set(e)) / exact.shape[1] for g, e in zip(got.tolist(), exact.tolist())]))


def test_ladder() -> None:
    assert nprobe_ladder(1) == [1]
    assert nprobe_ladder(2) == [1, 2]
    assert nprobe_ladder(20) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    assert nprobe_ladder(4000)[-3:] == [2048, 3072, 4000]
    with pytest.raises(MusicSearchError, match="nlist"):
        nprobe_ladder(0)


def test_recall_by_score_counts_ties_and_never_padding() -> None:
    # query 0: exact 2nd-best is 0.5; got 0.9 (hit), 0.5 (tie: hit); query 1: 0.7 (hit) and padding (miss)
    scores = np.array([[0.9, 0.5], [0.7, -np.inf]], np.float32)
    assert recall_at_k(scores, np.array([0.5, 0.6])) == pytest.approx(0.75)
    assert recall_at_k(np.zeros((0, 3)), np.zeros(0)) == 1.0


def test_tune_nprobe_matches_a_brute_force_loop_over_every_nprobe() -> None:
    vecs, queries = clustered(4000, 120, seed=3)
    nlist = 40
    index = faiss.index_factory(DIM, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1
    index.train(vecs)
    index.add(vecs)
    exact_scores = queries @ vecs.T  # (Q, N) numpy brute force
    exact = np.argsort(-exact_scores, axis=1)[:, :K]  # (Q, K)
    kth = np.take_along_axis(exact_scores, exact[:, K - 1 : K], axis=1)[:, 0]

    def search_at(nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        return index.search(queries, K, params=faiss.SearchParametersIVF(nprobe=nprobe))

    # the oracle: every nprobe from 1 to nlist, recall by ids
    by_nprobe = {p: oracle_recall(search_at(p)[1], exact) for p in range(1, nlist + 1)}
    assert by_nprobe[1] < 0.9 and by_nprobe[nlist] == 1.0  # the test set is hard enough to tell choices apart
    middle = 0
    for target in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0):
        want = min(p for p in nprobe_ladder(nlist) if by_nprobe[p] >= target)
        got = tune_nprobe(
            lambda q, p: search_at(p)[0], {"text": queries}, {"text": kth}, nlist=nlist, target=target, k=K
        )
        assert got.nprobe == want, target
        assert got.recall["text"] == pytest.approx(by_nprobe[want], abs=1.5 / (queries.shape[0] * K))
        assert [p for p, _ in got.sweep] == [p for p in nprobe_ladder(nlist) if p <= want]
        assert got.queries == {"text": queries.shape[0]} and got.k == K and got.target == target
        middle += 1 < want < nlist
    assert middle >= 2  # several targets chose an nprobe strictly inside the ladder


def test_tune_nprobe_known_answers() -> None:
    """A search whose results are exact from a known nprobe on (per group), wrong below it."""
    rng = np.random.default_rng(0)
    q_a = l2_normalize(rng.standard_normal((8, 4)))
    q_b = l2_normalize(rng.standard_normal((5, 4)))
    kth = {"a": np.full(8, 0.5), "b": np.full(5, 0.5)}
    exact_from = {id(q_a): 3, id(q_b): 12}

    def search(q: np.ndarray, nprobe: int) -> np.ndarray:
        good = nprobe >= exact_from[id(q)]
        return np.full((q.shape[0], 2), 0.9 if good else 0.1)

    both = tune_nprobe(search, {"a": q_a, "b": q_b}, kth, nlist=64, target=0.98, k=2)
    assert both.nprobe == 12 and both.recall == {"a": 1.0, "b": 1.0} and both.min_recall == 1.0
    assert tune_nprobe(search, {"a": q_a}, kth, nlist=64, k=2).nprobe == 3  # 3 is on the ladder
    exact_from[id(q_b)] = 100  # never reached below nlist: nlist itself is the answer
    assert tune_nprobe(search, {"b": q_b}, kth, nlist=64, k=2).nprobe == 64
    assert tune_nprobe(search, {"a": q_a, "empty": np.zeros((0, 4))}, kth, nlist=64, k=2).queries == {"a": 8}
    with pytest.raises(MusicSearchError, match="target"):
        tune_nprobe(search, {"a": q_a}, kth, nlist=64, target=0.0)
    with pytest.raises(MusicSearchError, match="exact scores"):
        tune_nprobe(search, {"c": q_a}, kth, nlist=64)


def ivf_store(**options: object) -> tuple[FaissBackend, np.ndarray, np.ndarray]:
    vecs, queries = clustered(3000, 60, seed=5)
    store = FaissBackend(DIM, exact_threshold=1000, **options)  # type: ignore[arg-type]
    calls = []

    def provider() -> np.ndarray:
        calls.append(1)
        return queries

    store.set_tuning_queries(provider)
    store.add(np.arange(3000) * 3 + 1, vecs)
    tunes = options.get("nprobe") is None and options.get("target_recall", DEFAULT_TARGET_RECALL) is not None
    assert store.mode == "ivf" and len(calls) == int(tunes)  # asked once, at the one training, if it tunes
    return store, vecs, queries


def test_backend_tunes_at_training_and_its_recall_is_the_measured_one() -> None:
    store, vecs, queries = ivf_store()
    tuning = store.tuning
    assert tuning is not None and set(tuning.recall) == {"text", "example"}
    assert tuning.queries == {"text": 60, "example": 256} and tuning.target == DEFAULT_TARGET_RECALL
    assert store.effective_nprobe == tuning.nprobe
    assert tuning.min_recall >= DEFAULT_TARGET_RECALL
    nlist = int(faiss.downcast_index(store._index).nlist)
    assert tuning.nprobe < nlist  # the clustered set is easy enough not to need every cell
    # the reported text recall is what the backend's own search gives against the numpy oracle
    ids = np.arange(3000) * 3 + 1
    got = store.search(queries, K)[1]
    oracle = create_backend("numpy", DIM)
    oracle.add(ids, vecs)
    exact = oracle.search(queries, K)[1]
    assert oracle_recall(got, exact) == pytest.approx(tuning.recall["text"], abs=1.5 / (60 * K))


def test_index_info_says_how_nprobe_was_chosen() -> None:
    tuned, _, _ = ivf_store()
    info = tuned.index_info()
    assert tuned.tuning is not None
    assert info["mode"] == "ivf" and info["nprobe"] == tuned.tuning.nprobe and info["nprobe_from"] == "tuned"
    assert info["recall"] == tuned.tuning.recall and info["target_recall"] == DEFAULT_TARGET_RECALL
    assert ivf_store(nprobe=5)[0].index_info()["nprobe_from"] == "explicit"
    assert ivf_store(target_recall=None)[0].index_info()["nprobe_from"] == "nlist/32"
    assert FaissBackend(DIM).index_info() == {"mode": "exact"}
    assert create_backend("numpy", DIM).index_info() == {"mode": "exact"}


def test_tuning_survives_reopen(tmp_path: Path) -> None:
    store, _, queries = ivf_store()
    store.save(tmp_path / "v")
    again = open_backend(tmp_path / "v")
    assert isinstance(again, FaissBackend)
    assert again.tuning == store.tuning and again.effective_nprobe == store.effective_nprobe
    assert again.target_recall == DEFAULT_TARGET_RECALL
    assert np.array_equal(again.search(queries, K)[1], store.search(queries, K)[1])


def test_store_saved_before_tuning_opens_with_the_old_nprobe(tmp_path: Path) -> None:
    store, _, queries = ivf_store()
    store.save(tmp_path / "v")
    manifest = json.loads((tmp_path / "v" / MANIFEST).read_text())
    del manifest["tuning"], manifest["target_recall"]  # what a save before tuning existed holds
    (tmp_path / "v" / MANIFEST).write_text(json.dumps(manifest))
    old = open_backend(tmp_path / "v")
    assert isinstance(old, FaissBackend) and old.mode == "ivf" and old.tuning is None
    nlist = int(faiss.downcast_index(old._index).nlist)
    assert old.effective_nprobe == default_nprobe(nlist)
    assert old.search(queries, K)[1].shape == (60, K)
    assert old.target_recall == DEFAULT_TARGET_RECALL  # its next training tunes


def test_tuning_off_and_explicit_nprobe() -> None:
    off, _, _ = ivf_store(target_recall=None)
    nlist = int(faiss.downcast_index(off._index).nlist)
    assert off.tuning is None and off.effective_nprobe == default_nprobe(nlist)
    fixed, _, _ = ivf_store(nprobe=5)
    assert fixed.tuning is None and fixed.effective_nprobe == 5
    strict, _, _ = ivf_store(target_recall=1.0)
    assert strict.tuning is not None and strict.tuning.min_recall == 1.0
    for bad in (0.0, 1.5):
        with pytest.raises(MusicSearchError, match="target_recall"):
            FaissBackend(DIM, target_recall=bad)


def test_without_real_queries_nprobe_stays_nlist_over_32(caplog: pytest.LogCaptureFixture) -> None:
    """Stored vectors alone are easy queries; tuning on them would pick too few cells for text queries."""
    vecs, _ = clustered(1500, 1, seed=2)
    bad = FaissBackend(DIM, exact_threshold=1000)
    bad.set_tuning_queries(lambda: np.zeros((3, DIM + 1), np.float32))  # wrong dimension
    with caplog.at_level(logging.WARNING):
        bad.add(np.arange(1500), vecs)
    assert "nprobe not tuned" in caplog.text
    none = FaissBackend(DIM, exact_threshold=1000)
    none.add(np.arange(1500), vecs)
    for store in (bad, none):
        nlist = int(faiss.downcast_index(store._index).nlist)
        assert store.mode == "ivf" and store.tuning is None and store.effective_nprobe == default_nprobe(nlist)


def test_tuning_json_round_trip() -> None:
    t = NprobeTuning(8, {"text": 0.99}, 0.98, 10, {"text": 5}, ((4, {"text": 0.9}), (8, {"text": 0.99})))
    assert NprobeTuning.from_json(json.loads(json.dumps(t.to_json()))) == t
