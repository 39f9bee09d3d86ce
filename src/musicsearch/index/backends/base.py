"""The vector-backend contract: one small interface, interchangeable backends chosen by name.

A backend holds L2-normalised float32 vectors of one dimension ``dim`` under non-negative int64 ids and answers
top-k inner-product queries, which on unit vectors is cosine similarity. Every backend is tested against the exact
NumPy oracle (``"numpy"``); the embedded default is ``"faiss"`` (exact below a size threshold, IVF above it) and
``"milvus"`` reaches a Milvus server or cluster by URI (Milvus Lite for a local file).

Contract shared by every backend (enforced here, in :class:`VectorBackend`, so backends cannot drift apart):

* ``add`` L2-normalises the vectors it is given (the caller need not) and *upserts*: adding an id that is already
  stored replaces its vector. Ids must be ``>= 0`` and unique within one call; vectors must be finite and non-zero.
* ``search`` normalises the queries too and returns ``(scores, ids)`` of shape ``(Q, k)``: ``float32`` cosine
  scores, best first (ties: lower id first in the exact backends), and ``int64`` ids; rows with fewer than ``k``
  hits are padded with id :data:`PAD_ID` (-1) and score :data:`PAD_SCORE` (-inf). ``allowed_ids`` restricts the
  hits to those ids (ids not stored are ignored; an empty array gives only padding).
* ``get(ids)`` returns the stored vectors of ``ids`` in the order asked, ``(N, D)`` float32 unit rows (the vectors
  given to ``add``, normalised); an id that is not stored is an error, never a silent zero row.
* ``save(path)`` writes the store into the directory ``path`` atomically: a reader (or a crash) sees either the
  previous complete save or the new one, never a mix. ``open_backend(path)`` reopens any backend's save.

Example:
    >>> backend = create_backend("faiss", dim=128)
    >>> backend.add([0, 1, 2], vectors)            # (3, 128) float32
    >>> scores, ids = backend.search(queries, 10)  # (Q, 10) float32, (Q, 10) int64
    >>> backend.save("store/vectors")
    >>> backend = open_backend("store/vectors")
"""

from __future__ import annotations

import abc
import importlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.registry import Registry

log = logging.getLogger(__name__)

PAD_ID = -1
"""Id that pads a result row holding fewer than ``k`` hits."""
PAD_SCORE = float("-inf")
"""Score that pads a result row holding fewer than ``k`` hits."""
MANIFEST = "backend.json"
"""File in a saved store directory that names the backend and its current data files (the commit record)."""
FORMAT_VERSION = 1

BACKENDS: Registry[type[VectorBackend]] = Registry("vector backend")
"""Backend classes by name: ``numpy`` (exact oracle), ``faiss`` (embedded default), ``milvus`` (distributed)."""

# Built-in backends live in their own modules, imported on first use so that `import musicsearch` needs neither
# faiss nor pymilvus. Values: (module, the package to install when the import fails).
_BUILTIN: dict[str, tuple[str, str]] = {
    "numpy": ("musicsearch.index.backends.numpy_exact", "numpy"),
    "faiss": ("musicsearch.index.backends.faiss_backend", "faiss-cpu (pip install 'musicsearch[index]')"),
    "milvus": (
        "musicsearch.index.backends.milvus_backend",
        "pymilvus and milvus-lite (pip install pymilvus milvus-lite)",
    ),
}


# --------------------------------------------------------------------------------------------------------------
# Pure helpers


def l2_normalize(vectors: np.ndarray, *, what: str = "vectors") -> np.ndarray:
    """Return ``vectors`` scaled to unit L2 norm, as a new C-contiguous float32 array.

    Args:
        vectors: ``(N, D)`` array of any real dtype.
        what: how to name the input in an error message.

    Returns:
        ``(N, D)`` float32 array whose rows have norm 1.

    Raises:
        MusicSearchError: if a row is not finite or has zero norm (it has no direction to compare).
    """
    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if out.ndim != 2:
        raise MusicSearchError(f"{what} must be a 2-D (N, D) array, got shape {out.shape}")
    if out.shape[0] == 0:
        return out
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out).all(axis=1))[0])
        raise MusicSearchError(f"{what} row {bad} holds NaN or infinity; re-embed that item")
    # Norms in float64: float32 squares of tiny or huge components can underflow or overflow.
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    if (norms == 0).any():
        bad = int(np.flatnonzero(norms == 0)[0])
        raise MusicSearchError(f"{what} row {bad} is all zeros and cannot be normalised; drop or re-embed it")
    out /= norms[:, None].astype(np.float32)
    return out


