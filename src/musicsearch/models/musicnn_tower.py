"""An audio tower built on the pretrained musicnn networks (Pons and Serra, 2019): backbone(s) + projection head.

The backbone is a musicnn tagger's front and mid end, read out either at its batch-normalised max/mean pool
(``backbone_layer="pool"``, 1,506 values) or at its 200-unit dense layer (``"dense"``, the teacher's penultimate
features). Several networks (MSD and MTT) are run side by side and their features concatenated; with
``join_own`` a transformer tower of the project's own kind (e.g. the ``small`` preset's, initialised from a
trained model) runs on the same window and its clip feature is concatenated too, so what the procedural corpus
taught and musicnn never learned (keys, tempo bands, General MIDI instruments) is kept. A head
(dropout -> Linear -> GELU) maps the concatenation to ``width``; the model's ``audio_projector`` then maps that into
the joint space, as for every tower.

Input: the model's window of 16 kHz audio (``window_samples``, 48,000 = 3 s for the presets here), turned into
musicnn's own log-mel (:func:`musicsearch.teachers.musicnn.log_mel_batch`) and cut to the 187 frames (3 s) the
networks were trained on, so the backbone of a window sees exactly what the teacher tagger sees on that window.

With ``backbone_trainable=False`` (the default) the pretrained networks are frozen: no gradients, and they stay in
eval mode (their batch-norm statistics are the trained ones) even when the model is put in training mode. Their
features are then a pure function of the window, which :mod:`musicsearch.train.heads` computes once and caches.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from musicsearch.models.audio_encoder import AudioEncoder
from musicsearch.models.config import AudioEncoderConfig
from musicsearch.teachers.musicnn import N_FRAMES, Musicnn, labels_for, load_pretrained, log_mel_batch

__all__ = ["MusicnnAudioEncoder", "backbone_dim", "tag_columns"]

_LAYER_DIM = {"pool": 1506, "dense": 200}


def tag_columns(cfg: AudioEncoderConfig) -> range:
    """Where a ``tag_inputs`` tower's tag probabilities sit among its backbone features (:meth:`MusicnnAudioEncoder.
    backbone`'s layout: every network's read-out, then their probabilities, then the own tower's feature). For a
    tower without ``tag_inputs``: where they would be inserted (an empty range)."""
    start = len(cfg.backbones) * _LAYER_DIM[cfg.backbone_layer]
    return range(start, start + (sum(len(labels_for(name)) for name in cfg.backbones) if cfg.tag_inputs else 0))


def backbone_dim(cfg: AudioEncoderConfig) -> int:
    """Size of the concatenated backbone features (tag probabilities and own tower's clip feature included) of a
    ``musicnn`` tower."""
    return tag_columns(cfg).stop + (cfg.width_own if cfg.join_own else 0)


class MusicnnAudioEncoder(nn.Module):
    """Waveform ``(B, window_samples)`` float32 at 16 kHz -> ``(B, width)`` clip feature.

    Args:
        cfg: an :class:`AudioEncoderConfig` with ``kind="musicnn"``. The networks are built untrained; load the
            pretrained weights with :meth:`load_pretrained_backbones` (a checkpoint of this tower stores them).
    """

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.backbones = nn.ModuleDict({name: Musicnn(len(labels_for(name))) for name in cfg.backbones})
        self.own: AudioEncoder | None = AudioEncoder(_own_config(cfg)) if cfg.join_own else None
        self.head = nn.Sequential(nn.Dropout(cfg.head_dropout), nn.Linear(backbone_dim(cfg), cfg.width), nn.GELU())
        self.set_backbone_trainable(cfg.backbone_trainable)

    # --- parameters ------------------------------------------------------------------------------
    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (no gradients, eval mode kept) or unfreeze the pretrained networks and the joined own tower."""
        self._frozen = not trainable
        for module in self._backbone_modules():
            for p in module.parameters():
                p.requires_grad_(trainable)
        if self._frozen:
            for module in self._backbone_modules():
                module.eval()

    def _backbone_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.backbones]
        if self.own is not None:
            mods.append(self.own)
        return mods

    def train(self, mode: bool = True) -> MusicnnAudioEncoder:
        """As :meth:`nn.Module.train`, but frozen backbones stay in eval mode (their trained BN statistics)."""
        super().train(mode)
        if self._frozen:
            for module in self._backbone_modules():
                module.eval()
        return self

    def load_pretrained_backbones(self) -> None:
        """Copy the trained musicnn weights (PyPI ``musicnn``) into the backbones.

        Raises:
            CheckpointError: the ``musicnn`` package (its checkpoints) is not installed.
        """
        for name, net in self.backbones.items():
            net.load_state_dict(load_pretrained(name).state_dict())

    # --- forward ---------------------------------------------------------------------------------
    def backbone(self, wave: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The concatenated backbone features of windows and each network's tag logits.

        Args:
            wave: ``(B, window_samples)`` float32 at 16 kHz.

        Returns:
            ``(features, logits)``: ``(B, backbone_dim)`` float32, and per backbone (config order) ``(B, 50)``
            tag logits (``sigmoid`` gives the teacher's probabilities for that window). Features are laid out as
            every network's read-out (config order), then with ``tag_inputs`` every network's tag probabilities,
            then the own tower's clip feature.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._frozen):
            mel = log_mel_batch(wave)[:, :N_FRAMES]  # (B, 187, 96): the teacher's patch of the window
            feats: list[torch.Tensor] = []
            logits: list[torch.Tensor] = []
            for net in self.backbones.values():
                out = net(mel)
                feats.append(out.pooled if self.config.backbone_layer == "pool" else out.penultimate)  # type: ignore[arg-type]
                logits.append(out.logits)
            if self.config.tag_inputs:
                feats.extend(torch.sigmoid(lg) for lg in logits)
            if self.own is not None:
                feats.append(self.own(wave))  # (B, width_own)
        return torch.cat(feats, dim=1), logits

    def head_forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, backbone_dim)`` features (e.g. cached) -> ``(B, width)`` clip feature."""
        return self.head(features)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        feats, _ = self.backbone(wave)
        return self.head_forward(feats)  # (B, width)


def _own_config(cfg: AudioEncoderConfig) -> AudioEncoderConfig:
    """The joined transformer tower's config: the same fields with ``kind="transformer"``, its width ``width_own``."""
    return dataclasses.replace(
        cfg, kind="transformer", backbones=(), join_own=False, backbone_trainable=False, width=cfg.width_own
    )
