"""A run killed with SIGKILL in the middle of indexing leaves a consistent store, and the next run resumes
without redoing the files that were committed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.index.embedder import load_embedder
from musicsearch.index.indexer import index_collection
from musicsearch.index.store import Store
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config

SR = 16000
N_FILES = 40


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    path = tmp_path_factory.mktemp("model") / "debug.safetensors"
    save_model(model, path)
    return path


def committed_tracks(store: Path) -> int:
    """Tracks committed so far, read like any other reader would (read-only, no lock)."""
    db = store / "metadata.sqlite"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def index_and_kill(music: Path, store: Path, model: Path, kill_at: int) -> int:
    """Run `musicsearch index` in a subprocess and SIGKILL it once ``kill_at`` tracks are committed."""
    cmd = [sys.executable, "-m", "musicsearch.cli.main", "index", str(music), "--store", str(store)]
    cmd += ["--model", str(model), "--workers", "1", "--batch-size", "4", "--commit-every", "2", "--map", "none"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while committed_tracks(store) < kill_at:
            assert proc.poll() is None, "the run finished before it could be killed; make it longer"
            assert time.monotonic() < deadline, "indexing made no progress"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    return committed_tracks(store)


def check_consistent(store_path: Path) -> int:
    """No committed track lacks a vector (orphan vectors may exist until the next writer repairs them)."""
    with Store.open(store_path) as store:
        assert np.setdiff1d(store.db.vector_ids(level="track"), store.tracks.ids()).size == 0
        assert np.setdiff1d(store.db.vector_ids(level="window"), store.windows.ids()).size == 0
        return len(store)


def test_resume_after_sigkill(model_file: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for i in range(N_FILES):
        t = np.arange(2 * SR) / SR
        sf.write(music / f"t{i:03d}.wav", (0.3 * np.sin(2 * np.pi * (100 + 37 * i) * t)).astype(np.float32), SR)
    store = tmp_path / "store"

    done1 = index_and_kill(music, store, model_file, kill_at=6)
    assert 6 <= done1 < N_FILES and check_consistent(store) == done1

    # a second run, killed again further on, redoes none of the first run's files
    done2 = index_and_kill(music, store, model_file, kill_at=done1 + 10)
    assert done1 + 10 <= done2 < N_FILES and check_consistent(store) == done2

    report = index_collection(music, store, workers=1)
    assert report.unchanged == done2 and report.added == N_FILES - done2 and not report.failed
    with Store.open(store) as st:
        assert len(st) == N_FILES
        assert np.array_equal(st.db.vector_ids(level="track"), st.tracks.ids())  # orphans repaired
        assert np.array_equal(st.db.vector_ids(level="window"), st.windows.ids())
        ids = st.tracks.ids()
        vecs = st.tracks.get(ids)
        emb = load_embedder(model_file)
        for rec in list(st.db.iter_tracks())[:: N_FILES // 6]:  # spot-check against a fresh embedding
            track, _, _ = emb.embed_file(rec.path, st.settings.plan)
            np.testing.assert_allclose(vecs[int(np.searchsorted(ids, rec.vector_id))], track, atol=1e-5)
