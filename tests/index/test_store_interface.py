"""The store module: shared helpers, the backend registry, manifests, shard merging, and the NumPy oracle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import gaussian_mixture_vectors
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.index.backends.base import PAD_ID, backend_names, create_backend, l2_normalize, open_backend, sort_hits
from musicsearch.index.backends.numpy_exact import exact_top_k
from musicsearch.index.shards import copy_vectors, merge_shards


def brute_force(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The obvious oracle of the oracle: score everything, sort every row by (-score, id)."""
    scores = queries @ vectors.T
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_i = np.full((len(queries), k), -1, np.int64)
    for q in range(len(queries)):
        ranked = sorted(zip(scores[q].tolist(), ids.tolist()), key=lambda t: (-t[0], t[1]))[:k]
        for col, (s, i) in enumerate(ranked):
            out_s[q, col], out_i[q, col] = s, i
    return out_s, out_i


def one_hot_with_ties() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """20 copies each of e0 and e1 (scores tie exactly, no rounding) under shuffled ids, plus distinct vectors."""
    rng = np.random.default_rng(3)
    dim = 8
    vecs = np.concatenate([np.tile(np.eye(dim, dtype=np.float32)[:2], (20, 1)), np.eye(dim, dtype=np.float32)[2:]])
    ids = rng.permutation(1000)[: len(vecs)].astype(np.int64)
    queries = np.array([[1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]], np.float32)
    return vecs, ids, l2_normalize(queries)


@pytest.mark.parametrize("k", [1, 5, 17, 40, 60])
def test_exact_top_k_matches_full_sort(k: int) -> None:
    rng = np.random.default_rng(k)
    vecs, centers = gaussian_mixture_vectors(50, 16, rng=rng, n_clusters=4)
    queries, _ = gaussian_mixture_vectors(6, 16, rng=rng, centers=centers)
    ids = rng.permutation(500)[:50].astype(np.int64)
    s, i = exact_top_k(vecs, ids, queries, k)
    bs, bi = brute_force(vecs, ids, queries, k)
    np.testing.assert_array_equal(i, bi)
    np.testing.assert_array_equal(s, bs)


def test_exact_top_k_tie_rule_at_the_cut_off() -> None:
    vecs, ids, queries = one_hot_with_ties()
    for k in (1, 7, 39, 40, 41):
        s, i = exact_top_k(vecs, ids, queries, k)
        bs, bi = brute_force(vecs, ids, queries, k)
        np.testing.assert_array_equal(i, bi)
        np.testing.assert_array_equal(s, bs)
    _s, i = exact_top_k(vecs, ids, queries, 7)
    assert (np.diff(i[0]) > 0).all(), "equal scores must come in increasing id order"


def test_sort_hits_orders_and_pads() -> None:
    scores = np.array([[0.5, 0.9, 0.5, -np.inf]], np.float32)
    ids = np.array([[7, 3, 2, -1]], np.int64)
    s, i = sort_hits(scores, ids, 6)
    np.testing.assert_array_equal(i, [[3, 2, 7, -1, -1, -1]])
    np.testing.assert_array_equal(s[0, :3], np.array([0.9, 0.5, 0.5], np.float32))
    assert np.isneginf(s[0, 3:]).all()
    s, i = sort_hits(scores, ids, 2)
    np.testing.assert_array_equal(i, [[3, 2]])


def test_l2_normalize_rejects_bad_rows() -> None:
    np.testing.assert_allclose(l2_normalize(np.array([[3.0, 4.0]])), [[0.6, 0.8]], rtol=1e-6)
    with pytest.raises(MusicSearchError, match="row 1 is all zeros"):
        l2_normalize(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(MusicSearchError, match="row 0 holds NaN"):
        l2_normalize(np.array([[np.inf, 0.0]]))
    with pytest.raises(MusicSearchError, match="2-D"):
        l2_normalize(np.ones(3))


def test_registry_and_options() -> None:
    assert {"numpy", "faiss", "milvus"} <= set(backend_names())
    with pytest.raises(ConfigError, match=r"unknown vector backend 'annoy'.*faiss"):
        create_backend("annoy", 8)
    with pytest.raises(ConfigError, match="bad option"):
        create_backend("numpy", 8, nlist=4)
    with pytest.raises(MusicSearchError, match="positive integer"):
        create_backend("numpy", 0)


def test_open_rejects_what_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(MusicSearchError, match="not a saved vector store"):
        open_backend(tmp_path)
    (tmp_path / "backend.json").write_text("{not json")
    with pytest.raises(MusicSearchError, match="cannot read"):
        open_backend(tmp_path)
    (tmp_path / "backend.json").write_text(json.dumps({"backend": "numpy", "dim": 4, "format": 99}))
    with pytest.raises(MusicSearchError, match="newer musicsearch"):
        open_backend(tmp_path)


def test_crash_during_save_keeps_the_previous_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = create_backend("numpy", 4)
    backend.add([1, 2], np.eye(4)[:2])
    backend.save(tmp_path)
    backend.add([3], np.eye(4)[2:3])

    def crash(fh: object, **arrays: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        backend.save(tmp_path)
    monkeypatch.undo()
    again = open_backend(tmp_path)
    np.testing.assert_array_equal(again.ids(), [1, 2])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_merge_shards_into_one_store(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    vecs, centers = gaussian_mixture_vectors(900, 16, rng=rng, n_clusters=8)
    queries, _ = gaussian_mixture_vectors(10, 16, rng=rng, centers=centers)
    ids = np.arange(900, dtype=np.int64)
    paths = []
    for rank in range(3):  # ids rank, rank + 3, ...: what MetadataDB(shard=(rank, 3)) hands out
        shard = create_backend("numpy", 16)
        shard.add(ids[rank::3], vecs[rank::3])
        shard.save(tmp_path / f"shard{rank}")
        paths.append(tmp_path / f"shard{rank}")
    merged = merge_shards(paths, tmp_path / "merged", backend="faiss")
    reopened = open_backend(tmp_path / "merged")
    oracle = create_backend("numpy", 16)
    oracle.add(ids, vecs)
    assert len(reopened) == 900 == len(merged)
    np.testing.assert_array_equal(reopened.search(queries, 10)[1], oracle.search(queries, 10)[1])
    with pytest.raises(MusicSearchError, match="in two shards"):
        merge_shards([paths[0], paths[0]], tmp_path / "bad")
    with pytest.raises(MusicSearchError, match="no shards"):
        merge_shards([], tmp_path / "none")
    other = create_backend("numpy", 8)
    with pytest.raises(MusicSearchError, match="16-d store into a 8-d"):
        copy_vectors([oracle], other)


def test_gaussian_mixture_is_seeded_and_unit() -> None:
    a, ca = gaussian_mixture_vectors(100, 12, rng=np.random.default_rng(5), n_clusters=3)
    b, _cb = gaussian_mixture_vectors(100, 12, rng=np.random.default_rng(5), n_clusters=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert a.dtype == np.float32 and ca.shape == (3, 13)
    assert PAD_ID == -1
