"""The joint text-music model: audio tower, text tower, projections into one space, and the objective's head.

Layout of attributes (and so of checkpoint keys) follows the published release (paper.md section 11):
``audio_encoder``, ``audio_projector.{0,1}``, ``text_encoder``, ``text_projector.{0,1}``, ``head`` and, for the
contrastive objective, ``logit_scale`` (the same parameter as ``head.logit_scale``, registered twice).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from musicsearch.errors import ConfigError
from musicsearch.losses.classification import ClassificationHead
from musicsearch.losses.contrastive import ContrastiveHead
from musicsearch.losses.registry import objective
from musicsearch.models.audio_encoder import AudioEncoder
from musicsearch.models.config import AudioEncoderConfig, ModelConfig
from musicsearch.text.encoders import TransformerTextEncoder, WordVectorTextEncoder

if TYPE_CHECKING:
    from musicsearch.models.musicnn_tower import MusicnnAudioEncoder


def build_audio_encoder(cfg: AudioEncoderConfig) -> nn.Module:
    """The audio tower a config describes: the paper's transformer tower, or a musicnn backbone with a head
    (:class:`~musicsearch.models.musicnn_tower.MusicnnAudioEncoder`, built untrained: see
    :func:`musicsearch.models.registry.build_model` for the pretrained weights)."""
    if cfg.kind == "musicnn":
        from musicsearch.models.musicnn_tower import MusicnnAudioEncoder

        return MusicnnAudioEncoder(cfg)
    return AudioEncoder(cfg)


def projector(d_in: int, d_out: int) -> nn.Sequential:
    """LayerNorm(d_in) -> Linear(d_in, d_out, bias=False)."""
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, d_out, bias=False))


class LossOutput(NamedTuple):
    """The training loss and the scalars worth logging.

    A tuple, so that DistributedDataParallel can find the loss tensor in the module's output.
    """

    loss: torch.Tensor
    stats: dict[str, float]


class TextToMusic(nn.Module):
    """One model, one embedding space: ``encode_audio`` and ``encode_text`` land in the same ``joint_dim`` space.

    Args:
        config: the whole model's configuration.
        pretrained_text: load the text encoder's pretrained weights (False builds the architecture only, as
            when the weights come from a checkpoint next).
    """

    def __init__(self, config: ModelConfig, *, pretrained_text: bool = True) -> None:
        super().__init__()
        self.config = config
        #: facts stored with the checkpoint this model was loaded from (training run, source, conversion)
        self.checkpoint_meta: dict[str, Any] = {}
        c = config
        self.audio_encoder: nn.Module = build_audio_encoder(c.audio)
        self.audio_projector = projector(c.audio.width, c.joint_dim)
        #: the joined own tower's projection (``musicnn`` towers with ``own_residual``), added to the head's
        self.own_projector: nn.Sequential | None = None
        if c.audio.kind == "musicnn" and c.audio.own_residual:
            self.own_projector = projector(c.audio.width_own, c.joint_dim)
        self.text_encoder: nn.Module | None = None
        self.text_projector: nn.Sequential | None = None
        if c.text.kind == "transformer":
            self.text_encoder = TransformerTextEncoder(
                c.text.name,
                pooling=c.text.pooling,
                max_length=c.text.max_length,
                trainable=c.text.trainable,
                trainable_layers=c.text.trainable_layers,
                random_init=c.text.random_init or not pretrained_text,
                overrides=dict(c.text.overrides),
            )
        elif c.text.kind == "word_vectors":
            self.text_encoder = WordVectorTextEncoder(c.text.name)
        if self.text_encoder is not None:
            self.text_projector = projector(int(self.text_encoder.dim), c.joint_dim)
        self.head: nn.Module = objective(c.objective).build_head(c)
        if objective(c.objective).learned_temperature:
            self.logit_scale = self.head.logit_scale

    # --- embedding -------------------------------------------------------------------------------
    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` float32 waveform windows at 16 kHz -> ``(B, joint_dim)`` embeddings (not normalised)."""
        if self.own_projector is not None:
            feats, _ = self._musicnn_tower().backbone(wave)  # (B, backbone_dim), the own tower's feature last
            return self.joint_from_features(feats)
        return self.audio_projector(self.audio_encoder(wave))

    def _musicnn_tower(self) -> MusicnnAudioEncoder:
        from musicsearch.models.musicnn_tower import MusicnnAudioEncoder

        if not isinstance(self.audio_encoder, MusicnnAudioEncoder):
            raise ConfigError("backbone features exist for musicnn audio towers only")
        return self.audio_encoder

    def joint_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        """``musicnn`` towers: ``(B, backbone_dim)`` backbone features (e.g. cached) -> ``(B, joint_dim)``."""
        out = self.audio_projector(self._musicnn_tower().head_forward(feats))
        if self.own_projector is not None:
            out = out + self.own_projector(feats[:, -self.config.audio.width_own :])
        return out

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> ``(N, joint_dim)`` embeddings (not normalised).

        For a classification model, each text must be a tag of its vocabulary: its classifier row is returned.

        Raises:
            ConfigError: for a classification model and a text outside its vocabulary.
        """
        if self.text_encoder is None or self.text_projector is None:
            index = {t: i for i, t in enumerate(self.config.tags)}
            missing = [t for t in texts if t not in index]
            if missing:
                raise ConfigError(
                    f"the classification model only knows its {len(index)} tags; unknown: {missing[:5]} "
                    f"(use a contrastive or triplet model for free text)"
                )
            rows = torch.tensor([index[t] for t in texts], device=self.tag_embeddings().device)
            return self.tag_embeddings()[rows]
        return self.text_projector(self.text_encoder(texts))

    def tag_embeddings(self) -> torch.Tensor:
        """Classification models: ``(n_tags, joint_dim)`` classifier rows, in ``config.tags`` order."""
        if not isinstance(self.head, ClassificationHead):
            raise ConfigError("tag_embeddings() exists for classification models only; use encode_text(tags)")
        return self.head.fc_cls.weight

    @property
    def embedding_dim(self) -> int:
        """Size of the joint space."""
        return self.config.joint_dim

    # --- training --------------------------------------------------------------------------------
    def forward(
        self,
        wave: torch.Tensor,
        texts: Sequence[str],
        tag_targets: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """The objective's loss on one batch.

        Args:
            wave: ``(B, T)`` audio windows.
            texts: ``B`` training texts (ignored by classification).
            tag_targets: ``(B, V)`` 0/1 multi-hot tags over ``config.tags`` (triplet sampling, classification).
            generator: randomness of triplet negative sampling.
        """
        audio = self.encode_audio(wave)
        stats: dict[str, float] = {}
        if isinstance(self.head, ClassificationHead):
            loss = self.head(audio, tag_targets)
        else:
            text = self.encode_text(texts)
            if isinstance(self.head, ContrastiveHead):
                loss = self.head(audio, text)
                stats["temperature"] = self.head.temperature()
            else:
                loss = self.head(audio, text, tag_targets, generator)
        stats["loss"] = float(loss.detach())
        return LossOutput(loss, stats)

    @torch.no_grad()
    def similarity(self, wave: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """``(B, N)`` cosine similarity of audio windows and texts (eval helper)."""
        a = F.normalize(self.encode_audio(wave), dim=-1)
        t = F.normalize(self.encode_text(texts), dim=-1)
        return a @ t.t()


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of (unique) parameters."""
    seen: set[int] = set()
    n = 0
    for p in module.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n
