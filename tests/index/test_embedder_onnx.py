"""Indexing with ONNX Runtime: the export's audio tower gives torch's vectors (within float32 tolerance) and the
same rankings; a stale or damaged export falls back to torch with a warning; the decoding workers compute on one
thread and the model on the cores they leave; the pipeline gives the batched path's vectors."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.errors import MusicSearchError
from musicsearch.fileio import sha256_file
from musicsearch.index import indexer
from musicsearch.index.embedder import (
    DEFAULT_BATCH_ONNX,
    DEFAULT_BATCH_TORCH,
    Embedder,
    OnnxAudioEmbedder,
    available_cores,
    load_embedder,
    model_threads,
    open_index_embedder,
)
from musicsearch.index.indexer import index_collection
from musicsearch.index.store import Store
from musicsearch.models.checkpoint import save_model
from musicsearch.models.onnx import (
    AUDIO_FILE,
    EXPORT_FILE,
    PARITY_TOLERANCE,
    ExportedModel,
    export_dir_for,
    export_onnx,
    weights_of,
)
from musicsearch.models.registry import build_model, model_config

SR = 16000
# Raw embeddings of the export are within PARITY_TOLERANCE of torch's; a unit vector made from them moves by at most
# about 2·tol/|raw| (|raw| is O(1) here), and a cosine between two such vectors by about twice that.
UNIT_TOL = 4 * PARITY_TOLERANCE
SCORE_TOL = 2 * UNIT_TOL


def tone(freq: float, seconds: float, *, seed: int) -> np.ndarray:
    """A deterministic, music-like test signal: a tone with two harmonics, tremolo and a little seeded noise."""
    t = np.arange(round(seconds * SR)) / SR
    wave = sum(0.3 / h * np.sin(2 * np.pi * freq * h * t) for h in (1, 2, 3)) * (1 + 0.3 * np.sin(2 * np.pi * 0.7 * t))
    wave += 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return wave.astype(np.float32)


def write_collection(root: Path, n: int) -> Path:
    """``n`` tones of different pitch and length (1.2 to 3.4 s: one to four 1 s windows of the debug model)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(root / f"t{i:02d}.wav", tone(110.0 * 1.19**i, 1.2 + 0.2 * (i % 12), seed=i), SR)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(model file, cache root)``: a seeded debug model and its ONNX export in ``cache/onnx``."""
    root = tmp_path_factory.mktemp("onnx_index")
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    ckpt = root / "debug.safetensors"
    save_model(model, ckpt)
    found = weights_of(ckpt)
    assert found is not None
    export_onnx(model, export_dir_for(found[1], root=root / "cache" / "onnx"), weights_sha256=found[1])
    return ckpt, root / "cache"


@pytest.fixture
def onnx_on(exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Exports switched on (the suite runs with ``MUSICSEARCH_ONNX=0``) and the cache pointed at the fixture's."""
    monkeypatch.setenv("MUSICSEARCH_ONNX", "1")
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(exported[1]))
    return exported[0]


def track_vectors(store: Path) -> dict[str, np.ndarray]:
    """Every stored track vector by track id."""
    with Store.open(store) as st:
        ids = st.tracks.ids()
        vecs = st.tracks.get(ids)
        row = {int(v): i for i, v in enumerate(ids)}
        return {t.track_id: vecs[row[int(t.vector_id)]] for t in st.db.iter_tracks() if t.vector_id is not None}


def assert_same_ranking(ref_scores: np.ndarray, ref_ids: list[str], got_ids: list[str], tol: float) -> None:
    """``got_ids`` ranks as ``ref_ids`` (sorted by ``ref_scores``, descending) up to ties: each item may only trade
    places with items whose reference score is within ``tol`` of the one its rank holds."""
    assert len(got_ids) == len(ref_ids)
    by_id = dict(zip(ref_ids, ref_scores))
    for rank, tid in enumerate(got_ids):
        assert abs(by_id.get(tid, -np.inf) - ref_scores[rank]) <= tol, (rank, tid, got_ids, ref_ids)


# --- choosing the runtime --------------------------------------------------------------------------------------


