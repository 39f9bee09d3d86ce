"""The mel front end against an independent NumPy computation (paper section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.audio.features import MelConfig, MelSpectrogram


def numpy_mel_db(
    wave: np.ndarray,
    *,
    real_part: bool,
    sr: int = 16000,
    n_fft: int = 1024,
    hop: int = 160,
    n_mels: int = 128,
    fmax: float = 8000.0,
) -> np.ndarray:
    """Straight-line reference: reflect pad, periodic Hann, rfft per frame, triangles built with loops, dB."""
    pad = n_fft // 2
    x = np.pad(wave.astype(np.float64), pad, mode="reflect")
    n_frames = 1 + (len(x) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.empty((n_fft // 2 + 1, n_frames))
    for f in range(n_frames):
        X = np.fft.rfft(x[f * hop : f * hop + n_fft] * window)
        spec[:, f] = X.real**2 if real_part else np.abs(X) ** 2
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
    return 10.0 * np.log10(np.maximum(fb.T @ spec, 1e-10))


@pytest.mark.parametrize("mode", ["power", "real_squared"])
def test_mel_matches_numpy_reference(mode: str) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + 0.05 * rng.standard_normal(16000)
    ref = numpy_mel_db(wave, real_part=mode == "real_squared")
    mel = MelSpectrogram(MelConfig(power_mode=mode))  # type: ignore[arg-type]
    out = mel(torch.from_numpy(wave.astype(np.float32))[None])[0].numpy()
    assert out.shape == ref.shape == (128, 101)
    np.testing.assert_allclose(out, ref, atol=0.02, rtol=0)


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
