"""Fixed-length windows of a waveform: padding, random crops, evenly spaced windows, silence checks.

The paper's encoder reads 9.91 s windows (158,560 samples at 16 kHz): one random window per track in training,
several evenly spaced windows (embeddings averaged) in evaluation and indexing. All functions are pure NumPy;
waveforms are ``(T,)`` float arrays at :data:`SAMPLE_RATE` unless stated otherwise.

Short clips are never dropped: a clip shorter than a window is zero-padded at the end to one full window.
"""

from __future__ import annotations

import math
import os

import numpy as np

from musicsearch.errors import AudioError

__all__ = [
    "SAMPLE_RATE",
    "SILENCE_DB",
    "WINDOW_SAMPLES",
    "WINDOW_SECONDS",
    "check_audible",
    "evenly_spaced_starts",
    "evenly_spaced_windows",
    "is_silent",
    "n_windows_for",
    "pad_to",
    "random_crop",
    "rms_db",
]

#: Sample rate of every waveform the models see, in Hz.
SAMPLE_RATE = 16000
#: Samples in one encoder input window (9.91 s at 16 kHz; gives 992 STFT frames with hop 160).
WINDOW_SAMPLES = 158_560
#: One window in seconds (9.91).
WINDOW_SECONDS = WINDOW_SAMPLES / SAMPLE_RATE
#: Floor of :func:`rms_db` (the level of an empty or all-zero waveform), in dB.
SILENCE_DB = -200.0


def _as_1d(wave: np.ndarray, name: str = "wave") -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"{name} must be a 1-D waveform (T,), got shape {wave.shape}")
    return wave


def pad_to(wave: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad a waveform at the end to at least ``length`` samples.

    Args:
        wave: ``(T,)`` waveform.
        length: the minimum length in samples (> 0).

    Returns:
        ``(max(T, length),)`` float32: a padded copy when ``T < length``; otherwise ``wave`` itself (as float32,
        never truncated).
    """
    wave = _as_1d(wave)
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if wave.shape[0] >= length:
        return wave.astype(np.float32, copy=False)
    out = np.zeros(length, dtype=np.float32)
    out[: wave.shape[0]] = wave
    return out


def random_crop(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One window at a uniformly random start (the training crop).

    Args:
        wave: ``(T,)`` waveform (a memory-mapped array is fine: only the window is read).
        length: window length in samples.
        rng: the random generator that picks the start (``T - length + 1`` equally likely starts).

    Returns:
        ``(length,)`` float32 copy; a clip shorter than ``length`` is zero-padded at the end (and ``rng`` is not
        drawn from).
    """
    wave = _as_1d(wave)
    n = wave.shape[0]
    if n <= length:
        return pad_to(np.array(wave, dtype=np.float32), length)
    start = int(rng.integers(0, n - length + 1))
    return np.array(wave[start : start + length], dtype=np.float32)


def evenly_spaced_starts(n_samples: int, length: int, n: int) -> np.ndarray:
    """Start samples of ``n`` evenly spaced windows over a clip: the first at 0, the last ending at the end.

    Args:
        n_samples: clip length in samples.
        length: window length in samples.
        n: number of windows wanted (>= 1).

    Returns:
        ``(k,)`` int64 starts, ``k = n``; when the clip is no longer than one window, ``k = 1`` and the only start
        is 0 (the clip is padded to one window). With ``n = 1`` the window starts at 0. Starts are
        ``round(i * (n_samples - length) / (n - 1))``; windows may overlap, and repeat when the clip is barely
        longer than a window.
    """
    if n < 1:
        raise ValueError(f"n (number of windows) must be >= 1, got {n}")
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if n_samples <= length or n == 1:
        return np.zeros(1, dtype=np.int64)
    return np.rint(np.linspace(0, n_samples - length, n)).astype(np.int64)


def evenly_spaced_windows(
    wave: np.ndarray, n: int, length: int = WINDOW_SAMPLES, *, sample_rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``n`` evenly spaced windows (the evaluation and indexing view of a track).

    Args:
        wave: ``(T,)`` waveform at ``sample_rate`` Hz.
        n: number of windows wanted (>= 1).
        length: window length in samples.
        sample_rate: rate of ``wave``, used only to express the starts in seconds.

    Returns:
        ``(windows, starts_seconds)``: ``(k, length)`` float32 windows and ``(k,)`` float64 start times in seconds,
        with ``k`` and the starts as in :func:`evenly_spaced_starts` (one zero-padded window for a short clip).
    """
    wave = _as_1d(wave)
    starts = evenly_spaced_starts(wave.shape[0], length, n)
    windows = np.zeros((starts.shape[0], length), dtype=np.float32)  # (k, length)
    for i, s in enumerate(starts):
        seg = wave[s : s + length]
        windows[i, : seg.shape[0]] = seg
    return windows, starts.astype(np.float64) / sample_rate


def n_windows_for(
    duration: float,
    hop_seconds: float = WINDOW_SECONDS,
    *,
    window_seconds: float = WINDOW_SECONDS,
    max_windows: int = 16,
) -> int:
    """How many evenly spaced windows cover a whole track with at most ``hop_seconds`` between starts.

    Args:
        duration: track length in seconds.
        hop_seconds: the largest wanted distance between window starts (the default, one window, tiles the
            track without gaps).
        window_seconds: window length in seconds.
        max_windows: cap on the count (long tracks are then covered more sparsely).

    Returns:
        ``min(max_windows, 1 + ceil((duration - window_seconds) / hop_seconds))``, and 1 for a track no longer
        than one window.
    """
    if hop_seconds <= 0 or window_seconds <= 0 or max_windows < 1:
        raise ValueError("hop_seconds and window_seconds must be positive and max_windows >= 1")
    if not math.isfinite(duration) or duration <= window_seconds:
        return 1
    # a small tolerance so that float error on exact multiples does not add a window
    n = 1 + math.ceil((duration - window_seconds) / hop_seconds - 1e-9)
    return max(1, min(max_windows, n))


def rms_db(wave: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (1.0).

    Args:
        wave: ``(T,)`` waveform (any float or int dtype; accumulated in float64).

    Returns:
        ``10 * log10(mean(wave ** 2))``, floored at :data:`SILENCE_DB` (-200 dB) for an empty or all-zero wave;
        never NaN for finite input.
    """
    wave = np.asarray(wave)
    if wave.size == 0:
        return SILENCE_DB
    power = float(np.mean(np.square(wave, dtype=np.float64)))
    if not power > 0.0:
        return SILENCE_DB
    return max(SILENCE_DB, 10.0 * math.log10(power))


def is_silent(wave: np.ndarray, threshold_db: float = -60.0) -> bool:
    """Whether a waveform's RMS level is below ``threshold_db`` (empty waves are silent)."""
    return rms_db(wave) < threshold_db


def check_audible(wave: np.ndarray, path: str | os.PathLike[str], threshold_db: float = -60.0) -> None:
    """Raise if a waveform is empty or silent, for callers that want an error rather than a silent embedding.

    Args:
        wave: ``(T,)`` waveform decoded from ``path``.
        path: the file it came from (named in the message).
        threshold_db: RMS level below which the waveform counts as silent.

    Raises:
        AudioError: naming the file and its level.
    """
    if np.asarray(wave).size == 0:
        raise AudioError(f"audio file {path} holds no samples; re-export it or remove it from the corpus")
    level = rms_db(wave)
    if level < threshold_db:
        raise AudioError(
            f"audio file {path} is silent (RMS {level:.1f} dB, below {threshold_db:.1f} dB); "
            f"check the file or remove it from the corpus"
        )
