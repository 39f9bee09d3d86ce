"""The store directory: what ``musicsearch index`` writes and search opens.

A store is a directory::

    store.json        settings fixed at creation: model (name, weights checksum, where to load it), window plan,
                      vector backend and its options
    metadata.sqlite   tracks, windows, tags (:class:`~musicsearch.index.metadata.MetadataDB`)
    tracks/           one vector per track  (a saved :class:`~musicsearch.index.backends.base.VectorBackend`)
    windows/          one vector per window (another saved backend; ids disjoint from the track vectors')
    files.sqlite      per file: size, mtime, SHA-256, resolved path, last outcome (ok / failed and why)
    vectors.f32       a float32 copy of every vector, row = vector id (search reads a few by id per query)
    index.lock        held by the one indexing run allowed at a time

:class:`Store` opens one (read, or write with ``index.lock`` held) and keeps its parts together;
:class:`StoreSettings` is ``store.json``, :class:`FileLog` is ``files.sqlite`` and :class:`VectorFile` is
``vectors.f32``. :func:`store_model` is the one place that decides which model indexes a store. How a collection
gets into a store is :mod:`musicsearch.index.indexer`; merging the stores of a sharded run is
:mod:`musicsearch.index.shards`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from musicsearch.audio.io import AUDIO_EXTENSIONS
from musicsearch.errors import MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.index.backends.base import MANIFEST, VectorBackend, create_backend, open_backend
from musicsearch.index.embedder import Embedder, WindowPlan, load_embedder
from musicsearch.index.metadata import MetadataDB, StoreInfo, connect_readonly

__all__ = [
    "METADATA_FILE",
    "STORE_FILE",
    "FileLog",
    "FileRow",
    "Store",
    "StoreSettings",
    "VectorFile",
    "acquire_lock",
    "is_store",
    "level_options",
    "read_settings",
    "storage_error",
    "store_model",
    "writing",
]

log = logging.getLogger(__name__)

STORE_FILE = "store.json"
METADATA_FILE = "metadata.sqlite"
FILES_FILE = "files.sqlite"
TRACKS_DIR = "tracks"
WINDOWS_DIR = "windows"
LOCK_FILE = "index.lock"
VECTORS_FILE = "vectors.f32"
STORE_FORMAT = 1
#: Vectors read at a time by a pass over every track vector (:meth:`Store.sample_tracks`).
_SCAN_BLOCK = 65_536


@dataclass(frozen=True)
class StoreSettings:
    """What a store is built with (``store.json``); fixed when the store is created.

    Attributes:
        model_name: the model's config name.
        weights_checksum: SHA-256 of the model's weights file.
        model_source: how to load the model again (the ``--model`` value, resolved to an absolute path for files);
            the default model of queries on this store.
        plan: the window plan.
        dim: vector dimension.
        backend: vector backend name (``faiss``, ``numpy``, ``milvus``).
        backend_options: options of both backends.
        created: Unix time of creation.
        shard: ``(rank, world_size)`` for the store of one shard of a sharded run (see
            :func:`~musicsearch.index.shards.merge_stores`), ``None`` for an ordinary store.
    """

    model_name: str
    weights_checksum: str
    model_source: str
    plan: WindowPlan
    dim: int
    backend: str = "faiss"
    backend_options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    created: float = 0.0
    shard: tuple[int, int] | None = field(default=None, compare=False, hash=False)

    def info(self) -> StoreInfo:
        """The model identity every vector records."""
        return StoreInfo(self.model_name, self.weights_checksum, self.plan.version())

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields (``store.json``)."""
        return {
            "format": STORE_FORMAT,
            "model_name": self.model_name,
            "weights_checksum": self.weights_checksum,
            "model_source": self.model_source,
            "preprocessing_version": self.plan.version(),
            "plan": self.plan.to_json(),
            "dim": self.dim,
            "backend": self.backend,
            "backend_options": self.backend_options,
            "created": self.created,
        } | ({} if self.shard is None else {"shard": list(self.shard)})

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StoreSettings:
        """Inverse of :meth:`to_json`."""
        return cls(
            model_name=str(obj["model_name"]),
            weights_checksum=str(obj["weights_checksum"]),
            model_source=str(obj["model_source"]),
            plan=WindowPlan.from_json(obj["plan"]),
            dim=int(obj["dim"]),
            backend=str(obj["backend"]),
            backend_options=dict(obj.get("backend_options") or {}),
            created=float(obj.get("created", 0.0)),
            shard=None if obj.get("shard") is None else (int(obj["shard"][0]), int(obj["shard"][1])),
        )


