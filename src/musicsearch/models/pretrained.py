"""The paper's published checkpoints (Zenodo record 7322135, ``mtr.tar.gz``) by name, loaded exactly.

Ten variants (paper Table 2), named ``ttmr/<objective>-<text encoder>-<text representation>`` with the release's
words (``caption`` is our ``sentence``)::

    model = load_pretrained("ttmr/contrastive-bert-stochastic", weights="~/Downloads/mtr.tar.gz")

This module is the catalogue (:data:`PUBLISHED`) and the strict loading. Where the weights come from (argument,
environment, cache, Zenodo download) is :mod:`musicsearch.models.download`. The text tower needs
``bert-base-uncased``'s config and tokenizer (its weights come from ``best.pth``) or, for the GloVe variants, a
300-d GloVe text file; the classification head needs the 1,054 ECALS tags in the release's order. What the release
did at inference time (real-part power spectrogram, 9.91 s windows, window placement and averaging) is in each
entry's :meth:`PublishedModel.preprocessing` and in :mod:`musicsearch.models.release`; writing a loaded model in
our format is :mod:`musicsearch.models.export`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from musicsearch.audio.chunking import WINDOW_SAMPLES
from musicsearch.data.sources.labels import asset_path
from musicsearch.errors import CheckpointError, ConfigError
from musicsearch.fileio import sha256_file
from musicsearch.losses.registry import objective
from musicsearch.models.checkpoint import load_state_strict
from musicsearch.models.config import ModelConfig
from musicsearch.models.convert import convert_release_state, detect_release_kind, read_release_checkpoint
from musicsearch.models.download import ARCHIVE_URL, locate_weights
from musicsearch.models.dual_encoder import TextToMusic
from musicsearch.models.registry import model_config
from musicsearch.registry import Registry

log = logging.getLogger(__name__)

#: The release's experiment folder: ``{arch}_{frontend}_{mix_type}_{audio_rep}``.
EXP_FOLDER = "exp/transformer_cnn_cf_mel"
BERT_NAME = "bert-base-uncased"
GLOVE_DIM = 300
N_ECALS_TAGS = 1054

ENV_BERT = "MUSICSEARCH_BERT_BASE_UNCASED"
ENV_GLOVE = "MUSICSEARCH_GLOVE_300D"
ENV_ECALS_TAGS = "MUSICSEARCH_ECALS_TAGS"

# The ten published variants, as data: registry suffix, objective, the release's `framework`, `text_type` and
# `text_rep` (from each folder's hparams.yaml), and the folder under mtr/<objective>/exp/transformer_cnn_cf_mel/.
# The folder is f"{text_type}_{text_rep}" for contrastive/triplet, and f"{text_rep}_{text_type}" ("binary_tag")
# for classification, as the release's test scripts build it.
_VARIANTS: tuple[tuple[str, str, str, str, str, str], ...] = (
    # name suffix                 objective         framework      text_type  text_rep      folder
    ("classification-binary-tag", "classification", "tagging", "tag", "binary", "binary_tag"),
    ("triplet-glove-tag", "triplet", "triplet", "glove", "tag", "glove_tag"),
    ("triplet-glove-caption", "triplet", "triplet", "glove", "caption", "glove_caption"),
    ("triplet-glove-stochastic", "triplet", "triplet", "glove", "stochastic", "glove_stochastic"),
    ("triplet-bert-tag", "triplet", "triplet", "bert", "tag", "bert_tag"),
    ("triplet-bert-caption", "triplet", "triplet", "bert", "caption", "bert_caption"),
    ("triplet-bert-stochastic", "triplet", "triplet", "bert", "stochastic", "bert_stochastic"),
    ("contrastive-bert-tag", "contrastive", "contrastive", "bert", "tag", "bert_tag"),
    ("contrastive-bert-caption", "contrastive", "contrastive", "bert", "caption", "bert_caption"),
    ("contrastive-bert-stochastic", "contrastive", "contrastive", "bert", "stochastic", "bert_stochastic"),
)

#: hparams.yaml fields every published variant shares (the paper's audio tower and joint space).
RELEASE_HPARAMS: dict[str, Any] = {
    "arch": "transformer",
    "frontend": "cnn",
    "mix_type": "cf",
    "audio_rep": "mel",
    "duration": 9.91,
    "sr": 16000,
    "mel_dim": 128,
    "n_fft": 1024,
    "win_length": 1024,
    "attention_nlayers": 4,
    "attention_ndim": 256,
    "mlp_dim": 128,
}


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint: where it lies in the release and how to rebuild and run it exactly.

    Attributes:
        name: registry name, e.g. ``ttmr/contrastive-bert-stochastic``.
        objective: ``contrastive``, ``triplet`` or ``classification``.
        framework: the release's ``framework`` field (``tagging`` for classification).
        text_type: ``bert``, ``glove`` or (classification) ``tag``.
        release_rep: the release's text representation: ``tag``, ``caption``, ``stochastic`` (``binary``).
        folder: the variant's folder name under ``mtr/<objective>/exp/transformer_cnn_cf_mel/``.
        retrieval_windows: windows averaged per track in the release's ECALS retrieval test.
        transfer_windows: windows averaged per track in its transfer (zero-shot, probing) tests.
    """

    name: str
    objective: str
    framework: str
    text_type: str
    release_rep: str
    folder: str
    retrieval_windows: int = 3
    transfer_windows: int = 8

    @property
    def member(self) -> str:
        """Path of ``best.pth`` inside the archive."""
        return f"mtr/{self.objective}/{EXP_FOLDER}/{self.folder}/best.pth"

    @property
    def text_rep(self) -> str:
        """Our name of the text representation (``sentence`` for the release's ``caption``)."""
        return {"caption": "sentence", "binary": "tag"}.get(self.release_rep, self.release_rep)

    @property
    def window_pooling(self) -> str:
        """How the release pooled window embeddings into a track embedding.

        ``mean``: average of the (unnormalised) window embeddings. ``mean_of_normalised``: the classification
        model L2-normalises inside ``encode_audio``, so its track embedding is the average of unit vectors.
        """
        return "mean_of_normalised" if objective(self.objective).unit_audio else "mean"

    def preprocessing(self) -> dict[str, Any]:
        """The inference-time facts of the release for this model (stored in the model's metadata)."""
        return {
            "sample_rate": 16000,
            "window_samples": WINDOW_SAMPLES,
            "window_seconds": WINDOW_SAMPLES / 16000,
            "power_mode": "real_squared",
            "retrieval_windows": self.retrieval_windows,
            "transfer_windows": self.transfer_windows,
            "window_placement": "release: hop = (T - L) // n, starts i * hop for i < n",
            "window_pooling": self.window_pooling,
            "normalise": "L2 after pooling (cosine similarity)",
            "eval_mode": True,
            "text": {
                "bert": "one string per call, no truncation below BERT's 512 tokens, [CLS] of the last layer",
                "glove": "mean of per-tag 300-d vectors (the release's glove_tag_embs.pt); see encode_tags_release",
                "tag": "classifier rows (head.fc_cls) in ecals_tags.json order",
            }[self.text_type],
        }

    def config(self, *, text_encoder: str | None = None, tags: Sequence[str] = ()) -> ModelConfig:
        """Our :class:`ModelConfig` matching the release exactly.

        Args:
            text_encoder: BERT variants: hub id or local folder of ``bert-base-uncased`` (default the hub id);
                GloVe variants: path of a 300-d GloVe text file (required); ignored for classification.
            tags: classification: the 1,054 ECALS tags in head-row order.

        Raises:
            ConfigError: for a GloVe variant without a vectors file.
        """
        if self.text_type == "glove" and not text_encoder:
            raise ConfigError(f"{self.name} needs a 300-d GloVe text file as its text encoder")
        base = model_config(
            "paper",
            objective=self.objective,
            text_encoder="glove" if self.text_type == "glove" else None,
            text_rep=self.text_rep,
            tags=tags,
        )
        mel = dataclasses.replace(base.audio.mel, power_mode="real_squared")
        cfg = base.replace(name=self.name, audio={"mel": mel})
        if self.text_type == "bert":
            # eval in the release: tokenizer(text) without truncation, so allow BERT's full 512 positions
            cfg = cfg.replace(
                text={
                    "kind": "transformer",
                    "name": text_encoder or BERT_NAME,
                    "pooling": "cls",
                    "max_length": 512,
                    "trainable": True,
                    "random_init": False,
                    "overrides": (),
                }
            )
        elif self.text_type == "glove":
            cfg = cfg.replace(text={"kind": "word_vectors", "name": str(text_encoder)})
        return cfg


