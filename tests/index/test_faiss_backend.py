"""FAISS-specific behaviour: the automatic exact -> IVF switch and back, retraining, filters, ties, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import gaussian_mixture_vectors
from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import create_backend, l2_normalize, open_backend

faiss = pytest.importorskip("faiss")
from musicsearch.index.backends.faiss_backend import FaissBackend, default_nlist, default_nprobe  # noqa: E402

DIM = 16


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs, centers = gaussian_mixture_vectors(n, DIM, rng=rng, n_clusters=12)
    queries, _ = gaussian_mixture_vectors(20, DIM, rng=rng, centers=centers)
    return np.arange(n, dtype=np.int64) * 5 + 2, vecs, queries


def oracle_ids(
    ids: np.ndarray, vecs: np.ndarray, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> np.ndarray:
    ref = create_backend("numpy", DIM)
    ref.add(ids, vecs)
    return ref.search(queries, k, allowed_ids=allowed)[1]


def test_switches_to_ivf_at_threshold_and_back() -> None:
    ids, vecs, queries = data(1500)
    store = FaissBackend(DIM, exact_threshold=600, retrain_growth=2.0)
    store.add(ids[:599], vecs[:599])
    assert store.mode == "exact"
    np.testing.assert_array_equal(store.search(queries, 10)[1], oracle_ids(ids[:599], vecs[:599], queries, 10))
    store.add(ids[599:600], vecs[599:600])
    assert store.mode == "ivf" and store._trained_n == 600
    store.add(ids[600:1300], vecs[600:1300])  # grows past 2 x 600: retrained on all 1300
    assert store.mode == "ivf" and store._trained_n == 1300
    assert faiss.downcast_index(store._index).nlist == default_nlist(1300)
    store.remove(ids[300:1000])
    assert store.mode == "ivf"  # 600 left: not yet below half the threshold
    store.remove(ids[250:1300])  # 250 left: exact again
    assert store.mode == "exact" and len(store) == 250
    np.testing.assert_array_equal(store.search(queries, 10)[1], oracle_ids(ids[:250], vecs[:250], queries, 10))


def test_ivf_restrictive_filter_is_exact() -> None:
    ids, vecs, queries = data(4000, seed=1)
    store = FaissBackend(DIM, exact_threshold=1000, nprobe=1)  # one cell a query: only the widening can find them
    store.add(ids, vecs)
    assert store.mode == "ivf"
    allowed = ids[::400]  # 10 ids, spread over the cells
    got = store.search(queries, 10, allowed_ids=allowed)[1]
    np.testing.assert_array_equal(got, oracle_ids(ids, vecs, queries, 10, allowed))


def test_huge_ids_use_a_hash_selector() -> None:
    ids, vecs, queries = data(300, seed=2)
    big = ids + (1 << 40)  # far too sparse for a bitmap
    for threshold in (10_000, 100):  # exact and IVF
        store = FaissBackend(DIM, exact_threshold=threshold)
        store.add(big, vecs)
        allowed = big[::7]
        got = store.search(queries, 5, allowed_ids=allowed)[1]
        np.testing.assert_array_equal(got, oracle_ids(big, vecs, queries, 5, allowed))


def test_exact_ties_follow_the_oracle() -> None:
    dim = 8
    rng = np.random.default_rng(3)
    vecs = np.concatenate([np.tile(np.eye(dim)[:2], (10, 1)), np.eye(dim)[2:]]).astype(np.float32)
    ids = rng.permutation(100)[: len(vecs)].astype(np.int64)
    order = np.argsort(-ids)  # inserted in decreasing id order, the worst case for FAISS's own heap
    store = FaissBackend(dim)
    store.add(ids[order], vecs[order])
    ref = create_backend("numpy", dim)
    ref.add(ids, vecs)
    queries = l2_normalize(np.array([[1, 1, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], np.float32))
    for k in (3, 10, 20, 25):
        np.testing.assert_array_equal(store.search(queries, k)[1], ref.search(queries, k)[1])


def test_ivf_save_and_open_keep_mode_and_options(tmp_path: Path) -> None:
    ids, vecs, queries = data(1200, seed=4)
    store = FaissBackend(DIM, exact_threshold=500, nprobe=3, seed=9)
    store.add(ids, vecs)
    store.save(tmp_path)
    again = open_backend(tmp_path)
    assert isinstance(again, FaissBackend) and again.mode == "ivf"
    assert (again.exact_threshold, again.nprobe, again.seed, again._trained_n) == (500, 3, 9, 1200)
    np.testing.assert_array_equal(again.search(queries, 10)[1], store.search(queries, 10)[1])


def test_crash_during_save_keeps_the_previous_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, vecs, _ = data(50)
    store = FaissBackend(DIM)
    store.add(ids[:10], vecs[:10])
    store.save(tmp_path)
    store.add(ids[10:], vecs[10:])
    real_write = faiss.write_index

    def half_write(index: object, path: str) -> None:
        real_write(index, path)
        raise OSError("killed")

    monkeypatch.setattr(faiss, "write_index", half_write)
    with pytest.raises(OSError, match="killed"):
        store.save(tmp_path)
    monkeypatch.undo()
    assert len(open_backend(tmp_path)) == 10
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("data-")) == ["backend.json"]


def test_bad_options() -> None:
    for bad in ({"exact_threshold": 0}, {"nlist": 0}, {"nprobe": 0}, {"retrain_growth": 1.0}):
        with pytest.raises(MusicSearchError):
            FaissBackend(DIM, **bad)  # type: ignore[arg-type]


def test_default_ivf_sizes() -> None:
    assert default_nlist(50_000) == 894 and default_nlist(1_000_000) == 4000
    assert default_nlist(100) == 2 and default_nlist(10) == 1
    assert default_nprobe(894) == 27 and default_nprobe(4000) == 125 and default_nprobe(8) == 8