def test_exports_are_used_only_when_switched_on(onnx_on: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = open_index_embedder(onnx_on)
    assert isinstance(fast, OnnxAudioEmbedder) and fast.runtime == "onnx"
    assert fast.batch_size == DEFAULT_BATCH_ONNX
    slow = load_embedder(onnx_on)
    assert (fast.name, fast.checksum, fast.dim, fast.window_samples) == (
        slow.name,
        slow.checksum,
        slow.dim,
        slow.window_samples,
    )
    monkeypatch.setenv("MUSICSEARCH_ONNX", "0")
    off = open_index_embedder(onnx_on)
    assert not isinstance(off, OnnxAudioEmbedder) and off.runtime == "torch"
    assert off.batch_size == DEFAULT_BATCH_TORCH
    assert open_index_embedder(onnx_on, onnx=True, batch_size=3).batch_size == 3


def test_a_model_without_an_export_runs_on_torch(onnx_on: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)  # other weights: no export of them, and not a shipped model (no export on first use)
    other = tmp_path / "other.safetensors"
    save_model(build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False), other)
    emb = open_index_embedder(other)
    assert emb.runtime == "torch"
    assert not any(Path(os.environ["MUSICSEARCH_CACHE"], "onnx").glob(weights_of(other)[1][:24] + "*"))  # type: ignore[index]


# --- parity ----------------------------------------------------------------------------------------------------


def test_onnx_embeds_files_as_torch_does(onnx_on: Path, tmp_path: Path) -> None:
    music = write_collection(tmp_path / "music", 4)
    fast, slow = open_index_embedder(onnx_on, batch_size=3), load_embedder(onnx_on, batch_size=3)
    plan = slow.plan()
    for f in sorted(music.iterdir()):
        track_f, windows_f, decoded = fast.embed_file(f, plan)
        track_s, windows_s, _ = slow.embed_file(f, plan)
        raw_f, raw_s = fast.embed_windows(decoded.windows), slow.embed_windows(decoded.windows)
        assert raw_f.shape == raw_s.shape == (decoded.windows.shape[0], slow.dim)
        assert np.abs(raw_f - raw_s).max() <= PARITY_TOLERANCE
        assert np.abs(track_f - track_s).max() <= UNIT_TOL
        assert np.abs(windows_f - windows_s).max() <= UNIT_TOL
    with pytest.raises(MusicSearchError, match="windows must be"):
        fast.embed_windows(np.zeros((2, fast.window_samples + 1), np.float32))
    with pytest.raises(MusicSearchError, match="batch size"):
        OnnxAudioEmbedder(fast.exported, source=str(onnx_on), batch_size=0)