PUBLISHED: Registry[PublishedModel] = Registry("published model")
for _suffix, _objective, _framework, _text, _rep, _folder in _VARIANTS:
    PUBLISHED.add(f"ttmr/{_suffix}", PublishedModel(f"ttmr/{_suffix}", _objective, _framework, _text, _rep, _folder))


def is_published(name: str) -> bool:
    """Whether ``name`` names a published checkpoint (``ttmr/...``), known or not."""
    return str(name).startswith("ttmr/")


def published_model(name: str) -> PublishedModel:
    """The registry entry for ``name`` (``sentence`` is accepted for the release's ``caption``).

    Raises:
        ConfigError: naming the unknown name and listing the known ones.
    """
    key = str(name).strip()
    if key.endswith("-sentence"):
        key = key[: -len("sentence")] + "caption"
    return PUBLISHED.get(key)


# --- text tower and tag sources -------------------------------------------------------------------------------


def _glove_dim(path: Path) -> int:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip().split(" ")
            if len(parts) >= 2:
                return len(parts) - 1
    raise ConfigError(f"GloVe file {path} holds no vectors")


def resolve_text_encoder(variant: PublishedModel, text_encoder_path: str | None) -> str | None:
    """The text-tower source for ``variant``: the argument, else its environment variable, else the default.

    Returns:
        BERT: a folder or ``bert-base-uncased``; GloVe: the vectors file; classification: None.

    Raises:
        ConfigError: for a GloVe variant without a 300-d vectors file.
    """
    if variant.text_type == "bert":
        return text_encoder_path or os.environ.get(ENV_BERT) or BERT_NAME
    if variant.text_type != "glove":
        return None
    path = text_encoder_path or os.environ.get(ENV_GLOVE)
    if not path:
        raise ConfigError(
            f"{variant.name} needs the 300-d GloVe vectors the release used: pass text_encoder_path= (CLI "
            f"--text-encoder-path) or set ${ENV_GLOVE} to a GloVe text file such as glove.6B.300d.txt or "
            f"glove.840B.300d.txt (https://nlp.stanford.edu/projects/glove/). The offline 50-d vectors cannot "
            f"stand in: the published text projector is [128, 300]"
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"GloVe file {p} does not exist; give the path of a 300-d GloVe text file")
    dim = _glove_dim(p)
    if dim != GLOVE_DIM:
        raise ConfigError(
            f"{p} holds {dim}-d vectors, but {variant.name} was trained on {GLOVE_DIM}-d GloVe (projector "
            f"[128, {GLOVE_DIM}]); give a 300-d GloVe text file"
        )
    return str(p)


