"""What the release did at inference time: window placement (``hop = (T - L) // n``), window pooling into a track
embedding, the classification model's tag scores, and the GloVe variants' tag-vector text input.

The facts themselves (windows per purpose, pooling) are recorded per variant by
:meth:`musicsearch.models.pretrained.PublishedModel.preprocessing`; these functions apply them to a loaded model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from musicsearch.audio.chunking import WINDOW_SAMPLES, pad_to
from musicsearch.errors import CheckpointError, ConfigError, MusicSearchError
from musicsearch.losses.registry import objective
from musicsearch.models.convert import torch_load
from musicsearch.models.dual_encoder import TextToMusic

log = logging.getLogger(__name__)


def release_window_starts(n_samples: int, n_windows: int, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """Window starts as the release's evaluation placed them: ``hop = (T - L) // n``, starts ``i * hop``, ``i < n``.

    Unlike :func:`musicsearch.audio.chunking.evenly_spaced_starts`, the last window does not reach the end of the
    clip. The release fails on clips shorter than a window; here such a clip gives one start, 0 (padded).

    Returns:
        ``(n_windows,)`` int64 starts, or ``[0]`` for a clip no longer than ``length``.
    """
    if n_windows < 1:
        raise MusicSearchError(f"n_windows must be >= 1, got {n_windows}")
    if n_samples <= length:
        return np.zeros(1, dtype=np.int64)
    hop = (n_samples - length) // n_windows
    return np.arange(n_windows, dtype=np.int64) * hop


def release_windows(wave: np.ndarray, n_windows: int, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """``(T,)`` waveform at 16 kHz -> ``(k, length)`` float32 windows at :func:`release_window_starts`."""
    w = pad_to(np.asarray(wave), length)
    starts = release_window_starts(int(w.shape[0]), n_windows, length)
    return np.stack([w[s : s + length] for s in starts]).astype(np.float32, copy=False)


def _default_windows(model: TextToMusic, purpose: str) -> int:
    pre = (getattr(model, "checkpoint_meta", None) or {}).get("preprocessing") or {}
    key = {"retrieval": "retrieval_windows", "transfer": "transfer_windows"}.get(purpose)
    if key is None:
        raise MusicSearchError(f"purpose must be 'retrieval' or 'transfer', got {purpose!r}")
    return int(pre.get(key, 3 if purpose == "retrieval" else 8))


def release_track_embedding(
    model: TextToMusic, wave: np.ndarray, *, n_windows: int | None = None, purpose: str = "retrieval"
) -> torch.Tensor:
    """A track's embedding as the release computed it (before the final L2 normalisation).

    Windows at :func:`release_window_starts`; contrastive/triplet: mean of the window embeddings;
    classification: mean of the L2-normalised window embeddings (its ``encode_audio`` normalised).

    Args:
        model: a loaded model, in eval mode.
        wave: ``(T,)`` float32 waveform at 16 kHz.
        n_windows: windows to average; default from the model's metadata by ``purpose`` (3 retrieval,
            8 transfer).
        purpose: ``retrieval`` or ``transfer``.

    Returns:
        ``(joint_dim,)`` float32.

    Raises:
        MusicSearchError: if the model is in training mode (dropout would make embeddings random).
    """
    if model.training:
        raise MusicSearchError("the model is in training mode; call model.eval() for deterministic embeddings")
    n = n_windows or _default_windows(model, purpose)
    windows = torch.from_numpy(release_windows(wave, n, model.config.audio.window_samples))
    dev = next(model.parameters()).device
    with torch.inference_mode():
        emb = model.encode_audio(windows.to(dev))  # (k, D)
        if objective(model.config.objective).unit_audio:
            emb = F.normalize(emb, dim=-1)
        return emb.mean(0).float().cpu()


def release_tag_scores(model: TextToMusic, wave: np.ndarray, *, n_windows: int | None = None) -> torch.Tensor:
    """Classification: the release's tag scores, the mean over windows of ``sigmoid(fc_cls(normalised emb))``.

    Returns:
        ``(n_tags,)`` probabilities in ``config.tags`` order.
    """
    if not objective(model.config.objective).tag_head:
        raise ConfigError("release_tag_scores needs a classification model")
    if model.training:
        raise MusicSearchError("the model is in training mode; call model.eval() for deterministic scores")
    n = n_windows or _default_windows(model, "retrieval")
    windows = torch.from_numpy(release_windows(wave, n, model.config.audio.window_samples))
    dev = next(model.parameters()).device
    with torch.inference_mode():
        logits = model.head.logits(model.encode_audio(windows.to(dev)))  # type: ignore[operator]
        return torch.sigmoid(logits).mean(0).float().cpu()


def read_glove_tag_embeddings(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """The release's ``ecals_annotation/glove_tag_embs.pt``: tag -> 300-d vector (what its GloVe models read).

    Raises:
        CheckpointError: if the file is unreadable or not a mapping of tags to vectors.
    """
    obj, _ = torch_load(path, allow_pickle=allow_pickle)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} is not a mapping of tags to vectors")
    out = {str(k): np.asarray(v, dtype=np.float32).reshape(-1) for k, v in obj.items()}
    dims = {v.shape[0] for v in out.values()}
    if len(dims) != 1:
        raise CheckpointError(f"{path}: tag vectors of several sizes {sorted(dims)}")
    return out


def encode_tags_release(
    model: TextToMusic, tag_lists: Sequence[Sequence[str]], tag_vectors: Mapping[str, np.ndarray]
) -> torch.Tensor:
    """GloVe variants: text embeddings exactly as the release formed them from tags.

    The release's GloVe text input is not free text: each tag has one vector (``glove_tag_embs.pt``) and a
    caption is the mean of its tags' vectors, then the text projector. Our ``encode_text`` instead averages the
    word vectors of free text, which equals this only for one-word tags from the same GloVe file.

    Args:
        model: a GloVe-variant model.
        tag_lists: ``N`` lists of tags (one tag for a tag query).
        tag_vectors: from :func:`read_glove_tag_embeddings`.

    Returns:
        ``(N, joint_dim)`` embeddings (not normalised).

    Raises:
        ConfigError: for a model without a text projector, or a tag without a vector.
    """
    if model.text_projector is None:
        raise ConfigError("encode_tags_release needs a model with a text tower (a GloVe variant)")
    rows = []
    for tags in tag_lists:
        missing = [t for t in tags if t not in tag_vectors]
        if missing or not tags:
            raise ConfigError(f"no tag vector for {missing or 'an empty tag list'}; use tags of the release's list")
        rows.append(np.mean([tag_vectors[t] for t in tags], axis=0))
    feats = torch.from_numpy(np.stack(rows).astype(np.float32))
    dev = next(model.parameters()).device
    with torch.inference_mode():
        return model.text_projector(feats.to(dev))
