"""The musicnn taggers (Pons and Serra, 2019) in PyTorch, loaded from the TensorFlow checkpoints of PyPI ``musicnn``.

This is a port of ``musicnn/models.py`` and ``musicnn/extractor.py`` (musicnn 0.1.0, ISC licence, (c) Music
Technology Group, Universitat Pompeu Fabra 2019). The weights are the package's own files, read with
:mod:`musicsearch.teachers.tfbundle`; TensorFlow is not needed.

Input pipeline (``extractor.batch_data``): 16 kHz mono -> centred STFT (n_fft 512, hop 256, periodic Hann) ->
power -> 96 Slaney mel bands (librosa's default filterbank: Slaney scale, area normalisation, 0-8 kHz) ->
rounded to float16 (as the extractor does) -> ``log10(1 + 10000 * mel)`` in float32 -> non-overlapping patches of
187 frames (3 s), laid out ``(patch, time, mel)``. See docs/musicnn.md for why the log is taken in float32 and the
STFT padded by reflection (the software of 2019 did so; today's numpy and librosa change both).

Network layout. TensorFlow runs NHWC with H = time, W = mel band; here tensors are NCHW ``(B, C, time, mel)``
in the front end and ``(B, C, time)`` after the frequency max-pool. Batch norm is TF1
``tf.compat.v1.layers.batch_normalization`` in inference mode: ``(x - moving_mean) / sqrt(moving_variance +
0.001) * gamma + beta`` over the channel axis.

- ``musicnn`` (``build_musicnn``, ``'7774timbraltemporal'``): input BN -> five branches, each conv + ReLU + BN +
  max over all mel bands: two timbral convs (kernels 7x38 and 7x67, 204 filters, time padded 3+3, 'valid') and
  three temporal convs (kernels 128x1, 64x1, 32x1, 51 filters, 'same') -> concat to 561 channels -> mid-end:
  three 1-D convs of 64 filters, kernel 7 (time padded 3+3) with ReLU + BN, the 2nd and 3rd residual -> dense
  concat of [front end, conv1, res2, res3] = 753 channels -> back end: max and mean over time, interleaved
  (``[max_0, mean_0, max_1, ...]``, TF's concat-then-flatten order) = 1506 -> BN -> dense 200 + ReLU -> BN
  (the "penultimate" features) -> dense 50 (logits) -> sigmoid.
- ``vgg`` (``vgg``): input BN -> five blocks of 3x3 'same' conv (128 filters) + ReLU + BN + max-pool
  ((4,1)/(2,2), (2,2)/(2,2) x3, (4,4)/(4,4)) -> flatten in NHWC order (2 x 1 x 128 = 256) -> dense 50.

Dropout layers of the original are identity at inference and are omitted.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from musicsearch.errors import CheckpointError, ConfigError
from musicsearch.teachers.tfbundle import list_bundle, read_bundle

__all__ = [
    "MODEL_NAMES",
    "MSD_LABELS",
    "MTT_LABELS",
    "N_FRAMES",
    "FrontEndConfig",
    "Musicnn",
    "MusicnnOutput",
    "MusicnnVGG",
    "build_model",
    "checkpoint_prefix",
    "hz_to_mel_slaney",
    "labels_for",
    "load_pretrained",
    "load_tf_weights",
    "log_mel",
    "log_mel_batch",
    "mel_to_hz_slaney",
    "musicnn_package_dir",
    "patches",
    "slaney_mel_filterbank",
]

log = logging.getLogger(__name__)

# Tag vocabularies, in output order, as in musicnn/configuration.py.
MTT_LABELS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing",
    "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop",
    "soft", "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice",
    "female vocal", "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip
MSD_LABELS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock",
    "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy",
)  # fmt: skip

#: The checkpoints PyPI ``musicnn`` 0.1.0 ships (``MSD_musicnn_big`` only comes with a source install).
MODEL_NAMES: tuple[str, ...] = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")
#: Frames per patch: ``librosa.time_to_frames(3 s, sr=16000, n_fft=512, hop_length=256) + 1``.
N_FRAMES = 187
_BN_EPS = 1e-3  # TF1 batch_normalization's default epsilon

PadMode = Literal["reflect", "constant"]


def labels_for(name: str) -> tuple[str, ...]:
    """The 50 tags of a model, in output order (``MTT_*``: MagnaTagATune, ``MSD_*``: Million Song Dataset).

    Raises:
        ConfigError: ``name`` is not one of :data:`MODEL_NAMES`.
    """
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown musicnn model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return MTT_LABELS if name.startswith("MTT") else MSD_LABELS


# --- input representation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrontEndConfig:
    """The spectrogram musicnn was trained on (``musicnn/configuration.py``).

    Attributes:
        sample_rate: Hz.
        n_fft: FFT size and (periodic Hann) window length in samples.
        hop_length: samples between frames.
        n_mels: Slaney mel bands from 0 Hz to ``sample_rate / 2``.
        pad_mode: how the centred STFT pads the signal ends: ``"reflect"`` as librosa < 0.10 did when the
            models were trained (the default), ``"constant"`` (zeros) as librosa >= 0.10 does. Only the
            first and last frame differ.
        float16: round the mel spectrogram to float16 before the log, as ``extractor.batch_data`` does
            (``astype(np.float16)``; the default, which matches TensorFlow's outputs 17x closer); the log itself
            is taken in float32 (see :func:`log_mel`).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    pad_mode: PadMode = "reflect"
    float16: bool = True


def hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, logarithmic above.

    ``mel = hz / (200 / 3)`` below 1000 Hz, ``15 + log(hz / 1000) / (log(6.4) / 27)`` above.
    """
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = hz / f_sp
    with np.errstate(divide="ignore"):
        logpart = min_log_mel + np.log(np.maximum(hz, 1e-300) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, logpart, linear)


def mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def slaney_mel_filterbank(
    *, sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> np.ndarray:
    """Triangular mel filters on the Slaney scale with Slaney (area) normalisation: librosa's default
    ``librosa.filters.mel(sr, n_fft, n_mels)`` (``htk=False, norm="slaney"``).

    Each triangle rises from band edge ``i`` to ``i + 1`` and falls to ``i + 2`` of ``n_mels + 2`` edges equally
    spaced in mel, and is scaled by ``2 / (f[i + 2] - f[i])`` (Hz) so every filter has the same area.

    Args:
        sample_rate: Hz.
        n_fft: FFT size; the filters cover its ``n_fft // 2 + 1`` bins from 0 to ``sample_rate / 2``.
        n_mels: number of bands.
        f_min: lowest edge in Hz.
        f_max: highest edge in Hz (``sample_rate / 2`` when ``None``).

    Returns:
        ``(n_fft // 2 + 1, n_mels)`` float32; ``power.T @ fb`` gives the mel spectrogram.
    """
    f_max = sample_rate / 2.0 if f_max is None else f_max
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz_slaney(
        np.linspace(hz_to_mel_slaney(np.array(f_min)), hz_to_mel_slaney(np.array(f_max)), n_mels + 2)
    )
    fdiff = np.diff(edges)  # (n_mels + 1,)
    ramps = edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, n_freqs)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return np.ascontiguousarray(weights.T).astype(np.float32)


_FB_CACHE: dict[tuple[int, int, int], torch.Tensor] = {}


def _filterbank(cfg: FrontEndConfig) -> torch.Tensor:
    key = (cfg.sample_rate, cfg.n_fft, cfg.n_mels)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = torch.from_numpy(
            slaney_mel_filterbank(sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
        )
    return _FB_CACHE[key]


def log_mel(wave: np.ndarray | torch.Tensor, config: FrontEndConfig | None = None) -> torch.Tensor:
    """musicnn's input representation of a whole recording, in float32.

    ``log10(1 + 10000 * mel)`` of the power mel spectrogram. With ``config.float16`` the mel is rounded to float16
    first (the extractor's ``astype(np.float16)``); the extractor then also evaluates ``10000 * mel`` in float16,
    which overflows to ``inf`` for mel values above 6.55, so here the log is always taken in float32.

    Args:
        wave: ``(T,)`` float waveform at ``config.sample_rate`` (16 kHz), mono.
        config: the front end (defaults: :class:`FrontEndConfig`).

    Returns:
        ``(frames, n_mels)`` float32 with ``frames = T // hop_length + 1``.
    """
    cfg = config or FrontEndConfig()
    x = torch.as_tensor(wave, dtype=torch.float32)
    if x.dim() != 1:
        raise ValueError(f"expected a (samples,) mono waveform, got shape {tuple(x.shape)}")
    pad = cfg.n_fft // 2
    if cfg.pad_mode == "reflect" and x.numel() <= pad:
        padded = F.pad(x[None, None], (pad, pad), mode="constant")[0, 0]  # too short to reflect
    else:
        padded = F.pad(x[None, None], (pad, pad), mode=cfg.pad_mode)[0, 0]
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float32)
    spec = torch.stft(
        padded, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=window, center=False, return_complex=True
    )
    power = spec.real.square() + spec.imag.square()  # (n_freqs, frames)
    mel = power.T @ _filterbank(cfg)  # (frames, n_mels)
    if cfg.float16:
        mel = mel.half().float()
    return torch.log10(1.0 + 10000.0 * mel)


def log_mel_batch(wave: torch.Tensor, config: FrontEndConfig | None = None) -> torch.Tensor:
    """:func:`log_mel` of a batch of equal-length windows, differentiable and on the input's device.

    Args:
        wave: ``(B, T)`` float32 waveforms at ``config.sample_rate`` (16 kHz), ``T > n_fft // 2`` with reflection
            padding.
        config: the front end (defaults: :class:`FrontEndConfig`).

    Returns:
        ``(B, frames, n_mels)`` float32 with ``frames = T // hop_length + 1``; row ``b`` equals
        ``log_mel(wave[b])`` up to float32 rounding of the batched STFT.
    """
    cfg = config or FrontEndConfig()
    if wave.dim() != 2:
        raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(wave.shape)}")
    pad = cfg.n_fft // 2
    mode = cfg.pad_mode if wave.shape[1] > pad else "constant"
    padded = F.pad(wave.float().unsqueeze(1), (pad, pad), mode=mode).squeeze(1)  # (B, T + 2 pad)
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float32, device=wave.device)
    spec = torch.stft(
        padded, n_fft=cfg.n_fft, hop_length=cfg.hop_length, window=window, center=False, return_complex=True
    )  # (B, n_freqs, frames)
    power = spec.real.square() + spec.imag.square()
    mel = power.transpose(1, 2) @ _filterbank(cfg).to(wave.device)  # (B, frames, n_mels)
    if cfg.float16:
        mel = mel.half().float()
    return torch.log10(1.0 + 10000.0 * mel)


def patches(rep: torch.Tensor, n_frames: int = N_FRAMES, hop: int | None = None) -> torch.Tensor:
    """Cut a ``(frames, n_mels)`` representation into patches as ``extractor.batch_data`` does.

    Patches start at ``0, hop, 2 * hop, ...`` while a whole patch fits; the tail that does not fill a patch is
    dropped. A representation shorter than one patch is repeated (tiled) to one patch, like the training
    pipeline's ``"repeat-pad"`` (the original extractor fails on such input).

    Args:
        rep: ``(frames, n_mels)``.
        n_frames: frames per patch (187 = 3 s).
        hop: frames between patch starts (``n_frames``: no overlap).

    Returns:
        ``(n_patches, n_frames, n_mels)``, a view where possible.
    """
    hop = n_frames if hop is None else hop
    if rep.shape[0] < n_frames:
        reps = -(-n_frames // rep.shape[0])
        rep = rep.repeat(reps, 1)[:n_frames]
    return rep.unfold(0, n_frames, hop).transpose(1, 2)


# --- networks ----------------------------------------------------------------------------------------------------


@dataclass
class MusicnnOutput:
    """What one forward pass gives (names as the extractor's ``features`` dict).

    Attributes:
        logits: ``(B, n_classes)`` before the sigmoid.
        penultimate: ``(B, 200)`` the back end's batch-normalised dense layer (musicnn); for VGG the flattened
            last pooling ``(B, 256)`` (``pool5``).
        mean_pool: ``(B, 753)`` time-mean of the mid-end features (musicnn only).
        max_pool: ``(B, 753)`` time-max of the mid-end features (musicnn only).
        pooled: ``(B, 1506)`` the batch-normalised max and mean pool, interleaved (the back end's input;
            musicnn only).
    """

    logits: torch.Tensor
    penultimate: torch.Tensor
    mean_pool: torch.Tensor | None = None
    max_pool: torch.Tensor | None = None
    pooled: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        """``sigmoid(logits)``: the taggram rows."""
        return torch.sigmoid(self.logits)


def _bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS)


def _bn1d(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=_BN_EPS)


class _FreqPoolBranch(nn.Module):
    """conv2d + ReLU + BN, then max over every mel band: ``(B, 1, T, M) -> (B, filters, T)``."""

    def __init__(self, filters: int, kernel: tuple[int, int], time_pad: tuple[int, int]) -> None:
        super().__init__()
        self.time_pad = time_pad
        self.conv = nn.Conv2d(1, filters, kernel)
        self.bn = _bn2d(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, *self.time_pad))  # pad time only: (B, 1, T + pads, M)
        x = self.bn(F.relu(self.conv(x)))  # (B, filters, T, M')
        return x.amax(dim=3)  # (B, filters, T)


class _MidEndConv(nn.Module):
    """The mid-end's conv over all channels (TF: a 2-D conv whose kernel spans the whole feature axis)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 7, padding=3)
        self.bn = _bn1d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Musicnn(nn.Module):
    """The musicnn tagger (``build_musicnn`` with ``num_filt_midend`` 64, ``num_units_backend`` 200).

    Args:
        n_classes: output tags (50).
        n_mels: input bands (96).
        midend_filters: filters of each mid-end conv (64 for the shipped models).
        backend_units: units of the penultimate dense layer (200).
    """

    def __init__(
        self, n_classes: int = 50, n_mels: int = 96, midend_filters: int = 64, backend_units: int = 200
    ) -> None:
        super().__init__()
        timbral = int(1.6 * 128)  # 204
        temporal = int(1.6 * 32)  # 51
        self.bn_input = _bn2d(1)
        self.timbral_74 = _FreqPoolBranch(timbral, (7, int(0.4 * n_mels)), (3, 3))
        self.timbral_77 = _FreqPoolBranch(timbral, (7, int(0.7 * n_mels)), (3, 3))
        # TF 'same' for an even kernel k pads (k - 1) // 2 before and k // 2 after.
        self.temporal_128 = _FreqPoolBranch(temporal, (128, 1), (63, 64))
        self.temporal_64 = _FreqPoolBranch(temporal, (64, 1), (31, 32))
        self.temporal_32 = _FreqPoolBranch(temporal, (32, 1), (15, 16))
        front = 2 * timbral + 3 * temporal  # 561
        self.mid1 = _MidEndConv(front, midend_filters)
        self.mid2 = _MidEndConv(midend_filters, midend_filters)
        self.mid3 = _MidEndConv(midend_filters, midend_filters)
        pooled = 2 * (front + 3 * midend_filters)  # 1506
        self.bn_pool = _bn1d(pooled)
        self.dense = nn.Linear(pooled, backend_units)
        self.bn_dense = _bn1d(backend_units)
        self.out = nn.Linear(backend_units, n_classes)

    def forward(self, x: torch.Tensor) -> MusicnnOutput:
        """``x``: ``(B, T, n_mels)`` log-mel patches (T = 187 for the trained models; any T >= 1 runs)."""
        x = self.bn_input(x.unsqueeze(1))  # (B, 1, T, M)
        branches = [self.timbral_74, self.timbral_77, self.temporal_128, self.temporal_64, self.temporal_32]
        front = torch.cat([b(x) for b in branches], dim=1)  # (B, 561, T)
        c1 = self.mid1(front)  # (B, 64, T)
        r2 = self.mid2(c1) + c1
        r3 = self.mid3(r2) + r2
        feats = torch.cat([front, c1, r2, r3], dim=1)  # (B, 753, T)
        max_pool = feats.amax(dim=2)
        mean_pool = feats.mean(dim=2)
        pooled = self.bn_pool(torch.stack([max_pool, mean_pool], dim=2).flatten(1))  # (B, 1506), TF's order
        penultimate = self.bn_dense(F.relu(self.dense(pooled)))  # (B, 200)
        return MusicnnOutput(self.out(penultimate), penultimate, mean_pool, max_pool, pooled)


class MusicnnVGG(nn.Module):
    """musicnn's VGG-like baseline (``vgg`` with 128 filters); needs 187 x 96 input patches.

    Args:
        n_classes: output tags (50).
        filters: filters per conv layer (128).
    """

    _POOLS: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = (
        ((4, 1), (2, 2)),
        ((2, 2), (2, 2)),
        ((2, 2), (2, 2)),
        ((2, 2), (2, 2)),
        ((4, 4), (4, 4)),
    )

    def __init__(self, n_classes: int = 50, filters: int = 128) -> None:
        super().__init__()
        self.bn_input = _bn2d(1)
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5))
        self.bns = nn.ModuleList(_bn2d(filters) for _ in range(5))
        self.out = nn.Linear(2 * 1 * filters, n_classes)

    def forward(self, x: torch.Tensor) -> MusicnnOutput:
        """``x``: ``(B, 187, 96)`` log-mel patches."""
        if x.shape[1:] != (N_FRAMES, 96):
            raise ValueError(f"the VGG models need (B, {N_FRAMES}, 96) patches, got {tuple(x.shape)}")
        h = self.bn_input(x.unsqueeze(1))  # (B, 1, 187, 96)
        for conv, bn, (k, s) in zip(self.convs, self.bns, self._POOLS):
            h = F.max_pool2d(bn(F.relu(conv(h))), k, s)
        # (B, 128, 2, 1) -> NHWC flatten, as tf.layers.flatten: (B, 256)
        flat = h.permute(0, 2, 3, 1).flatten(1)
        return MusicnnOutput(self.out(flat), flat)


def build_model(name: str) -> Musicnn | MusicnnVGG:
    """An untrained network of the architecture ``name`` uses (see :data:`MODEL_NAMES`)."""
    labels = labels_for(name)
    return MusicnnVGG(len(labels)) if name.endswith("_vgg") else Musicnn(len(labels))


# --- weights -----------------------------------------------------------------------------------------------------


def musicnn_package_dir() -> Path:
    """The installed ``musicnn`` package folder, found without importing it (its modules import TensorFlow).

    Raises:
        CheckpointError: ``musicnn`` is not installed.
    """
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "the musicnn checkpoints are not installed; run `pip install --no-deps musicnn` "
            "(the package data is all that is used; TensorFlow is not needed)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def checkpoint_prefix(name: str, root: str | Path | None = None) -> str:
    """The TF checkpoint prefix of a shipped model: ``<musicnn>/<name>/`` (its files are ``.index`` and
    ``.data-00000-of-00001`` inside that folder).

    Args:
        name: one of :data:`MODEL_NAMES`.
        root: a folder holding ``<name>/`` instead of the installed package.

    Raises:
        ConfigError: unknown name. CheckpointError: the files are missing.
    """
    labels_for(name)
    base = Path(root) if root is not None else musicnn_package_dir()
    folder = base / name
    if not (folder / ".index").is_file():
        raise CheckpointError(f"no musicnn checkpoint at {folder} (expected {folder / '.index'}); reinstall musicnn")
    return str(folder) + "/"


def _conv2d(k: np.ndarray) -> np.ndarray:
    return np.transpose(k, (3, 2, 0, 1))  # TF (kh, kw, in, out) -> torch (out, in, kh, kw)


def _conv_as_1d(k: np.ndarray) -> np.ndarray:
    return np.transpose(k[:, :, 0, :], (2, 1, 0))  # TF (7, C, 1, out) -> torch Conv1d (out, C, 7)


def _dense(k: np.ndarray) -> np.ndarray:
    return k.T  # TF (in, out) -> torch Linear (out, in)


def _tf_to_torch_names(model: Musicnn | MusicnnVGG) -> list[tuple[str, str, str]]:
    """``(tf_variable, torch_parameter, kind)`` for every weight, in the TF graph's layer-creation order."""
    rows: list[tuple[str, str, str]] = []

    def bn(tf_name: str, torch_name: str) -> None:
        for tf_v, t_v in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            rows.append((f"{tf_name}/{tf_v}", f"{torch_name}.{t_v}", "vector"))

    def layer(tf_name: str, torch_name: str, kind: str) -> None:
        rows.append((f"{tf_name}/kernel", f"{torch_name}.weight", kind))
        rows.append((f"{tf_name}/bias", f"{torch_name}.bias", "vector"))

    bn("batch_normalization", "bn_input")
    if isinstance(model, Musicnn):
        # Creation order in build_musicnn: input BN, then conv + BN per branch / mid-end layer, then the back end.
        seq = ["timbral_74", "timbral_77", "temporal_128", "temporal_64", "temporal_32", "mid1", "mid2", "mid3"]
        for i, mod in enumerate(seq):
            conv = "conv2d" if i == 0 else f"conv2d_{i}"
            layer(conv, f"{mod}.conv", "conv1d" if mod.startswith("mid") else "conv2d")
            bn(f"batch_normalization_{i + 1}", f"{mod}.bn")
        bn("batch_normalization_9", "bn_pool")
        layer("dense", "dense", "dense")
        bn("batch_normalization_10", "bn_dense")
        layer("dense_1", "out", "dense")
    else:
        for i in range(5):
            layer(f"{i + 1}CNN", f"convs.{i}", "conv2d")
            bn(f"batch_normalization_{i + 1}", f"bns.{i}")
        layer("dense", "out", "dense")
    return rows


def _is_optimizer_state(name: str) -> bool:
    return name.endswith(("/Adam", "/Adam_1")) or name in {"beta1_power", "beta2_power", "global_step"}


def load_tf_weights(model: Musicnn | MusicnnVGG, tensors: dict[str, np.ndarray], *, source: str = "checkpoint") -> None:
    """Copy TF variables into ``model``, strictly.

    Every torch parameter and batch-norm statistic must get exactly one TF variable of the right shape, and every
    TF variable that is not Adam optimizer state must be used.

    Args:
        model: the network to fill (modified in place).
        tensors: ``{tf_variable_name: array}`` as :func:`~musicsearch.teachers.tfbundle.read_bundle` returns.
        source: what to name in error messages.

    Raises:
        CheckpointError: missing, unused or mis-shaped variables.
    """
    state = model.state_dict()
    rows = _tf_to_torch_names(model)
    targets = {t for _, t, _ in rows}
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    if targets != expected:  # a mapping bug, not a bad file
        raise RuntimeError(f"musicnn weight map out of sync: {sorted(targets ^ expected)}")
    convert = {"conv2d": _conv2d, "conv1d": _conv_as_1d, "dense": _dense, "vector": lambda a: a}
    missing = [tf for tf, _, _ in rows if tf not in tensors]
    unused = sorted(n for n in tensors if not _is_optimizer_state(n) and n not in {tf for tf, _, _ in rows})
    if missing or unused:
        raise CheckpointError(
            f"{source} does not match the {type(model).__name__} architecture: missing variables {missing}, "
            f"unused variables {unused}; is it the right model name?"
        )
    new_state: dict[str, torch.Tensor] = {}
    for tf_name, torch_name, kind in rows:
        arr = convert[kind](np.asarray(tensors[tf_name], dtype=np.float32))
        want = tuple(state[torch_name].shape)
        if arr.shape != want:
            raise CheckpointError(
                f"{source}: variable {tf_name!r} has shape {tensors[tf_name].shape} (as torch {arr.shape}), "
                f"but {torch_name} needs {want}"
            )
        new_state[torch_name] = torch.from_numpy(np.ascontiguousarray(arr))
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            new_state[k] = v
    model.load_state_dict(new_state, strict=True)


def load_pretrained(name: str = "MTT_musicnn", *, root: str | Path | None = None) -> Musicnn | MusicnnVGG:
    """A shipped musicnn model with its trained weights, in eval mode.

    Args:
        name: one of :data:`MODEL_NAMES`.
        root: folder holding ``<name>/.index`` (default: the installed ``musicnn`` package).

    Returns:
        The network (``forward(patches (B, 187, 96)) -> MusicnnOutput``).

    Raises:
        ConfigError: unknown name. CheckpointError: missing or mismatching checkpoint files.
    """
    model = build_model(name)
    prefix = checkpoint_prefix(name, root)
    wanted = [tf for tf, _, _ in _tf_to_torch_names(model)]
    _, entries = list_bundle(prefix)
    all_names = {e.name for e in entries}
    extra = [n for n in all_names if not _is_optimizer_state(n) and n not in set(wanted)]
    tensors = read_bundle(prefix, names=[n for n in wanted if n in all_names] + extra)
    load_tf_weights(model, tensors, source=f"checkpoint {prefix}")
    log.debug("loaded %s from %s", name, prefix)
    return model.eval()