def resolve_ecals_tags(ecals_tags: str | os.PathLike[str] | None = None) -> tuple[tuple[str, ...], str]:
    """The 1,054 ECALS tags in the classification head's row order, and where they came from.

    The release's head rows follow its own ``ecals_annotation/ecals_tags.json``. Given that file (or the ECALS
    folder holding it; or ``$MUSICSEARCH_ECALS_TAGS``) it is used. Otherwise the list copied from the release's
    result files (``musicsearch/eval/assets/ecals/ecals_tags_1054.json``) is used with a warning: the release's
    test scripts wrote those files in ``ecals_tags.json`` order, so the order is expected to match, but that has
    not been checked against the real file.

    Raises:
        ConfigError: if a given file is missing or not a JSON list of strings.
    """
    given = ecals_tags or os.environ.get(ENV_ECALS_TAGS)
    if given:
        p = Path(given).expanduser()
        if p.is_dir():
            for cand in (p / "ecals_annotation" / "ecals_tags.json", p / "ecals_tags.json"):
                if cand.is_file():
                    p = cand
                    break
        if not p.is_file():
            raise ConfigError(f"ECALS tag list {p} does not exist; give ecals_annotation/ecals_tags.json")
        try:
            tags = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{p} is not a readable JSON file ({exc})") from None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"{p} must hold a JSON list of tag strings")
        return tuple(tags), str(p)
    p = asset_path("ecals", "ecals_tags_1054.json")
    log.warning(
        "classification head: tag order taken from the release's result files (%s), not from its "
        "ecals_tags.json; expected to be the same order, but unconfirmed. Pass ecals_tags= (CLI --ecals-tags) "
        "or set $%s to be sure",
        p,
        ENV_ECALS_TAGS,
    )
    return tuple(json.loads(p.read_text(encoding="utf-8"))), f"fallback:{p.name}"


