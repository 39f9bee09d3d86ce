"""Parallel text encoding in the server: a pool of ONNX text sessions used by concurrent searches, the text
cache under threads, the torch fallback behind one lock; concurrent answers equal sequential ones."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_textenc import exported_store  # noqa: F401  (the module's store: a debug model, indexed and exported)

from musicsearch.cli.main import build_parser
from musicsearch.errors import MusicSearchError
from musicsearch.index.embedder import load_embedder
from musicsearch.models.onnx import ExportedModel
from musicsearch.search.api import Searcher
from musicsearch.search.service import create_app
from musicsearch.search.textenc import (
    OnnxEmbedder,
    TextEmbeddingCache,
    TextSessionPool,
    thread_safe_text_encoder,
)

QUERIES = [
    "calm low sine",
    "loud square wave",
    "noisy treble",
    "a quiet hum",
    "bright high tone, no noise",
    "soft bass",
    "harsh buzzing square",
    "gentle sine in the middle",
    "static hiss",
    "warm low drone",
    "shrill whistle",
    "steady tone without noise",
]
# Cosines of unit float32 embeddings: a different session (or thread count) may change the text embedding in its
# last bits (sums in another order), |Δcos| <= |Δq| ~ 1e-6 for these 64-d vectors; 1e-5 leaves a margin.
SCORE_TOL = 1e-5


def _open(store: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, *, text_cache_size: int = 0) -> Searcher:
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(cache))
    monkeypatch.setenv("MUSICSEARCH_ONNX", "1")
    searcher = Searcher.open(store, text_cache_size=text_cache_size)
    assert isinstance(searcher.embedder, OnnxEmbedder)
    return searcher


def _answers(search: object, queries: Sequence[str], threads: int) -> list[list[tuple[str, float]]]:
    def one(q: str) -> list[tuple[str, float]]:
        return [(r.track_id, r.score) for r in search(q, k=5, allow_files=False).results]  # type: ignore[operator]

    if threads == 1:
        return [one(q) for q in queries]
    with ThreadPoolExecutor(threads) as ex:
        return list(ex.map(one, queries))


def _assert_same(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert [t for t, _ in ra] == [t for t, _ in rb]  # exactly the same tracks, in the same order
        np.testing.assert_allclose([s for _, s in ra], [s for _, s in rb], rtol=0, atol=SCORE_TOL)


def test_concurrent_searches_on_a_session_pool_equal_sequential_ones(
    exported_store: tuple[Path, Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, _, cache = exported_store
    with _open(store, cache, monkeypatch) as plain:
        sequential = _answers(plain.search, QUERIES, 1)  # the export's own session, one query at a time
    for cache_size in (0, 4):  # no cache; a cache smaller than the queries (entries evicted while others run)
        with _open(store, cache, monkeypatch, text_cache_size=cache_size) as searcher:
            assert isinstance(searcher.embedder, OnnxEmbedder)
            searcher.embedder.use_text_sessions(3, threads=1)
            for _ in range(2):  # the second pass meets cached and evicted entries
                _assert_same(_answers(searcher.search, QUERIES, 6), sequential)


def test_the_pool_runs_sessions_in_parallel_up_to_its_size(exported_store: tuple[Path, Path, Path]) -> None:  # noqa: F811
    """``size`` callers are inside ``size`` different sessions at the same time; a pool of one admits one."""
    _, ckpt, cache = exported_store
    from musicsearch.models.onnx import export_dir_for, weights_of

    _, sha = weights_of(ckpt)  # type: ignore[misc]
    exported = ExportedModel.open(export_dir_for(sha, root=cache / "onnx"), weights_sha256=sha)

    def inside_together(pool: TextSessionPool, callers: int) -> tuple[bool, set[int]]:
        barrier = threading.Barrier(callers, timeout=5)
        members: set[int] = set()
        met = [True]

        def wrap(member: ExportedModel) -> None:
            run = member.encode_text

            def waiting(texts: Sequence[str]) -> np.ndarray:
                members.add(id(member))
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    met[0] = False
                return run(texts)

            member.encode_text = waiting  # type: ignore[method-assign]

        taken = [pool._free.get() for _ in range(pool.size)]
        for m in taken:
            wrap(m)
            pool._free.put(m)
        with ThreadPoolExecutor(callers) as ex:
            outs = list(ex.map(pool.encode, [[q] for q in QUERIES[:callers]]))
        assert all(o.shape == (1, exported.dim) for o in outs)
        return met[0], members

    pool = TextSessionPool(exported, size=2, threads=1)
    assert pool.size == 2 and pool.threads == 1
    together, members = inside_together(pool, 2)
    assert together and len(members) == 2  # two callers, two sessions, at once
    single = TextSessionPool(exported, size=1, threads=1)
    together, members = inside_together(single, 2)
    assert not together and len(members) == 1  # the second caller waited for the only session
    with pytest.raises(MusicSearchError, match="text sessions must be >= 1"):
        TextSessionPool(exported, size=0)


def test_serve_options_reach_the_pool(
    exported_store: tuple[Path, Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, _, cache = exported_store
    args = build_parser().parse_args(["serve", "--store", str(store), "--text-sessions", "3", "--text-threads", "2"])
    assert (args.text_sessions, args.text_threads, args.search_threads) == (3, 2, 0)
    defaults = build_parser().parse_args(["serve", "--store", str(store)])
    assert (defaults.text_sessions, defaults.text_threads) == (0, 1)  # 0: one session per core
    seen: list[str] = []
    with _open(store, cache, monkeypatch) as searcher:
        app = create_app(searcher, text_sessions=3, text_threads=2, thread_setup=lambda: seen.append("setup"))
        pool = searcher.embedder.text_pool  # type: ignore[attr-defined]
        assert pool is not None and (pool.size, pool.threads) == (3, 2)
        assert app.state.gate.capacity == 4 + 32  # text sessions + 1 worker threads, and the queue
        with TestClient(app, base_url="http://127.0.0.1") as client:  # a Host on the default allow-list
            for q in QUERIES[:4]:
                assert client.get("/api/search", params={"q": q, "k": 3}).status_code == 200
        assert 1 <= len(seen) <= 4  # once per worker thread, not once per request
        with pytest.raises(MusicSearchError, match="text_sessions must be >= 1"):
            create_app(searcher, text_sessions=0)


def test_concurrent_http_searches_equal_sequential_ones(
    exported_store: tuple[Path, Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, _, cache = exported_store
    with _open(store, cache, monkeypatch) as plain:
        sequential = _answers(plain.search, QUERIES, 1)
    with _open(store, cache, monkeypatch, text_cache_size=1024) as searcher:
        app = create_app(searcher, text_sessions=2)
        with TestClient(app, base_url="http://127.0.0.1") as client:  # a Host on the default allow-list

            def one(q: str) -> list[tuple[str, float]]:
                r = client.get("/api/search", params={"q": q, "k": 5})
                assert r.status_code == 200, r.text
                return [(x["track_id"], x["score"]) for x in r.json()["results"]]

            with ThreadPoolExecutor(6) as ex:
                concurrent = list(ex.map(one, QUERIES + QUERIES))  # the second half: cache hits
    _assert_same(concurrent, sequential + sequential)


def test_the_text_cache_gives_each_thread_its_own_texts_embedding() -> None:
    """Many threads, few keys, a small cache (constant eviction), a slow embed: every answer is the embedding of
    the texts asked for (never another thread's), and callers cannot alter cached rows."""
    rng = np.random.default_rng(0)
    table = {f"text {i}": rng.standard_normal(8).astype(np.float32) for i in range(20)}
    stall = threading.Event()

    def embed(texts: Sequence[str]) -> np.ndarray:
        stall.wait(0.001)  # let other threads interleave between the miss and the insert
        return np.stack([table[t] for t in texts])

    cache = TextEmbeddingCache(embed, size=5)
    keys = [[f"text {i}"] if i % 3 else [f"text {i}", f"text {(i + 1) % 20}"] for i in range(20)]

    def worker(seed: int) -> bool:
        r = np.random.default_rng(seed)
        ok = True
        for _ in range(200):
            key = keys[int(r.integers(len(keys)))]
            got = cache(key)
            ok &= bool(np.array_equal(got, np.stack([table[t] for t in key])))
            got[:] = 0.0  # the caller's own copy
        return ok

    with ThreadPoolExecutor(8) as ex:
        assert all(ex.map(worker, range(8)))
    assert len(cache) <= 5 and cache.hits + cache.misses == 8 * 200


def test_torch_text_encoder_is_called_by_one_thread_at_a_time(
    exported_store: tuple[Path, Path, Path],  # noqa: F811
) -> None:
    _, ckpt, _ = exported_store
    embedder = load_embedder(ckpt)
    inside, most = [0], [0]
    lock = threading.Lock()
    run = embedder.embed_texts

    def counting(texts: Sequence[str]) -> np.ndarray:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            threading.Event().wait(0.01)
            return run(texts)
        finally:
            with lock:
                inside[0] -= 1

    embedder.embed_texts = counting  # type: ignore[method-assign]
    encode = thread_safe_text_encoder(embedder)
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda q: encode([q]), QUERIES[:8]))
    assert most[0] == 1
    for q, out in zip(QUERIES[:8], outs):
        np.testing.assert_allclose(out, run([q]), rtol=0, atol=1e-6)


def test_query_texts_are_encoded_outside_the_searchers_lock(
    exported_store: tuple[Path, Path, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While another thread holds the searcher (vector search, SQLite), a new query's text is already encoded."""
    store, _, cache = exported_store
    with _open(store, cache, monkeypatch, text_cache_size=8) as searcher:
        done = threading.Event()
        with searcher._lock:  # another query's store work in progress
            worker = threading.Thread(target=lambda: (searcher.search(QUERIES[0], k=3), done.set()))
            worker.start()
            for _ in range(1000):
                if searcher.text_cache.misses == 1:
                    break
                threading.Event().wait(0.01)
            assert searcher.text_cache.misses == 1  # encoded while the lock was held elsewhere
            assert not done.is_set()  # but the store part waits for the lock
        worker.join(60)
        assert done.is_set()
