"""The search path's model: ONNX Runtime when the model has an export (no torch, no transformers), torch otherwise;
and a bounded LRU cache of text embeddings.

:func:`open_embedder` is what :meth:`musicsearch.search.api.Searcher.open` (and so ``musicsearch query``,
``serve`` and the Python search API) calls. For a model named by a shipped name, a ``.safetensors`` file or a run
folder, it looks for an export of exactly those weights (by their SHA-256) in the ONNX cache
(:func:`musicsearch.models.onnx.onnx_cache_dir`):

* found and intact: an :class:`OnnxEmbedder`; the query text is encoded with ``tokenizers`` + ``onnxruntime``;
* found but stale or damaged: a warning naming the problem, then torch (never a wrong embedding);
* not found: torch; for a shipped model the export is made there and then (first use, once, atomically), so the
  next process runs without torch. ``musicsearch export --onnx --model M`` makes one for any model.

Query texts run on the text tower of the model's int8 export (``musicsearch export --onnx --int8``; made on first
use beside the float32 one for a shipped model) when there is a good one, else on the float32 export's; audio
(``like`` a file) always on the float32 export. ``MUSICSEARCH_TEXT_INT8=0`` keeps texts on float32.
``MUSICSEARCH_ONNX=0`` turns all of this off (torch always).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.embedder import Embedder, ExportedEmbedder, load_embedder, write_first_export
from musicsearch.models.onnx import (
    EXPORT_FILE,
    ExportedModel,
    StaleExportError,
    export_dir_for,
    weights_of,
)

log = logging.getLogger(__name__)

__all__ = [
    "ENV_ONNX",
    "ENV_TEXT_INT8",
    "OnnxEmbedder",
    "TextEmbeddingCache",
    "TextSessionPool",
    "default_text_sessions",
    "onnx_enabled",
    "open_embedder",
    "text_int8_enabled",
    "thread_safe_text_encoder",
]

#: Environment switch: ``0`` (or ``false``/``no``/``off``) keeps the search path on torch.
ENV_ONNX = "MUSICSEARCH_ONNX"


#: Environment switch for the query text tower's precision: ``1`` runs it from the model's int8 export when there
#: is one (the audio tower stays float32), ``0`` from the float32 export. Default: see :func:`text_int8_enabled`.
ENV_TEXT_INT8 = "MUSICSEARCH_TEXT_INT8"
#: Whether the search path's text tower is int8 unless ``$MUSICSEARCH_TEXT_INT8`` says otherwise. On: its cost,
#: measured on the corpus benchmark and the real recordings (docs/results.md, issue 15), is within the issue's
#: 0.5 ROC-AUC points (tags -0.18, unseen words -0.42 on 400 clips; real-recording MRR 0.768 -> 0.766; sentence
#: R@1 -1.75 points), for a text tower 2-3x faster. The int8 *audio* tower costs 11-14 points: never used here.
TEXT_INT8_DEFAULT = True


def text_int8_enabled() -> bool:
    """Whether the search path encodes query texts with the int8 export (``$MUSICSEARCH_TEXT_INT8``, else
    :data:`TEXT_INT8_DEFAULT`)."""
    value = os.environ.get(ENV_TEXT_INT8)
    if value is None or not value.strip():
        return TEXT_INT8_DEFAULT
    return value.strip().lower() not in ("0", "false", "no", "off")


def onnx_enabled() -> bool:
    """Whether the search path may use ONNX exports (``$MUSICSEARCH_ONNX``, default on)."""
    return os.environ.get(ENV_ONNX, "1").strip().lower() not in ("0", "false", "no", "off")


def default_text_sessions() -> int:
    """Text sessions a server runs by default: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class TextSessionPool:
    """``size`` ONNX Runtime sessions of one export's text tower, each with its own tokenizer, shared by threads.

    A call takes a free session (waiting while all are busy), runs the texts through it and gives it back, so up
    to ``size`` threads encode at once, each on its own core when ``threads`` is 1. The sessions are created here
    (not on the first query, which would otherwise wait ~1 s per session).

    Args:
        exported: the checked export (its text tower is used; its own sessions are left alone).
        size: sessions (>= 1).
        threads: ONNX Runtime intra-op threads per session (0: its default, one per core; right for one session
            serving one caller at a time, wrong for several sessions that would fight over the cores).

    Raises:
        MusicSearchError: ``size < 1`` or ``threads < 0``.
        ConfigError: the export has no text tower.
        StaleExportError: the text graph cannot be loaded.
    """

    def __init__(self, exported: ExportedModel, *, size: int, threads: int = 1) -> None:
        if size < 1 or threads < 0:
            raise MusicSearchError(f"text sessions must be >= 1 and threads >= 0, got {size} and {threads}")
        self.size = int(size)
        self.threads = int(threads)
        self._free: queue.SimpleQueue[ExportedModel] = queue.SimpleQueue()
        for _ in range(self.size):
            member = ExportedModel(exported.folder, exported.meta, threads=self.threads)
            member.encode_text(["warm up"])  # session and tokenizer loaded now, not under the first request
            self._free.put(member)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``N`` texts -> ``(N, D)`` float32 raw embeddings, on whichever session is free first (thread-safe)."""
        member = self._free.get()
        try:
            return member.encode_text(texts)
        finally:
            self._free.put(member)


class OnnxEmbedder(ExportedEmbedder):
    """An :class:`~musicsearch.index.embedder.Embedder` whose towers run from an ONNX export.

    It has the identity of the torch model it stands for (config name, weights checksum, source), so a store
    accepts it exactly when it would accept that model. Texts and audio windows go through ONNX Runtime;
    ``.model`` (the torch model) is loaded only if some caller asks for it.

    Args:
        exported: a checked export (:meth:`~musicsearch.models.onnx.ExportedModel.open`).
        source: the ``--model`` value it stands for.
        batch_size: windows per ONNX Runtime call.
        text_export: the export whose text tower encodes texts (an int8 export of the same weights), if not
            ``exported``'s.

    Raises:
        MusicSearchError: a batch size below 1, or a ``text_export`` of other weights.
    """

    def __init__(
        self,
        exported: ExportedModel,
        *,
        source: str,
        batch_size: int = 16,
        text_export: ExportedModel | None = None,
    ) -> None:
        super().__init__(exported, source=source, batch_size=batch_size)
        if text_export is not None and text_export.weights_sha256 != exported.weights_sha256:
            raise MusicSearchError(f"text export {text_export.folder} stands for other weights than {exported.folder}")
        self.text_export = text_export if text_export is not None else exported
        self._pool: TextSessionPool | None = None
        self._one = threading.Lock()  # without a pool: the export's own session, one caller at a time

    def use_text_sessions(self, size: int, *, threads: int = 1) -> TextSessionPool:
        """Encode texts on a pool of ``size`` sessions with ``threads`` intra-op threads each from now on
        (:class:`TextSessionPool`): concurrent callers (the server's worker threads) then encode in parallel.

        Args:
            size: sessions (``musicsearch serve --text-sessions``; default there: one per core).
            threads: intra-op threads per session.

        Returns:
            The pool.

        Raises:
            MusicSearchError: ``size < 1`` or ``threads < 0``.
        """
        self._pool = TextSessionPool(self.text_export, size=size, threads=threads)
        return self._pool

    @property
    def text_int8(self) -> bool:
        """Whether texts are encoded by an int8 text tower."""
        return bool(self.text_export.meta.get("int8"))

    @property
    def text_pool(self) -> TextSessionPool | None:
        """The text session pool, if :meth:`use_text_sessions` set one."""
        return self._pool

    def _run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Checked ``(N, window_samples)`` float32 windows -> ``(N, D)`` float32 raw embeddings (ONNX Runtime).

        Raises:
            MusicSearchError: NaN/inf from the model.
        """
        out = self.exported.encode_audio(windows, batch_size=self.batch_size)
        if not np.isfinite(out).all():
            raise MusicSearchError(f"model {self.name} (ONNX) gave NaN or inf for these windows")
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``N`` texts -> ``(N, D)`` unit float32 embeddings (ONNX Runtime; within 1e-4 of torch before norming).

        Thread-safe: on the session pool when there is one (callers run in parallel), else on the export's own
        session, one caller at a time.
        """
        items = list(texts)
        if not all(isinstance(t, str) for t in items):
            raise MusicSearchError("texts must be strings")
        pool = self._pool
        if pool is not None:
            raw = pool.encode(items)
        else:
            with self._one:
                raw = self.text_export.encode_text(items)
        return l2_normalize(raw, what="text embeddings")

    def __repr__(self) -> str:
        return (
            f"OnnxEmbedder(name={self.name!r}, checksum={self.checksum[:12]}, folder={str(self.exported.folder)!r}, "
            f"text_int8={self.text_int8})"
        )


def _is_shipped_name(model: str) -> bool:
    return not Path(model).expanduser().exists() and "/" not in model and "\\" not in model


def open_embedder(
    model: str | os.PathLike[str] | Embedder,
    *,
    onnx: bool | None = None,
    text_int8: bool | None = None,
    export_on_first_use: bool = True,
    batch_size: int = 16,
) -> Embedder:
    """The model for searching: its ONNX export when there is a good one, else torch (see the module notes).

    Args:
        model: an :class:`Embedder` (returned as is), or a ``--model`` value (shipped name, file, run folder,
            published name).
        onnx: use ONNX exports (``None``: ``$MUSICSEARCH_ONNX``, default on).
        text_int8: encode texts with the int8 export's text tower when there is a good one (``None``:
            :func:`text_int8_enabled`); the audio tower is always the float32 export's.
        export_on_first_use: for a shipped model without an export, make one in the cache after loading torch
            (and its int8 export too when ``text_int8``).
        batch_size: audio windows per forward pass.

    Returns:
        An :class:`OnnxEmbedder` or a torch :class:`Embedder`.

    Raises:
        CheckpointError: the model cannot be loaded at all (as :func:`~musicsearch.index.embedder.load_embedder`).
    """
    if isinstance(model, Embedder):
        return model
    if not (onnx_enabled() if onnx is None else onnx):
        return load_embedder(model, batch_size=batch_size)
    spec = str(model)
    found = weights_of(spec)
    if found is None:  # a published checkpoint, or nothing there: torch says which
        return load_embedder(model, batch_size=batch_size)
    _, sha = found
    folder = export_dir_for(sha)
    if (folder / EXPORT_FILE).exists():
        try:
            exported = ExportedModel.open(folder, weights_sha256=sha)
            if exported.has_text:
                source = str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec
                want_int8 = text_int8_enabled() if text_int8 is None else text_int8
                text_export = _int8_text_export(sha) if want_int8 else None
                return OnnxEmbedder(exported, source=source, batch_size=batch_size, text_export=text_export)
        except StaleExportError as exc:
            log.warning("%s. Using torch for now", exc)
        return load_embedder(model, batch_size=batch_size)
    embedder = load_embedder(model, batch_size=batch_size)
    if export_on_first_use and _is_shipped_name(spec):
        write_first_export(embedder.model, sha, spec, int8=text_int8_enabled() if text_int8 is None else text_int8)
    return embedder


def _int8_text_export(sha: str) -> ExportedModel | None:
    """The int8 export of the weights ``sha`` if there is a good one with a text tower, else ``None`` (the float32
    text tower is used; a damaged int8 export is named in a warning)."""
    folder = export_dir_for(sha, int8=True)
    if not (folder / EXPORT_FILE).exists():
        log.info("no int8 export in %s: query texts use the float32 text tower", folder)
        return None
    try:
        exported = ExportedModel.open(folder, weights_sha256=sha)
    except StaleExportError as exc:
        log.warning("%s. Using the float32 text tower", exc)
        return None
    return exported if exported.has_text and exported.meta.get("int8") else None


def thread_safe_text_encoder(embedder: Embedder) -> Callable[[Sequence[str]], np.ndarray]:
    """``embedder.embed_texts`` made safe to call from several threads: an :class:`OnnxEmbedder`'s as it is (its
    sessions are shared safely, in parallel on a :class:`TextSessionPool`); a torch model's behind one lock (one
    model, one caller at a time).

    Args:
        embedder: the searcher's model.

    Returns:
        ``texts -> (N, D)`` unit float32 embeddings.
    """
    if isinstance(embedder, OnnxEmbedder):
        return embedder.embed_texts
    lock = threading.Lock()

    def embed(texts: Sequence[str]) -> np.ndarray:
        with lock:
            return embedder.embed_texts(texts)

    return embed


class TextEmbeddingCache:
    """A bounded, thread-safe LRU cache in front of an ``embed(texts) -> (N, D)`` function, keyed by the whole list
    of texts (a query's positive text and its negative terms), so that a cached answer is exactly the array an
    uncached call would give (float32 embeddings depend, in the last bits, on what they were batched with).

    Args:
        embed: the function that embeds a list of texts the cache does not hold.
        size: lists kept (0 turns the cache off).

    Raises:
        MusicSearchError: a negative size.
    """

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], size: int = 1024) -> None:
        if size < 0:
            raise MusicSearchError(f"text cache size must be >= 0, got {size}")
        self._embed = embed
        self.size = int(size)
        self._items: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``N`` texts -> ``(N, D)`` float32: the cached array for this list if seen, else embedded now (a copy)."""
        key = tuple(texts)
        if self.size == 0 or not key:
            return self._embed(list(key))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit.copy()
        value = np.array(self._embed(list(key)), dtype=np.float32)  # our own copy: callers may alter theirs
        with self._lock:
            self.misses += 1
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value.copy()
