"""Embedding helpers shared by evaluation and indexing: windows -> embeddings, tracks -> one vector, texts.

Every function puts the model in eval mode for the call (restoring its previous mode afterwards), runs without
autograd, in fixed-size batches, and returns float32 NumPy arrays that are **not** L2-normalised (use
:func:`normalize`). The same input always gives the same output (the release's inference snippet never switched
to eval mode, so its embeddings changed from call to call).

A track embedding is the mean of its window embeddings **before** L2 normalisation, as in the paper
(section 4). Silent or empty audio never produces NaN: it is embedded like any other input (one zero-padded
window for an empty clip) and flagged (:attr:`TrackEmbedding.silent`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from musicsearch.audio.chunking import SAMPLE_RATE, evenly_spaced_windows, is_silent
from musicsearch.errors import MusicSearchError

__all__ = [
    "SILENCE_THRESHOLD_DB",
    "TrackEmbedding",
    "embed_texts",
    "embed_track",
    "embed_windows",
    "eval_mode",
    "model_device",
    "normalize",
    "track_windows",
]

#: RMS level (dB re full scale) below which a track is flagged as silent.
SILENCE_THRESHOLD_DB = -60.0


@dataclass(frozen=True)
class TrackEmbedding:
    """The embeddings of one track.

    Attributes:
        windows: ``(n, D)`` float32 window embeddings (not normalised).
        starts: ``(n,)`` float64 window start times in seconds from the start of the given waveform.
        track: ``(D,)`` float32 mean of ``windows`` (before L2 normalisation, as the paper).
        silent: the waveform is empty or quieter than :data:`SILENCE_THRESHOLD_DB` (its embedding is finite
            but says nothing about music).
    """

    windows: np.ndarray
    starts: np.ndarray
    track: np.ndarray
    silent: bool


def normalize(x: Any, *, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """L2-normalise along ``axis``; an all-zero vector stays zero (never NaN).

    Args:
        x: array of embeddings, e.g. ``(N, D)``.
        axis: the embedding axis.
        eps: norms below this are treated as ``eps``.

    Returns:
        float32 array of the same shape with unit-norm vectors (zero vectors unchanged).
    """
    a = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(a.astype(np.float64), axis=axis, keepdims=True)
    return (a / np.maximum(norm, eps)).astype(np.float32)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and disable autograd; restore its train/eval mode on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def _target_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    dev = model_device(model)
    if device is None:
        return dev
    want = torch.device(device)
    if want.type != dev.type or (want.index is not None and want.index != dev.index):
        model.to(want)
    return model_device(model)


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise MusicSearchError(f"batch_size must be >= 1, got {batch_size}")


def _check_finite(out: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(out).all():
        raise MusicSearchError(
            f"the model produced NaN/inf {what} embeddings; its weights are probably damaged "
            "(reload or retrain the checkpoint)"
        )
    return out


def embed_windows(
    model: Any,
    windows: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Embed fixed-length audio windows with ``model.encode_audio`` in batches (eval mode, no autograd).

    Args:
        model: a :class:`~musicsearch.models.dual_encoder.TextToMusic` (anything with ``encode_audio``).
        windows: ``(N, T)`` float waveform windows at 16 kHz, ``T = model.config.audio.window_samples``.
        batch_size: windows per forward pass.
        device: where to compute; default the model's device (a different device moves the model there).

    Returns:
        ``(N, D)`` float32 embeddings, not normalised; ``(0, D)`` for no windows.

    Raises:
        MusicSearchError: on a bad shape or batch size, or if the model returns NaN/inf.
    """
    _check_batch_size(batch_size)
    w = torch.as_tensor(windows)
    if w.ndim != 2:
        raise MusicSearchError(f"windows must be a (N, T) array of waveform windows, got shape {tuple(w.shape)}")
    dev = _target_device(model, device)
    dim = int(model.config.joint_dim) if hasattr(model, "config") else -1
    if w.shape[0] == 0:
        return np.zeros((0, max(dim, 0)), dtype=np.float32)
    parts = []
    with eval_mode(model):
        for a in range(0, w.shape[0], batch_size):
            batch = w[a : a + batch_size].to(device=dev, dtype=torch.float32)  # (b, T)
            parts.append(model.encode_audio(batch).float().cpu().numpy())  # (b, D)
    return _check_finite(np.concatenate(parts, axis=0).astype(np.float32, copy=False), "audio")


