"""A music tagger and baseline audio embedding from the pretrained musicnn models (no TensorFlow needed).

>>> tagger = MusicnnTagger.load("MTT_musicnn")          # doctest: +SKIP
>>> tagger.top_tags("song.ogg", k=5)                     # doctest: +SKIP
[('classical', 0.667), ('violin', 0.529), ...]

A recording is cut into 3 s patches (187 frames, no overlap by default, the tail that does not fill a patch is
dropped, a recording shorter than 3 s is repeated to 3 s); every patch gets 50 tag probabilities (the taggram
rows) and a feature vector (the penultimate layer: 200-d for musicnn, 256-d for VGG).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from musicsearch.audio.io import load_audio
from musicsearch.errors import AudioError
from musicsearch.teachers.musicnn import (
    N_FRAMES,
    FrontEndConfig,
    Musicnn,
    MusicnnVGG,
    labels_for,
    load_pretrained,
    log_mel,
    patches,
)

__all__ = ["MusicnnTagger", "TaggerOutput"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaggerOutput:
    """Per-patch results for one recording.

    Attributes:
        tags: the model's 50 tag names, in column order.
        probs: ``(n_patches, 50)`` float32 sigmoid probabilities (the taggram).
        embeddings: ``(n_patches, dim)`` float32 penultimate features (200 for musicnn, 256 for VGG).
        starts: ``(n_patches,)`` start time of each patch in seconds.
    """

    tags: list[str]
    probs: np.ndarray
    embeddings: np.ndarray
    starts: np.ndarray

    def mean_probs(self) -> np.ndarray:
        """``(50,)`` probabilities averaged over patches."""
        return self.probs.mean(axis=0)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` tags with the highest patch-averaged probability, best first (ties: lower column first)."""
        mean = self.mean_probs()
        order = np.argsort(-mean, kind="stable")[: max(0, k)]
        return [(self.tags[i], float(mean[i])) for i in order]


