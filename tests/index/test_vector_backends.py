"""Every vector-store backend against the exact NumPy oracle, on seeded clustered data.

Exact backends must return the oracle's ids exactly; approximate ones (FAISS above its threshold, Milvus HNSW)
must reach recall@10 >= 0.95. The same suite checks filters, removal, upserts, persistence, padding and errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import gaussian_mixture_vectors
from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import PAD_ID, VectorBackend, create_backend, l2_normalize, open_backend

pytest.importorskip("faiss")

DIM = 32
N = 3000
K = 10

Factory = Callable[[Path], VectorBackend]


def _milvus(index_type: str) -> Factory:
    def make(tmp: Path) -> VectorBackend:
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")
        return create_backend("milvus", DIM, uri=str(tmp / "milvus.db"), index_type=index_type)

    return make


# name -> (factory, exact?). "faiss-ivf" sets a small threshold so that N vectors are past it (approximate).
BACKENDS: dict[str, tuple[Factory, bool]] = {
    "numpy": (lambda tmp: create_backend("numpy", DIM), True),
    "faiss-exact": (lambda tmp: create_backend("faiss", DIM), True),
    "faiss-ivf": (lambda tmp: create_backend("faiss", DIM, exact_threshold=1000), False),
    "milvus-flat": (_milvus("FLAT"), True),
    "milvus-hnsw": (_milvus("HNSW"), False),
}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (N,), vectors (N, D), queries (Q, D)): non-contiguous ids, clustered vectors, queries from the mixture."""
    rng = np.random.default_rng(1234)
    vectors, centers = gaussian_mixture_vectors(N, DIM, rng=rng, n_clusters=40)
    queries, _ = gaussian_mixture_vectors(40, DIM, rng=rng, centers=centers)
    ids = np.sort(rng.choice(10 * N, size=N, replace=False)).astype(np.int64)
    return ids, vectors, queries


@pytest.fixture(params=list(BACKENDS))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[VectorBackend, bool]]:
    factory, exact = BACKENDS[request.param]
    backend = factory(tmp_path)
    yield backend, exact
    backend.close()


def oracle(ids: np.ndarray, vectors: np.ndarray) -> VectorBackend:
    backend = create_backend("numpy", DIM)
    backend.add(ids, vectors)
    return backend


def recall(got: np.ndarray, want: np.ndarray) -> float:
    """Mean over queries of |got ∩ want| / |want| (padding ignored)."""
    hits = [len(set(g[g >= 0]) & set(w[w >= 0])) / max(1, int((w >= 0).sum())) for g, w in zip(got, want)]
    return float(np.mean(hits))


def check_against(
    backend: VectorBackend, exact: bool, ref: VectorBackend, queries: np.ndarray, allowed: np.ndarray | None = None
) -> None:
    s, i = backend.search(queries, K, allowed_ids=allowed)
    rs, ri = ref.search(queries, K, allowed_ids=allowed)
    assert s.shape == i.shape == (queries.shape[0], K)
    assert s.dtype == np.float32 and i.dtype == np.int64
    if allowed is not None:
        assert np.isin(i[i >= 0], allowed).all(), "a hit outside allowed_ids"
    if exact:
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_allclose(s, rs, atol=1e-5)
    else:
        assert recall(i, ri) >= 0.95
        valid = i >= 0
        # scores are true cosines of the returned ids, and sorted best first
        assert (np.diff(np.where(valid, s, -np.inf), axis=1) <= 1e-6).all()


