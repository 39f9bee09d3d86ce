"""The mel front end against an independent NumPy computation (paper section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.audio.features import MelConfig, MelSpectrogram


def numpy_mel_power(
    wave: np.ndarray,
    *,
    real_part: bool,
    sr: int = 16000,
    n_fft: int = 1024,
    hop: int = 160,
    n_mels: int = 128,
    fmax: float = 8000.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Straight-line float64 reference: reflect pad, periodic Hann, rfft per frame, triangles built with loops.

    Returns:
        ``(mel, mel_sq, spectrum_norm2)``: ``(n_mels, frames)`` mel power ``M = sum_k f_k P_k``, ``(n_mels,
        frames)`` ``sum_k f_k^2 P_k`` (for the error model), and ``(frames,)`` the squared L2 norm of each frame's
        full (two-sided) spectrum, ``||X||^2 = n_fft * sum((x * w)^2)`` (Parseval).
    """
    pad = n_fft // 2
    x = np.pad(wave.astype(np.float64), pad, mode="reflect")
    n_frames = 1 + (len(x) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.empty((n_fft // 2 + 1, n_frames))
    norm2 = np.empty(n_frames)
    for f in range(n_frames):
        frame = x[f * hop : f * hop + n_fft] * window
        X = np.fft.rfft(frame)
        spec[:, f] = X.real**2 if real_part else np.abs(X) ** 2
        norm2[f] = n_fft * np.sum(frame**2)
    mel = lambda h: 2595.0 * np.log10(1.0 + h / 700.0)  # noqa: E731
    imel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = [imel(mel(0.0) + (mel(fmax) - mel(0.0)) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, fr in enumerate(freqs):
            if lo < fr <= c:
                fb[k, m] = (fr - lo) / (c - lo)
            elif c < fr < hi:
                fb[k, m] = (hi - fr) / (hi - c)
    return fb.T @ spec, (fb**2).T @ spec, norm2


def numpy_mel_db(wave: np.ndarray, *, real_part: bool) -> np.ndarray:
    """The reference in dB: ``10 * log10(max(mel, 1e-10))``."""
    mel, _, _ = numpy_mel_power(wave, real_part=real_part)
    return 10.0 * np.log10(np.maximum(mel, 1e-10))


U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32, 2^-24


def float32_mel_tolerance_db(mel: np.ndarray, mel_sq: np.ndarray, norm2: np.ndarray, n_fft: int) -> np.ndarray:
    """Per-bin dB tolerance of the float32 mel front end against the float64 reference, from float32 arithmetic.

    The error of a bin is mostly *absolute*, set by its frame's whole energy, so in dB it grows as the bin falls
    toward the floor; a fixed dB tolerance is too tight for quiet bins on another CPU's FFT kernel (a -68 dB bin
    0.024 dB off) and far too loose for loud ones. Two parts:

    * FFT rounding (statistical model, Higham ch. 24 / the usual ``sqrt(n) u`` rule): each of the ``log2 N``
      butterfly stages adds an error of rms ``<= c u`` (``c = 2``: a complex multiply-add) relative to the data's
      norm, and rounding the waveform and the window to float32 adds ``u / sqrt(3)`` each. Spread evenly over the
      N bins: ``sigma = u ||X||_2 / sqrt(N) * sqrt(c^2 log2 N + 2/3)`` per bin (also bounding ``Re X_k``'s error).
      The mel bin ``M = sum_k f_k |X_k|^2`` then has error rms ``2 sigma sqrt(sum_k f_k^2 P_k)``; measured on this
      signal its errors have a median of 0.16 of that (a Gaussian would give 0.67), so the model is already
      about 4x generous. We allow ``K = 6`` of it: 13,000 bins per test, and other CPUs' FFT kernels (MKL or
      pocketfft, AVX2 or AVX-512) round differently; on this machine the worst bin uses 0.37 of the tolerance
      at ``K = 4`` over six seeds.
    * Relative roundings (worst case): the float32 filterbank (``u``), the squaring (``2 u``), the mel product
      over <= 513 bins (``513 u``), and the float32 dB value (``u |dB|`` dB, i.e. ``0.23 u |dB|`` in power).

    ``dB tolerance = 10 log10(1 + dM / M)`` with ``dM`` the sum of both, on ``max(M, 1e-10)`` (the floor).
    """
    k_sigma = 6.0
    m = np.maximum(mel, 1e-10)
    sigma = U32 * np.sqrt(norm2 / n_fft)[None, :] * np.sqrt(4.0 * np.log2(n_fft) + 2.0 / 3.0)  # (1, frames)
    statistical = k_sigma * 2.0 * sigma * np.sqrt(mel_sq)
    relative = (516.0 + 0.23 * np.abs(10.0 * np.log10(m))) * U32 * m
    return 10.0 * np.log10(1.0 + (statistical + relative) / m)


def _test_wave(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    return 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + 0.05 * rng.standard_normal(16000)


@pytest.mark.parametrize("mode", ["power", "real_squared"])
def test_mel_matches_numpy_reference(mode: str) -> None:
    wave = _test_wave()
    mel, mel_sq, norm2 = numpy_mel_power(wave, real_part=mode == "real_squared")
    ref = 10.0 * np.log10(np.maximum(mel, 1e-10))
    front = MelSpectrogram(MelConfig(power_mode=mode))  # type: ignore[arg-type]
    out = front(torch.from_numpy(wave.astype(np.float32))[None])[0].numpy()
    assert out.shape == ref.shape == (128, 101)
    tol = float32_mel_tolerance_db(mel, mel_sq, norm2, n_fft=1024)
    err = np.abs(out.astype(np.float64) - ref)
    worst = np.unravel_index(np.argmax(err / tol), err.shape)
    assert np.all(err <= tol), f"bin {worst}: {ref[worst]:.1f} dB, off by {err[worst]:.4f} dB > {tol[worst]:.4f}"
    # the tolerance still means something: bins within 20 dB of their frame's top are held to 0.002 dB, and even
    # the quietest bin (-68 dB in real_squared mode) to under 0.5 dB
    loud = ref >= ref.max(axis=0, keepdims=True) - 20.0
    assert tol[loud].max() < 0.002 and tol.max() < 0.5


def test_float32_mel_tolerance_catches_a_small_real_error() -> None:
    """A front end 0.1 % off in amplitude (0.009 dB everywhere) fails the tolerance."""
    wave = _test_wave()
    mel, mel_sq, norm2 = numpy_mel_power(wave, real_part=False)
    ref = 10.0 * np.log10(np.maximum(mel, 1e-10))
    scaled = MelSpectrogram(MelConfig())(torch.from_numpy((wave * 1.001).astype(np.float32))[None])[0].numpy()
    assert np.any(np.abs(scaled - ref) > float32_mel_tolerance_db(mel, mel_sq, norm2, n_fft=1024))


def test_window_gives_992_frames_and_quirk_differs() -> None:
    wave = torch.randn(1, 158_560)
    a = MelSpectrogram(MelConfig())(wave)
    b = MelSpectrogram(MelConfig(power_mode="real_squared"))(wave)
    assert a.shape == (1, 128, 992)
    assert not torch.allclose(a, b)
    assert torch.all(a >= b - 1e-3)  # Re(X)^2 <= |X|^2 in every bin


def test_buffers_named_like_the_release() -> None:
    names = dict(MelSpectrogram().named_buffers())
    assert names["spec_fn.window"].shape == (1024,)
    assert names["mel_scale.fb"].shape == (513, 128)