class MusicnnTagger:
    """A loaded musicnn model with its input pipeline.

    Args:
        name: the model's name (see :data:`musicsearch.teachers.musicnn.MODEL_NAMES`).
        model: the network, in eval mode.
        front_end: the spectrogram settings (defaults reproduce the original extractor).
        batch_size: patches per forward pass (bounds memory: about 10 MB per musicnn patch).
    """

    def __init__(
        self,
        name: str,
        model: Musicnn | MusicnnVGG,
        *,
        front_end: FrontEndConfig | None = None,
        batch_size: int = 16,
    ) -> None:
        self.name = name
        self.tags: list[str] = list(labels_for(name))
        self.model = model.eval()
        self.front_end = front_end or FrontEndConfig()
        self.batch_size = batch_size

    @classmethod
    def load(
        cls,
        name: str = "MTT_musicnn",
        *,
        root: str | os.PathLike[str] | None = None,
        front_end: FrontEndConfig | None = None,
        batch_size: int = 16,
    ) -> MusicnnTagger:
        """Load a shipped model from the installed ``musicnn`` package's checkpoint files.

        Args:
            name: ``"MTT_musicnn"`` (MagnaTagATune tags), ``"MSD_musicnn"`` (Million Song Dataset tags),
                ``"MTT_vgg"`` or ``"MSD_vgg"``.
            root: folder holding ``<name>/.index`` instead of the installed package.
            front_end: spectrogram settings (default: as the original extractor).
            batch_size: patches per forward pass.

        Raises:
            ConfigError: unknown name. CheckpointError: ``musicnn`` not installed or its files corrupt.
        """
        model = load_pretrained(name, root=None if root is None else Path(root))
        return cls(name, model, front_end=front_end, batch_size=batch_size)

    @property
    def embedding_dim(self) -> int:
        """Size of the vectors :meth:`embed` returns (200 for musicnn, 256 for VGG)."""
        return 256 if isinstance(self.model, MusicnnVGG) else self.model.dense.out_features

    def _check_wave(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(wave, dtype=torch.float32)
        if x.dim() != 1:
            raise AudioError(f"expected a mono (samples,) waveform at 16 kHz, got shape {tuple(x.shape)}")
        if x.numel() == 0:
            raise AudioError("the waveform is empty; musicnn needs some audio (3 s or more is best)")
        if not bool(torch.isfinite(x).all()):
            raise AudioError("the waveform holds NaN or infinite samples; decode the file again")
        return x

    @torch.inference_mode()
    def analyze(self, wave: np.ndarray | torch.Tensor, *, hop_frames: int | None = None) -> TaggerOutput:
        """Tag probabilities and penultimate features of every 3 s patch of a recording.

        Args:
            wave: ``(T,)`` float32 mono waveform at 16 kHz, in [-1, 1].
            hop_frames: frames between patch starts (default 187: no overlap; 62 gives a patch every ~1 s).

        Returns:
            :class:`TaggerOutput` with ``n_patches = max(1, (frames - 187) // hop + 1)``, ``frames = T // 256 + 1``.

        Raises:
            AudioError: not a finite, non-empty 1-D waveform.
        """
        hop = N_FRAMES if hop_frames is None else int(hop_frames)
        if hop < 1:
            raise AudioError(f"hop_frames must be >= 1, got {hop_frames}")
        batch = self.patches(wave, hop_frames=hop)
        probs, feats = self.run_patches(batch)
        starts = np.arange(batch.shape[0], dtype=np.float64) * hop * self.front_end.hop_length
        return TaggerOutput(
            tags=list(self.tags), probs=probs, embeddings=feats, starts=starts / self.front_end.sample_rate
        )

    def patches(self, wave: np.ndarray | torch.Tensor, *, hop_frames: int = N_FRAMES) -> torch.Tensor:
        """The model's input for a 16 kHz waveform: ``(n_patches, 187, 96)`` log-mel patches, ``hop_frames``
        apart (a recording shorter than one patch is repeated to one).

        Raises:
            AudioError: not a finite, non-empty 1-D waveform.
        """
        return patches(log_mel(self._check_wave(wave), self.front_end), N_FRAMES, hop_frames)

    @torch.inference_mode()
    def run_patches(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Tag probabilities ``(P, 50)`` and penultimate features ``(P, dim)`` (float32) of a ``(P, 187, 96)``
        patch batch, ``batch_size`` patches per forward pass."""
        probs, feats = [], []
        for i in range(0, batch.shape[0], self.batch_size):
            out = self.model(batch[i : i + self.batch_size].contiguous())
            probs.append(out.probs)
            feats.append(out.penultimate)
        return (torch.cat(probs).numpy().astype(np.float32), torch.cat(feats).numpy().astype(np.float32))

    def tag(self, wave: np.ndarray | torch.Tensor, *, hop_frames: int | None = None) -> tuple[list[str], np.ndarray]:
        """The taggram of a 16 kHz waveform: ``(tags, probs)`` with ``probs`` ``(n_patches, 50)`` float32.

        Raises:
            AudioError: not a finite, non-empty 1-D waveform.
        """
        out = self.analyze(wave, hop_frames=hop_frames)
        return out.tags, out.probs

    def embed(self, wave: np.ndarray | torch.Tensor, *, hop_frames: int | None = None) -> np.ndarray:
        """Penultimate features per patch: ``(n_patches, embedding_dim)`` float32 (a baseline audio embedding
        for probing and zero-shot tables; average over patches for one vector per recording).

        Raises:
            AudioError: not a finite, non-empty 1-D waveform.
        """
        return self.analyze(wave, hop_frames=hop_frames).embeddings

    def analyze_file(self, path: str | os.PathLike[str], *, hop_frames: int | None = None) -> TaggerOutput:
        """:meth:`analyze` on a decoded audio file (any format :func:`~musicsearch.audio.io.load_audio` reads).

        Raises:
            AudioError: the file is missing, unreadable or empty.
        """
        wave = load_audio(path, sample_rate=self.front_end.sample_rate)
        if wave.size == 0:
            raise AudioError(f"audio file {path} decodes to no samples; check the file")
        return self.analyze(wave, hop_frames=hop_frames)

    def top_tags(self, audio: str | os.PathLike[str] | np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` best tags of a file or 16 kHz waveform with their patch-averaged probabilities, best first.

        Raises:
            AudioError: unreadable file or unusable waveform.
        """
        out = self.analyze(audio) if isinstance(audio, np.ndarray) else self.analyze_file(audio)
        return out.top(k)