def test_matches_oracle(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...]) -> None:
    backend, exact = case
    ids, vectors, queries = data
    backend.add(ids[: N // 2], vectors[: N // 2])
    backend.add(ids[N // 2 :], vectors[N // 2 :])  # two batches: FAISS crosses its threshold in between
    assert len(backend) == N and backend.dim == DIM
    assert backend.exact == exact  # faiss-ivf really is past its threshold, milvus-hnsw really approximate
    check_against(backend, exact, oracle(ids, vectors), queries)
    if not exact:  # approximate results are still the exact scores of the ids returned
        s, i = backend.search(queries, K)
        truth = np.einsum("qd,qkd->qk", queries, vectors[np.searchsorted(ids, i)])
        np.testing.assert_allclose(s, truth, atol=1e-5)


def test_exact_ties_break_by_lower_id(case: tuple[VectorBackend, bool]) -> None:
    backend, exact = case
    if not exact:
        pytest.skip("the tie rule is a promise of the exact backends")
    # 25 copies each of e0 and e1 under shuffled ids: one-hot scores tie exactly, with no rounding.
    eye = np.eye(DIM, dtype=np.float32)
    vecs = np.concatenate([np.tile(eye[:2], (25, 1)), eye[2:]])
    ids = np.random.default_rng(5).permutation(1000)[: len(vecs)].astype(np.int64)
    backend.add(ids[::-1], vecs[::-1])
    ref = oracle(ids, vecs)
    queries = l2_normalize(np.stack([eye[0] + eye[1], eye[1], eye[7]]))
    for k in (3, 10, 49):
        np.testing.assert_array_equal(backend.search(queries, k)[1], ref.search(queries, k)[1])


def test_filters(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...]) -> None:
    backend, exact = case
    ids, vectors, queries = data
    backend.add(ids, vectors)
    ref = oracle(ids, vectors)
    rng = np.random.default_rng(7)
    allowed = rng.choice(ids, size=N // 10, replace=False)
    check_against(backend, exact, ref, queries, allowed=allowed)
    # sorted, or with repeats: the same answer
    repeated = np.concatenate([allowed, allowed[:50]])
    for variant in (np.sort(allowed), repeated):
        np.testing.assert_array_equal(
            backend.search(queries, K, allowed_ids=variant)[1], backend.search(queries, K, allowed_ids=allowed)[1]
        )
    # a filter keeping 5 ids (and some ids that are not stored): every backend must find exactly those 5
    tiny = np.concatenate([rng.choice(ids, size=5, replace=False), [10 * N + 1, 10 * N + 7]])
    s, i = backend.search(queries, K, allowed_ids=tiny)
    _rs, ri = ref.search(queries, K, allowed_ids=tiny)
    np.testing.assert_array_equal(np.sort(i[:, :5], axis=1), np.sort(ri[:, :5], axis=1))
    assert (i[:, 5:] == PAD_ID).all() and np.isneginf(s[:, 5:]).all()
    # an empty filter allows nothing
    s, i = backend.search(queries, K, allowed_ids=np.zeros(0, np.int64))
    assert (i == PAD_ID).all() and np.isneginf(s).all()


def test_remove_and_upsert(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...]) -> None:
    backend, exact = case
    ids, vectors, queries = data
    backend.add(ids, vectors)
    gone = ids[::3]
    assert backend.remove(np.concatenate([gone, [10 * N + 3]])) == gone.size  # unknown ids are ignored
    assert backend.remove(gone[:5]) == 0
    assert len(backend) == N - gone.size
    keep = np.setdiff1d(ids, gone)
    ref = oracle(keep, vectors[np.searchsorted(ids, keep)])
    _, i = backend.search(queries, K)
    assert not np.isin(i, gone).any()
    check_against(backend, exact, ref, queries)
    # upsert: re-adding a stored id replaces its vector, the size stays
    target = int(keep[0])
    backend.add([target], queries[:1])
    assert len(backend) == N - gone.size
    _, i = backend.search(queries[:1], 1)
    assert i[0, 0] == target


def test_persistence_round_trip(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    backend, _ = case
    ids, vectors, queries = data
    backend.add(ids, vectors)
    store = tmp_path / "store"
    backend.save(store)
    backend.remove(ids[:10])
    backend.save(store)  # a second save replaces the first
    before = backend.search(queries, K)
    files = sorted(p.name for p in store.iterdir())
    backend.close()
    reopened = open_backend(store)
    try:
        assert type(reopened) is type(backend) and reopened.dim == DIM and len(reopened) == N - 10
        after = reopened.search(queries, K)
        np.testing.assert_array_equal(after[1], before[1])
        np.testing.assert_allclose(after[0], before[0], atol=1e-6)
        assert sum(f.startswith("data-") for f in files) <= 1, files  # old data files were deleted
    finally:
        reopened.close()


def test_export_returns_normalised_vectors(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...]) -> None:
    backend, _ = case
    ids, vectors, _ = data
    backend.add(ids[:500], 3.0 * vectors[:500])  # the store normalises what it is given
    got_ids = np.concatenate([b[0] for b in backend.export(batch_size=128)])
    got_vecs = np.concatenate([b[1] for b in backend.export(batch_size=128)])
    order = np.argsort(got_ids)
    np.testing.assert_array_equal(got_ids[order], ids[:500])
    np.testing.assert_allclose(got_vecs[order], vectors[:500], atol=1e-6)
    np.testing.assert_array_equal(backend.ids(), ids[:500])


def test_get_returns_vectors_by_id_like_the_exact_backend(
    case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...], tmp_path: Path
) -> None:
    """get(ids): each id's stored vector, in the order asked, as the exact backend returns it (itself checked
    against l2_normalize of what was added), through removal, upsert and a save and reopen."""
    backend, _ = case
    ids, vectors, queries = data
    backend.add(ids, 3.0 * vectors)  # stored normalised
    ref = oracle(ids, vectors)
    rng = np.random.default_rng(7)
    ask = rng.choice(ids, size=300)  # any order, repeats allowed
    # float32 unit rows: components differ by at most a few ulps of 1 between backends (a rescaled copy)
    tol = 8 * float(np.finfo(np.float32).eps)
    got = backend.get(ask)
    assert got.shape == (300, DIM) and got.dtype == np.float32
    np.testing.assert_allclose(ref.get(ask), l2_normalize(vectors[np.searchsorted(ids, ask)]), rtol=0, atol=tol)
    np.testing.assert_allclose(got, ref.get(ask), rtol=0, atol=tol)
    assert backend.get([]).shape == (0, DIM)

    gone = ids[::4]
    backend.remove(gone)
    with pytest.raises(MusicSearchError, match=f"not stored .*first {int(gone[1])}"):
        backend.get([int(ids[1]), int(gone[1])])
    target = int(ids[1])
    backend.add([target], queries[:1])  # upsert: get returns the new vector
    np.testing.assert_allclose(backend.get([target])[0], l2_normalize(queries[:1])[0], rtol=0, atol=tol)
    keep = np.setdiff1d(ids, gone)
    backend.remove(keep[:5])  # removing after a get (which may have built an id map) still removes
    assert len(backend) == keep.size - 5
    keep = keep[5:]
    backend.save(tmp_path / "saved")
    backend.close()
    with open_backend(tmp_path / "saved") as again:
        np.testing.assert_allclose(again.get(keep[-50:]), ref.get(keep[-50:]), rtol=0, atol=tol)
    with pytest.raises(MusicSearchError, match=">= 0"):
        ref.get([-1])


def test_padding_when_k_exceeds_size(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...]) -> None:
    backend, _ = case
    ids, vectors, queries = data
    backend.add(ids[:7], vectors[:7])
    s, i = backend.search(queries[:3], 12)
    assert s.shape == (3, 12)
    assert (i[:, :7] >= 0).all() and (i[:, 7:] == PAD_ID).all() and np.isneginf(s[:, 7:]).all()
    assert (np.sort(i[:, :7], axis=1) == np.sort(ids[:7])).all()
    # one 1-D query is accepted as Q = 1, and scores are cosines of scaled input
    s1, i1 = backend.search(5 * queries[0], 3)
    assert i1.shape == (1, 3) and np.all(s1 <= 1.0 + 1e-6)
    np.testing.assert_allclose(s1[0], vectors[:7][np.searchsorted(ids[:7], i1[0])] @ queries[0], atol=1e-5)


def test_empty_store(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...], tmp_path: Path) -> None:
    backend, _ = case
    _, _, queries = data
    assert len(backend) == 0
    s, i = backend.search(queries[:2], K)
    assert (i == PAD_ID).all() and np.isneginf(s).all()
    assert backend.remove([1, 2, 3]) == 0
    assert list(backend.export()) == [] and backend.ids().size == 0
    backend.save(tmp_path / "empty")
    backend.close()
    with open_backend(tmp_path / "empty") as again:
        assert len(again) == 0 and again.dim == DIM


