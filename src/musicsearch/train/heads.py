"""Train a pretrained (musicnn) audio tower's head on cached backbone features, with soft teacher targets.

The recipe of issue 13, for a frozen backbone (``backbone_trainable=False``), in three steps:

1. :func:`extract_features`: every training window (3 s of a real recording, or of a procedural corpus clip) is
   run once through the tower's backbone, which for a ``musicnn-both*`` tower *is* the pair of teachers: one pass
   gives the features the head learns from and both teachers' tag probabilities for that window (the backbone
   reproduces :class:`~musicsearch.teachers.tagger.MusicnnTagger` on the window, tested). Results are cached in
   ``.npz`` chunks, so an interrupted run resumes.
2. :func:`train_head`: the head (and the audio projector) is trained from those features, the text tower frozen
   (the starting model's, so every word it knew keeps its place in the joint space; its outputs are cached per
   text), or with ``text_projection`` only its encoder frozen and the projection after it trained too. Each batch
   mixes

   * corpus windows with a stochastic text of their true tags (or one of their captions): contrastive loss;
   * real windows with a pseudo-caption of their confident teacher tags (calibrated per tag without labels,
     :func:`~musicsearch.teachers.pseudolabel.calibrate_thresholds`): contrastive loss;
   * real windows' soft targets: binary cross-entropy between ``sigmoid(s * cos(audio, text(tag)) + c)`` and the
     teachers' probabilities over all their tags written as natural text
     (:mod:`musicsearch.losses.soft_targets`, :mod:`musicsearch.teachers.tagtext`).
3. The result is an ordinary :class:`~musicsearch.models.dual_encoder.TextToMusic` (the backbone weights inside),
   saved with :func:`~musicsearch.models.checkpoint.save_model`; indexing, search and evaluation use it unchanged.

Training costs seconds per epoch on a CPU once the features exist; the features cost one backbone pass per window.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicsearch.audio.io import load_audio
from musicsearch.data.manifest import Track
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.fileio import atomic_write
from musicsearch.models.merge import interpolate_states

__all__ = [
    "TEACHER_GENRES",
    "BackboneFeatures",
    "HeadTrainConfig",
    "anchor_loss",
    "build_tower",
    "extract_features",
    "feature_columns",
    "head_inputs",
    "load_features",
    "load_window",
    "track_means",
    "train_head",
]

log = logging.getLogger(__name__)

#: The teachers' genre tags (of the merged MSD and MTT vocabulary, :func:`~musicsearch.teachers.pseudolabel.
#: merged_vocabulary`), each the one-word text query a user types for the genre: the words of the genre-ranking
#: loss (:attr:`HeadTrainConfig.genre_rank_weight`) and of the genre-agreement check (``experiments/soft_compare.py``).
TEACHER_GENRES: tuple[str, ...] = (
    "rock", "pop", "electronic", "jazz", "metal", "folk", "ambient", "classical", "country", "blues",
    "punk", "funk", "soul", "hip hop", "techno", "dance", "indie", "house", "r&b", "new age",
)  # fmt: skip


def load_window(track: Track, window_samples: int) -> np.ndarray:
    """``(window_samples,)`` float32 at 16 kHz from ``track.start`` (zero-padded at the file's end).

    Raises:
        AudioError: the file cannot be decoded.
    """
    wave = load_audio(track.audio_path, offset=track.start or 0.0, duration=window_samples / 16000.0)
    out = np.zeros(window_samples, dtype=np.float32)
    out[: min(window_samples, wave.size)] = wave[:window_samples]
    return out


@dataclass(frozen=True)
class BackboneFeatures:
    """Cached backbone outputs of N windows.

    Attributes:
        ids: ``(N,)`` window ids (the tracks' ``track_id``), in input order.
        features: ``(N, backbone_dim)`` float32.
        probs: ``(N, n_backbones * 50)`` float32 teacher probabilities, backbone (config) order.
    """

    ids: list[str]
    features: np.ndarray
    probs: np.ndarray


def build_tower(preset: str, base: Any) -> Any:
    """A model with the ``musicnn`` audio tower ``preset``, the pretrained networks loaded, and from the trained
    model ``base``: the whole text side (encoder, projector), the temperature and, for a joined tower, the own
    audio tower (``base``'s must have the same architecture; a ``base`` that is itself a joined musicnn tower, such
    as the shipped ``default``, gives its own joined tower and, if residual, its own projection).

    Raises:
        ConfigError: ``preset`` is not a musicnn tower, or a joined own tower does not match ``base``'s.
    """
    from musicsearch.models.checkpoint import load_state_strict
    from musicsearch.models.registry import PRESETS, build_model

    audio, _ = PRESETS.get(preset)()
    if audio.kind != "musicnn":
        raise ConfigError(f"{preset!r} is not a musicnn tower preset (musicnn-mtt, musicnn-msd, musicnn-both, ...)")
    cfg = base.config.replace(name=f"{preset}-{base.config.objective}-soft", audio=audio)
    model = build_model(cfg, pretrained_text=False, pretrained_audio=True)
    state = {k: v for k, v in base.state_dict().items() if k.startswith(("text_encoder.", "text_projector."))}
    if "logit_scale" in base.state_dict():
        state["logit_scale"] = base.state_dict()["logit_scale"]
    missing = {k for k in model.state_dict() if not k.startswith(("text_encoder.", "text_projector.", "logit_scale"))}
    missing |= {"head.logit_scale"}
    load_state_strict(model, state, source="the base model's text tower", allow_missing=missing)
    enc = model._musicnn_tower()
    # a base that is itself a joined musicnn tower (e.g. the shipped default) gives its joined own tower
    nested = base.config.audio.kind == "musicnn" and base.config.audio.join_own
    own_prefix = "audio_encoder.own." if nested else "audio_encoder."
    proj_prefix = "own_projector." if nested and base.config.audio.own_residual else "audio_projector."
    if enc.own is not None:
        own = {k[len(own_prefix) :]: v for k, v in base.state_dict().items() if k.startswith(own_prefix)}
        load_state_strict(enc.own, own, source="the base model's audio tower (joined as the own tower)")
    if model.own_projector is not None:
        proj = {k[len(proj_prefix) :]: v for k, v in base.state_dict().items() if k.startswith(proj_prefix)}
        load_state_strict(model.own_projector, proj, source="the base model's audio projector")
        with torch.no_grad():  # the head's projection starts at zero: the tower starts as the base model
            model.audio_projector[1].weight.zero_()  # type: ignore[operator]
    return model


def extract_features(
    model: Any,
    windows: Sequence[Track],
    cache_dir: str | Path,
    *,
    chunk: int = 64,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> BackboneFeatures:
    """Backbone features and teacher probabilities of every window, cached in ``cache_dir`` (resumable).

    Args:
        model: a model with a ``musicnn`` audio tower (:func:`build_tower`).
        windows: tracks whose ``start`` marks a window of ``window_samples`` (ids must be unique).
        cache_dir: one ``chunk-<i>.npz`` per ``chunk`` windows; a chunk already there is read back if it holds
            the same ids.
        chunk: windows per cache file.
        batch_size: windows per forward pass.
        progress: called with ``(done, total)`` windows after each chunk.

    Raises:
        MusicSearchError: a window cannot be decoded (the message names it).
    """
    enc = model.audio_encoder
    n_samples = model.config.audio.window_samples
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    feats, probs = [], []
    for c, a in enumerate(range(0, len(windows), chunk)):
        part = windows[a : a + chunk]
        ids = [w.track_id for w in part]
        path = folder / f"chunk-{c:05d}.npz"
        if path.is_file():
            with np.load(path) as z:
                if list(z["ids"]) == ids:
                    feats.append(z["features"])
                    probs.append(z["probs"])
                    continue
        try:
            wave = np.stack([load_window(w, n_samples) for w in part])
        except Exception as exc:
            raise MusicSearchError(f"cannot decode a window of {part[0].audio_path} ... for features: {exc}") from None
        f_parts, p_parts = [], []
        model.eval()
        with torch.inference_mode():
            for b in range(0, len(part), batch_size):
                f, logits = enc.backbone(torch.from_numpy(wave[b : b + batch_size]))
                f_parts.append(f.float().numpy())
                p_parts.append(torch.sigmoid(torch.cat(logits, dim=1)).float().numpy())
        f_arr, p_arr = np.concatenate(f_parts), np.concatenate(p_parts)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, ids=np.array(ids), features=f_arr, probs=p_arr)
        feats.append(f_arr)
        probs.append(p_arr)
        if progress is not None:
            progress(min(a + chunk, len(windows)), len(windows))
    return BackboneFeatures(
        ids=[w.track_id for w in windows],
        features=np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        probs=np.concatenate(probs) if probs else np.zeros((0, 0), np.float32),
    )


def load_features(windows: Sequence[Track], cache_dir: str | Path, *, chunk: int = 64) -> BackboneFeatures:
    """Read back what :func:`extract_features` cached for ``windows`` (same order and chunking).

    Raises:
        MusicSearchError: a chunk is missing or holds other windows (run the extraction again).
    """
    feats, probs = [], []
    for c, a in enumerate(range(0, len(windows), chunk)):
        path = Path(cache_dir) / f"chunk-{c:05d}.npz"
        ids = [w.track_id for w in windows[a : a + chunk]]
        if not path.is_file():
            raise MusicSearchError(f"feature chunk {path} is missing; run the feature extraction first")
        with np.load(path) as z:
            if list(z["ids"]) != ids:
                raise MusicSearchError(f"feature chunk {path} holds other windows; extract the features again")
            feats.append(z["features"])
            probs.append(z["probs"])
    return BackboneFeatures([w.track_id for w in windows], np.concatenate(feats), np.concatenate(probs))


def feature_columns(source: Any, target: Any) -> np.ndarray:
    """Columns of ``source``'s cached backbone features that make ``target``'s (both ``musicnn`` audio configs).

    ``target``'s backbones must be among ``source``'s, with the same read-out layer; a joined own tower must be
    in both. A ``target`` with ``tag_inputs`` also needs the cached probabilities: use :func:`head_inputs`.

    Raises:
        ConfigError: ``target`` needs features ``source`` did not compute.
    """
    from musicsearch.models.musicnn_tower import _LAYER_DIM

    if source.tag_inputs or target.tag_inputs:
        raise ConfigError(
            "feature_columns slices plain backbone features: cache them with a tower without tag_inputs (the "
            "probabilities are cached beside them) and build a tag_inputs tower's rows with head_inputs"
        )
    if source.backbone_layer != target.backbone_layer or (target.join_own and not source.join_own):
        raise ConfigError("the cached features were read out at another layer or without the own tower")
    size = _LAYER_DIM[source.backbone_layer]
    cols: list[np.ndarray] = []
    for name in target.backbones:
        if name not in source.backbones:
            raise ConfigError(f"the cached features have no {name} backbone; extract them with it")
        i = source.backbones.index(name)
        cols.append(np.arange(i * size, (i + 1) * size))
    if target.join_own:
        start = len(source.backbones) * size
        cols.append(np.arange(start, start + source.width_own))
    return np.concatenate(cols)


def head_inputs(source: Any, target: Any, cached: BackboneFeatures) -> np.ndarray:
    """``target``'s head inputs ``(N, backbone_dim(target))`` from features cached by a ``source`` tower.

    The layout is :meth:`~musicsearch.models.musicnn_tower.MusicnnAudioEncoder.backbone`'s: ``target``'s
    backbone read-outs (:func:`feature_columns`), then with ``tag_inputs`` the cached teacher probabilities of
    its networks, then the own tower's clip feature. ``source`` may have ``tag_inputs`` itself.

    Raises:
        ConfigError: ``target`` needs features ``source`` did not compute.
    """
    from musicsearch.models.musicnn_tower import tag_columns
    from musicsearch.teachers.musicnn import labels_for

    # a tag-input source's probability columns repeat cached.probs: drop them (an empty range otherwise)
    features = np.delete(cached.features, np.asarray(tag_columns(source), dtype=np.int64), axis=1)
    source = dataclasses.replace(source, tag_inputs=False)
    x = features[:, feature_columns(source, dataclasses.replace(target, tag_inputs=False))]
    if not target.tag_inputs:
        return x
    offsets = np.cumsum([0] + [len(labels_for(n)) for n in source.backbones])
    if cached.probs.shape[1] != offsets[-1]:
        raise ConfigError(f"the cache holds {cached.probs.shape[1]} teacher probabilities, {offsets[-1]} expected")
    tags = [cached.probs[:, offsets[source.backbones.index(n)] : offsets[source.backbones.index(n) + 1]]
            for n in target.backbones]  # fmt: skip
    at = tag_columns(target).start
    return np.ascontiguousarray(np.concatenate([x[:, :at], *tags, x[:, at:]], axis=1), dtype=np.float32)


@dataclass(frozen=True)
class HeadTrainConfig:
    """What :func:`train_head` does.

    Attributes:
        preset: the tower to train (a ``musicnn-*`` preset).
        feature_preset: the tower whose backbone features were cached (``preset``'s features are its columns).
        epochs: passes over the training windows; the epoch with the lowest validation loss is kept.
        batch_size: windows per step (real and corpus mixed).
        lr: AdamW learning rate (cosine decay to 0).
        weight_decay: AdamW weight decay.
        soft_weight: weight of the soft-target loss (0 trains on pseudo-captions and corpus text only).
        rank_weight: weight of the listwise tag-ranking loss (:func:`musicsearch.losses.soft_targets.
            tag_ranking_loss`): which teacher tag comes first for a window.
        rank_power: the ranking target's power (``tag_ranking_loss``'s ``power``; > 1 sharpens it towards the
            teachers' top tag).
        genre_rank_weight: weight of a second ranking loss over the genre words only (those of
            :data:`TEACHER_GENRES` the tower's teachers have, as text; the teachers' merged genre probabilities as
            target): which genre comes first for a window.
        genre_rank_power: that target's power.
        genre_track_targets: the genre-ranking target of a window is its recording's (the teachers' genre
            probabilities averaged over the recording's windows, ``metadata["track"]``), not the window's own:
            the genre a search by genre word should find the whole recording under.
        corpus_weight: weight of the corpus windows' rows in the contrastive loss (real windows' rows weigh 1;
            every row stays a negative for the others).
        pseudo_captions: train real windows contrastively on captions of their confident teacher tags.
        floor: lowest per-tag threshold of the confident tags.
        ceiling: highest per-tag threshold.
        max_tags: most confident tags a window keeps.
        caption_share: chance that a corpus window's text is one of its captions rather than a stochastic tag text.
        text_variants: texts drawn per training window before training (one is picked at every step).
        init_from: a checkpoint of the same ``preset`` (e.g. a head trained before) whose head, audio projection
            and logit scale the training starts from, instead of the zero head; empty: the zero head.
        anchor_weight: weight of a term that keeps every training window's audio embedding where the starting
            model put it (mean of ``1 - cos(new, start)``; the start is ``init_from``'s model, or the zero head):
            fine-tuning for one thing (e.g. the genre words) then moves the rest of the space as little as it can.
        wise: the trained head's weight in the saved model, whose head, audio projection and logit scale are
            ``(1 - wise) * start + wise * trained`` (WiSE-FT, :func:`musicsearch.models.merge.interpolate_states`;
            the start is ``init_from``'s head or, without it, a residual tower's base model; a plain tower's fresh
            head is random, so it needs ``init_from``). 1 keeps the trained head; 0.1-0.3 keep most of
            what the start knew and part of what the fine-tuning taught (docs/results.md, issue 13).
        text_projection: also train the text projection (the LayerNorm and Linear between the frozen text encoder
            and the joint space) on the same losses, so the text side moves towards the real audio too. The
            encoder stays frozen and its outputs are cached, so every word, trained on or not, moves by the same
            linear map; the saved model's text projection is the trained one (``wise`` mixes it as well).
        text_real_only: with ``text_projection``, only the real windows' terms move the text projection: the
            corpus windows' texts enter the contrastive loss detached, so the corpus still shapes the audio head
            but no word moves towards how the synthetic corpus renders it.
        text_anchor_weight: with ``text_projection``, weight of a term that keeps every training text's
            embedding (the window texts and tag words of the batch) where the starting model put it (mean of
            ``1 - cos(new, start)``): the projection moves less, so the words no training text holds move less too.
        keep_weight: weight of a term that keeps how every corpus window weighs the corpus's tag words (all of
            them: genres, instruments, moods, ...) as the starting model did (:func:`keep_loss`, the KL divergence
            between the start's and the new model's softmax over the words at the start's logit scale). The real
            windows move the space towards the teachers; the rendered corpus, closest to rendered-MIDI material
            such as VGMIDI, keeps what the start said about it. Needs corpus windows with tags.
        seed: the one seed (initialisation, batches, text sampling).
    """

    preset: str = "musicnn-both-small"
    feature_preset: str = "musicnn-both-small"
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    soft_weight: float = 1.0
    rank_weight: float = 0.0
    rank_power: float = 1.0
    genre_rank_weight: float = 0.0
    genre_rank_power: float = 1.0
    genre_track_targets: bool = False
    corpus_weight: float = 1.0
    pseudo_captions: bool = True
    floor: float = 0.2
    ceiling: float = 0.5
    max_tags: int = 10
    caption_share: float = 0.3
    text_variants: int = 6
    init_from: str = ""
    anchor_weight: float = 0.0
    wise: float = 1.0
    text_projection: bool = False
    text_real_only: bool = False
    text_anchor_weight: float = 0.0
    keep_weight: float = 0.0
    seed: int = 0


def row_weighted_info_nce(
    audio: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE (:func:`musicsearch.losses.contrastive.info_nce` in one process) with a weight per pair.

    Pair ``i``'s term is ``(CE(scale * a_i @ T^T, i) + CE(scale * t_i @ A^T, i)) / 2``; the loss is the mean over
    the ``B`` pairs of ``weights[i]`` times it (so weights of one give ``info_nce``; a pair of weight 0 adds no
    term of its own but stays a negative of the others).

    Args:
        audio: ``(B, D)`` L2-normalised audio embeddings.
        text: ``(B, D)`` L2-normalised text embeddings.
        scale: scalar multiplier of the cosine logits.
        weights: ``(B,)`` non-negative weights.
    """
    logits = scale * audio @ text.t()  # (B, B): row i = audio i against every text
    labels = torch.arange(audio.shape[0], device=audio.device)
    per_pair = 0.5 * (F.cross_entropy(logits, labels, reduction="none")
                      + F.cross_entropy(logits.t(), labels, reduction="none"))  # fmt: skip
    return (weights.to(per_pair.dtype) * per_pair).mean()


def track_means(values: np.ndarray, windows: Sequence[Track]) -> np.ndarray:
    """Each row of ``values`` replaced by the mean of the rows of its recording's windows (``metadata["track"]``,
    else the window's own id)."""
    keys = [str(w.metadata.get("track", w.track_id)) for w in windows]
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out = np.empty_like(values)
    for rows in groups.values():
        out[rows] = values[rows].mean(axis=0)
    return out


def anchor_loss(audio: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``1 - cos(audio_i, start_i)``: 0 where every embedding points where it started.

    Args:
        audio: ``(B, D)`` embeddings (any norm).
        start: ``(B, D)`` the starting model's embeddings of the same windows (any norm).
    """
    return (1.0 - F.cosine_similarity(audio, start, dim=-1)).mean()


def keep_loss(audio: torch.Tensor, words: torch.Tensor, start_probs: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean over rows of ``KL(start_probs_i || softmax(scale * cos(audio_i, words)))``: how far each window's
    distribution over a fixed word list has moved from the starting model's (learning without forgetting: Li and
    Hoiem, ECCV 2016). 0 where every window weighs the words as it did at the start.

    Args:
        audio: ``(B, D)`` audio embeddings (any norm).
        words: ``(V, D)`` the words' text embeddings (any norm).
        start_probs: ``(B, V)`` the starting model's distributions (rows sum to 1).
        scale: the softmax scale of both (the starting model's logit scale, fixed).
    """
    return F.kl_div(F.log_softmax(_word_logits(audio, words, scale), dim=-1), start_probs, reduction="batchmean")


def keep_distributions(audio: torch.Tensor, words: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax(scale * cos(audio_i, words))`` per row: the reference :func:`keep_loss` compares with."""
    return F.softmax(_word_logits(audio, words, scale), dim=-1)


def _word_logits(audio: torch.Tensor, words: torch.Tensor, scale: float) -> torch.Tensor:
    """``(B, V)`` scaled cosines of every audio row with every word (inputs of any norm)."""
    return scale * (F.normalize(audio, dim=-1) @ F.normalize(words, dim=-1).T)


class _TextCache:
    """Frozen text-side embeddings (joint space, L2-normalised), computed once per distinct string."""

    def __init__(self, model: Any, cache: dict[str, torch.Tensor] | None = None) -> None:
        self.model = model
        self.cache: dict[str, torch.Tensor] = {} if cache is None else cache

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        from musicsearch.models.inference import embed_texts

        new = sorted({t for t in texts if t not in self.cache})
        if new:
            emb = torch.from_numpy(embed_texts(self.model, new, batch_size=128))
            for t, e in zip(new, F.normalize(emb, dim=-1)):
                self.cache[t] = e
        return torch.stack([self.cache[t] for t in texts])


#: The state entries a head training changes (and ``init_from`` copies): the tower's head, the audio projection
#: and the logit scale, which the state dict holds twice (``logit_scale`` and ``head.logit_scale``, one parameter;
#: restoring only the first would let the second's stale value win). Everything else (backbones, own tower, text
#: side) stays frozen, except the text projection with ``text_projection`` (:data:`TEXT_TRAINED`).
TRAINED = ("audio_encoder.head.", "audio_projector.", "logit_scale", "head.logit_scale")
#: The entries :attr:`HeadTrainConfig.text_projection` also trains.
TEXT_TRAINED = ("text_projector.",)


def _trained_state(model: Any, keys: tuple[str, ...] = TRAINED) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s entries that start with ``keys`` (detached from the graph, safe from later steps)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(keys)}


class _TextFeatures:
    """The frozen text encoder's outputs (before the text projection), computed once per distinct string in eval
    mode; :meth:`embed` maps them through the (trainable) projection into the joint space, L2-normalised."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.cache: dict[str, torch.Tensor] = {}

    def add(self, texts: Sequence[str]) -> None:
        new = sorted({t for t in texts if t not in self.cache})
        if not new:
            return
        encoder = self.model.text_encoder
        was_training = encoder.training
        encoder.eval()
        with torch.no_grad():
            for a in range(0, len(new), 128):
                for t, f in zip(new[a : a + 128], encoder(new[a : a + 128]).float()):
                    self.cache[t] = f
        encoder.train(was_training)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        self.add(texts)
        feats = torch.stack([self.cache[t] for t in texts])
        return F.normalize(self.model.text_projector(feats), dim=-1)


def _start_from(model: Any, checkpoint: str) -> None:
    """Copy the head, audio projection and logit scale of ``checkpoint`` (a model of the same tower) into
    ``model``. A ``tag_inputs`` tower may start from the same tower without them: the head's weights for the
    probabilities start at zero, so the model starts as the checkpoint's.

    Raises:
        ConfigError: the checkpoint's tower differs (its head does not fit).
    """
    from musicsearch.models.loading import resolve_model

    started = resolve_model(checkpoint).model
    start = started.state_dict()
    state = model.state_dict()
    part = {k: v for k, v in start.items() if k.startswith(TRAINED)}
    mine_cfg, its_cfg = model.config.audio, started.config.audio
    w = "audio_encoder.head.1.weight"
    if mine_cfg.tag_inputs and not its_cfg.tag_inputs and w in part and w in state:
        # a tower with tag inputs from one without: the new input columns start at zero (the same function)
        from musicsearch.models.musicnn_tower import tag_columns

        cols = tag_columns(mine_cfg)
        if state[w].shape[1] - len(cols) == part[w].shape[1]:
            zeros = part[w].new_zeros(part[w].shape[0], len(cols))
            part[w] = torch.cat([part[w][:, : cols.start], zeros, part[w][:, cols.start :]], dim=1)
    bad = sorted(k for k in part if k not in state or state[k].shape != part[k].shape)
    mine = sorted(k for k in state if k.startswith(TRAINED) and k not in part)
    if bad or mine or not part:
        raise ConfigError(
            f"init_from={checkpoint!r}: its head does not fit the tower of {model.config.name!r} "
            f"(mismatched {bad[:3]}, missing {mine[:3]}); start from a checkpoint of the same preset"
        )
    model.load_state_dict({**state, **{k: v.to(state[k].dtype) for k, v in part.items()}})


def train_head(
    cfg: HeadTrainConfig,
    base: Any,
    real: Sequence[Track],
    real_feats: BackboneFeatures,
    corpus: Sequence[Track] = (),
    corpus_feats: BackboneFeatures | None = None,
    *,
    out_dir: str | Path | None = None,
    name: str = "model",
    text_cache: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train a musicnn tower's head on cached features (module docstring) and save the model.

    Args:
        cfg: the settings.
        base: the trained model whose text side (and, for a joined tower, own audio tower) the new model keeps.
        real: the real windows (``split`` train / valid / test; test windows are never trained on).
        real_feats: their cached features and teacher probabilities (:func:`extract_features`).
        corpus: corpus windows with their true tags and captions (``split`` train / valid).
        corpus_feats: their cached features.
        out_dir: where ``<name>.safetensors`` (float32), ``<name>.json`` (the log) and, once,
            ``real_test.jsonl`` (the held-out windows with the teachers' calibrated tags) are written.
        name: file stem of the outputs.
        text_cache: a dict of text -> unit joint-space embedding shared between runs with the same ``base`` (the
            frozen text side's embeddings, so several heads trained in one process embed each text once; with
            ``text_projection`` they are the starting embeddings, the text anchor's reference); filled here.

    Returns:
        A JSON-ready summary: config, windows per split, epochs' losses, best epoch, seconds, checkpoint path.

    Raises:
        ConfigError: bad settings, or features that do not match the windows.
    """
    from musicsearch.losses.contrastive import info_nce
    from musicsearch.losses.soft_targets import SoftTargetHead
    from musicsearch.models.checkpoint import save_model
    from musicsearch.models.registry import PRESETS
    from musicsearch.teachers.musicnn import labels_for
    from musicsearch.teachers.pseudolabel import (
        PseudoLabels,
        calibrate_thresholds,
        confident_tags,
        merge_probs,
        merged_vocabulary,
        pseudo_tracks,
    )
    from musicsearch.teachers.tagtext import teacher_tag_texts
    from musicsearch.text.sampling import sample_stochastic

    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ConfigError("train_head needs epochs >= 1 and batch_size >= 2")
    if not (cfg.rank_power > 0 and cfg.genre_rank_power > 0) or cfg.corpus_weight < 0 or cfg.anchor_weight < 0:
        raise ConfigError(
            f"train_head needs rank_power > 0, genre_rank_power > 0, corpus_weight >= 0 and anchor_weight >= 0; "
            f"got {cfg.rank_power}, {cfg.genre_rank_power}, {cfg.corpus_weight}, {cfg.anchor_weight}"
        )
    if not 0.0 <= cfg.wise <= 1.0:
        raise ConfigError(f"train_head needs 0 <= wise <= 1 (the trained head's weight), got {cfg.wise}")
    if cfg.keep_weight < 0 or (cfg.keep_weight > 0 and not any(w.tags for w in corpus)):
        raise ConfigError(
            f"keep_weight={cfg.keep_weight}: it must be >= 0, and > 0 needs corpus windows with tags "
            "(the words it keeps)"
        )
    if cfg.text_anchor_weight < 0 or ((cfg.text_anchor_weight > 0 or cfg.text_real_only) and not cfg.text_projection):
        raise ConfigError(
            f"text_anchor_weight={cfg.text_anchor_weight}, text_real_only={cfg.text_real_only}: the anchor must be "
            ">= 0, and both need text_projection=True (they act on the trained text projection)"
        )
    if len(real) != real_feats.features.shape[0] or (corpus and corpus_feats is None):
        raise ConfigError("every window needs its cached features (extract_features)")
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    source_audio, _ = PRESETS.get(cfg.feature_preset)()
    model = build_tower(cfg.preset, base)
    if cfg.init_from:
        _start_from(model, cfg.init_from)
    elif cfg.wise < 1.0 and not model.config.audio.own_residual:
        raise ConfigError(
            f"wise={cfg.wise} mixes the trained head with its start, and a fresh {cfg.preset} head is random: give "
            "init_from (the model to fall back towards), or use a -residual tower, whose start is the base model"
        )
    if cfg.text_projection and getattr(model, "text_projector", None) is None:
        raise ConfigError("text_projection=True needs a model with a text projection (a text tower, not tag rows)")
    keys = TRAINED + TEXT_TRAINED if cfg.text_projection else TRAINED
    start_state = _trained_state(model, keys) if cfg.wise < 1.0 else {}

    # teachers' probabilities -> soft targets (all tags, natural text) and confident tags (merged vocabulary)
    teachers = list(source_audio.backbones)
    tag_texts = teacher_tag_texts([labels_for(t) for t in teachers])
    vocab, columns = merged_vocabulary([labels_for(t) for t in teachers])
    per_teacher = [real_feats.probs[:, 50 * i : 50 * (i + 1)] for i in range(len(teachers))]
    merged = merge_probs(per_teacher, columns, len(vocab))
    thresholds = calibrate_thresholds(merged, floor=cfg.floor, ceiling=cfg.ceiling)
    real_tags = [confident_tags(merged[i], vocab, thresholds, max_tags=cfg.max_tags) for i in range(len(real))]
    if out_dir is not None and not (Path(out_dir) / "real_test.jsonl").is_file():
        from musicsearch.data.manifest import write_manifest

        labels = PseudoLabels(
            tags=vocab,
            track_ids=[str(w.metadata.get("track", w.track_id)) for w in real],
            audio_paths=[w.audio_path for w in real],
            starts=np.array([w.start or 0.0 for w in real]),
            window_seconds=3.0,
            probs=merged,
            failed=[],
        )
        split_of = {str(w.metadata.get("track", w.track_id)): str(w.split) for w in real}
        tests = [t for t in pseudo_tracks(labels, thresholds, max_tags=cfg.max_tags, splits=split_of, id_prefix="real:")
                 if t.split == "test"]  # fmt: skip
        write_manifest(Path(out_dir) / "real_test.jsonl", tests)

    feats = torch.from_numpy(head_inputs(source_audio, model.config.audio, real_feats))
    probs = torch.from_numpy(real_feats.probs)
    n_real = feats.shape[0]
    c_feats = (torch.from_numpy(head_inputs(source_audio, model.config.audio, corpus_feats))
               if corpus_feats is not None and corpus else None)  # fmt: skip
    all_feats = torch.cat([feats, c_feats]) if c_feats is not None else feats
    splits = [w.split for w in real] + [w.split or "train" for w in corpus]
    train_idx = np.array([i for i, s in enumerate(splits) if s == "train"])
    valid_idx = np.array([i for i, s in enumerate(splits) if s == "valid"])
    if train_idx.size == 0:
        raise ConfigError("no training windows (split 'train')")

    keep_words = sorted({str(tag) for w in corpus for tag in w.tags}) if cfg.keep_weight > 0 else []
    start_joint: torch.Tensor | None = None
    if cfg.anchor_weight > 0 or keep_words:  # the starting model's embeddings of every window (eval: no dropout)
        model.eval()
        with torch.no_grad():
            start_joint = F.normalize(model.joint_from_features(all_feats), dim=-1)
    anchor = start_joint if cfg.anchor_weight > 0 else None
    # frozen text side: joint-space embeddings cached once (shared between runs); trained text projection: the
    # encoder's outputs cached, the projection applied at every step
    cached_text = _TextCache(model, text_cache)
    text_feats = _TextFeatures(model) if cfg.text_projection else None
    keep_probs: torch.Tensor | None = None
    keep_emb = cached_text(keep_words) if keep_words else None  # (V, D), as tag_emb below
    keep_scale = float(model.logit_scale.detach().exp().clamp(max=model.config.max_logit_scale))
    if start_joint is not None and keep_emb is not None:  # the start's distributions over the corpus words
        keep_probs = keep_distributions(start_joint[n_real:], keep_emb, keep_scale)
        if text_feats is not None:
            text_feats.add(keep_words)
    embed_text = text_feats.embed if text_feats is not None else cached_text
    tag_emb = cached_text(tag_texts)  # (K, D): frozen, or recomputed every step with text_projection
    soft = SoftTargetHead()
    genre_head = SoftTargetHead()  # its own ranking temperature for the genre words
    genres = [g for g in TEACHER_GENRES if g in vocab]  # an MSD-only tower's teacher has no "classical"
    genre_emb = cached_text(genres)  # (G, D), as tag_emb
    window_genres = merged[:, [vocab.index(g) for g in genres]]  # (N_real, G)
    genre_probs = torch.from_numpy(track_means(window_genres, real) if cfg.genre_track_targets else window_genres)
    params = [*model.audio_encoder.head.parameters(), *model.audio_projector.parameters(), *soft.parameters()]
    if cfg.genre_rank_weight > 0:
        params += list(genre_head.parameters())
    if hasattr(model, "logit_scale"):
        params.append(model.logit_scale)
    if cfg.text_projection:
        params += list(model.text_projector.parameters())
    # what the config makes trainable decides which text weights a checkpoint stores: restored before saving
    trainable_by_config = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-train_idx.size // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)

    def draw_text(i: int, r: np.random.Generator, train: bool) -> str | None:
        if i < n_real:
            tags = real_tags[i]
            if not tags or not cfg.pseudo_captions:
                return None
            return sample_stochastic(tags, r, train=train)
        t = corpus[i - n_real]
        if t.captions and r.random() < cfg.caption_share:
            return str(t.captions[int(r.integers(len(t.captions)))])
        return sample_stochastic(list(t.tags), r, train=train) if t.tags else None

    # a fixed pool of text variants per window, drawn once (seeded) and embedded once: the frozen text tower
    # then costs one pass over the pool, not one per step
    pool_rng = np.random.default_rng(cfg.seed + 2)
    pools: list[list[str]] = []
    for i in range(all_feats.shape[0]):
        is_valid = splits[i] == "valid"
        drawn = [draw_text(i, pool_rng, not is_valid) for _ in range(1 if is_valid else cfg.text_variants)]
        pools.append(sorted({d for d in drawn if d is not None}))
    pooled = [t for p in pools for t in p]
    cached_text(pooled)  # every text's starting embedding (the text anchor's reference when the text side trains)
    if text_feats is not None:
        text_feats.add([*pooled, *tag_texts, *genres])

    def text_of(i: int, r: np.random.Generator, train: bool) -> str | None:
        p = pools[i]
        return p[int(r.integers(len(p)))] if p else None

    def batch_loss(idx: np.ndarray, r: np.random.Generator, train: bool) -> tuple[torch.Tensor, dict[str, float]]:
        audio = model.joint_from_features(all_feats[idx])  # (B, D)
        texts = [text_of(int(i), r, train) for i in idx]
        has = [k for k, t in enumerate(texts) if t is not None]
        stats: dict[str, float] = {}
        loss = audio.new_zeros(())
        if len(has) >= 2:
            a = F.normalize(audio[has], dim=-1)
            t = embed_text([texts[k] for k in has])  # type: ignore[misc]
            if cfg.text_real_only:
                real_row = torch.tensor([bool(idx[k] < n_real) for k in has])[:, None]
                t = torch.where(real_row, t, t.detach())
            scale = model.logit_scale.exp().clamp(max=model.config.max_logit_scale)
            if cfg.corpus_weight == 1.0:
                c = info_nce(a, t, scale)
            else:
                w = torch.tensor([1.0 if idx[k] < n_real else cfg.corpus_weight for k in has])
                c = row_weighted_info_nce(a, t, scale, w)
            loss = loss + c
            stats["contrastive"] = float(c.detach())
        real_rows = [k for k, i in enumerate(idx) if i < n_real]
        tags_now, genres_now = tag_emb, genre_emb
        if text_feats is not None:
            tags_now, genres_now = text_feats.embed(tag_texts), text_feats.embed(genres)
            if cfg.text_anchor_weight > 0:
                # the window texts of the batch (embedded by the contrastive term above) and every tag word
                said = [texts[k] for k in has] if len(has) >= 2 else []
                new = torch.cat([tags_now, genres_now, t if said else tags_now[:0]])
                ta = anchor_loss(new, cached_text([*tag_texts, *genres, *said]))  # type: ignore[list-item]
                loss = loss + cfg.text_anchor_weight * ta
                stats["text_anchor"] = float(ta.detach())
        if real_rows and cfg.soft_weight > 0:
            s = soft(audio[real_rows], tags_now, probs[idx[real_rows]])
            loss = loss + cfg.soft_weight * s
            stats["soft"] = float(s.detach())
        if real_rows and cfg.rank_weight > 0:
            rk = soft.ranking(audio[real_rows], tags_now, probs[idx[real_rows]], cfg.rank_power)
            loss = loss + cfg.rank_weight * rk
            stats["rank"] = float(rk.detach())
        if real_rows and cfg.genre_rank_weight > 0:
            gr = genre_head.ranking(audio[real_rows], genres_now, genre_probs[idx[real_rows]], cfg.genre_rank_power)
            loss = loss + cfg.genre_rank_weight * gr
            stats["genre_rank"] = float(gr.detach())
        corpus_rows = [k for k, i in enumerate(idx) if i >= n_real]
        if keep_probs is not None and keep_emb is not None and corpus_rows:
            words = text_feats.embed(keep_words) if text_feats is not None else keep_emb
            kp = keep_loss(audio[corpus_rows], words, keep_probs[idx[corpus_rows] - n_real], keep_scale)
            loss = loss + cfg.keep_weight * kp
            stats["keep"] = float(kp.detach())
        if anchor is not None:
            an = anchor_loss(audio, anchor[torch.from_numpy(idx)])
            loss = loss + cfg.anchor_weight * an
            stats["anchor"] = float(an.detach())
        return loss, stats

    history = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for epoch in range(cfg.epochs):
        model.train()
        order = train_idx[rng.permutation(train_idx.size)]
        tot: dict[str, float] = {}
        for a in range(0, order.size, cfg.batch_size):
            loss, stats = batch_loss(order[a : a + cfg.batch_size], rng, True)
            opt.zero_grad()
            if loss.requires_grad:  # a batch no term applies to (e.g. no texts, no teacher terms) trains nothing
                loss.backward()
                opt.step()
            sched.step()
            for k, v in stats.items():
                tot[k] = tot.get(k, 0.0) + v / steps_per_epoch
        model.eval()
        with torch.no_grad():
            vr = np.random.default_rng(cfg.seed + 1)  # the same validation texts every epoch
            vals = [batch_loss(valid_idx[a : a + cfg.batch_size], vr, False)[0].item()
                    for a in range(0, valid_idx.size, cfg.batch_size)] if valid_idx.size else [0.0]  # fmt: skip
        val = float(np.mean(vals))
        history.append({"epoch": epoch + 1, **{k: round(v, 4) for k, v in tot.items()}, "valid": round(val, 4)})
        log.info("head epoch %d: %s", epoch + 1, history[-1])
        if best is None or val < best[0]:
            best = (val, epoch + 1, _trained_state(model, keys))
    assert best is not None
    trained = best[2] if cfg.wise == 1.0 else interpolate_states(start_state, best[2], cfg.wise)
    model.load_state_dict({**model.state_dict(), **trained})
    model.eval()
    for n, p in model.named_parameters():
        p.requires_grad_(trainable_by_config[n])
    listing = [[w.track_id, w.audio_path, w.start, w.split] for w in [*real, *corpus]]
    summary: dict[str, Any] = {
        "config": dataclasses.asdict(cfg),
        "train_config": {"recipe": "musicsearch.train.heads.train_head", **dataclasses.asdict(cfg)},
        # the training data's identity: SHA-256 of the JSON list of [id, file, start, split] of every window
        "manifest_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
        "epoch": best[1],
        "valid_loss": best[0],
        "windows": {s: int(sum(1 for x in splits if x == s)) for s in ("train", "valid", "test")},
        "real_windows": n_real,
        "corpus_windows": len(corpus),
        "history": history,
        "best_epoch": best[1],
        "best_valid": best[0],
        "soft_scale_bias": [float(soft.log_scale.detach().exp()), float(soft.bias.detach())],
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if out_dir is not None:
        path = Path(out_dir) / f"{name}.safetensors"
        summary["checkpoint"] = str(path)
        summary["sha256"] = save_model(model, path, meta={"recipe": "musicsearch.train.heads", **summary})
        (Path(out_dir) / f"{name}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary
