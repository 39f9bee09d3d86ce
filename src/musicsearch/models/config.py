"""Frozen dataclass configs; every checkpoint stores its :class:`ModelConfig` so it says how to rebuild itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from musicsearch.audio.features import MelConfig
from musicsearch.errors import ConfigError
from musicsearch.losses.registry import OBJECTIVES
from musicsearch.text.sampling import SAMPLERS

Objective = Literal["contrastive", "triplet", "classification"]
TextKind = Literal["transformer", "word_vectors", "none"]


AudioKind = Literal["transformer", "musicnn"]
BackboneLayer = Literal["pool", "dense"]
MUSICNN_BACKBONES = ("MTT_musicnn", "MSD_musicnn")


@dataclass(frozen=True)
class AudioEncoderConfig:
    """The audio tower: mel front end, residual conv blocks, "cf" tokens, pre-norm transformer (``kind``
    ``transformer``, the paper's tower); or pretrained musicnn networks with a projection head (``kind``
    ``musicnn``, :mod:`musicsearch.models.musicnn_tower`), optionally joined to a transformer tower described by
    the same fields as ``kind`` ``transformer``.

    Attributes:
        kind: ``transformer`` or ``musicnn``.
        backbones: (``musicnn``) the pretrained networks whose features are concatenated, in order
            (``MTT_musicnn``, ``MSD_musicnn``).
        backbone_layer: (``musicnn``) ``pool``: the batch-normalised max/mean pool of the mid end (1,506 values a
            network); ``dense``: the network's 200-unit dense layer after it (its penultimate features).
        backbone_trainable: (``musicnn``) fine-tune the pretrained networks; False freezes them (eval mode,
            no gradients), so their features can be computed once and cached.
        join_own: (``musicnn``) also run a transformer tower (the fields below) on the window and concatenate
            its clip feature to the backbone features before the head.
        head_dropout: (``musicnn``) dropout on the concatenated features before the head.
        width_own: (``musicnn`` with ``join_own``) the joined transformer tower's width.
        own_residual: (``musicnn`` with ``join_own``) the own tower also keeps its own projection into the joint
            space (``own_projector``, e.g. the trained model's), and the head's projection is added to it: the
            tower starts as the own model and the pretrained networks add what they know.
        tag_inputs: (``musicnn``) also feed each network's own tag probabilities (the sigmoid of its 50 tag
            logits, the teacher's output on the window) to the head, after the backbone features and before the
            own tower's feature: what the teachers say about a window is one linear map from the joint space.
        mel: front-end parameters.
        window_samples: input window in samples at 16 kHz (9.91 s = 158,560 in the paper).
        conv_channels: channels of every residual conv block.
        n_conv_blocks: number of blocks, each followed by a 2x2 max-pool.
        width: transformer width (the clip feature size); for ``musicnn`` the head's output size.
        depth: transformer layers.
        heads: attention heads (``width`` must divide by it).
        mlp_dim: feed-forward hidden size.
        dropout: dropout in the transformer and after the positional embedding.
        max_positions: slots of the learned positional table (CLS included).
    """

    mel: MelConfig = field(default_factory=MelConfig)
    kind: AudioKind = "transformer"
    backbones: tuple[str, ...] = ()
    backbone_layer: BackboneLayer = "pool"
    backbone_trainable: bool = False
    join_own: bool = False
    head_dropout: float = 0.1
    width_own: int = 128
    own_residual: bool = False
    tag_inputs: bool = False
    window_samples: int = 158_560
    conv_channels: int = 128
    n_conv_blocks: int = 4
    width: int = 256
    depth: int = 4
    heads: int = 8
    mlp_dim: int = 1024
    dropout: float = 0.1
    max_positions: int = 513

    @property
    def n_frames(self) -> int:
        """Mel frames of one window (centred STFT)."""
        return self.window_samples // self.mel.hop_length + 1

    @property
    def n_tokens(self) -> int:
        """Time tokens after the conv front end."""
        return self.n_frames // (2**self.n_conv_blocks)

    @property
    def token_in_dim(self) -> int:
        """channels x remaining mel bins, the input size of the token projection."""
        return self.conv_channels * (self.mel.n_mels // (2**self.n_conv_blocks))


@dataclass(frozen=True)
class TextEncoderConfig:
    """The text tower.

    Attributes:
        kind: ``transformer`` (Hugging Face), ``word_vectors`` (averaged static vectors) or ``none``
            (classification models).
        name: hub id, local folder or offline alias (``minilm``); or for word vectors ``glove-6b-50d`` / a file.
        pooling: ``cls`` (the paper) or ``mean``.
        max_length: tokens per text.
        trainable: fine-tune the transformer.
        trainable_layers: with ``trainable``, fine-tune only the top N transformer layers (embeddings and lower
            layers frozen, and not stored in checkpoints: they are reloaded from the pretrained source); None for all.
        random_init: build the transformer from its config with fresh weights (tests, tiny models).
        overrides: transformer config fields to override, as ``(key, value)`` pairs.
    """

    kind: TextKind = "transformer"
    name: str = "bert-base-uncased"
    pooling: Literal["cls", "mean"] = "cls"
    max_length: int = 64
    trainable: bool = True
    trainable_layers: int | None = None
    random_init: bool = False
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    """A whole model: any objective x text encoder x text representation is a config, not new code.

    Attributes:
        name: display name (e.g. ``small-contrastive-minilm-stochastic``).
        audio: audio tower.
        text: text tower.
        objective: ``contrastive``, ``triplet`` or ``classification``.
        text_rep: ``tag``, ``sentence`` or ``stochastic`` (how training text is drawn from tags).
        joint_dim: size of the joint embedding space.
        init_temperature: contrastive temperature at initialisation.
        max_logit_scale: clamp of exp(s) in the contrastive loss.
        margin: triplet margin.
        triplet_weighting: how triplet negatives are weighted (``official``: the release's rule; see
            :data:`musicsearch.losses.triplet.NEGATIVE_WEIGHTINGS`); used in training only.
        tags: tag vocabulary (classification head rows; triplet tag-aware sampling), in order.
    """

    name: str = "model"
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    objective: Objective = "contrastive"
    text_rep: str = "stochastic"
    joint_dim: int = 128
    init_temperature: float = 0.2
    max_logit_scale: float = 100.0
    margin: float = 0.4
    tags: tuple[str, ...] = ()
    triplet_weighting: str = "official"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {tuple(OBJECTIVES)}, got {self.objective!r}")
        if self.text_rep not in SAMPLERS:
            raise ConfigError(f"text_rep must be one of {tuple(SAMPLERS)}, got {self.text_rep!r}")
        text_tower = OBJECTIVES.get(self.objective).text_tower
        if not text_tower and self.text.kind != "none":
            raise ConfigError(f"a {self.objective} model has no text encoder: set text.kind='none'")
        if text_tower and self.text.kind == "none":
            raise ConfigError(f"a {self.objective} model needs a text encoder (transformer or word_vectors)")
        if self.audio.kind not in ("transformer", "musicnn"):
            raise ConfigError(f"audio kind must be 'transformer' or 'musicnn', got {self.audio.kind!r}")
        if self.audio.kind == "musicnn":
            bad = [b for b in self.audio.backbones if b not in MUSICNN_BACKBONES]
            if not self.audio.backbones or bad:
                raise ConfigError(
                    f"a musicnn audio tower needs backbones from {MUSICNN_BACKBONES}, got {list(self.audio.backbones)}"
                )
            if self.audio.backbone_layer not in ("pool", "dense"):
                raise ConfigError(f"backbone_layer must be 'pool' or 'dense', got {self.audio.backbone_layer!r}")
            if self.audio.own_residual and not self.audio.join_own:
                raise ConfigError("own_residual needs join_own (a joined own tower)")
            if self.audio.window_samples < 187 * 256:
                raise ConfigError(
                    f"a musicnn tower needs windows of at least 47,872 samples (3 s), got {self.audio.window_samples}"
                )
        if self.audio.width % self.audio.heads:
            raise ConfigError(f"audio width {self.audio.width} must be divisible by heads {self.audio.heads}")
        if self.audio.mel.n_mels % (2**self.audio.n_conv_blocks):
            raise ConfigError("n_mels must be divisible by 2 ** n_conv_blocks")

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with fields changed (``audio``/``text`` may be given as dicts of their own fields)."""
        for key in ("audio", "text"):
            if isinstance(changes.get(key), dict):
                changes[key] = dataclasses.replace(getattr(self, key), **changes[key])
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: on unknown fields.
        """
        try:
            audio_d = dict(d.get("audio", {}))
            mel = MelConfig(**audio_d.pop("mel", {}))
            audio_d["backbones"] = tuple(audio_d.get("backbones", ()))
            audio = AudioEncoderConfig(mel=mel, **audio_d)
            text_d = dict(d.get("text", {}))
            text_d["overrides"] = tuple(tuple(kv) for kv in text_d.get("overrides", ()))
            text = TextEncoderConfig(**text_d)
            rest = {k: v for k, v in d.items() if k not in ("audio", "text")}
            rest["tags"] = tuple(rest.get("tags", ()))
            return cls(audio=audio, text=text, **rest)
        except TypeError as exc:
            raise ConfigError(f"malformed model config: {exc}") from None
