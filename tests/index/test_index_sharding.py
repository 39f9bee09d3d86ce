"""Sharded indexing on one machine: worker processes (standing for torchrun ranks or machines) each write a shard.

* FAISS: each worker saves its own vector shard and metadata shard; the shards merge into one searchable store.
* Milvus: the workers write to the same collection of one server at the same time (a ``milvus-lite server`` here;
  a Milvus cluster in production, reached by the same code with another URI).
Both must equal the exact oracle over all the vectors.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from musicsearch.index.backends.base import create_backend, l2_normalize, open_backend
from musicsearch.index.metadata import MetadataDB, StoreInfo, TrackInfo, merge_metadata
from musicsearch.index.shards import merge_shards

pytest.importorskip("faiss")

DIM = 24
TRACKS = 60
WINDOWS = 3
WORLD = 2
INFO = StoreInfo("debug", "00" * 32, "mel-v1")


def track_vectors(i: int) -> np.ndarray:
    """``(1 + WINDOWS, DIM)``: the track vector and its window vectors, a pure function of the track index."""
    return np.random.default_rng(1000 + i).standard_normal((1 + WINDOWS, DIM)).astype(np.float32)


def index_shard(rank: int, world: int, meta_path: str, backend_args: dict[str, Any], start: Any) -> None:
    """One worker: index the tracks ``i ≡ rank (mod world)`` into its metadata shard and a vector backend."""
    meta = MetadataDB(meta_path, shard=(rank, world))
    meta.set_info(INFO)
    backend = create_backend(backend_args["name"], DIM, **backend_args.get("options", {}))
    if start is not None:
        start.wait(60)  # all workers write at the same time
    for i in range(rank, TRACKS, world):
        with meta.transaction():
            rec, wins = meta.add_track(
                TrackInfo(f"t{i}", f"/music/{i}.flac", f"hash{i}", duration=30.0), window_starts=[0.0, 10.0, 20.0]
            )
            backend.add([rec.vector_id] + [w.vector_id for w in wins], track_vectors(i))
    if "save_to" in backend_args:
        backend.save(backend_args["save_to"])
    backend.close()
    meta.close()


def run_workers(meta_paths: list[Path], backend_args: list[dict[str, Any]], *, together: bool) -> None:
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker, as on separate machines
    start = ctx.Barrier(WORLD) if together else None
    procs = [
        ctx.Process(target=index_shard, args=(rank, WORLD, str(meta_paths[rank]), backend_args[rank], start))
        for rank in range(WORLD)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * WORLD


def check_store(meta: MetadataDB, backend: Any) -> None:
    """The merged store answers like the oracle over every track's vectors, and its hits resolve to the tracks."""
    ids, vecs = [], []
    for track in meta.iter_tracks():
        i = int(track.track_id[1:])
        ids.append(meta.track_vector_ids(track.id))
        vecs.append(track_vectors(i))
    all_ids, all_vecs = np.concatenate(ids), np.concatenate(vecs)
    assert len(backend) == TRACKS * (1 + WINDOWS) == all_ids.size == np.unique(all_ids).size
    oracle = create_backend("numpy", DIM)
    oracle.add(all_ids, all_vecs)
    queries = l2_normalize(np.random.default_rng(9).standard_normal((10, DIM)))
    np.testing.assert_array_equal(backend.search(queries, 10)[1], oracle.search(queries, 10)[1])
    # a window vector found by search points back to its track and start time
    target = meta.find_track("t41")
    assert target is not None
    window = meta.windows(target.id)[2]
    _, hit = backend.search(track_vectors(41)[3][None, :], 1)
    ref = meta.lookup_vectors(hit[0])[0]
    assert ref is not None and ref.track.track_id == "t41" and ref.start == window.start == 20.0


def test_faiss_shards_merge_into_one_store(tmp_path: Path) -> None:
    metas = [tmp_path / f"meta{r}.sqlite" for r in range(WORLD)]
    shards = [tmp_path / f"vectors{r}" for r in range(WORLD)]
    run_workers(metas, [{"name": "faiss", "save_to": str(shards[r])} for r in range(WORLD)], together=False)
    meta = merge_metadata(metas, tmp_path / "meta.sqlite")
    merge_shards(shards, tmp_path / "vectors", backend="faiss")
    check_store(meta, open_backend(tmp_path / "vectors"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_milvus_workers_write_one_collection_concurrently(tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for the server to accept connections
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else "server died"
                assert time.monotonic() < deadline, "milvus-lite server did not start"
                time.sleep(0.2)
        options = {"uri": uri, "collection": "tracks", "index_type": "FLAT"}
        metas = [tmp_path / f"meta{r}.sqlite" for r in range(WORLD)]
        run_workers(metas, [{"name": "milvus", "options": options}] * WORLD, together=True)
        meta = merge_metadata(metas, tmp_path / "meta.sqlite")
        backend = create_backend("milvus", DIM, **options)
        try:
            check_store(meta, backend)
            backend.save(tmp_path / "vectors")  # the saved store records the URI; reopening reconnects
        finally:
            backend.close()
        with open_backend(tmp_path / "vectors") as again:
            assert len(again) == TRACKS * (1 + WINDOWS)
    finally:
        server.terminate()
        server.wait(30)
