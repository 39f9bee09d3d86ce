"""Index a music collection (a folder or a manifest) into a store, incrementally and resumably.

A store is a directory::

    store.json        settings fixed at creation: model (name, weights checksum, where to load it), window plan,
                      vector backend and its options
    metadata.sqlite   tracks, windows, tags (:class:`~musicsearch.index.metadata.MetadataDB`)
    tracks/           one vector per track  (a saved :class:`~musicsearch.index.store.VectorBackend`)
    windows/          one vector per window (another saved backend; ids disjoint from the track vectors')
    files.sqlite      per file: size, mtime, SHA-256, resolved path, last outcome (ok / failed and why)
    vectors.f32       a float32 copy of every vector, row = vector id (search reads a few by id per query)
    index.lock        held by the one indexing run allowed at a time

**Pipeline.** Worker processes (``workers``, a process pool started with ``forkserver``, never importing torch)
hash and decode files into the plan's windows (:func:`~musicsearch.index.embedder.decode_track`), a bounded
number ahead of the model; the main process batches windows *across* tracks (``batch_size`` windows per forward
pass) and runs the model, so decoding overlaps inference. A worker that crashes (a decoder segfault on a hostile
file) is replaced and the file it held is reported, not fatal.

**Incremental.** A file is unchanged when its SHA-256 (plus its segment and metadata, see :func:`content_key`)
equals the stored ``content_hash``. The full SHA-256 is cheap next to decoding (~1 GB/s against tens of ms to
decode a track), catches every edit (a partial hash misses same-size edits in the middle of a file), and is
skipped altogether for files whose size and mtime match ``files.sqlite``; a file only touched (new mtime, same
bytes) is hashed and skipped without decoding. Changed files are re-embedded; files gone from the source are
dropped with ``prune=True`` (otherwise counted as stale in the report).

**Resumable, never corrupt.** Finished tracks are committed in small batches (every ``commit_tracks`` tracks or
``commit_seconds``, stretched so that saving stays under ~10 % of the run): inside one SQLite transaction the
tracks are added, both vector backends are saved (each save atomic), then the transaction commits. A run killed
at any instant leaves the last commit intact; the next run first repairs the one possible gap (vectors saved
but their metadata not committed, or the reverse after a removal) by dropping orphan vectors and tracks whose
vectors are missing, then skips every committed file.

**Bad files** (missing, empty, corrupt, silent, undecodable) never stop a run: each is listed with its reason in
:attr:`IndexReport.failed`, remembered in ``files.sqlite`` and not retried until the file changes (or
``retry_failed=True``).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from musicsearch.audio.chunking import SAMPLE_RATE
from musicsearch.audio.io import AUDIO_EXTENSIONS
from musicsearch.data.manifest import read_manifest
from musicsearch.data.scan import find_audio_files, path_metadata
from musicsearch.errors import AudioError, MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.index.embedder import (
    DEFAULT_MAX_WINDOWS,
    DecodedTrack,
    Embedder,
    WindowPlan,
    decode_track,
    load_embedder,
    model_threads,
    open_index_embedder,
    single_threaded,
    track_vector,
    unit_rows,
)
from musicsearch.index.metadata import (
    MetadataDB,
    StoreInfo,
    TrackInfo,
    TrackRecord,
    connect_readonly,
    merge_metadata,
)
from musicsearch.index.store import MANIFEST, VectorBackend, create_backend, merge_shards, open_backend

__all__ = [
    "STORE_FILE",
    "FailedFile",
    "FileLog",
    "IndexReport",
    "MergeReport",
    "SourceItem",
    "Store",
    "StoreSettings",
    "VectorFile",
    "collect_source",
    "content_key",
    "default_workers",
    "index_collection",
    "is_store",
    "merge_stores",
    "shard_of",
    "shard_store_path",
    "storage_error",
    "store_model",
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


# --------------------------------------------------------------------------------------------------------------
# Settings and the store directory


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
        shard: ``(rank, world_size)`` for the store of one shard of a sharded run (see :func:`merge_stores`),
            ``None`` for an ordinary store.
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

    The vector backends answer top-k queries but cannot return a vector by id; search needs a few by id for
    every query (the windows of the results for their best segment, an indexed example, the candidates of a
    negative term) and must not scan the whole index for them. Rows are written before the metadata commits
    them (so every committed vector has its row), the file grows sparsely to the largest id, rows of removed
    vectors are left behind (never referenced again), and a row that was never written reads as zeros, which
    :meth:`read` reports as missing (callers then fall back to a search restricted to those ids).
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
        lock = _acquire_lock(dest)
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
        lock = _acquire_lock(dest) if writable else None
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
def _writing(store: Path) -> Iterator[None]:
    """Turn a failed write of the store (full disk, no permission) into its one-line :func:`storage_error`."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        raise storage_error(store, exc) from exc


def _acquire_lock(dest: Path) -> IO[Any]:
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


# --------------------------------------------------------------------------------------------------------------
# The source: a folder or a manifest


