"""The library face (``musicsearch.load_model`` / ``embed_audio`` / ``embed_text`` / ``index`` / ``search``): its
vectors checked against the model run by hand on windows cut by the indexer's formula, its wrappers against the
functions they wrap, its errors against bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import musicsearch
from conftest import make_tone
from musicsearch.errors import AudioError, CheckpointError, MusicSearchError
from musicsearch.index.embedder import SilentAudioError
from musicsearch.library import AudioEmbedding, Model
from musicsearch.search.api import search as api_search

SR = 16000
#: float32 embeddings of the same windows through different batch groupings agree to this (cosine space)
TOL = 1e-5


@pytest.fixture(scope="module")
def model() -> Model:
    return musicsearch.load_model()


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _oracle_windows(wave: np.ndarray, w: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The indexer's rule written out: ``n`` windows of ``w`` samples at ``round(i (T - w) / (n - 1))``."""
    t = wave.shape[0]
    starts = [0] if n == 1 else [round(i * (t - w) / (n - 1)) for i in range(n)]
    return np.stack([wave[s : s + w] for s in starts]), np.asarray(starts, dtype=np.float64) / SR


def test_import_is_cheap_and_offers_the_face() -> None:
    probe = (
        "import json, sys, musicsearch; "
        "print(json.dumps({'heavy': sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'faiss', 'fastapi', "
        "'soundfile') if m in sys.modules), 'callable': [callable(musicsearch.search), callable(musicsearch.index)], "
        "'all': musicsearch.__all__}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout)
    assert got["heavy"] == [] and got["callable"] == [True, True]
    assert {"load_model", "search", "index", "Model", "AudioEmbedding"} <= set(got["all"])
    assert musicsearch.load_model is musicsearch.library.load_model
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = musicsearch.nope  # type: ignore[attr-defined]


def test_embed_audio_follows_the_index_rule(model: Model, tmp_path: Path) -> None:
    w = model.embedder.window_samples
    wave = make_tone(330.0, "square", loud=True, noisy=True, seconds=2.5 * w / SR)  # 2.5 windows -> 3 windows
    path = tmp_path / "tone.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    got = model.embed_audio(str(path))
    assert isinstance(got, AudioEmbedding)
    windows, starts = _oracle_windows(wave.astype(np.float32), w, 3)
    with torch.inference_mode():
        raw = model.embedder.model.encode_audio(torch.from_numpy(windows)).double().numpy()  # (3, D)
    assert got.windows.shape == (3, model.dim) and got.windows.dtype == np.float32
    assert got.track.shape == (model.dim,) and got.track.dtype == np.float32
    np.testing.assert_allclose(got.starts, starts, atol=1e-9)
    assert got.duration == pytest.approx(wave.shape[0] / SR)
    np.testing.assert_allclose(got.windows, _unit(raw), atol=TOL)
    np.testing.assert_allclose(got.track, _unit(raw.mean(axis=0)), atol=TOL)
    # the same samples as an array give the same vectors; at another rate they are resampled first
    same = model.embed_audio(wave, sample_rate=SR)
    np.testing.assert_allclose(same.windows, got.windows, atol=TOL)
    np.testing.assert_allclose(same.starts, got.starts, atol=1e-9)
    up = model.embed_audio(np.repeat(wave, 2), sample_rate=2 * SR)
    assert up.windows.shape == got.windows.shape and up.duration == pytest.approx(got.duration, abs=1e-3)
    assert float(up.track @ got.track) > 0.9
    # fewer windows when asked
    assert model.embed_audio(wave, sample_rate=SR, max_windows=1).windows.shape == (1, model.dim)


def test_embed_text_gives_unit_rows_of_the_text_tower(model: Model) -> None:
    texts = ["calm piano", "drum and bass, loud", "a sad song for a rainy evening"]
    got = model.embed_text(texts)
    assert got.shape == (3, model.dim) and got.dtype == np.float32
    with torch.inference_mode():
        want = _unit(model.embedder.model.encode_text(texts).double().numpy())
    np.testing.assert_allclose(got, want, atol=TOL)
    np.testing.assert_allclose(model.embed_text("calm piano"), got[:1], atol=TOL)


def test_bad_input_says_what_to_do(model: Model, tmp_path: Path) -> None:
    wave = make_tone(440.0, "sine", loud=True, noisy=False, seconds=1.0)
    with pytest.raises(MusicSearchError, match="needs its sample_rate"):
        model.embed_audio(wave)
    with pytest.raises(MusicSearchError, match=r"\(T,\) mono waveform, got shape \(2, 16000\)"):
        model.embed_audio(np.stack([wave, wave]), sample_rate=SR)
    with pytest.raises(AudioError, match="no samples"):
        model.embed_audio(np.zeros(0, np.float32), sample_rate=SR)
    with pytest.raises(SilentAudioError, match="silent"):
        model.embed_audio(np.zeros(SR, np.float32), sample_rate=SR)
    with pytest.raises(MusicSearchError, match="leave sample_rate out"):
        model.embed_audio(tmp_path / "x.wav", sample_rate=SR)
    with pytest.raises(AudioError):
        model.embed_audio(tmp_path / "missing.wav")
    with pytest.raises(MusicSearchError, match="no texts"):
        model.embed_text([])
    with pytest.raises(MusicSearchError, match="takes strings, got int"):
        model.embed_text(["jazz", 3])  # type: ignore[list-item]
    with pytest.raises(CheckpointError, match="no model at"):
        musicsearch.load_model(tmp_path / "nothing-here")


def test_index_and_search_wrap_the_library_functions(model: Model, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for i, (freq, kind) in enumerate([(220.0, "sine"), (440.0, "square"), (880.0, "sine")]):
        sf.write(music / f"t{i}.wav", make_tone(freq, kind, loud=True, noisy=i == 1, seconds=4.0), SR)
    store = tmp_path / "store"
    report = musicsearch.index(music, store, model=model, backend="numpy", workers=0)
    assert report.added == 3 and not report.failed
    with pytest.raises(MusicSearchError, match="no option colour"):
        musicsearch.index(music, store, colour="red")
    got = musicsearch.search(store, "calm piano", k=3)
    want = api_search(store, "calm piano", k=3)
    assert [(r.track_id, r.rank) for r in got] == [(r.track_id, r.rank) for r in want]
    assert [r.relevance for r in got] == pytest.approx([r.relevance for r in want], abs=1e-6)
    like = musicsearch.search(store, k=1, like=str(music / "t1.wav"), model=model)
    assert Path(like[0].path).name == "t1.wav"
    # a file embedded by the library is the vector the indexer stored for it: it finds itself at cosine ~1
    assert like[0].score == pytest.approx(1.0, abs=1e-4)
