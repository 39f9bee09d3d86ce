"""Embedding helpers: eval mode and determinism, batching against one big batch, windows, silence, texts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.models.inference import (
    embed_texts,
    embed_track,
    embed_windows,
    normalize,
    track_windows,
)
from musicsearch.models.registry import build_model, model_config


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("debug", objective="contrastive", text_encoder="tiny-bert"))


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("debug", objective="classification", tags=("rock", "jazz", "calm")))


def _waves(n: int, t: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((n, t))).astype(np.float32)


def test_embed_windows_is_deterministic_and_restores_training_mode(model: torch.nn.Module) -> None:
    w = _waves(5, model.config.audio.window_samples)
    model.train()  # dropout active: a call outside eval mode would differ from call to call
    a = embed_windows(model, w)
    b = embed_windows(model, torch.from_numpy(w))
    assert model.training  # restored
    assert a.dtype == np.float32 and a.shape == (5, model.config.joint_dim)
    assert np.array_equal(a, b)
    model.eval()
    with torch.no_grad():
        direct = model.encode_audio(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(a, direct, rtol=1e-5, atol=1e-6)


def test_batching_matches_one_batch(model: torch.nn.Module) -> None:
    w = _waves(7, model.config.audio.window_samples, seed=1)
    one = embed_windows(model, w, batch_size=64)
    small = embed_windows(model, w, batch_size=3)
    np.testing.assert_allclose(small, one, rtol=1e-5, atol=1e-6)
    assert embed_windows(model, w[:0]).shape == (0, model.config.joint_dim)
    with pytest.raises(MusicSearchError):
        embed_windows(model, w[0])  # 1-D
    with pytest.raises(MusicSearchError):
        embed_windows(model, w, batch_size=0)


def test_track_windows_evenly_spaced_and_padded() -> None:
    wave = np.arange(50, dtype=np.float32)
    windows, starts = track_windows(wave, window_samples=20, n_windows=3, sample_rate=10)
    assert windows.shape == (3, 20)
    np.testing.assert_allclose(starts, [0.0, 1.5, 3.0])  # starts 0, 15, 30 samples at 10 Hz
    assert np.array_equal(windows[2], wave[30:50])
    short, s = track_windows(wave[:7], window_samples=20, n_windows=3, sample_rate=10)
    assert short.shape == (1, 20) and s.tolist() == [0.0]
    assert np.array_equal(short[0, :7], wave[:7]) and not short[0, 7:].any()
    with pytest.raises(MusicSearchError):
        track_windows(wave, window_samples=20, n_windows=0)


def test_embed_track_is_the_mean_of_its_windows(model: torch.nn.Module) -> None:
    t = model.config.audio.window_samples
    wave = _waves(1, 3 * t + 123, seed=2)[0]
    emb = embed_track(model, wave, n_windows=4)
    assert emb.windows.shape == (4, model.config.joint_dim) and emb.starts.shape == (4,)
    windows, _ = track_windows(wave, window_samples=t, n_windows=4)
    np.testing.assert_allclose(emb.windows, embed_windows(model, windows), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb.track, emb.windows.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert not emb.silent
    again = embed_track(model, wave, n_windows=4)
    assert np.array_equal(again.track, emb.track)


@pytest.mark.parametrize("wave", [np.zeros(0, np.float32), np.zeros(16000, np.float32), np.full(500, 1e-6, np.float32)])
def test_silent_and_empty_audio_is_finite_and_flagged(model: torch.nn.Module, wave: np.ndarray) -> None:
    emb = embed_track(model, wave, n_windows=3)
    assert emb.silent
    assert np.isfinite(emb.track).all() and np.isfinite(emb.windows).all()
    assert np.isfinite(normalize(emb.track)).all()


def test_normalize_unit_norm_and_zero_safe() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    n = normalize(x)
    np.testing.assert_allclose(n[0], [0.6, 0.8], rtol=1e-6)
    assert np.array_equal(n[1], [0.0, 0.0])
    assert n.dtype == np.float32


def test_embed_texts_batched_and_deterministic(model: torch.nn.Module) -> None:
    texts = ["jazz", "calm piano", "a loud square wave", "rock", "x"]
    a = embed_texts(model, texts, batch_size=2)
    b = embed_texts(model, texts, batch_size=64)
    assert a.shape == (5, model.config.joint_dim) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.array_equal(a, embed_texts(model, texts, batch_size=2))
    assert embed_texts(model, []).shape == (0, model.config.joint_dim)


def test_classification_texts_are_classifier_rows(classifier: torch.nn.Module) -> None:
    rows = embed_texts(classifier, ["jazz", "rock"])
    w = classifier.tag_embeddings().detach().numpy()
    assert np.array_equal(rows, w[[1, 0]])
    with pytest.raises(ConfigError):
        embed_texts(classifier, ["bossa nova"])


class _Broken(torch.nn.Module):
    """A model whose audio tower returns NaN (damaged weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.full((wave.shape[0], 4), float("nan")) * self.w


def test_nan_output_is_an_error() -> None:
    with pytest.raises(MusicSearchError, match="NaN"):
        embed_windows(_Broken(), np.zeros((2, 10), np.float32))