def is_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` (``~`` expanded) is a store directory (holds ``store.json``)."""
    return (Path(path).expanduser() / STORE_FILE).is_file()


def store_model(store: str | os.PathLike[str], model: str | os.PathLike[str] | Embedder | None = None) -> Any:
    """The model to index ``store`` with: ``model`` when given, else the store's own model (an existing store),
    else :data:`~musicsearch.models.loading.DEFAULT_MODEL` (a new store). The one place that decides it.

    Args:
        store: the store directory (``~`` expanded).
        model: the ``--model`` value, an :class:`Embedder`, or ``None``.

    Returns:
        ``model`` itself, or the store's ``model_source``, or ``"default"``.

    Raises:
        MusicSearchError: the store exists but its settings are unreadable.
    """
    if model is not None:
        return model
    path = Path(store).expanduser()
    if is_store(path):
        return read_settings(path).model_source
    from musicsearch.models.loading import DEFAULT_MODEL

    return DEFAULT_MODEL


def read_settings(path: str | os.PathLike[str]) -> StoreSettings:
    """Read ``store.json`` of a store.

    Raises:
        MusicSearchError: if ``path`` is not a store or its settings are unreadable.
    """
    file = Path(path).expanduser() / STORE_FILE
    if not file.is_file():
        raise MusicSearchError(
            f"{path} is not a musicsearch store (no {STORE_FILE}); "
            f"build one with `musicsearch index DIR --model MODEL --store {path}`"
        )
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
        if int(obj.get("format", 0)) > STORE_FORMAT:
            raise MusicSearchError(f"{file} was written by a newer musicsearch; upgrade to read it")
        return StoreSettings.from_json(obj)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, MusicSearchError):
            raise
        raise MusicSearchError(f"cannot read store settings {file} ({exc}); re-index into a new store") from exc


@dataclass(frozen=True)
class FileRow:
    """One row of ``files.sqlite``: the last thing known about a file path."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    realpath: str
    status: str  # "ok" or "failed"
    reason: str = ""


class FileLog:
    """``files.sqlite``: size, mtime, SHA-256, resolved path and outcome per file path (a cache plus the list of
    paths the server may play; never the source of truth about which tracks are indexed)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if readonly:  # a reader: never creates the file or its table, never takes the write lock
            self._con: sqlite3.Connection | None = (
                connect_readonly(self.path, what="file log") if self.path.is_file() else None
            )
            if self._con is not None:
                try:
                    self._con.execute("SELECT 1 FROM files LIMIT 1").fetchall()
                except sqlite3.DatabaseError as exc:
                    self._con.close()
                    raise MusicSearchError(f"{self.path} is not a musicsearch file log ({exc}); re-index") from exc
            return
        self._con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, realpath TEXT NOT NULL, status TEXT NOT NULL, "
                "reason TEXT NOT NULL DEFAULT '')"
            )
        except sqlite3.OperationalError:  # cannot write (full disk, no permission): the caller says what to do
            self._con.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._con.close()
            raise MusicSearchError(f"{self.path} is not a musicsearch file log ({exc}); delete it") from exc

    def get(self, path: str) -> FileRow | None:
        """The row of ``path``, or ``None``."""
        if self._con is None:
            return None
        row = self._con.execute(
            "SELECT path, size, mtime_ns, sha256, realpath, status, reason FROM files WHERE path = ?", (path,)
        ).fetchone()
        return None if row is None else FileRow(*row)

    def put(self, rows: Iterable[FileRow]) -> None:
        """Insert or replace rows in one transaction."""
        values = [(r.path, r.size, r.mtime_ns, r.sha256, r.realpath, r.status, r.reason) for r in rows]
        if not values:
            return
        if self._con is None or self.readonly:
            raise MusicSearchError(f"{self.path} is open for reading only; open the store writable to index")
        self._con.execute("BEGIN IMMEDIATE")
        try:
            self._con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def rows(self) -> list[FileRow]:
        """Every row, ordered by path."""
        if self._con is None:
            return []
        cur = self._con.execute(
            "SELECT path, size, mtime_ns, sha256, realpath, status, reason FROM files ORDER BY path"
        )
        return [FileRow(*row) for row in cur]

    def close(self) -> None:
        """Close the connection."""
        if self._con is not None:
            self._con.close()


class VectorFile:
    """``vectors.f32``: a float32 copy of every stored vector (tracks and windows), row ``i`` = vector id ``i``,
    read through a memory map.

    Search needs a few vectors by id for every query (the windows of the results for their best segment, an
    indexed example, the candidates of a negative term); this file answers from a memory map without a round
    trip to the backend (a Milvus server) or building an id map in it. Rows are written before the metadata
    commits them (so every committed vector has its row), the file grows sparsely to the largest id, rows of
    removed vectors are left behind (never referenced again), and a row that was never written reads as zeros,
    which :meth:`read` reports as missing (:meth:`Store.vectors` then asks the backend).
    Costs ``4·D`` bytes of disk per vector id allocated; pages are loaded only when read.

    Args:
        path: the file.
        dim: vector dimension.
    """

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.dim = int(dim)
        self._map: np.ndarray | None = None
        self._rows = 0

    def _row_bytes(self) -> int:
        return 4 * self.dim

    def write(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``(N, D)`` float32 rows under ``(N,)`` ids and fsync."""
        if ids.size == 0:
            return
        # plain writes, not a memory map: on a full disk a write fails with ENOSPC, a mapped page would SIGBUS
        order = np.argsort(ids, kind="stable")
        ids, rows = np.asarray(ids, np.int64)[order], np.ascontiguousarray(np.asarray(vectors, np.float32)[order])
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1  # runs of consecutive ids: one write each
        with open(self.path, "r+b" if self.path.exists() else "w+b") as fh:
            for a, b in zip(np.r_[0, breaks], np.r_[breaks, ids.size], strict=True):
                fh.seek(int(ids[a]) * self._row_bytes())  # past the end: the gap stays sparse, reads as zeros
                fh.write(rows[a:b].tobytes())
            fh.flush()
            os.fsync(fh.fileno())

    def read(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of ``(N,)`` ids: ``(vectors (N, D) float32, ok (N,) bool)``; ``ok`` is false for ids never written."""
        ids = np.asarray(ids, np.int64)
        out = np.zeros((ids.size, self.dim), np.float32)
        try:
            rows = self.path.stat().st_size // self._row_bytes()
        except OSError:
            return out, np.zeros(ids.size, bool)
        if rows != self._rows or self._map is None:
            self._map = np.memmap(self.path, dtype=np.float32, mode="r", shape=(rows, self.dim)) if rows else None
            self._rows = rows
        ok = (ids >= 0) & (ids < self._rows)
        if self._map is not None and ok.any():
            out[ok] = self._map[ids[ok]]
        ok &= np.abs(np.einsum("nd,nd->n", out, out) - 1.0) < 1e-3  # unit rows only: zeros were never written
        return out, ok


class Store:
    """An open store directory: settings, metadata database, the two vector backends and the file log.

    Open with :meth:`open` (read, or write with the store's lock held) or :meth:`create`.
    """

    def __init__(
        self,
        path: Path,
        settings: StoreSettings,
        db: MetadataDB,
        tracks: VectorBackend,
        windows: VectorBackend | None,
        files: FileLog,
        lock: IO[Any] | None,
    ) -> None:
        self.path = path
        self.settings = settings
        self.db = db
        self.tracks = tracks
        self._windows = windows
        self.files = files
        self._lock = lock
        self.vector_file = VectorFile(path / VECTORS_FILE, settings.dim)
        self._loaded_token = self.version_token()
        self.repaired = 0  # items repaired when opened for writing

    @property
    def windows(self) -> VectorBackend:
        """The window-vector backend. Readers load it on first use only: search reads windows by id from
        ``vectors.f32``, so a server need not hold the (largest) window index in memory."""
        if self._windows is None:
            self._windows = _open_or_create(self.path / WINDOWS_DIR, self.settings)
        return self._windows

    # -- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], settings: StoreSettings) -> Store:
        """Create a new, empty store at ``path`` (a new or empty directory) and open it for writing.

        Raises:
            MusicSearchError: if ``path`` already holds a store or other files.
        """
        dest = Path(path).expanduser()
        if is_store(dest):
            raise MusicSearchError(f"{dest} already holds a store; open it instead")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            if not (dest.is_dir() and _is_unfinished_store(dest)):
                raise MusicSearchError(f"{dest} exists and is not an empty folder; give a new folder for the store")
        dest.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(dest)
        try:
            _clear_unfinished_store(dest)  # what a creation stopped by a full disk or a kill left behind
            opts = level_options(settings.backend, settings.backend_options, TRACKS_DIR)
            create_backend(settings.backend, settings.dim, **opts).close()  # options valid?
            db = MetadataDB(dest / METADATA_FILE, shard=settings.shard)  # a shard's ids: rank + world·n
            db.set_info(settings.info())
            db.close()
            write_json(dest / STORE_FILE, settings.to_json())  # last: a store exists once its settings do
        except BaseException:
            with contextlib.suppress(OSError):
                _clear_unfinished_store(dest)  # nothing half made blocks the next run
            lock.close()
            raise
        lock.close()
        return cls.open(dest, writable=True)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool = False) -> Store:
        """Open an existing store.

        Args:
            path: the store directory.
            writable: take the store's lock (one indexing run at a time) and repair the gap a killed run may
                have left (see the module docstring).

        Raises:
            MusicSearchError: not a store, unreadable, or (writable) another run holds the lock.
        """
        dest = Path(path).expanduser()
        settings = read_settings(dest)
        lock = acquire_lock(dest) if writable else None
        try:
            db = MetadataDB(dest / METADATA_FILE, readonly=not writable)  # readers never write
            stored = db.info()
            if stored is not None and stored != settings.info():
                raise MusicSearchError(
                    f"{dest}: the metadata database and {STORE_FILE} name different models; the store is damaged, "
                    "re-index into a new store"
                )
            tracks = _open_or_create(dest / TRACKS_DIR, settings)
            windows = _open_or_create(dest / WINDOWS_DIR, settings) if writable else None
            files = FileLog(dest / FILES_FILE, readonly=not writable)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        store = cls(dest, settings, db, tracks, windows, files, lock)
        if writable:
            store.repaired = store.repair()
        return store

    def close(self) -> None:
        """Close the database connections and backends and release the lock."""
        with contextlib.suppress(Exception):
            self.tracks.close()
            if self._windows is not None:
                self._windows.close()
        self.db.close()
        self.files.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.db)

    # -- model check -----------------------------------------------------------------------------------------

    def check_model(self, embedder: Embedder) -> None:
        """Refuse a model (or window plan) other than the one that built the store.

        Raises:
            MusicSearchError: naming both models and saying what to do.
        """
        stored = self.settings.info()
        wanted = embedder.store_info(self.settings.plan)
        if stored == wanted:
            return
        raise MusicSearchError(
            f"store {self.path} was indexed with model {stored.model_name} (weights {stored.weights_checksum[:12]}, "
            f"loaded from {self.settings.model_source}) but the model given is {wanted.model_name} (weights "
            f"{wanted.weights_checksum[:12]}, from {embedder.source}); their vectors are not comparable. Query with "
            f"--model {self.settings.model_source} (the default when --model is omitted), or re-index the "
            "collection with this model into a new store"
        )

    def load_embedder(self, model: str | os.PathLike[str] | Embedder | None = None) -> Embedder:
        """The store's own model (``model=None``), or ``model`` after checking it matches the store."""
        embedder = load_embedder(self.settings.model_source if model is None else model)
        self.check_model(embedder)
        return embedder

    # -- vectors ---------------------------------------------------------------------------------------------

    def version_token(self) -> str:
        """A string that changes whenever the saved vectors change (for caches of derived data)."""
        parts = []
        for sub in (TRACKS_DIR, WINDOWS_DIR):
            try:
                manifest = json.loads((self.path / sub / MANIFEST).read_text(encoding="utf-8"))
                parts.append(json.dumps(manifest.get("files", manifest), sort_keys=True))
            except (OSError, ValueError):
                parts.append("empty")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def reload_vectors(self) -> bool:
        """Reopen the saved vector backends if another process (an indexing run) saved newer ones.

        Returns:
            Whether they were reloaded.
        """
        token = self.version_token()
        if token == self._loaded_token:
            return False
        for attempt in range(3):  # a writer may replace the files between reading the manifest and opening them
            try:
                tracks = _open_or_create(self.path / TRACKS_DIR, self.settings)
                break
            except MusicSearchError:
                if attempt == 2:
                    raise
                time.sleep(0.2)
        with contextlib.suppress(Exception):
            self.tracks.close()
            if self._windows is not None:
                self._windows.close()
        self.tracks, self._windows = tracks, None  # the window index reloads on next use
        self._loaded_token = token
        return True

    def vectors(self, ids: np.ndarray | Sequence[int], *, level: str = "track") -> np.ndarray:
        """Stored vectors by id, the one route by which search reads them: rows of ``vectors.f32`` (a few pages
        of a memory map), else the level's backend (:meth:`~musicsearch.index.backends.base.VectorBackend.get`;
        a store without that file).

        Args:
            ids: ``(N,)`` vector ids of one level.
            level: ``"track"`` or ``"window"``.

        Returns:
            ``(N, D)`` float32 unit rows, in the order of ``ids``.

        Raises:
            MusicSearchError: an unknown level, or an id stored in neither (a store to index again).
        """
        if level not in ("track", "window"):
            raise MusicSearchError(f"level must be 'track' or 'window', got {level!r}")
        arr = np.asarray(ids, np.int64).ravel()
        vecs, ok = self.vector_file.read(arr)
        if not ok.all():
            backend = self.tracks if level == "track" else self.windows
            vecs[~ok] = backend.get(arr[~ok])
        return vecs

    def sample_tracks(self, *, max_sample: int, seed: int = 0) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """One pass over the track vectors (read through :meth:`vectors` in blocks, never all held at once: a
        million 256-d vectors are 1 GB): their count, their mean and a seeded sample.

        Args:
            max_sample: most vectors in the sample.
            seed: the sample's seed.

        Returns:
            ``(n, mean (D,) float32, sample ids (S,) sorted, sample vectors (S, D))`` with ``S <= max_sample``
            (each track kept with probability ``max_sample / n``, then the first ``max_sample`` by id).
        """
        dim = self.settings.dim
        ids = self.tracks.ids()
        n = int(ids.size)
        if n == 0:
            return 0, np.zeros(dim, np.float32), np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
        rng = np.random.default_rng(seed)
        p = min(1.0, max_sample / n)
        keep = rng.random(n) < p if p < 1 else np.ones(n, bool)
        sample = ids[keep][:max_sample]
        total = np.zeros(dim, np.float64)
        for start in range(0, n, _SCAN_BLOCK):
            total += self.vectors(ids[start : start + _SCAN_BLOCK]).sum(axis=0, dtype=np.float64)
        return n, (total / n).astype(np.float32), sample, self.vectors(sample)

    def save_vectors(self) -> None:
        """Save both backends (each save atomic)."""
        self.tracks.save(self.path / TRACKS_DIR)
        self.windows.save(self.path / WINDOWS_DIR)
        self._loaded_token = self.version_token()

    def repair(self) -> int:
        """Make the metadata and the saved vectors agree after a killed run; return how many items were fixed.

        Drops vectors no committed track owns, and tracks some of whose vectors are missing (those files are
        indexed again by the next run, since the store no longer lists them).
        """
        db_t, be_t = self.db.vector_ids(level="track"), self.tracks.ids()
        db_w, be_w = self.db.vector_ids(level="window"), self.windows.ids()
        orphan_t, orphan_w = np.setdiff1d(be_t, db_t), np.setdiff1d(be_w, db_w)
        missing = np.union1d(np.setdiff1d(db_t, be_t), np.setdiff1d(db_w, be_w))
        broken = sorted({ref.track.id for ref in self.db.lookup_vectors(missing) if ref is not None})
        if not (orphan_t.size or orphan_w.size or broken):
            return 0
        log.warning(
            "repairing %s after an interrupted run: %d orphan vectors, %d tracks with missing vectors",
            self.path,
            orphan_t.size + orphan_w.size,
            len(broken),
        )
        with self.db.transaction():
            for track in broken:
                vids = self.db.remove_track(track)
                self.tracks.remove(vids)
                self.windows.remove(vids)
            self.tracks.remove(orphan_t)
            self.windows.remove(orphan_w)
            self.save_vectors()
        return int(orphan_t.size + orphan_w.size + len(broken))

    # -- audio files -----------------------------------------------------------------------------------------

    def playable_path(self, track: int) -> Path:
        """The audio file of an indexed track, only if it is still the file that was indexed.

        Security rule: a path is served only when the track is in the metadata database *and* its path resolves
        (symlinks followed) to exactly the resolved path recorded when it was indexed (for a folder, inside that
        folder), names a regular file with an audio suffix. No path ever comes from the caller.

        Raises:
            MusicSearchError: unknown track, or the file is gone, moved or re-pointed elsewhere.
        """
        rec = self.db.get_track(int(track))
        if rec is None:
            raise MusicSearchError(f"no track with id {track} in this store")
        row = self.files.get(rec.path)
        real = os.path.realpath(rec.path)
        if row is None or row.status != "ok" or row.realpath != real:
            raise MusicSearchError(f"track {track}: its file is not the one that was indexed; re-index the collection")
        if not os.path.isfile(real) or Path(real).suffix.lower() not in AUDIO_EXTENSIONS:
            raise MusicSearchError(f"track {track}: its audio file is missing; re-index the collection")
        return Path(real)


#: What a store directory holds before its ``store.json`` is written (and a failed creation may leave behind).
_UNFINISHED_STORE_FILES = frozenset(
    {LOCK_FILE, METADATA_FILE, f"{METADATA_FILE}-wal", f"{METADATA_FILE}-shm", f"{METADATA_FILE}-journal"}
)


def _is_unfinished_store(dest: Path) -> bool:
    """Whether ``dest`` holds only what a store creation writes before its ``store.json`` (a creation cut short
    by a full disk, a permission error or a kill): safe to clear, since it never held a committed track."""
    names = {p.name for p in dest.iterdir()}
    return bool(names) and names <= _UNFINISHED_STORE_FILES and not (dest / STORE_FILE).exists()


def _clear_unfinished_store(dest: Path) -> None:
    if (dest / STORE_FILE).exists():
        return
    for name in sorted(_UNFINISHED_STORE_FILES - {LOCK_FILE}):
        (dest / name).unlink(missing_ok=True)


def storage_error(store: Path, exc: BaseException) -> MusicSearchError:
    """The one-line error for a store that cannot be written (full disk, no permission, read-only file system),
    saying what to do; the next run continues from the last commit.

    Args:
        store: the store directory.
        exc: the ``OSError`` or ``sqlite3.OperationalError`` raised while writing it.
    """
    code = getattr(exc, "errno", None)
    text = str(exc).lower()
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "full" in text or "too large" in text:
        return MusicSearchError(
            f"no space left to write store {store} ({exc}); free some disk space and run the same command again: "
            "it continues from the last commit"
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or "readonly" in text or "read-only" in text:
        return MusicSearchError(
            f"cannot write store {store} ({exc}): no permission, or a read-only file system; make it writable or "
            "give another --store, then run the same command again"
        )
    return MusicSearchError(
        f"writing store {store} failed ({exc}); check the disk and its permissions, then run the same command "
        "again: it continues from the last commit"
    )


@contextlib.contextmanager
def writing(store: Path) -> Iterator[None]:
    """Turn a failed write of the store (full disk, no permission) into its one-line :func:`storage_error`."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        raise storage_error(store, exc) from exc


def acquire_lock(dest: Path) -> IO[Any]:
    fh = open(dest / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise MusicSearchError(
            f"another indexing run is writing {dest}; wait for it to finish (a killed run releases the lock)"
        ) from None
    return fh


def _open_or_create(path: Path, settings: StoreSettings) -> VectorBackend:
    if (path / MANIFEST).is_file():
        backend = open_backend(path)
        if backend.dim != settings.dim:
            raise MusicSearchError(f"{path} holds {backend.dim}-d vectors but the store's model has {settings.dim}")
        return backend
    return create_backend(
        settings.backend, settings.dim, **level_options(settings.backend, settings.backend_options, path.name)
    )


def level_options(backend: str, options: dict[str, Any], level: str) -> dict[str, Any]:
    """The options of one level's backend (``level`` = ``tracks`` or ``windows``): a Milvus store keeps the two
    levels in two collections of one server, ``COLLECTION_tracks`` and ``COLLECTION_windows``."""
    out = dict(options)
    if backend == "milvus":
        out["collection"] = f"{out.get('collection', 'musicsearch')}_{level}"
    return out