def as_ids(ids: Sequence[int] | np.ndarray, *, what: str = "ids") -> np.ndarray:
    """Validate ids and return them as a 1-D int64 array.

    Raises:
        MusicSearchError: if ids are not integers, not 1-D, or negative (-1 is the padding id).
    """
    arr = np.asarray(ids)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise MusicSearchError(f"{what} must be a 1-D sequence of integers, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise MusicSearchError(f"{what} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if (arr < 0).any():
        raise MusicSearchError(f"{what} must be >= 0 (got {int(arr.min())}); -1 is reserved for padding")
    return arr


def sort_hits(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Order candidate hits by the tie rule and pad/cut them to ``k`` columns.

    Tie rule: higher score first, then lower id; padding (id -1, score -inf) last.

    Args:
        scores: ``(Q, M)`` float32 candidate scores (``-inf`` for empty slots).
        ids: ``(Q, M)`` int64 candidate ids (``-1`` for empty slots).
        k: columns wanted.

    Returns:
        ``(scores (Q, k) float32, ids (Q, k) int64)``.
    """
    q, m = ids.shape
    scores = scores.astype(np.float32, copy=False)
    ids = ids.astype(np.int64, copy=False)
    pad = ids < 0
    # lexsort sorts by its last key first: padding last, then score descending, then id ascending.
    key_score = np.where(pad, np.float32(np.inf), -scores)
    take = min(k, m)
    order = np.lexsort((ids, key_score, pad), axis=-1)[:, :take]  # (Q, take)
    out_s = np.full((q, k), PAD_SCORE, dtype=np.float32)
    out_i = np.full((q, k), PAD_ID, dtype=np.int64)
    sel_pad = np.take_along_axis(pad, order, axis=1)
    out_s[:, :take] = np.where(sel_pad, np.float32(PAD_SCORE), np.take_along_axis(scores, order, axis=1))
    out_i[:, :take] = np.where(sel_pad, PAD_ID, np.take_along_axis(ids, order, axis=1))
    return out_s, out_i


# --------------------------------------------------------------------------------------------------------------
# The interface


class VectorBackend(abc.ABC):
    """Interface of every vector-store backend (see the module docstring for the shared contract).

    Subclasses implement the underscored hooks, which receive validated, normalised inputs; the public methods
    here do the validation, normalisation, padding and ordering, so every backend behaves the same.

    Args:
        dim: vector dimension ``D`` (> 0).
    """

    name: ClassVar[str] = "?"
    exact: ClassVar[bool] = True
    """Whether results always equal the exact oracle's (False once a backend may use an approximate index)."""

    def __init__(self, dim: int) -> None:
        if not isinstance(dim, int | np.integer) or int(dim) <= 0:
            raise MusicSearchError(f"vector dimension must be a positive integer, got {dim!r}")
        self._dim = int(dim)

    # -- public API ----------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension ``D``."""
        return self._dim

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace vectors.

        Args:
            ids: ``(N,)`` distinct non-negative integer ids.
            vectors: ``(N, D)`` real array; stored L2-normalised as float32.

        Raises:
            MusicSearchError: on a shape or dimension mismatch, negative or repeated ids, or a zero/non-finite row.
        """
        arr_ids = as_ids(ids)
        vecs = self._check_vectors(vectors, what="vectors")
        if vecs.shape[0] != arr_ids.shape[0]:
            raise MusicSearchError(f"got {arr_ids.shape[0]} ids for {vecs.shape[0]} vectors; give one id per vector")
        if arr_ids.size == 0:
            return
        if np.unique(arr_ids).size != arr_ids.size:
            raise MusicSearchError("ids given to add() must be distinct within one call")
        self._add(arr_ids, l2_normalize(vecs))

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove vectors by id; ids not stored are ignored.

        Returns:
            How many vectors were removed.
        """
        arr_ids = as_ids(ids)
        if arr_ids.size == 0:
            return 0
        return int(self._remove(np.unique(arr_ids)))

    def search(
        self, queries: np.ndarray, k: int, *, allowed_ids: np.ndarray | Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` stored vectors by cosine similarity to each query.

        Args:
            queries: ``(Q, D)`` or ``(D,)`` real array (normalised here).
            k: hits wanted per query (>= 1).
            allowed_ids: if given, only these ids may be returned.

        Returns:
            ``(scores (Q, k) float32, ids (Q, k) int64)``, best first, padded with ``-inf`` / ``-1``.

        Raises:
            MusicSearchError: on a dimension mismatch, ``k < 1``, or a zero/non-finite query.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise MusicSearchError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        q = np.asarray(queries)
        if q.ndim == 1:
            q = q[None, :]
        q = l2_normalize(self._check_vectors(q, what="queries"), what="queries")
        allowed = None if allowed_ids is None else _sorted_unique(as_ids(allowed_ids, what="allowed_ids"))
        n_q = q.shape[0]
        if n_q == 0 or (allowed is not None and allowed.size == 0) or self._known_empty():
            return np.full((n_q, k), PAD_SCORE, np.float32), np.full((n_q, k), PAD_ID, np.int64)
        scores, ids = self._search(q, k, allowed)
        if ids.shape[1] != k:
            scores, ids = sort_hits(scores, ids, k)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def get(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids``, in the order asked (an id may repeat).

        Args:
            ids: ``(N,)`` non-negative integer ids, each stored.

        Returns:
            ``(N, D)`` float32 unit rows: the vectors given to :meth:`add`, L2-normalised (an approximate index
            returns them as stored, never compressed: every backend here stores vectors flat).

        Raises:
            MusicSearchError: an id that is not stored (the count and the first one named), or ids that are not
                non-negative integers.
        """
        arr = as_ids(ids)
        if arr.size == 0:
            return np.zeros((0, self.dim), np.float32)
        uniq, inverse = np.unique(arr, return_inverse=True)
        vectors, found = self._get(uniq)
        if not found.all():
            missing = uniq[~found]
            raise MusicSearchError(
                f"{missing.size} of the {uniq.size} ids asked for are not stored in this {self.name} backend (first "
                f"{int(missing[0])}); ask for stored ids only (see ids()), or index the collection again"
            )
        return np.ascontiguousarray(vectors[inverse.ravel()], dtype=np.float32)

    def export(self, batch_size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored vector, in batches: for merging shards and moving a store to another backend.

        Yields:
            ``(ids (B,) int64, vectors (B, D) float32)`` batches (unit rows), in no particular order.
        """
        yield from self._export(max(1, int(batch_size)))

    def ids(self) -> np.ndarray:
        """All stored ids, sorted, as a ``(N,)`` int64 array."""
        return np.sort(self._all_ids())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the store into directory ``path`` (created if needed) atomically; reopen with :func:`open_backend`.

        Data files get a fresh name on every save and ``backend.json``, replaced atomically last, names them:
        a crash mid-save leaves the previous save intact. Older data files are deleted after the commit.
        """
        dest = Path(path)
        dest.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(6)
        manifest: dict[str, Any] = {"backend": self.name, "format": FORMAT_VERSION, "dim": self.dim}
        manifest.update(self._save(dest, token))
        write_json(dest / MANIFEST, manifest)
        keep = {MANIFEST, *_referenced_files(manifest)}
        for old in dest.iterdir():
            if old.is_file() and old.name not in keep and old.name.startswith(("data-", ".data-")):
                old.unlink(missing_ok=True)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> VectorBackend:
        """Reopen a store saved by :meth:`save` (use :func:`open_backend` when the backend is not known)."""
        manifest = read_manifest(path)
        if manifest["backend"] != cls.name:
            raise MusicSearchError(f"{path} holds a {manifest['backend']!r} store, not {cls.name!r}")
        return cls._open(Path(path), manifest)

    def index_info(self) -> dict[str, Any]:
        """JSON-ready description of the index searched now (for status pages): at least ``mode``."""
        return {"mode": "exact" if self.exact else "approximate"}

    def set_tuning_queries(self, provider: Callable[[], np.ndarray] | None) -> None:  # noqa: B027 - optional hook
        """Give the backend real queries to tune its approximate index on (the text embeddings of the store's
        model for typical queries); exact backends ignore them.

        Args:
            provider: called (at most once per training of the index, only when one happens) for a ``(Q, D)``
                real array of queries; ``None`` forgets a provider given before.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing to release
        """Release connections or files (a no-op for in-memory backends)."""

    def __enter__(self) -> VectorBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of stored vectors."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, n={len(self)})"

    # -- hooks for subclasses ------------------------------------------------------------------------------

    @abc.abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Upsert ``(N,)`` distinct int64 ids with ``(N, D)`` float32 unit rows (N >= 1)."""

    @abc.abstractmethod
    def _remove(self, ids: np.ndarray) -> int:
        """Remove the ``(N,)`` distinct ids that are stored; return how many were."""

    @abc.abstractmethod
    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Search a non-empty store with ``(Q, D)`` unit queries; ``allowed`` is sorted, unique and non-empty.

        Returns ``(scores (Q, M), ids (Q, M))``; when ``M != k`` or the order may break the tie rule, the caller's
        :func:`sort_hits` orders and pads them — return exactly ``k`` columns only when already ordered.
        """

    def _known_empty(self) -> bool:
        """True when the store is known to hold nothing (searches then skip the backend); override when counting
        costs a round trip and an empty search is harmless."""
        return len(self) == 0

    def _all_ids(self) -> np.ndarray:
        """Every stored id, any order; override when ids can be listed without reading the vectors."""
        parts = [ids for ids, _ in self.export()]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of ``(N,)`` sorted unique ids: ``(vectors (N, D) float32, found (N,) bool)``, zero rows for ids
        not stored. This default scans :meth:`export` (O(size of the store)); backends override it with a lookup
        by id."""
        out = np.zeros((ids.size, self.dim), np.float32)
        found = np.zeros(ids.size, bool)
        for batch_ids, vecs in self.export():
            pos = np.minimum(np.searchsorted(ids, batch_ids), ids.size - 1)
            hit = ids[pos] == batch_ids
            out[pos[hit]] = vecs[hit]
            found[pos[hit]] = True
        return out, found

    @abc.abstractmethod
    def _export(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids, vectors)`` batches covering every stored vector."""

    @abc.abstractmethod
    def _save(self, dest: Path, token: str) -> dict[str, Any]:
        """Write data files into ``dest`` named ``data-<token>...`` (atomically each); return manifest fields.

        Put the written file names under the key ``"files"`` (a list) so that stale ones can be deleted.
        """

    @classmethod
    @abc.abstractmethod
    def _open(cls, path: Path, manifest: dict[str, Any]) -> VectorBackend:
        """Rebuild a backend from a directory and its parsed manifest."""

    # -- shared validation ---------------------------------------------------------------------------------

    def _check_vectors(self, vectors: np.ndarray, *, what: str) -> np.ndarray:
        arr = np.asarray(vectors)
        if arr.ndim != 2:
            raise MusicSearchError(f"{what} must be a 2-D (N, {self.dim}) array, got shape {arr.shape}")
        if arr.shape[1] != self.dim:
            raise MusicSearchError(
                f"{what} have dimension {arr.shape[1]} but this store holds {self.dim}-d vectors; "
                "use the model the store was built with, or create a new store"
            )
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise MusicSearchError(f"{what} must be a real-valued array, got dtype {arr.dtype}")
        return arr


def _sorted_unique(ids: np.ndarray) -> np.ndarray:
    """``ids`` sorted without repeats; cheap when they already are (as ``MetadataDB.resolve_filter`` returns them)."""
    if ids.size < 2 or bool((ids[1:] > ids[:-1]).all()):
        return ids
    return np.unique(ids)


def _referenced_files(manifest: dict[str, Any]) -> list[str]:
    files = manifest.get("files", [])
    return [str(f) for f in files] if isinstance(files, list) else []


# --------------------------------------------------------------------------------------------------------------
# Registry access


def backend_class(name: str) -> type[VectorBackend]:
    """The backend class registered as ``name``, importing the built-in module on first use.

    Raises:
        ConfigError: for an unknown name, or when the backend's package is not installed (saying what to install).
    """
    if name not in BACKENDS and name in _BUILTIN:
        module, package = _BUILTIN[name]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"vector backend {name!r} needs {package}: {exc}") from exc
    return BACKENDS.get(name)


def backend_names() -> list[str]:
    """Names of every known backend (built-in ones whether or not their package is installed)."""
    return sorted(set(BACKENDS.names()) | set(_BUILTIN))


def create_backend(name: str, dim: int, **options: Any) -> VectorBackend:
    """Create an empty backend by name.

    Args:
        name: ``"numpy"``, ``"faiss"``, ``"milvus"`` or another registered name.
        dim: vector dimension.
        **options: backend-specific keyword options (see each backend's class docstring).

    Raises:
        ConfigError: unknown backend or option, or missing package.
    """
    cls = backend_class(name)
    try:
        return cls(dim, **options)
    except TypeError as exc:
        raise ConfigError(f"bad option for vector backend {name!r}: {exc}") from exc


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``path/backend.json`` of a saved store.

    Raises:
        MusicSearchError: if ``path`` is not a saved store or the manifest is unreadable.
    """
    file = Path(path) / MANIFEST
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MusicSearchError(
            f"{path} is not a saved vector store (no {MANIFEST}); index a collection first"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise MusicSearchError(f"cannot read {file}: {exc}; re-index or restore the store") from exc
    if not isinstance(manifest, dict) or "backend" not in manifest or "dim" not in manifest:
        raise MusicSearchError(f"{file} is not a vector-store manifest; re-index or restore the store")
    if int(manifest.get("format", 0)) > FORMAT_VERSION:
        raise MusicSearchError(f"{file} was written by a newer musicsearch (format {manifest['format']}); upgrade")
    return manifest


def open_backend(path: str | os.PathLike[str]) -> VectorBackend:
    """Reopen any saved store, dispatching on the backend named in its manifest."""
    manifest = read_manifest(path)
    return backend_class(str(manifest["backend"])).open(path)