def test_bad_input(case: tuple[VectorBackend, bool], data: tuple[np.ndarray, ...]) -> None:
    backend, _ = case
    ids, vectors, queries = data
    with pytest.raises(MusicSearchError, match="dimension 31"):
        backend.add(ids[:2], vectors[:2, :31])
    backend.add(ids[:2], vectors[:2])
    with pytest.raises(MusicSearchError, match="dimension 33"):
        backend.search(np.zeros((1, DIM + 1), np.float32) + 1, K)
    with pytest.raises(MusicSearchError, match=">= 0"):
        backend.add([-1], vectors[:1])
    with pytest.raises(MusicSearchError, match="distinct"):
        backend.add([5, 5], vectors[:2])
    with pytest.raises(MusicSearchError, match="zeros"):
        backend.add([9], np.zeros((1, DIM)))
    with pytest.raises(MusicSearchError, match="NaN"):
        backend.search(np.full((1, DIM), np.nan), K)
    with pytest.raises(MusicSearchError, match="2 ids for 1"):
        backend.add(ids[:2], vectors[:1])
    with pytest.raises(MusicSearchError, match="k must be"):
        backend.search(queries, 0)
    assert len(backend) == 2  # nothing above changed the store


def test_l2_normalise_is_exact_for_unit_input(data: tuple[np.ndarray, ...]) -> None:
    _, vectors, _ = data
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(vectors * 1e-20), axis=1), 1.0, atol=1e-6)