def test_an_onnx_store_holds_torch_vectors_and_ranks_the_same(
    onnx_on: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    music = write_collection(tmp_path / "music", 14)
    rep_onnx = index_collection(music, tmp_path / "onnx", model=onnx_on, workers=0)
    monkeypatch.setenv("MUSICSEARCH_ONNX", "0")
    rep_torch = index_collection(music, tmp_path / "torch", model=onnx_on, workers=0)
    assert rep_onnx.added == rep_torch.added == 14 and not rep_onnx.failed
    with Store.open(tmp_path / "onnx") as st:  # the same model as far as the store knows
        assert st.settings.weights_checksum == weights_of(onnx_on)[1]  # type: ignore[index]
    a, b = track_vectors(tmp_path / "onnx"), track_vectors(tmp_path / "torch")
    assert sorted(a) == sorted(b)
    ids = sorted(a)
    va, vb = np.stack([a[t] for t in ids]), np.stack([b[t] for t in ids])  # (14, D) unit
    assert np.abs(va - vb).max() <= UNIT_TOL
    for q in range(len(ids)):  # each track as the query: the same top 10 from both stores, up to ties
        ref = vb @ vb[q]
        order_ref = np.argsort(-ref, kind="stable")[:10]
        order_got = np.argsort(-(va @ va[q]), kind="stable")[:10]
        assert_same_ranking(ref[order_ref], [ids[i] for i in order_ref], [ids[i] for i in order_got], SCORE_TOL)


# --- stale or damaged exports ----------------------------------------------------------------------------------


def _copy_cache(exported: tuple[Path, Path], tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(exported[1], cache)
    return cache


def test_a_stale_export_falls_back_to_torch_with_a_warning(
    exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt, _ = exported
    cache = _copy_cache(exported, tmp_path)
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(cache))
    monkeypatch.setenv("MUSICSEARCH_ONNX", "1")
    # the weights change after the export (one more training step, saved over the file): the export found under
    # the new checksum is the old one
    torch.manual_seed(2)
    ckpt2 = tmp_path / "retrained.safetensors"
    save_model(build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False), ckpt2)
    old_sha, new_sha = weights_of(ckpt)[1], weights_of(ckpt2)[1]  # type: ignore[index]
    shutil.copytree(export_dir_for(old_sha, root=cache / "onnx"), export_dir_for(new_sha, root=cache / "onnx"))
    with caplog.at_level(logging.WARNING, logger="musicsearch.index.embedder"):
        emb = open_index_embedder(ckpt2)
    assert emb.runtime == "torch" and emb.checksum == new_sha
    assert "was made from weights" in caplog.text and "Indexing with torch" in caplog.text
    windows = np.random.default_rng(0).uniform(-0.5, 0.5, (2, emb.window_samples)).astype(np.float32)
    np.testing.assert_array_equal(emb.embed_windows(windows), load_embedder(ckpt2).embed_windows(windows))


@pytest.mark.parametrize("damage", ["bytes", "graph"])
def test_a_damaged_export_falls_back_to_torch_with_a_warning(
    exported: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    ckpt, _ = exported
    cache = _copy_cache(exported, tmp_path)
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(cache))
    monkeypatch.setenv("MUSICSEARCH_ONNX", "1")
    folder = export_dir_for(weights_of(ckpt)[1], root=cache / "onnx")  # type: ignore[index]
    graph = folder / AUDIO_FILE
    data = bytearray(graph.read_bytes())
    if damage == "bytes":  # one bit flipped: the checksum in export.json no longer matches
        data[len(data) // 2] ^= 0x01
        graph.write_bytes(bytes(data))
        expected = "does not match its checksum"
    else:  # a truncated graph whose record was rewritten to match: ONNX Runtime refuses to load it
        graph.write_bytes(bytes(data[: len(data) // 3]))
        meta = json.loads((folder / EXPORT_FILE).read_text())
        meta["files"][AUDIO_FILE] = {"bytes": graph.stat().st_size, "sha256": sha256_file(graph)}
        (folder / EXPORT_FILE).write_text(json.dumps(meta))
        expected = "cannot be loaded"
    with caplog.at_level(logging.WARNING, logger="musicsearch.index.embedder"):
        emb = open_index_embedder(ckpt)
    assert emb.runtime == "torch"
    assert expected in caplog.text and "Indexing with torch" in caplog.text


# --- threads ---------------------------------------------------------------------------------------------------


def test_model_threads_are_the_cores_the_workers_leave() -> None:
    assert model_threads(0, cores=2) == 2
    assert model_threads(1, cores=2) == 1
    assert model_threads(4, cores=2) == 1  # never none
    assert model_threads(3, cores=16) == 13
    assert model_threads(1) == max(1, available_cores() - 1)


def test_decoding_workers_compute_on_one_thread() -> None:
    pool = indexer._pool(1)
    try:
        env = {name: pool.submit(os.getenv, name).result(timeout=60) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        assert env == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # torch is never imported by the workers; if something did import it there, it would start on 1 thread
        assert pool.submit(torch.get_num_threads).result(timeout=120) == 1
        try:
            import threadpoolctl
        except ImportError:
            return
        pools = pool.submit(threadpoolctl.threadpool_info).result(timeout=60)
        assert pools and all(p["num_threads"] == 1 for p in pools), pools  # numpy's BLAS at least
        assert pool.submit(functools.partial(os.getenv, "OPENBLAS_NUM_THREADS")).result(timeout=60) == "1"
    finally:
        pool.shutdown()


class _ThreadProbe(Embedder):
    """The torch model, noting how many intra-op threads each forward pass ran on."""

    seen: list[int]

    def _run_windows(self, windows: np.ndarray) -> np.ndarray:
        self.seen.append(torch.get_num_threads())
        return super()._run_windows(windows)


@pytest.mark.parametrize("workers", [0, 1])
def test_the_model_runs_on_the_cores_the_workers_leave(onnx_on: Path, tmp_path: Path, workers: int) -> None:
    music = write_collection(tmp_path / "music", 3)
    cores = available_cores()
    # every core when nothing decodes; the cores left by the decoders running at that moment otherwise
    allowed = {cores} if workers == 0 else {max(1, cores - k) for k in range(workers + 1)}
    base = load_embedder(onnx_on)
    probe = _ThreadProbe(base.model, name=base.name, checksum=base.checksum, source=base.source, batch_size=2)
    probe.seen = []
    before = torch.get_num_threads()
    index_collection(music, tmp_path / "torch", model=probe, workers=workers)
    assert probe.seen and set(probe.seen) <= allowed
    assert torch.get_num_threads() == before  # the process's setting is given back
    fast = open_index_embedder(onnx_on, threads=5)
    assert isinstance(fast, OnnxAudioEmbedder)
    sessions: list[int] = []
    run = fast._run_windows

    def noting(windows: np.ndarray) -> np.ndarray:
        sessions.append(fast.session().get_session_options().intra_op_num_threads)
        return run(windows)

    fast._run_windows = noting  # type: ignore[method-assign]
    index_collection(music, tmp_path / "onnx", model=fast, workers=workers)
    assert sessions and set(sessions) <= allowed
    assert fast.threads == 5  # the embedder's own setting is given back


def test_one_session_per_thread_count_is_made_once_and_kept(onnx_on: Path) -> None:
    fast = open_index_embedder(onnx_on, threads=1)
    assert isinstance(fast, OnnxAudioEmbedder)
    one = fast.session()
    with fast.using_threads(2):
        two = fast.session()
        assert fast.session() is two and two.get_session_options().intra_op_num_threads == 2
    assert fast.session() is one and one.get_session_options().intra_op_num_threads == 1  # the indexer switches


# --- the pipeline ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_the_pipeline_gives_the_batched_vectors(onnx_on: Path, tmp_path: Path, runtime: str) -> None:
    music = write_collection(tmp_path / "music", 9)
    emb = open_index_embedder(onnx_on, onnx=runtime == "onnx", batch_size=3)
    assert emb.runtime == runtime
    batched = index_collection(music, tmp_path / "batched", model=emb, workers=0, batch_size=3)
    piped = index_collection(music, tmp_path / "pipeline", model=emb, workers=2, batch_size=5)
    assert batched.added == piped.added == 9 and piped.workers == 2
    a, b = track_vectors(tmp_path / "batched"), track_vectors(tmp_path / "pipeline")
    assert sorted(a) == sorted(b)
    # the same runtime on the same windows, batched differently: float32 rounding of a few ulps only
    np.testing.assert_allclose(np.stack([a[t] for t in sorted(a)]), np.stack([b[t] for t in sorted(a)]), atol=1e-5)


@pytest.mark.slow
def test_the_shipped_default_is_exported_on_first_use_and_indexes_as_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MUSICSEARCH_ONNX", "1")
    fast = open_index_embedder("default")
    assert isinstance(fast, OnnxAudioEmbedder)
    assert (export_dir_for(fast.checksum, root=tmp_path / "cache" / "onnx") / EXPORT_FILE).is_file()
    # and the int8 export the query path prefers for texts: a query after this first index run finds it
    int8 = ExportedModel.open(export_dir_for(fast.checksum, int8=True, root=tmp_path / "cache" / "onnx"),
                              weights_sha256=fast.checksum)  # fmt: skip
    assert int8.meta.get("int8") and int8.has_text
    slow = load_embedder("default")
    windows = np.stack([tone(220.0 * (i + 1), fast.window_samples / SR, seed=i) for i in range(3)])
    assert np.abs(fast.embed_windows(windows) - slow.embed_windows(windows)).max() <= PARITY_TOLERANCE


def test_the_index_command_runs_on_the_export(
    onnx_on: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from musicsearch.cli.main import main

    windows_run: list[int] = []  # windows each ONNX Runtime call embedded
    run = OnnxAudioEmbedder._run_windows

    def noting(self: OnnxAudioEmbedder, windows: np.ndarray) -> np.ndarray:
        windows_run.append(windows.shape[0])
        return run(self, windows)

    monkeypatch.setattr(OnnxAudioEmbedder, "_run_windows", noting)
    music = write_collection(tmp_path / "music", 4)
    store = tmp_path / "store"
    assert main(["index", str(music), "--store", str(store), "--model", str(onnx_on), "--json", "--workers", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 4 and report["batch_size"] == DEFAULT_BATCH_ONNX
    assert sum(windows_run) == report["windows"]  # every window went through the export
    torch_store = tmp_path / "torch"
    index_collection(music, torch_store, model=load_embedder(onnx_on), workers=0)
    a, b = track_vectors(store), track_vectors(torch_store)
    assert np.abs(np.stack([a[t] for t in sorted(a)]) - np.stack([b[t] for t in sorted(a)])).max() <= UNIT_TOL
