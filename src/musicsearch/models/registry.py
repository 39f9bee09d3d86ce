"""Model presets by name: ``paper`` (exact), ``small`` (CPU-trainable), ``debug`` (tiny, for tests), and the
pretrained musicnn towers ``musicnn-mtt``, ``musicnn-msd``, ``musicnn-both`` (MSD and MTT concatenated) and
``musicnn-both-small`` / ``musicnn-msd-small`` (joined to a ``small`` tower: features concatenated before the
head) and ``musicnn-*-small-residual`` (the ``small`` tower keeps its own projection, the head's is added), and
``musicnn-both-small-residual-tags`` (the networks' own tag probabilities are head inputs too), all 3 s windows,
frozen backbones by default.

A preset fixes the audio tower; objective, text encoder and text representation are chosen per call, so any of
the paper's 3 x 2 x 3 variants is a config, not new code::

    cfg = model_config("small", objective="triplet", text_encoder="glove", text_rep="stochastic")
    model = build_model(cfg)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from musicsearch.audio.features import MelConfig
from musicsearch.errors import ConfigError
from musicsearch.losses.registry import objective as objective_spec
from musicsearch.models.config import AudioEncoderConfig, ModelConfig, TextEncoderConfig
from musicsearch.registry import Registry

PRESETS: Registry[Callable[[], tuple[AudioEncoderConfig, str]]] = Registry("model preset")
TEXT_ENCODERS: Registry[Callable[[bool], TextEncoderConfig]] = Registry("text encoder")


@PRESETS.register("paper")
def _paper() -> tuple[AudioEncoderConfig, str]:
    return AudioEncoderConfig(), "bert"


@PRESETS.register("small")
def _small() -> tuple[AudioEncoderConfig, str]:
    return (
        AudioEncoderConfig(
            mel=MelConfig(n_mels=64),
            window_samples=48_000,
            conv_channels=32,
            width=128,
            depth=2,
            heads=4,
            mlp_dim=256,
            max_positions=64,
        ),
        "minilm",
    )


@PRESETS.register("debug")
def _debug() -> tuple[AudioEncoderConfig, str]:
    return (
        AudioEncoderConfig(
            mel=MelConfig(n_mels=64),
            window_samples=16_000,
            conv_channels=8,
            width=32,
            depth=1,
            heads=2,
            mlp_dim=64,
            dropout=0.1,
            max_positions=16,
        ),
        "tiny-bert",
    )


def _musicnn_tower(
    backbones: tuple[str, ...], *, join_own: bool, residual: bool = False, tags: bool = False
) -> AudioEncoderConfig:
    small, _ = _small()
    return dataclasses.replace(
        small,
        kind="musicnn",
        backbones=backbones,
        join_own=join_own,
        own_residual=residual,
        tag_inputs=tags,
        width=512,
        width_own=small.width,
    )


PRESETS.add("musicnn-mtt", lambda: (_musicnn_tower(("MTT_musicnn",), join_own=False), "minilm"))
PRESETS.add("musicnn-msd", lambda: (_musicnn_tower(("MSD_musicnn",), join_own=False), "minilm"))
PRESETS.add("musicnn-both", lambda: (_musicnn_tower(("MSD_musicnn", "MTT_musicnn"), join_own=False), "minilm"))
PRESETS.add("musicnn-both-small", lambda: (_musicnn_tower(("MSD_musicnn", "MTT_musicnn"), join_own=True), "minilm"))
PRESETS.add("musicnn-msd-small", lambda: (_musicnn_tower(("MSD_musicnn",), join_own=True), "minilm"))
PRESETS.add(
    "musicnn-both-small-residual",
    lambda: (_musicnn_tower(("MSD_musicnn", "MTT_musicnn"), join_own=True, residual=True), "minilm"),
)
PRESETS.add(
    "musicnn-both-small-residual-tags",
    lambda: (_musicnn_tower(("MSD_musicnn", "MTT_musicnn"), join_own=True, residual=True, tags=True), "minilm"),
)
PRESETS.add(
    "musicnn-msd-small-residual",
    lambda: (_musicnn_tower(("MSD_musicnn",), join_own=True, residual=True), "minilm"),
)


TEXT_ENCODERS.add("bert", lambda tiny: TextEncoderConfig("transformer", "bert-base-uncased", "cls"))
TEXT_ENCODERS.add("minilm", lambda tiny: TextEncoderConfig("transformer", "minilm", "mean"))
TEXT_ENCODERS.add("glove", lambda tiny: TextEncoderConfig("word_vectors", "glove-6b-50d"))
TEXT_ENCODERS.add(
    "tiny-bert",
    lambda tiny: TextEncoderConfig(
        "transformer",
        "minilm",
        "mean",
        max_length=32,
        random_init=True,
        overrides=(
            ("num_hidden_layers", 1),
            ("hidden_size", 32),
            ("num_attention_heads", 2),
            ("intermediate_size", 64),
        ),
    ),
)
TEXT_ENCODERS.add("none", lambda tiny: TextEncoderConfig("none", ""))


def text_encoder_config(name: str) -> TextEncoderConfig:
    """Text tower by short name (``bert``, ``minilm``, ``glove``, ``tiny-bert``, ``none``), else:
    a path ending in ``.txt`` is a GloVe file, anything else a Hugging Face id or folder ([CLS] pooling)."""
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS.get(name)(False)
    if name.endswith(".txt"):
        return TextEncoderConfig("word_vectors", name)
    return TextEncoderConfig("transformer", name, "cls")


def model_config(
    preset: str,
    *,
    objective: str = "contrastive",
    text_encoder: str | None = None,
    text_rep: str = "stochastic",
    tags: Sequence[str] = (),
) -> ModelConfig:
    """A :class:`ModelConfig` from a preset and the three choices of the paper.

    Args:
        preset: ``paper``, ``small``, ``debug`` or a ``musicnn-*`` tower (see the module docstring).
        objective: ``contrastive``, ``triplet`` or ``classification``.
        text_encoder: short name or id (see :func:`text_encoder_config`); the preset's default when None;
            ignored (``none``) for classification.
        text_rep: ``tag``, ``sentence`` or ``stochastic``.
        tags: the tag vocabulary (needed by classification; used by triplet sampling).

    Raises:
        ConfigError: on an unknown preset, objective or representation.
    """
    audio, default_text = PRESETS.get(preset)()
    text_tower = objective_spec(objective).text_tower
    if not text_tower:
        text_name = "none"
    else:
        text_name = text_encoder or default_text
        if text_name == "none":
            raise ConfigError(f"a {objective} model needs a text encoder")
    text = text_encoder_config(text_name)
    name = f"{preset}-{objective}-{text_name if text_tower else 'binary'}-{text_rep}"
    return ModelConfig(
        name=name,
        audio=audio,
        text=text,
        objective=objective,  # type: ignore[arg-type]
        text_rep=text_rep,
        tags=tuple(tags),
    )


def build_model(config: ModelConfig, *, pretrained_text: bool = True, pretrained_audio: bool = True) -> TextToMusic:
    """Instantiate a model from its config.

    Args:
        config: the model.
        pretrained_text: load the text tower's pretrained weights from their source.
        pretrained_audio: for a ``musicnn`` audio tower, load the trained musicnn networks (PyPI ``musicnn``)
            into its backbones (the head and a joined own tower start untrained).

    Raises:
        CheckpointError: ``pretrained_audio`` and the ``musicnn`` package is not installed.
    """
    model = TextToMusic(config, pretrained_text=pretrained_text)
    if pretrained_audio and config.audio.kind == "musicnn":
        model.audio_encoder.load_pretrained_backbones()  # type: ignore[operator]
    return model


from musicsearch.models.dual_encoder import TextToMusic  # noqa: E402  (import cycle guard: config first)