def check_hparams(path: str | os.PathLike[str], variant: PublishedModel) -> dict[str, Any]:
    """Check a release ``hparams.yaml`` against the variant and the paper's architecture.

    Returns:
        The parsed hparams.

    Raises:
        CheckpointError: naming each field that differs (``field: file value vs expected``).
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{p} is not a readable hparams.yaml ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p} is not a mapping of hyper-parameters")
    expected = {
        **RELEASE_HPARAMS,
        "framework": variant.framework,
        "text_type": variant.text_type,
        "text_rep": variant.release_rep,
    }
    if variant.text_type == "bert":
        expected["text_backbone"] = BERT_NAME
    diffs = [f"{k}: {data[k]!r} vs {v!r}" for k, v in expected.items() if k in data and data[k] != v]
    if diffs:
        raise CheckpointError(
            f"{p} describes another model than {variant.name} (file vs expected): {'; '.join(diffs)}. "
            f"Check which best.pth you passed"
        )
    return data


# --- loading -----------------------------------------------------------------------------------------------------


def _build(variant: PublishedModel, cfg: ModelConfig) -> TextToMusic:
    try:
        return TextToMusic(cfg, pretrained_text=False)
    except ConfigError as exc:
        if variant.text_type != "bert":
            raise
        raise ConfigError(
            f"{variant.name} needs {BERT_NAME}'s config and tokenizer (its weights come from best.pth), which "
            f"could not be loaded from {cfg.text.name!r}. Connect to the network once (it is then in the Hugging "
            f"Face cache), or pass text_encoder_path= (CLI --text-encoder-path; or set ${ENV_BERT}) a local "
            f"folder holding bert-base-uncased's config.json and tokenizer files. ({exc})"
        ) from None


def load_pretrained(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    text_encoder_path: str | None = None,
    device: str | torch.device = "cpu",
    ecals_tags: str | os.PathLike[str] | None = None,
    allow_pickle: bool = True,
    download_missing: bool = True,
    url: str = ARCHIVE_URL,
    progress: bool | None = None,
) -> TextToMusic:
    """Load a published checkpoint onto our modules, strictly, in eval mode.

    Args:
        name: a :data:`PUBLISHED` name, e.g. ``ttmr/contrastive-bert-stochastic``.
        weights: ``mtr.tar.gz``, unpacked folder, or ``best.pth`` (see :func:`locate_weights`).
        cache_dir: cache folder for downloads and extracted files.
        text_encoder_path: BERT variants: folder with ``bert-base-uncased``'s config + tokenizer (default: the
            hub id, from the network or the Hugging Face cache; or ``$MUSICSEARCH_BERT_BASE_UNCASED``).
            GloVe variants: a 300-d GloVe text file (required; or ``$MUSICSEARCH_GLOVE_300D``).
        device: where to put the model.
        ecals_tags: classification: the release's ``ecals_tags.json`` or the ECALS folder (see
            :func:`resolve_ecals_tags`).
        allow_pickle: permit the full unpickler if the safe one refuses the file (see
            :func:`musicsearch.models.convert.torch_load`).
        download_missing: download the archive when no local weights are found.
        url: download address.
        progress: download progress bar (True / False / None: when stderr is a terminal).

    Returns:
        The model in eval mode; ``model.checkpoint_meta`` holds the source, the conversion facts and the
        release's preprocessing.

    Raises:
        ConfigError: unknown name, or a missing text-tower source.
        CheckpointError: missing or unreadable weights, a file of another variant, or any missing, unexpected
            or mis-shaped key.
    """
    variant = published_model(name)
    text_source = resolve_text_encoder(variant, text_encoder_path)
    tags: tuple[str, ...] = ()
    tags_source = None
    if objective(variant.objective).tag_head:
        tags, tags_source = resolve_ecals_tags(ecals_tags)
    best, source = locate_weights(
        variant, weights, cache_dir=cache_dir, download_missing=download_missing, url=url, progress=progress
    )
    state, report = read_release_checkpoint(best, allow_pickle=allow_pickle)
    kind = detect_release_kind(state)
    if kind != (variant.objective, variant.text_type):
        raise CheckpointError(
            f"{best} holds a {kind[0]} model with a {kind[1]} text tower, not {variant.name} "
            f"({variant.objective}, {variant.text_type}); pass the best.pth of {variant.member}"
        )
    hparams_path = best.with_name("hparams.yaml")
    hparams = check_hparams(hparams_path, variant) if hparams_path.is_file() else None
    tensors, report = convert_release_state(state, report)
    cfg = variant.config(text_encoder=text_source, tags=tags)
    model = _build(variant, cfg)
    load_state_strict(model, tensors, source=str(best))
    source.update(best_pth=str(best), best_pth_sha256=sha256_file(best), hparams=hparams)
    meta: dict[str, Any] = {
        "published": variant.name,
        "source": source,
        "conversion": report.to_dict(),
        "preprocessing": variant.preprocessing(),
        "text_encoder": text_source,
        "tags_source": tags_source,
    }
    fb_diff = _fb_difference(tensors.get("audio_encoder.audio_representation.mel_scale.fb"), cfg)
    meta["conversion"]["mel_fb_max_abs_diff_vs_ours"] = fb_diff
    model.checkpoint_meta = meta  # type: ignore[assignment]
    log.info("loaded %s from %s (epoch %s)", variant.name, best, report.epoch)
    return model.to(device).eval()


def _fb_difference(stored: torch.Tensor | None, cfg: ModelConfig) -> float | None:
    """How far the release's stored mel filterbank is from ours (a check of the front end; logged if large)."""
    from musicsearch.audio.features import htk_mel_filterbank

    if stored is None:
        return None
    m = cfg.audio.mel
    ours = htk_mel_filterbank(sample_rate=m.sample_rate, n_fft=m.n_fft, n_mels=m.n_mels, f_min=m.f_min, f_max=m.f_max)
    diff = float((stored.double() - torch.from_numpy(ours).double()).abs().max())
    if diff > 1e-4:
        log.warning("the checkpoint's mel filterbank differs from ours by up to %.3g (it is used as stored)", diff)
    return diff
