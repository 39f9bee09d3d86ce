"""The Milvus backend against a real Milvus server process reached over its port (not Milvus Lite in process):
the whole backend suite of ``test_vector_backends.py``, then a store indexed straight into the server and faiss
shard stores merged into a server collection, each searching like a single-process faiss store.

The server is PyPI ``milvus`` 2.3.5's standalone Milvus (``pip install milvus==2.3.5``), started once for the
module on 127.0.0.1:19530; the tests skip, saying why, where it is not installed or cannot start."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import test_vector_backends as suite
from test_indexer import SR, save_debug_model, tone
from test_vector_backends import data  # noqa: F401 - the suite's data fixture, used by the tests re-exported below

from musicsearch.index.backends.base import VectorBackend, create_backend
from musicsearch.index.indexer import index_collection
from musicsearch.index.shards import merge_stores, shard_store_path
from musicsearch.index.store import Store
from musicsearch.search.api import Searcher

pytestmark = pytest.mark.slow  # the server takes 15-30 s to start, its index builds seconds each

PORT = 19530
FREQS = (180, 260, 340, 430, 520, 640)
VEC_ATOL = 8 * float(np.finfo(np.float32).eps)  # two processes, the same float32 model (see test_indexer_shards)


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("pymilvus")
    milvus = pytest.importorskip("milvus", reason="no Milvus server package: pip install milvus==2.3.5")
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", PORT)) == 0:
            pytest.skip(f"port {PORT} is taken on this machine: another Milvus is running; stop it to run this test")
    server = milvus.default_server
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus-server")))
    server.listen_port = PORT
    try:
        server.start()
    except Exception as exc:  # the embedded server is a native binary: any failure to start is a skip
        server.stop()
        pytest.skip(f"the standalone Milvus server did not start on 127.0.0.1:{PORT} ({type(exc).__name__}: {exc})")
    try:
        yield f"http://127.0.0.1:{PORT}"
    finally:
        server.stop()


def _drop(uri: str, *names: str) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    for name in names:
        if client.has_collection(name):
            client.drop_collection(name)
    client.close()


@pytest.fixture(params=["FLAT", "HNSW"])
def case(request: pytest.FixtureRequest, milvus_uri: str) -> Iterator[tuple[VectorBackend, bool]]:
    """Overrides the suite's ``case``: a fresh collection on the server for each test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    backend = create_backend("milvus", suite.DIM, uri=milvus_uri, collection=name, index_type=request.param)
    yield backend, request.param == "FLAT"
    backend.close()
    _drop(milvus_uri, name)


# The backend suite, unchanged, on the server (the tests take `case` and `data`).
test_matches_oracle = suite.test_matches_oracle
test_exact_ties_break_by_lower_id = suite.test_exact_ties_break_by_lower_id
test_filters = suite.test_filters
test_remove_and_upsert = suite.test_remove_and_upsert
test_persistence_round_trip = suite.test_persistence_round_trip
test_export_returns_normalised_vectors = suite.test_export_returns_normalised_vectors
test_padding_when_k_exceeds_size = suite.test_padding_when_k_exceeds_size
test_empty_store = suite.test_empty_store
test_bad_input = suite.test_bad_input


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_debug_model(tmp_path_factory.mktemp("model") / "debug.safetensors", seed=0)


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("music")
    for i, freq in enumerate(FREQS):
        sf.write(root / f"t{i}.wav", tone(freq, 1.5 + 0.25 * i), SR)
    return root


def assert_searches_alike(store: Path, ref: Path) -> None:
    with Store.open(store) as a, Store.open(ref) as b:
        assert sorted(t.track_id for t in a.db.iter_tracks()) == sorted(t.track_id for t in b.db.iter_tracks())
        assert len(a.tracks) == len(b.tracks) and len(a.windows) == len(b.windows)
    with Searcher.open(store) as s, Searcher.open(ref) as r:
        for kwargs in ({"query": "a low tone"}, {"like": "t3.wav"}):
            got, want = s.search(k=len(FREQS), **kwargs).results, r.search(k=len(FREQS), **kwargs).results
            assert [h.track_id for h in got] == [h.track_id for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=0, atol=VEC_ATOL)


def test_index_into_server_and_merge_faiss_shards_into_it(
    milvus_uri: str, model_file: Path, music: Path, tmp_path: Path
) -> None:
    ref = tmp_path / "faiss.store"
    index_collection(music, ref, model=model_file, workers=0)
    run = uuid.uuid4().hex[:8]
    try:
        # a store whose vectors live on the server: two collections, tracks and windows; a rerun redoes nothing
        direct = tmp_path / "direct.store"
        opts = {"uri": milvus_uri, "collection": f"d_{run}", "index_type": "FLAT"}
        report = index_collection(music, direct, model=model_file, workers=0, backend="milvus", backend_options=opts)
        assert report.added == len(FREQS)
        assert_searches_alike(direct, ref)
        assert index_collection(music, direct, workers=0).unchanged == len(FREQS)
        # faiss shard stores (two workers) merged into new collections on the server
        shards = [shard_store_path(tmp_path / "s", (r, 2)) for r in range(2)]
        for r, path in enumerate(shards):
            index_collection(music, path, model=model_file, workers=0, shard=(r, 2))
        merged = tmp_path / "merged.store"
        target = {"uri": milvus_uri, "collection": f"m_{run}", "index_type": "FLAT"}
        rep = merge_stores(shards, merged, backend="milvus", backend_options=target)
        assert rep.tracks == len(FREQS)
        assert_searches_alike(merged, ref)
    finally:
        _drop(milvus_uri, *(f"{c}_{run}_{lvl}" for c in ("d", "m") for lvl in ("tracks", "windows")))
