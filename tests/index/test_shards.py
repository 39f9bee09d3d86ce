"""Sharded indexing (:mod:`musicsearch.index.shards`), on one machine: worker processes stand for torchrun ranks
or machines.

* Vector and metadata shards: each worker saves its own FAISS vector shard and metadata shard, and the shards merge
  into one searchable store; or, with Milvus, the workers write to the same collection of one server at the same
  time (a ``milvus-lite server`` here; a Milvus cluster in production, reached by the same code with another URI).
  Both must equal the exact oracle over all the vectors.
* Whole shard stores: two processes each index their shard of one folder through the CLI at the same time, then
  the shard stores merge into a store that searches exactly like a store indexed in one process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_indexer import save_debug_model, write_tone_folder

from musicsearch.cli.main import main
from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import create_backend, l2_normalize, open_backend
from musicsearch.index.indexer import index_collection
from musicsearch.index.metadata import MetadataDB, StoreInfo, TrackInfo, merge_metadata
from musicsearch.index.shards import merge_shards, merge_stores, shard_of, shard_store_path
from musicsearch.index.sources import collect_source
from musicsearch.index.store import Store
from musicsearch.search.api import Searcher

pytest.importorskip("faiss")

WORLD = 2


# ------------------------------------------------------------------------------- vector and metadata shards

DIM = 24
TRACKS = 60
WINDOWS = 3
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


# ------------------------------------------------------------------------------------ whole shard stores

FREQS = (180, 260, 340, 430, 520, 640, 760, 900)
#: Two processes run the same float32 model, but BLAS may sum in another order (thread count, CPU features): the
#: unit vectors and cosines agree to a few float32 ulps of 1.0, never necessarily bit for bit (the determinism
#: promise: bit-identical for a repeat in one process, 1e-6 otherwise).
VEC_ATOL = 8 * float(np.finfo(np.float32).eps)  # 9.5e-7


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_debug_model(tmp_path_factory.mktemp("model") / "debug.safetensors", seed=0)


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tone_folder(tmp_path_factory.mktemp("music"), FREQS)


def index_rank(rank: int, music: str, store: str, model: str) -> None:
    """One worker process: rank 0 names its shard, the others read RANK/WORLD_SIZE as torchrun sets them."""
    if rank == 0:
        args = ["--shard", f"0/{WORLD}"]
    else:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD))
        args = ["--shard-from-env"]
    code = main(["index", music, "--store", store, "--model", model, "--workers", "0", "--map", "none", *args])
    if code != 0:
        raise SystemExit(code)


def test_shards_written_concurrently_merge_into_the_single_process_store(
    model_file: Path, music: Path, tmp_path: Path
) -> None:
    # the shard rule splits this folder, and every track goes to exactly one shard
    items, _ = collect_source(music)
    ranks = [shard_of(item.track_id, WORLD) for item in items]
    assert len(items) == len(FREQS) and set(ranks) == set(range(WORLD))
    assert ranks == [shard_of(item.track_id, WORLD) for item in collect_source(music)[0]]  # stable

    store = tmp_path / "music.store"
    ctx = mp.get_context("spawn")  # a fresh interpreter per rank, as on separate machines
    procs = [ctx.Process(target=index_rank, args=(r, str(music), str(store), str(model_file))) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0] * WORLD

    shards = [shard_store_path(store, (r, WORLD)) for r in range(WORLD)]
    for r, path in enumerate(shards):  # each shard holds its tracks only, under ids rank + WORLD·n
        with Store.open(path) as st:
            assert st.settings.shard == (r, WORLD)
            assert {t.track_id for t in st.db.iter_tracks()} == {
                it.track_id for it, k in zip(items, ranks, strict=True) if k == r
            }
            assert all(int(v) % WORLD == r for v in st.db.vector_ids())
            assert all(t.id % WORLD == r for t in st.db.iter_tracks())

    assert main(["index", "--merge", *map(str, shards), "--store", str(store), "--map", "none"]) == 0
    single = tmp_path / "single.store"
    index_collection(music, single, model=model_file, workers=0)

    with Store.open(store) as merged, Store.open(single) as ref:
        assert merged.settings.shard is None and merged.settings.info() == ref.settings.info()
        tracks = [t.track_id for t in merged.db.iter_tracks()]
        assert sorted(tracks) == sorted(it.track_id for it in items)  # every track, once
        ids = merged.db.vector_ids()
        assert np.unique(ids).size == ids.size == len(merged.tracks) + len(merged.windows)
        assert len(merged.tracks) == len(ref.tracks) and len(merged.windows) == len(ref.windows)
        assert np.array_equal(np.sort(merged.tracks.ids()), np.sort(merged.db.vector_ids(level="track")))
        assert merged.vector_file.read(ids)[1].all()
        for t in merged.db.iter_tracks():  # the same vectors as the single-process store, and every file playable
            r = ref.db.find_track(t.track_id)
            assert r is not None
            a, _ = merged.vector_file.read(merged.db.track_vector_ids(t.id))
            b, _ = ref.vector_file.read(ref.db.track_vector_ids(r.id))
            assert a.shape == b.shape  # the same window count
            np.testing.assert_allclose(a, b, rtol=0, atol=VEC_ATOL)
            assert merged.playable_path(t.id) == ref.playable_path(r.id)

    with Searcher.open(store) as ms, Searcher.open(single) as ss:
        for kwargs in ({"query": "a low tone"}, {"like": "t5.flac"}, {"query": "bright", "like": "sub/t3.wav"}):
            got, want = ms.search(k=len(FREQS), **kwargs).results, ss.search(k=len(FREQS), **kwargs).results
            assert [h.track_id for h in got] == [h.track_id for h in want]
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=0, atol=VEC_ATOL)
            assert [h.segment_start for h in got] == [h.segment_start for h in want]
            # calibration samples by content, so differently numbered stores calibrate alike up to float32
            # rounding: the scores, the query's cosine with the mean track, the spread and z0 each carry the
            # vectors' rounding (as large as the scores' measured difference, at least one float32 ulp at 1),
            # amplified by 1 / spread into z, and by at most slope / 4 into relevance
            cal = ms.calibration()
            ds = max(float(np.abs(np.subtract([h.score for h in got], [h.score for h in want])).max()),
                     float(np.finfo(np.float32).eps))  # fmt: skip
            rel = np.array([h.relevance for h in want])
            z = np.abs(np.log(rel / (1 - rel))) / cal.slope + max(abs(cal.text_z0), abs(cal.audio_z0))
            dz = 4 * ds / min(cal.text_sd, cal.audio_sd) * (1 + z)  # four terms, each ds / spread (scaled by z)
            tol = cal.slope / 4 * dz
            assert np.all(np.abs(np.array([h.relevance for h in got]) - rel) <= tol)

    # the merged store is an ordinary store: a rerun over the whole folder redoes nothing
    again = index_collection(music, store, workers=0)
    assert (again.added, again.updated, again.unchanged) == (0, 0, len(FREQS))


def test_merge_refuses_mixed_models_missing_ranks_and_wrong_shard(
    model_file: Path, music: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = save_debug_model(tmp_path / "other.safetensors", seed=1)
    store = tmp_path / "s"
    s0, s1 = shard_store_path(store, (0, WORLD)), shard_store_path(store, (1, WORLD))
    index_collection(music, s0, model=model_file, workers=0, shard=(0, WORLD))
    index_collection(music, s1, model=other, workers=0, shard=(1, WORLD))
    with pytest.raises(MusicSearchError, match="not comparable"):
        merge_stores([s0, s1], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()  # a refused merge leaves nothing behind
    with pytest.raises(MusicSearchError, match="exactly one store for each rank"):
        merge_stores([s0], tmp_path / "merged")
    with pytest.raises(MusicSearchError, match="shard 0 of 2"):  # a shard store keeps its shard
        index_collection(music, s0, workers=0)
    assert main(["index", str(music), "--store", str(store), "--shard", "2/2"]) == 2
    assert "0 <= K < N" in capsys.readouterr().err
    monkeypatch.delenv("RANK", raising=False)
    assert main(["index", str(music), "--store", str(store), "--shard-from-env"]) == 2  # no RANK: not under torchrun


def test_a_merge_tunes_nprobe_on_the_store_model_texts(
    model_file: Path, music: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from musicsearch.index.embedder import load_embedder
    from musicsearch.index.tuning import tuning_texts

    store = tmp_path / "s"
    shards = [shard_store_path(store, (r, WORLD)) for r in range(WORLD)]
    for r, path in enumerate(shards):  # 8 tracks in all: the merged track index passes the IVF threshold of 4
        index_collection(
            music, path, model=model_file, workers=0, shard=(r, WORLD), backend_options={"exact_threshold": 4}
        )
    merge_stores(shards, store)
    texts = len(tuning_texts(load_embedder(model_file)))
    with Store.open(store) as st:
        tuning = st.tracks.tuning  # type: ignore[attr-defined]
        assert st.tracks.mode == "ivf" and tuning is not None  # type: ignore[attr-defined]
        assert tuning.queries["text"] == texts  # the model's texts, not stored vectors only
        assert 1 <= tuning.queries["example"] <= len(FREQS)
        assert tuning.min_recall >= tuning.target

    # without tuning, or when the store's model is gone, the merge still succeeds and scans nlist/32 cells
    untuned = tmp_path / "untuned"
    merge_stores(shards, untuned, tune=False)
    with Store.open(untuned) as st:
        assert st.tracks.mode == "ivf" and st.tracks.tuning is None  # type: ignore[attr-defined]
    moved = model_file.with_name("moved.safetensors")
    model_file.rename(moved)
    try:
        with caplog.at_level("WARNING"):
            merge_stores(shards, tmp_path / "no-model")
    finally:
        moved.rename(model_file)
    with Store.open(tmp_path / "no-model") as st:
        assert st.tracks.mode == "ivf" and st.tracks.tuning is None  # type: ignore[attr-defined]
        assert len(st.tracks) == len(FREQS)
    assert "could not be loaded" in caplog.text and str(model_file) in caplog.text
