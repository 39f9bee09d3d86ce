"""The paper's mel front end: STFT -> (power) -> 128 HTK mel bins 0-8 kHz -> dB.

Shapes: a ``(B, T)`` float32 waveform at 16 kHz becomes a ``(B, n_mels, frames)`` dB mel spectrogram with
``frames = T // hop + 1`` (centred STFT with reflect padding); a 9.91 s window (158,560 samples) gives 992 frames.

Submodule and buffer names follow the published checkpoints (paper.md section 11):
``spec_fn.window`` [n_fft] and ``mel_scale.fb`` [n_fft // 2 + 1, n_mels].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

PowerMode = Literal["power", "real_squared"]


@dataclass(frozen=True)
class MelConfig:
    """Parameters of the mel front end (defaults: the paper's).

    Attributes:
        sample_rate: input rate in Hz.
        n_fft: FFT size and window length in samples.
        hop_length: hop in samples.
        n_mels: number of mel bins.
        f_min: lowest mel edge in Hz.
        f_max: highest mel edge in Hz.
        power_mode: ``"power"`` for |X|^2; ``"real_squared"`` for Re(X)^2, the published release's quirk,
            needed to reproduce its checkpoints.
        amin: floor before the log, as in ``10 * log10(max(x, amin))``.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8000.0
    power_mode: PowerMode = "power"
    amin: float = 1e-10


def hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + hz / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def htk_mel_filterbank(*, sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Triangular HTK mel filters without area normalisation.

    Returns:
        ``(n_fft // 2 + 1, n_mels)`` float32 matrix; ``power_spec.T @ fb`` gives the mel spectrogram.
    """
    n_freqs = n_fft // 2 + 1
    all_freqs = np.linspace(0.0, sample_rate / 2.0, n_freqs)
    m_pts = np.linspace(hz_to_mel_htk(np.array(f_min)), hz_to_mel_htk(np.array(f_max)), n_mels + 2)
    f_pts = mel_to_hz_htk(m_pts)
    f_diff = np.diff(f_pts)  # (n_mels + 1,)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    return fb.astype(np.float32)


class _Spectrogram(nn.Module):
    """Centred STFT holding its periodic Hann ``window`` buffer."""

    def __init__(self, n_fft: int, hop_length: int, power_mode: PowerMode) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.power_mode = power_mode
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # wave: (B, T) -> spec: (B, n_fft // 2 + 1, frames)
        window: torch.Tensor = self.window  # type: ignore[assignment]
        stft = torch.stft(
            wave.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=window.float(),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        if self.power_mode == "real_squared":
            return stft.real.pow(2)
        return stft.real.pow(2) + stft.imag.pow(2)


class _MelScale(nn.Module):
    """Applies the ``fb`` buffer ``(n_freqs, n_mels)`` to a ``(B, n_freqs, frames)`` spectrogram."""

    def __init__(self, fb: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("fb", torch.from_numpy(fb))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        fb: torch.Tensor = self.fb  # type: ignore[assignment]
        # (B, F, N) -> (B, N, F) @ (F, M) -> (B, N, M) -> (B, M, N)
        return torch.matmul(spec.transpose(1, 2), fb).transpose(1, 2)


class MelSpectrogram(nn.Module):
    """Waveform ``(B, T)`` at 16 kHz -> dB mel ``(B, n_mels, T // hop + 1)``, float32.

    Args:
        config: the front-end parameters.
    """

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        self.spec_fn = _Spectrogram(c.n_fft, c.hop_length, c.power_mode)
        self.mel_scale = _MelScale(
            htk_mel_filterbank(sample_rate=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, f_min=c.f_min, f_max=c.f_max)
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"expected a (batch, samples) waveform, got shape {tuple(wave.shape)}")
        with torch.autocast(device_type=wave.device.type, enabled=False):
            mel = self.mel_scale(self.spec_fn(wave.float()))
            return 10.0 * torch.log10(torch.clamp(mel, min=self.config.amin))