@dataclass(frozen=True)
class SourceItem:
    """One track to index.

    Attributes:
        track_id: unique id: the path relative to the folder (``/``-separated, with its suffix), or the
            manifest's ``track_id``.
        path: the audio file.
        start, end: segment bounds in seconds (manifests only), or ``None``.
        tags: labels.
        title, artist, album, year, folder: metadata for display and filters.
    """

    track_id: str
    path: str
    start: float | None = None
    end: float | None = None
    tags: tuple[str, ...] = ()
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    year: int | None = None
    folder: str | None = None

    def meta_digest(self) -> str:
        """Short hash of everything but the audio bytes (so editing a tag re-indexes the track)."""
        obj = [self.start, self.end, sorted(self.tags), self.title, self.artist, self.album, self.year, self.folder]
        return hashlib.sha256(json.dumps(obj, ensure_ascii=False).encode()).hexdigest()[:12]


def content_key(sha256: str, item: SourceItem) -> str:
    """The ``content_hash`` stored for a track: ``sha256:<file hash>;meta:<digest of segment and metadata>``."""
    return f"sha256:{sha256};meta:{item.meta_digest()}"


def _year(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(str(value)[:4])
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def collect_source(source: str | os.PathLike[str]) -> tuple[list[SourceItem], list[FailedFile]]:
    """The tracks of a folder (found recursively, see :func:`musicsearch.data.scan.find_audio_files`) or of a
    JSONL manifest.

    For a folder: ``track_id`` is the relative path, metadata comes from the path convention
    ``Artist/Album/NN Title.ext`` (:func:`musicsearch.data.scan.path_metadata`), ``folder`` is the relative parent
    folder; a symlink whose target lies outside the folder is rejected (it would let the server reach outside
    the collection). For a manifest: its fields, ``metadata`` giving title/artist/album/year/folder.

    Returns:
        ``(items, rejected)``.

    Raises:
        ManifestError: ``source`` is neither a folder nor a readable manifest.
    """
    src = Path(source).expanduser()
    items: list[SourceItem] = []
    rejected: list[FailedFile] = []
    if src.is_dir():
        root = Path(os.path.abspath(src))
        real_root = os.path.realpath(root)
        for path in find_audio_files(root):
            rel = path.relative_to(root).as_posix()
            real = os.path.realpath(path)
            if os.path.commonpath([real_root, real]) != real_root:
                rejected.append(FailedFile(rel, str(path), f"symlink points outside the collection (to {real})"))
                continue
            meta = path_metadata(rel)
            items.append(
                SourceItem(
                    track_id=rel,
                    path=str(path),
                    title=_text(meta.get("title")),
                    artist=_text(meta.get("artist")),
                    album=_text(meta.get("album")),
                    folder=str(meta.get("folder", "")),
                )
            )
        return items, rejected
    for t in read_manifest(src):
        m = t.metadata
        items.append(
            SourceItem(
                track_id=t.track_id,
                path=t.audio_path,
                start=t.start,
                end=t.end,
                tags=tuple(t.tags),
                title=_text(m.get("title")),
                artist=_text(m.get("artist")),
                album=_text(m.get("album")),
                year=_year(m.get("year")),
                folder=_text(m.get("folder")) if m.get("folder") is not None else os.path.dirname(t.audio_path),
            )
        )
    return items, rejected


# --------------------------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class FailedFile:
    """A file that was not indexed, and why."""

    track_id: str
    path: str
    reason: str


@dataclass
class IndexReport:
    """What an indexing run did.

    Attributes:
        store: the store directory.
        scanned: tracks in the source.
        added: tracks indexed for the first time.
        updated: changed tracks re-embedded.
        unchanged: tracks skipped because their file and metadata are unchanged.
        removed: tracks dropped (``prune``) or repaired away.
        stale: tracks in the store but no longer in the source (kept: pass ``prune`` to drop them).
        failed: files not indexed, with reasons.
        windows: window vectors embedded.
        wall_seconds: whole run.
        decode_seconds: hashing + decoding, summed over workers (CPU-seconds).
        model_seconds: model forward passes in the main process.
        write_seconds: commits (metadata + saving vectors).
        repaired: items fixed after a killed run.
    """

    store: str
    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    stale: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    windows: int = 0
    wall_seconds: float = 0.0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    repaired: int = 0
    workers: int = 0
    batch_size: int = 0

    @property
    def embedded(self) -> int:
        """Tracks embedded in this run."""
        return self.added + self.updated

    @property
    def tracks_per_minute(self) -> float:
        """Embedded tracks per minute of wall time."""
        return 60.0 * self.embedded / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "store": self.store,
            "scanned": self.scanned,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "stale": self.stale,
            "failed": [{"track_id": f.track_id, "path": f.path, "reason": f.reason} for f in self.failed],
            "windows": self.windows,
            "wall_seconds": round(self.wall_seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            "tracks_per_minute": round(self.tracks_per_minute, 1),
            "repaired": self.repaired,
            "workers": self.workers,
            "batch_size": self.batch_size,
        }


# --------------------------------------------------------------------------------------------------------------
# Worker side (no torch here)


@dataclass(frozen=True)
class _Job:
    index: int
    path: str
    start: float | None
    end: float | None
    known_sha: str | None  # from files.sqlite when size and mtime match
    stored_key: str | None  # content_hash of the stored track with this id
    meta_digest: str
    plan: WindowPlan
    timeout: float | None = None  # seconds for hashing + decoding this file


@dataclass(frozen=True)
class _Outcome:
    index: int
    status: str  # "ok", "unchanged", "failed"
    sha256: str = ""
    decoded: DecodedTrack | None = None
    reason: str = ""
    seconds: float = 0.0
    raw: np.ndarray | None = None  # (n, D) window embeddings, when a pipeline (cluster.py) embedded them


#: Seconds to hash and decode one file at most, by default (a 60-minute FLAC takes well under a second).
DECODE_TIMEOUT = 300.0

NOT_REGULAR_REASON = (
    "not a regular file (a named pipe, device or socket); only regular files are indexed: remove it, or "
    "replace it by the audio file itself"
)


class _DecodeTimeout(Exception):
    """Raised in a job that ran past its time limit (by SIGALRM)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_DecodeTimeout` in this thread after ``seconds`` (main thread only: elsewhere no limit).

    The signal interrupts Python code and blocking system calls; a decoder stuck inside C code is caught by the
    pool's own watchdog instead (see :func:`_outcomes`)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _DecodeTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timeout_reason(seconds: float) -> str:
    return (
        f"decoding took longer than {seconds:g} s and was stopped (a hanging file or decoder); check the file, "
        "or raise --decode-timeout for very long files on a slow disk"
    )


def _hash_regular(path: str) -> str:
    """SHA-256 of a regular file; anything else (a named pipe would block the reader forever) is refused
    without reading it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AudioError(NOT_REGULAR_REASON)
        h = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    finally:
        os.close(fd)


def _run_job(job: _Job) -> _Outcome:
    """Hash a file and, unless unchanged, decode it into windows, within ``job.timeout`` seconds. Never raises
    for a bad file."""
    t0 = time.perf_counter()
    sha = job.known_sha or ""
    try:
        with _time_limit(job.timeout):
            sha = sha or _hash_regular(job.path)
            if job.stored_key == f"sha256:{sha};meta:{job.meta_digest}":
                return _Outcome(job.index, "unchanged", sha, seconds=time.perf_counter() - t0)
            decoded = decode_track(job.path, job.plan, start=job.start, end=job.end)
        return _Outcome(job.index, "ok", sha, decoded, seconds=time.perf_counter() - t0)
    except _DecodeTimeout:
        reason = _timeout_reason(job.timeout or 0.0)
        return _Outcome(job.index, "failed", sha, reason=reason, seconds=time.perf_counter() - t0)
    except AudioError as exc:
        return _Outcome(job.index, "failed", sha, reason=str(exc), seconds=time.perf_counter() - t0)
    except OSError as exc:
        return _Outcome(
            job.index, "failed", sha, reason=f"cannot read the file: {exc}", seconds=time.perf_counter() - t0
        )
    except Exception as exc:  # one bad file never stops the run
        return _Outcome(
            job.index,
            "failed",
            sha,
            reason=f"decoding failed: {type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - t0,
        )


def default_workers() -> int:
    """Decoding processes by default: one per core beyond the one running the model, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the indexing process is gone (a SIGKILLed parent would otherwise leave its
    workers blocked on their queue forever)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, under another user (cannot happen for our own parent)
                pass

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _init_worker(parent: int) -> None:
    """Worker initializer: compute on one thread (:func:`~musicsearch.index.embedder.single_threaded`: the
    worker is one of the processes sharing the cores with the model), and exit with the indexing process."""
    single_threaded()
    _watch_parent(parent)


def _pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of decoding processes. With ``forkserver`` (Linux) the server preloads this module only, not the
    caller's ``__main__``: workers start in milliseconds, never import torch, and a script without an
    ``if __name__ == "__main__"`` guard is not re-run in them."""
    if "forkserver" in mp.get_all_start_methods():
        server = mp.get_context("forkserver")
        server.set_forkserver_preload([__name__])  # no effect once this process's fork server runs
        ctx: Any = server
    else:
        ctx = mp.get_context("spawn")
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    )


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes (one is stuck in a decoder); its futures then fail as a broken pool."""
    procs = getattr(pool, "_processes", None) or {}  # the executor's only handle on its workers
    for proc in list(procs.values()):
        with contextlib.suppress(Exception):
            proc.kill()


def _outcomes(jobs: Sequence[_Job], workers: int, *, watchdog: float | None = None) -> Iterator[_Outcome]:
    """Run jobs in a process pool, at most ``2·workers + 2`` ahead of the consumer, yielding as they finish.

    ``workers == 0`` runs them inline. When the pool breaks (a worker killed by a decoder crash), the jobs it
    held are re-run one at a time in a fresh pool so the one that crashes is found and reported alone. Each
    job limits its own time (:func:`_time_limit`); ``watchdog`` is the backstop for a decoder stuck inside C
    code: when no job finishes for that many seconds, the workers are killed and their jobs re-run one at a
    time, and the one that hangs again is reported.
    """
    if workers <= 0:
        for job in jobs:
            yield _run_job(job)
        return
    queue = iter(jobs)
    suspects: list[_Job] = []
    ahead = 2 * workers + 2
    while True:
        pool = _pool(workers)
        broken = False
        pending: dict[cf.Future[_Outcome], _Job] = {}
        try:
            # suspects of the last breakage run one at a time; then the rest, several ahead
            while suspects:
                job = suspects.pop(0)
                try:
                    yield pool.submit(_run_job, job).result(timeout=watchdog)
                except BrokenProcessPool:
                    yield _Outcome(job.index, "failed", reason="the decoder crashed on this file (worker died)")
                    broken = True
                    break
                except cf.TimeoutError:
                    _kill_workers(pool)
                    yield _Outcome(job.index, "failed", reason=_timeout_reason(job.timeout or watchdog or 0.0))
                    broken = True
                    break
            if broken:
                continue
            for job in itertools.islice(queue, ahead):
                pending[pool.submit(_run_job, job)] = job
            while pending:
                done, _ = cf.wait(pending, timeout=watchdog, return_when=cf.FIRST_COMPLETED)
                if not done:  # every worker stuck past its own time limit: kill them, find the file alone
                    log.warning("no file finished decoding in %g s; restarting the decoding workers", watchdog)
                    _kill_workers(pool)
                    broken = True
                    suspects.extend(pending.values())
                    pending.clear()
                    break
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(job)
                        continue
                    yield outcome
                    if not broken:
                        for nxt in itertools.islice(queue, 1):
                            pending[pool.submit(_run_job, nxt)] = nxt
                if broken:
                    suspects.extend(pending.values())
                    pending.clear()
            if not broken:
                return
            log.warning("a decoding worker died; re-running %d files one at a time", len(suspects))
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)


# --------------------------------------------------------------------------------------------------------------
# Main process: batching windows across tracks, committing


@dataclass
class _Slot:
    index: int
    outcome: _Outcome
    raw: np.ndarray  # (n, D) window embeddings being filled
    filled: int = 0
    error: str = ""  # set when the model returned NaN/inf for this track's windows


#: Why a track fails when the model returns NaN or infinity for its windows (and for no one else's).
NONFINITE_REASON = (
    "the model returned NaN or infinity for this file's audio (its samples are probably garbage or far outside "
    "-1..1, e.g. a damaged float WAV); check the file, re-export it, or remove it from the collection"
)


class _Batcher:
    """Queue windows of several tracks and embed them ``batch_size`` at a time; hand back finished tracks."""

    def __init__(self, embedder: Embedder, batch_size: int) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.queue: list[tuple[_Slot, int]] = []  # (slot, first window not yet queued for the model)
        self.queued = 0
        self.model_seconds = 0.0

    def add(self, outcome: _Outcome) -> list[_Slot]:
        assert outcome.decoded is not None
        n = outcome.decoded.windows.shape[0]
        slot = _Slot(outcome.index, outcome, np.empty((n, self.embedder.dim), np.float32))
        self.queue.append((slot, 0))
        self.queued += n
        done: list[_Slot] = []
        while self.queued >= self.batch_size:
            done += self._run(self.batch_size)
        return done

    def flush(self) -> list[_Slot]:
        done: list[_Slot] = []
        while self.queued:
            done += self._run(min(self.queued, self.batch_size))
        return done

    def _run(self, m: int) -> list[_Slot]:
        parts: list[tuple[_Slot, int, int]] = []  # (slot, first window, stop)
        need = m
        while need:
            slot, first = self.queue[0]
            assert slot.outcome.decoded is not None
            n = slot.outcome.decoded.windows.shape[0]
            take = min(need, n - first)
            parts.append((slot, first, first + take))
            need -= take
            if first + take == n:
                self.queue.pop(0)
            else:
                self.queue[0] = (slot, first + take)
        batch = np.concatenate([s.outcome.decoded.windows[a:b] for s, a, b in parts if s.outcome.decoded is not None])
        t0 = time.perf_counter()
        try:
            emb = self.embedder.embed_windows(batch)  # (m, D)
        except MusicSearchError as exc:  # NaN/inf: find the tracks that cause it; the others are embedded alone
            emb = self._without_bad_tracks(parts, exc)
        self.model_seconds += time.perf_counter() - t0
        self.queued -= m
        done = []
        row = 0
        for slot, a, b in parts:
            slot.raw[a:b] = emb[row : row + b - a]
            row += b - a
            slot.filled += b - a
            if slot.filled == slot.raw.shape[0]:
                done.append(slot)
        return done

    def _without_bad_tracks(self, parts: list[tuple[_Slot, int, int]], exc: MusicSearchError) -> np.ndarray:
        """Embed each track's part of a batch that gave NaN/inf on its own; a track whose windows still give
        NaN/inf is marked failed (its rows stay zero and are never stored). When the model gives NaN/inf even
        on a plain tone, the weights are at fault: ``exc`` is raised and the run stops."""
        emb = np.zeros((sum(b - a for _, a, b in parts), self.embedder.dim), np.float32)
        row, bad = 0, 0
        for slot, a, b in parts:
            assert slot.outcome.decoded is not None
            if not slot.error:
                try:
                    emb[row : row + b - a] = self.embedder.embed_windows(slot.outcome.decoded.windows[a:b])
                except MusicSearchError:
                    slot.error = NONFINITE_REASON
                    bad += 1
            row += b - a
        if bad == len(parts) and not self._model_is_sane():
            raise exc
        log.warning("the model returned NaN/inf for %d of %d tracks of a batch; re-ran the others", bad, len(parts))
        return emb

    def _model_is_sane(self) -> bool:
        """Whether the model gives finite output for one window of a quiet 440 Hz tone."""
        n = self.embedder.window_samples
        t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
        probe = (0.1 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
        try:
            self.embedder.embed_windows(probe)
        except MusicSearchError:
            return False
        return True


@dataclass
class _Ready:
    item: SourceItem
    info: TrackInfo
    track: np.ndarray  # (D,) unit
    windows: np.ndarray  # (n, D) unit
    starts: np.ndarray  # (n,) seconds
    replace: int | None  # stored track (int id) this one replaces


class _Writer:
    """Collects finished tracks and commits them in small atomic batches (see the module docstring)."""

    def __init__(self, store: Store, report: IndexReport, *, commit_tracks: int, commit_seconds: float) -> None:
        self.store = store
        self.report = report
        self.commit_tracks = max(1, commit_tracks)
        self.commit_seconds = commit_seconds
        self.ready: list[_Ready] = []
        self.rows: list[FileRow] = []
        self.removals: list[int] = []
        self.last = time.monotonic()
        self.last_save = 0.0

    def add(self, ready: _Ready, row: FileRow) -> None:
        self.ready.append(ready)
        self.rows.append(row)

    def note(self, row: FileRow) -> None:
        self.rows.append(row)

    def due(self) -> bool:
        interval = max(self.commit_seconds, 10.0 * self.last_save)
        return len(self.ready) >= self.commit_tracks or (
            bool(self.ready or self.rows) and time.monotonic() - self.last >= interval
        )

    def commit(self) -> None:
        if not (self.ready or self.rows or self.removals):
            return
        t0 = time.perf_counter()
        store = self.store
        # the file log first: extra rows for tracks that end up uncommitted are harmless (see Store.playable_path)
        store.files.put(self.rows)
        with store.db.transaction():
            drop: list[np.ndarray] = []
            for track in self.removals:
                drop.append(store.db.remove_track(track))
            for r in self.ready:
                if r.replace is not None:
                    drop.append(store.db.remove_track(r.replace))
            if drop:
                ids = np.concatenate(drop)
                store.tracks.remove(ids)
                store.windows.remove(ids)
            t_ids, t_vecs, w_ids, w_vecs = [], [], [], []
            for r in self.ready:
                rec, wins = store.db.add_track(r.info, window_starts=r.starts.tolist())
                assert rec.vector_id is not None
                t_ids.append(rec.vector_id)
                t_vecs.append(r.track)
                w_ids += [w.vector_id for w in wins]
                w_vecs.append(r.windows)
            if t_ids:  # one add per backend and commit: an upsert scans the store once
                store.tracks.add(np.array(t_ids, np.int64), np.stack(t_vecs))
                store.windows.add(np.array(w_ids, np.int64), np.concatenate(w_vecs))
                store.vector_file.write(np.array(t_ids + w_ids, np.int64), np.concatenate([np.stack(t_vecs), *w_vecs]))
            t_save = time.perf_counter()
            store.save_vectors()
            self.last_save = time.perf_counter() - t_save
        self.report.removed += len(self.removals)
        self.ready, self.rows, self.removals = [], [], []
        self.last = time.monotonic()
        self.report.write_seconds += time.perf_counter() - t0


def index_collection(
    source: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | Embedder | None = None,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    max_windows: int | None = None,
    prune: bool = False,
    retry_failed: bool = False,
    commit_tracks: int = 256,
    commit_seconds: float = 30.0,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    pipeline: Callable[[Sequence[_Job]], Iterable[_Outcome]] | None = None,
    decode_timeout: float | None = DECODE_TIMEOUT,
    rehash: bool = False,
) -> IndexReport:
    """Index (or update) a store from a folder or a manifest.

    Args:
        source: folder of audio files, or a JSONL manifest.
        store: the store directory (created when missing).
        model: ``--model`` value or an :class:`Embedder`; may be omitted for an existing store (its own model).
        backend: vector backend of a new store (``faiss`` by default; ``numpy``, ``milvus``).
        backend_options: options of a new store's backends (e.g. ``{"exact_threshold": 100000}``).
        workers: decoding processes (default :func:`default_workers`; 0 decodes in the main process), each on
            one thread; the model runs on the cores they leave
            (:func:`~musicsearch.index.embedder.model_threads`).
        batch_size: windows per model forward pass, across tracks (default: the embedder's own, which
            :func:`~musicsearch.index.embedder.open_index_embedder` sets per runtime).
        max_windows: windows per track at most, for a new store (default 16).
        prune: drop stored tracks that are no longer in the source.
        retry_failed: retry files that failed before and have not changed since.
        commit_tracks: commit after this many finished tracks ...
        commit_seconds: ... or this many seconds (stretched to keep commits under ~10 % of the time).
        progress: show a tqdm progress bar (tracks/s and time left) on stderr.
        shard: ``(rank, world_size)`` to index only this shard's part of the source (the tracks whose
            :func:`shard_of` is ``rank``) into ``store``, the shard's own store (see :func:`shard_store_path`),
            with ids disjoint from the other shards'; merge the shard stores with :func:`merge_stores`.
        pipeline: decodes *and embeds* the jobs elsewhere instead of the local pool and model (the Ray run of
            :mod:`musicsearch.index.cluster`); planning, committing and reporting stay here.
        decode_timeout: seconds to hash and decode one file at most (``None``: no limit); a file that takes
            longer is reported as failed.
        rehash: hash every file again even when its size and modification time are unchanged (finds same-size
            edits whose modification time was restored, which the size + mtime shortcut misses).

    Returns:
        The :class:`IndexReport`.

    Raises:
        MusicSearchError: unreadable source, a model other than the store's, settings that contradict the store,
            or another run holding the store.
    """
    t_start = time.perf_counter()
    if batch_size is not None and batch_size < 1:
        raise MusicSearchError(f"batch size must be >= 1, got {batch_size}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise MusicSearchError(f"workers must be >= 0, got {workers}")
    if shard is not None:
        shard = (int(shard[0]), int(shard[1]))
        if not 0 <= shard[0] < shard[1]:
            raise MusicSearchError(f"shard must be RANK/WORLD_SIZE with 0 <= RANK < WORLD_SIZE, got {shard}")
    source, store = Path(source).expanduser(), Path(store).expanduser()
    items, rejected = collect_source(source)
    if shard is not None:
        items = [it for it in items if shard_of(it.track_id, shard[1]) == shard[0]]
        rejected = [f for f in rejected if shard_of(f.track_id, shard[1]) == shard[0]]
    path = Path(store)
    if is_store(path):
        settings = read_settings(path)
        if settings.shard != shard:
            raise MusicSearchError(
                f"store {path} holds {_shard_text(settings.shard)}, not {_shard_text(shard)}; give the same --shard "
                "as when it was created, or another store"
            )
        if backend is not None and backend != settings.backend:
            raise MusicSearchError(
                f"store {path} uses the {settings.backend!r} backend, not {backend!r}; "
                "omit --backend or use a new store"
            )
        if max_windows is not None and max_windows != settings.plan.max_windows:
            raise MusicSearchError(
                f"store {path} was built with at most {settings.plan.max_windows} windows a track, not {max_windows}; "
                "omit --max-windows or use a new store"
            )
        embedder = open_index_embedder(store_model(path, model), batch_size=batch_size)
        with _writing(path):
            st = Store.open(path, writable=True)
    else:
        embedder = open_index_embedder(store_model(path, model), batch_size=batch_size)
        plan = embedder.plan(max_windows=DEFAULT_MAX_WINDOWS if max_windows is None else max_windows)
        settings = StoreSettings(
            model_name=embedder.name,
            weights_checksum=embedder.checksum,
            model_source=embedder.source,
            plan=plan,
            dim=embedder.dim,
            backend=backend or "faiss",
            backend_options=dict(backend_options or {}),
            created=time.time(),
            shard=shard,
        )
        with _writing(path):
            st = Store.create(path, settings)
    batch_size = embedder.batch_size if batch_size is None else batch_size
    report = IndexReport(store=str(path), scanned=len(items) + len(rejected), workers=workers, batch_size=batch_size)
    report.failed.extend(rejected)
    try:
        with _writing(path), embedder.using_threads(model_threads(workers)):
            st.check_model(embedder)
            report.repaired = st.repaired + st.repair()
            _index_into(st, embedder, items, report, workers, batch_size, prune, retry_failed, commit_tracks,
                        commit_seconds, progress, pipeline, decode_timeout, rehash)  # fmt: skip
    finally:
        st.close()
    report.wall_seconds = time.perf_counter() - t_start
    return report


def _index_into(
    st: Store,
    embedder: Embedder,
    items: list[SourceItem],
    report: IndexReport,
    workers: int,
    batch_size: int,
    prune: bool,
    retry_failed: bool,
    commit_tracks: int,
    commit_seconds: float,
    progress: bool,
    pipeline: Callable[[Sequence[_Job]], Iterable[_Outcome]] | None = None,
    decode_timeout: float | None = None,
    rehash: bool = False,
) -> None:
    if decode_timeout is not None and not decode_timeout > 0:
        raise MusicSearchError(f"decode timeout must be > 0 seconds (or None for no limit), got {decode_timeout}")
    plan = st.settings.plan
    jobs: list[_Job] = []
    stats: dict[int, tuple[int, int, str]] = {}  # item index -> (size, mtime_ns, realpath)
    existing: dict[int, TrackRecord] = {}
    seen_ids: set[str] = set()
    for i, item in enumerate(items):
        seen_ids.add(item.track_id)
        try:
            fst = os.stat(item.path)
        except OSError as exc:
            report.failed.append(FailedFile(item.track_id, item.path, f"cannot read the file: {exc.strerror}"))
            continue
        if not stat.S_ISREG(fst.st_mode):  # a named pipe would block its reader forever: never opened
            report.failed.append(FailedFile(item.track_id, item.path, NOT_REGULAR_REASON))
            continue
        stats[i] = (fst.st_size, fst.st_mtime_ns, os.path.realpath(item.path))
        rec = st.db.find_track(item.track_id)
        if rec is not None:
            existing[i] = rec
        row = st.files.get(item.path)
        same_stat = row is not None and (row.size, row.mtime_ns) == (fst.st_size, fst.st_mtime_ns)
        known = row.sha256 if row is not None and same_stat and not rehash else None
        if known and rec is not None and rec.content_hash == content_key(known, item):
            report.unchanged += 1
            continue
        whole_file = item.start is None and item.end is None
        if known and row is not None and row.status == "failed" and whole_file and rec is None and not retry_failed:
            report.failed.append(FailedFile(item.track_id, item.path, f"{row.reason} (unchanged since it failed)"))
            continue
        jobs.append(
            _Job(
                i,
                item.path,
                item.start,
                item.end,
                known,
                None if rec is None else rec.content_hash,
                item.meta_digest(),
                plan,
                decode_timeout,
            )
        )
    stale = [t for t in st.db.iter_tracks() if t.track_id not in seen_ids]
    writer = _Writer(st, report, commit_tracks=commit_tracks, commit_seconds=commit_seconds)
    if prune:
        writer.removals = [t.id for t in stale]
    else:
        report.stale = len(stale)
    batcher = _Batcher(embedder, batch_size)
    bar = tqdm(total=len(jobs), desc="index", unit="track", disable=not progress, smoothing=0.1, dynamic_ncols=True)

    def row_for(i: int, sha: str, status: str, reason: str = "") -> FileRow:
        size, mtime, real = stats[i]
        return FileRow(items[i].path, size, mtime, sha, real, status, reason)

    def finish(slots: list[_Slot]) -> None:
        for slot in slots:
            item, out = items[slot.index], slot.outcome
            assert out.decoded is not None
            try:
                if slot.error:
                    raise MusicSearchError(slot.error)
                track, windows = track_vector(slot.raw), unit_rows(slot.raw, what="window embeddings")
            except MusicSearchError as exc:
                reason = NONFINITE_REASON if "NaN" in str(exc) else str(exc)
                report.failed.append(FailedFile(item.track_id, item.path, reason))
                writer.note(row_for(slot.index, out.sha256, "failed", reason))
                bar.update(1)
                continue
            rec = existing.get(slot.index)
            info = TrackInfo(
                track_id=item.track_id,
                path=item.path,
                content_hash=content_key(out.sha256, item),
                duration=round(out.decoded.duration, 3),
                title=item.title,
                artist=item.artist,
                album=item.album,
                year=item.year,
                folder=item.folder,
                tags=item.tags,
            )
            writer.add(
                _Ready(item, info, track, windows, out.decoded.starts, None if rec is None else rec.id),
                row_for(slot.index, out.sha256, "ok"),
            )
            if rec is None:
                report.added += 1
            else:
                report.updated += 1
            report.windows += windows.shape[0]
            bar.update(1)

    interrupted = True
    try:
        watchdog = None if decode_timeout is None else decode_timeout + 30.0
        for out in _outcomes(jobs, workers, watchdog=watchdog) if pipeline is None else pipeline(jobs):
            report.decode_seconds += out.seconds
            item = items[out.index]
            if out.status == "failed":
                report.failed.append(FailedFile(item.track_id, item.path, out.reason))
                if out.sha256:
                    writer.note(row_for(out.index, out.sha256, "failed", out.reason))
                bar.update(1)
            elif out.status == "unchanged":
                report.unchanged += 1
                writer.note(row_for(out.index, out.sha256, "ok"))
                bar.update(1)
            else:
                finish(batcher.add(out) if out.raw is None else [_Slot(out.index, out, out.raw, out.raw.shape[0])])
            bar.set_postfix(failed=len(report.failed), refresh=False)
            if writer.due():
                writer.commit()
        finish(batcher.flush())
        interrupted = False
    except KeyboardInterrupt:
        writer.commit()  # keep what is finished (Ctrl-C): a rerun resumes after it
        raise
    finally:
        bar.close()
        report.model_seconds += batcher.model_seconds
    if not interrupted:
        writer.commit()


# --------------------------------------------------------------------------------------------------------------
# Sharded indexing: several processes or machines each index a shard into its own store, then merge


def shard_of(track_id: str, world_size: int) -> int:
    """The shard (``0 .. world_size-1``) a track belongs to: its SHA-256 modulo ``world_size``.

    Stable across processes, machines and runs (unlike Python's ``hash``), and independent of the order or number
    of files in the source, so every worker picks its part of the same source without talking to the others.
    """
    if world_size < 1:
        raise MusicSearchError(f"world size must be >= 1, got {world_size}")
    digest = hashlib.sha256(track_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % world_size


def shard_store_path(store: str | os.PathLike[str], shard: tuple[int, int]) -> Path:
    """The store directory of one shard: ``STORE.shard-RANK-of-WORLD``."""
    return Path(f"{os.fspath(store)}.shard-{shard[0]}-of-{shard[1]}")


def _shard_text(shard: tuple[int, int] | None) -> str:
    return "a whole collection (no shard)" if shard is None else f"shard {shard[0]} of {shard[1]}"


@dataclass
class MergeReport:
    """What :func:`merge_stores` did.

    Attributes:
        store: the merged store.
        shards: the shard stores merged, in order.
        tracks: tracks in the merged store.
        vectors: vectors (tracks + windows) in the merged store.
        files: rows of the merged file log.
    """

    store: str
    shards: list[str]
    tracks: int = 0
    vectors: int = 0
    files: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"store": self.store, "shards": self.shards, "tracks": self.tracks, "vectors": self.vectors,
                "files": self.files}  # fmt: skip


def merge_stores(
    shard_stores: Sequence[str | os.PathLike[str]],
    dest: str | os.PathLike[str],
    *,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
) -> MergeReport:
    """Merge the stores of a sharded run (:func:`index_collection` with ``shard=``) into one new store.

    The merged store holds every shard's tracks, windows, tags, vectors (both indexes and ``vectors.f32``) and file
    log rows under their original ids (disjoint by construction), so it searches exactly like a store indexed in one
    process. It is an ordinary store: later runs of :func:`index_collection` without ``shard`` update it.
    Each shard's lock is held while it is read (a shard still being indexed is refused).

    Args:
        shard_stores: the shard stores, one per rank ``0 .. world_size-1`` of the same run.
        dest: the merged store (a new or empty directory).
        backend, backend_options: the merged store's vector backend, by default the shards'; e.g. ``"milvus"``
            with ``{"uri": "http://host:19530", "collection": "music"}`` merges faiss shard stores into two new
            collections of a Milvus server or cluster (``music_tracks``, ``music_windows``).

    Returns:
        The :class:`MergeReport`.

    Raises:
        MusicSearchError: no shards; ``dest`` not new; a path that is not a shard store; shards built with
            different models, window plans, dimensions or backends; ranks missing, repeated or from different world
            sizes; a shard being indexed; a Milvus server store (its shards share one collection, nothing to merge);
            or two shards holding the same track or id.
    """
    if not shard_stores:
        raise MusicSearchError("no shard stores to merge; pass STORE.shard-0-of-N ... STORE.shard-(N-1)-of-N")
    paths = [Path(p).expanduser() for p in shard_stores]
    out = Path(dest).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MusicSearchError(f"{out} exists and is not an empty folder; merge into a new store")
    settings = [read_settings(p) for p in paths]
    first = settings[0]
    for p, st in zip(paths, settings, strict=True):
        if st.shard is None:
            raise MusicSearchError(f"{p} is not a shard store (it was not indexed with --shard); nothing to merge")
        if st.info() != first.info():
            raise MusicSearchError(
                f"{p} was indexed with model {st.model_name} (weights {st.weights_checksum[:12]}, preprocessing "
                f"{st.info().preprocessing_version}) but {paths[0]} with {first.model_name} (weights "
                f"{first.weights_checksum[:12]}, preprocessing {first.info().preprocessing_version}); their vectors "
                "are not comparable: re-index every shard with the same model and settings"
            )
        if (st.dim, st.backend, st.backend_options) != (first.dim, first.backend, first.backend_options):
            raise MusicSearchError(
                f"{p} uses the {st.backend!r} backend {st.backend_options} with {st.dim}-d vectors but {paths[0]} "
                f"the {first.backend!r} backend {first.backend_options} with {first.dim}-d; index every shard "
                "with the same --backend"
            )
    target, target_options = first.backend, dict(first.backend_options)
    if backend is not None:
        target, target_options = backend, dict(backend_options or {})
    if target == "milvus" and first.backend == "milvus" and target_options == first.backend_options:
        raise MusicSearchError(
            "the shards are Milvus stores and the merged store would use their own collections; give the merged "
            "store another collection (backend_options) or index the shards with faiss and merge into Milvus"
        )
    ranks = sorted(st.shard for st in settings if st.shard is not None)
    world = ranks[0][1]
    if ranks != [(r, world) for r in range(world)]:
        raise MusicSearchError(
            f"the shards given are {', '.join(f'{r}/{w}' for r, w in ranks)}; pass exactly one store for each rank "
            f"0 .. {world - 1} of the same run (a missing shard would silently drop its tracks)"
        )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = _acquire_lock(out)
    shards: list[Store] = []
    report = MergeReport(store=str(out), shards=[str(p) for p in paths])
    try:
        shards = [Store.open(p, writable=True) for p in paths]  # the lock: no run may write a shard meanwhile
        merged = StoreSettings(
            model_name=first.model_name,
            weights_checksum=first.weights_checksum,
            model_source=first.model_source,
            plan=first.plan,
            dim=first.dim,
            backend=target,
            backend_options=target_options,
            created=time.time(),
        )
        merge_metadata([p / METADATA_FILE for p in paths], out / METADATA_FILE).close()
        for sub in (TRACKS_DIR, WINDOWS_DIR):
            dirs = [p / sub for p in paths if (p / sub / MANIFEST).is_file()]
            if dirs:
                opts = level_options(merged.backend, merged.backend_options, sub)
                vectors = merge_shards(dirs, out / sub, backend=merged.backend, **opts)
            else:
                opts = level_options(merged.backend, merged.backend_options, sub)
                vectors = create_backend(merged.backend, merged.dim, **opts)
                vectors.save(out / sub)
            report.vectors += len(vectors)
            vectors.close()
        vector_file = VectorFile(out / VECTORS_FILE, merged.dim)
        files = FileLog(out / FILES_FILE)
        try:
            for p, shard in zip(paths, shards, strict=True):
                ids = shard.db.vector_ids()
                vecs, ok = shard.vector_file.read(ids)
                if not ok.all():
                    raise MusicSearchError(
                        f"{p}: {int((~ok).sum())} vectors are missing from {VECTORS_FILE}; rerun its indexing "
                        "command (it repairs the shard) and merge again"
                    )
                vector_file.write(ids, vecs)
                rows = shard.files.rows()
                files.put(rows)
                report.files += len(rows)
                report.tracks += len(shard)
        finally:
            files.close()
        write_json(out / STORE_FILE, merged.to_json())  # last: a store exists once its settings do
    except BaseException:
        lock.close()
        for shard in shards:
            shard.close()
        if created:  # a failed merge leaves nothing behind
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    lock.close()
    for shard in shards:
        shard.close()
    log.info("merged %d shard stores (%d tracks, %d vectors) into %s", len(paths), report.tracks, report.vectors, out)
    return report