def track_windows(
    wave: np.ndarray, *, window_samples: int, n_windows: int, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced windows of a track (the evaluation and indexing view); a short clip gives one padded window.

    Args:
        wave: ``(T,)`` waveform at ``sample_rate`` Hz (may be empty: one all-zero window).
        window_samples: window length in samples (the model's ``config.audio.window_samples``).
        n_windows: windows wanted (>= 1); fewer come back for a clip no longer than one window.
        sample_rate: rate of ``wave``, for the start times.

    Returns:
        ``(windows, starts_seconds)``: ``(k, window_samples)`` float32 and ``(k,)`` float64, as
        :func:`musicsearch.audio.chunking.evenly_spaced_windows`.

    Raises:
        MusicSearchError: for a non-1-D wave or ``n_windows < 1``.
    """
    w = np.asarray(wave, dtype=np.float32)
    if w.ndim != 1:
        raise MusicSearchError(f"a track waveform must be 1-D (T,), got shape {w.shape}")
    if n_windows < 1:
        raise MusicSearchError(f"n_windows must be >= 1, got {n_windows}")
    return evenly_spaced_windows(w, n_windows, window_samples, sample_rate=sample_rate)


def embed_track(
    model: Any,
    wave: np.ndarray,
    *,
    n_windows: int,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> TrackEmbedding:
    """Embed one track: evenly spaced windows -> window embeddings -> their mean.

    Args:
        model: the model (its ``config.audio.window_samples`` sets the window length).
        wave: ``(T,)`` float waveform at 16 kHz (empty or silent input is flagged, never NaN).
        n_windows: evenly spaced windows (the paper: 3 for retrieval, 8 for transfer).
        batch_size: windows per forward pass.
        device: see :func:`embed_windows`.

    Returns:
        A :class:`TrackEmbedding`.
    """
    windows, starts = track_windows(wave, window_samples=model.config.audio.window_samples, n_windows=n_windows)
    emb = embed_windows(model, windows, batch_size=batch_size, device=device)  # (k, D)
    track = emb.astype(np.float64).mean(axis=0).astype(np.float32)  # (D,)
    return TrackEmbedding(emb, starts, track, silent=is_silent(np.asarray(wave), SILENCE_THRESHOLD_DB))


def embed_texts(
    model: Any,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Embed texts with ``model.encode_text`` in batches (eval mode, no autograd).

    For a classification model the texts must be tags of its vocabulary (their classifier rows come back).

    Args:
        model: the model.
        texts: N strings.
        batch_size: texts per forward pass.
        device: see :func:`embed_windows`.

    Returns:
        ``(N, D)`` float32 embeddings, not normalised.

    Raises:
        ConfigError: a classification model and a text outside its vocabulary.
        MusicSearchError: a bad batch size, a non-string text, or NaN/inf output.
    """
    _check_batch_size(batch_size)
    items = list(texts)
    if not all(isinstance(t, str) for t in items):
        raise MusicSearchError("texts must be strings")
    _target_device(model, device)
    if not items:
        return np.zeros((0, int(model.config.joint_dim)), dtype=np.float32)
    parts = []
    with eval_mode(model):
        for a in range(0, len(items), batch_size):
            parts.append(model.encode_text(items[a : a + batch_size]).float().cpu().numpy())
    return _check_finite(np.concatenate(parts, axis=0).astype(np.float32, copy=False), "text")
