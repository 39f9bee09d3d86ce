"""The metadata database beside a vector store: tracks, windows, tags, and which model built the store.

One SQLite file (stdlib ``sqlite3``, WAL journal, foreign keys on). Every write runs in a transaction, so a crash
leaves either the state before or after a whole write, never half a track. Tables:

* ``store_info(key, value)``: ``model_name``, ``weights_checksum``, ``preprocessing_version`` (and the schema
  version). A store answers only queries embedded by the same model: :meth:`MetadataDB.check_model` refuses others.
* ``tracks``: one row a track — int ``id`` (primary key), ``track_id`` (the manifest's string id, unique), ``path``
  (stored as given), ``content_hash`` (e.g. SHA-256 of the file, for incremental indexing), ``duration`` (s),
  ``title``/``artist``/``album``/``year``, ``folder`` (the path's parent as given), ``model_name``,
  ``weights_checksum``, ``preprocessing_version``, ``indexed_at`` (Unix seconds, UTC) and ``vector_id`` (the
  track-level vector, or NULL).
* ``windows(track, window_index, start, vector_id)``: one row per window vector; ``start`` in seconds.
* ``tags(track, tag, tag_key)``: tags as given; matched case-insensitively through ``tag_key`` (:func:`fold`).

Artist and album filters compare :func:`fold`-ed keys too (columns ``artist_key``/``album_key``), so
"MÖTLEY CRÜE" finds "Mötley Crüe".

Vector ids and track ids come from per-database sequences. A sharded run gives each worker ``shard=(rank, world)``
so that its ids are ``rank, rank + world, rank + 2·world, ...``: disjoint between workers, dense overall, so the
shards' vector stores and databases merge without renumbering (:func:`merge_metadata`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_MAX_VARS = 900  # ids per "IN (...)" query, below SQLite's oldest limit of 999 bound parameters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sequences (name TEXT PRIMARY KEY, next INTEGER NOT NULL, step INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    track_id TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    duration REAL,
    title TEXT,
    artist TEXT,
    album TEXT,
    year INTEGER,
    folder TEXT,
    model_name TEXT NOT NULL,
    weights_checksum TEXT NOT NULL,
    preprocessing_version TEXT NOT NULL,
    indexed_at REAL NOT NULL,
    vector_id INTEGER UNIQUE,
    artist_key TEXT,
    album_key TEXT
);
CREATE INDEX IF NOT EXISTS tracks_hash ON tracks(content_hash);
CREATE INDEX IF NOT EXISTS tracks_path ON tracks(path);
CREATE INDEX IF NOT EXISTS tracks_artist ON tracks(artist_key);
CREATE INDEX IF NOT EXISTS tracks_album ON tracks(album_key);
CREATE INDEX IF NOT EXISTS tracks_year ON tracks(year);
CREATE INDEX IF NOT EXISTS tracks_duration ON tracks(duration);
CREATE INDEX IF NOT EXISTS tracks_folder ON tracks(folder);
CREATE TABLE IF NOT EXISTS windows (
    track INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
    window_index INTEGER NOT NULL,
    start REAL NOT NULL,
    vector_id INTEGER NOT NULL UNIQUE,
    PRIMARY KEY (track, window_index)
);
CREATE TABLE IF NOT EXISTS tags (
    track INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    tag_key TEXT NOT NULL,
    PRIMARY KEY (track, tag_key)
);
CREATE INDEX IF NOT EXISTS tags_tag ON tags(tag_key);
"""

_TRACK_COLUMNS = (
    "id, track_id, path, content_hash, duration, title, artist, album, year, folder, "
    "model_name, weights_checksum, preprocessing_version, indexed_at, vector_id"
)
_TRACK_FIELDS = tuple(c.strip() for c in _TRACK_COLUMNS.split(","))
_ALL_TRACK_COLUMNS = _TRACK_COLUMNS + ", artist_key, album_key"


def fold(text: str) -> str:
    """Case- and width-insensitive key of a name or tag (NFKC, Unicode case folding, outer spaces stripped):
    ``fold("MÖTLEY CRÜE ") == fold("Mötley Crüe")``."""
    return unicodedata.normalize("NFKC", text).casefold().strip()


@dataclass(frozen=True)
class StoreInfo:
    """Which model built a store; queries must be embedded by the same one.

    Attributes:
        model_name: registry name of the model (e.g. ``"paper"``).
        weights_checksum: checksum (e.g. SHA-256) of the weights file.
        preprocessing_version: version string of the audio/text preprocessing.
    """

    model_name: str
    weights_checksum: str
    preprocessing_version: str


@dataclass(frozen=True)
class TrackInfo:
    """What the indexer knows about a track before it is stored.

    Attributes:
        track_id: unique string id (manifest id, or the path).
        path: audio path, stored exactly as given.
        content_hash: hash of the file's bytes.
        duration: seconds, or ``None``.
        title, artist, album, year: tag metadata, each optional.
        folder: folder for prefix filters; ``None`` stores the path's parent as given.
        tags: labels.
    """

    track_id: str
    path: str
    content_hash: str
    duration: float | None = None
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    year: int | None = None
    folder: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrackRecord:
    """A stored track (see the module docstring for the columns); ``tags`` sorted."""

    id: int
    track_id: str
    path: str
    content_hash: str
    duration: float | None
    title: str | None
    artist: str | None
    album: str | None
    year: int | None
    folder: str | None
    model_name: str
    weights_checksum: str
    preprocessing_version: str
    indexed_at: float
    vector_id: int | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class WindowRecord:
    """One stored window vector of a track: ``start`` in seconds."""

    track: int
    window_index: int
    start: float
    vector_id: int


@dataclass(frozen=True)
class VectorRef:
    """What a vector id stands for: a whole track (``window_index`` None, ``start`` 0) or one of its windows."""

    vector_id: int
    track: TrackRecord
    window_index: int | None
    start: float


@dataclass(frozen=True)
class MetadataFilter:
    """Metadata conditions, all of which a track must meet (``None``/empty means no condition).

    Attributes:
        artist: artist name, exact match up to case (Unicode-aware, :func:`fold`).
        album: album name, exact match up to case.
        year_min, year_max: inclusive year range.
        duration_min, duration_max: inclusive duration range in seconds.
        folder: folder prefix: that folder or anything below it (compared by path component, as stored).
        tags: tags the track must all have (matched up to case).
        without_tags: tags the track must not have.
    """

    artist: str | None = None
    album: str | None = None
    year_min: int | None = None
    year_max: int | None = None
    duration_min: float | None = None
    duration_max: float | None = None
    folder: str | None = None
    tags: tuple[str, ...] = field(default=())
    without_tags: tuple[str, ...] = field(default=())

    def is_empty(self) -> bool:
        """True when the filter sets no condition at all."""
        return self == MetadataFilter()


def model_mismatch_message(stored: StoreInfo, wanted: StoreInfo) -> str:
    """The message of a refused query: names both models and says what to do."""
    return (
        f"this store was indexed with model {stored.model_name} (checksum {stored.weights_checksum[:16]}, "
        f"preprocessing {stored.preprocessing_version}) but the query uses model {wanted.model_name} "
        f"(checksum {wanted.weights_checksum[:16]}, preprocessing {wanted.preprocessing_version}); "
        f"re-index or pick --model {stored.model_name}"
    )


def connect_readonly(path: Path, *, timeout: float = 30.0, what: str = "database") -> sqlite3.Connection:
    """Open an SQLite file for reading only: it never takes a write lock, never creates tables, and works on a
    read-only file or directory.

    In WAL mode a reader needs the ``-shm`` index beside the file. When it cannot be made (a read-only directory
    after the last writer closed cleanly, so no ``-wal`` content is pending) the file is opened ``immutable``,
    which reads it as it is on disk without any locking.

    Args:
        path: the database file.
        timeout: seconds to wait when a writer is checkpointing.
        what: what the file is, for messages.

    Returns:
        A connection with ``query_only`` set (autocommit, usable from several threads under a lock).

    Raises:
        MusicSearchError: the file is missing or cannot be opened.
    """
    if not path.is_file():
        raise MusicSearchError(f"{what} {path} does not exist; re-index the collection to create it")
    uri = path.absolute().as_uri()
    con = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        con.execute("PRAGMA query_only=ON")
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return con
    except sqlite3.OperationalError as exc:
        con.close()
        wal = path.with_name(path.name + "-wal")
        if wal.is_file() and wal.stat().st_size > 0:  # committed pages wait in the WAL: immutable would miss them
            raise MusicSearchError(
                f"cannot read {what} {path} ({exc}): its directory is read-only and its write-ahead log is not "
                "checkpointed; run `musicsearch index` on it once with write access, or make the directory writable"
            ) from exc
        log.debug("%s: read-only directory (%s); opening it immutable", path, exc)
    con = sqlite3.connect(
        f"{uri}?immutable=1", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )
    con.execute("PRAGMA query_only=ON")
    return con


@dataclass(frozen=True)
class _FilterColumns:
    """NumPy copies of the track columns filters read, for one database version: ``(N,)`` arrays sorted by
    track id (``vector_ids`` -1 and ``year``/``duration`` nan where NULL)."""

    version: tuple[int, int]
    track_ids: np.ndarray
    vector_ids: np.ndarray
    year: np.ndarray
    duration: np.ndarray


class MetadataDB:
    """The SQLite metadata database of one store (or one shard of it).

    Only a writer (``readonly=False``, the indexer) creates the file, sets up the schema and sets WAL mode; a
    reader (``readonly=True``: search, the server, merging) opens it read-only (:func:`connect_readonly`), so
    it never waits for the indexer's write lock, never blocks it, and works on a read-only store. In WAL mode
    a reader sees the last committed state while a commit is in progress.

    Args:
        path: database file (created with its tables when missing, unless ``readonly``).
        shard: ``(rank, world_size)`` for a worker of a sharded run, so its ids are disjoint from other workers'
            (ids ``rank + world_size·n``); ``None`` for an ordinary store. Only applies to a new database.
        timeout: seconds to wait for another process's write lock.
        readonly: open for reading only (writes raise ``sqlite3.OperationalError``).

    Raises:
        MusicSearchError: if the file is not a musicsearch metadata database (or, ``readonly``, does not exist),
            or ``shard`` is invalid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        shard: tuple[int, int] | None = None,
        timeout: float = 30.0,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if shard is not None and not (0 <= shard[0] < shard[1]):
            raise MusicSearchError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
        self._depth = 0
        self._info: StoreInfo | None = None
        self._commits = 0  # this connection's commits (PRAGMA data_version counts only other connections')
        self._columns: _FilterColumns | None = None
        self._tag_cache: dict[str, np.ndarray] = {}
        if readonly:
            self._con = connect_readonly(self.path, timeout=timeout, what="metadata database")
            try:
                version = self._get_info_key("schema_version")
            except sqlite3.DatabaseError as exc:
                self._con.close()
                raise MusicSearchError(
                    f"{self.path} is not a musicsearch metadata database ({exc}); re-index the collection"
                ) from exc
            if version is None or int(version) > SCHEMA_VERSION:
                self._con.close()
                raise MusicSearchError(
                    f"{self.path} holds no musicsearch schema or one of a newer musicsearch (version {version}); "
                    "re-index the collection, or upgrade musicsearch"
                )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so transactions mean exactly what they say.
        self._con = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints, never corrupt in WAL mode
            self._con.execute("PRAGMA foreign_keys=ON")
            with self.transaction():
                for statement in _SCHEMA.split(";"):  # one by one: executescript() would commit early
                    if statement.strip():
                        self._con.execute(statement)
                version = self._get_info_key("schema_version")
                if version is None:
                    self._set_info_key("schema_version", str(SCHEMA_VERSION))
                elif int(version) > SCHEMA_VERSION:
                    raise MusicSearchError(f"{self.path} was written by a newer musicsearch; upgrade it")
                rank, world = shard if shard is not None else (0, 1)
                for name in ("track", "vector"):
                    self._con.execute(
                        "INSERT OR IGNORE INTO sequences(name, next, step) VALUES (?, ?, ?)", (name, rank, world)
                    )
        except sqlite3.OperationalError:  # cannot write (full disk, no permission): the caller says what to do
            self._con.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._con.close()
            raise MusicSearchError(
                f"{self.path} is not a musicsearch metadata database ({exc}); pick another path"
            ) from exc

    # -- connection and transactions ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (pending work was committed by each transaction)."""
        self._con.close()

    def __enter__(self) -> MetadataDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them commit together or none do. Nested use makes savepoints.

        The indexer should keep a transaction open until the matching vectors are saved (``backend.save``), so
        that after a crash the database never lists a track whose vectors are missing.
        """
        if self._depth == 0:
            self._con.execute("BEGIN IMMEDIATE")
        else:
            self._con.execute(f"SAVEPOINT sp{self._depth}")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            self._info = None  # the rolled-back work may have recorded the model
            if self._depth == 0:
                self._con.execute("ROLLBACK")
            else:
                self._con.execute(f"ROLLBACK TO sp{self._depth}")
                self._con.execute(f"RELEASE sp{self._depth}")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._con.execute("COMMIT")
            self._commits += 1
        else:
            self._con.execute(f"RELEASE sp{self._depth}")

    # -- store info (model check) ------------------------------------------------------------------------------

    def _get_info_key(self, key: str) -> str | None:
        row = self._con.execute("SELECT value FROM store_info WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_info_key(self, key: str, value: str) -> None:
        self._con.execute("INSERT OR REPLACE INTO store_info(key, value) VALUES (?, ?)", (key, value))

    def info(self) -> StoreInfo | None:
        """The model that built this store, or ``None`` for a new, empty store."""
        if self._info is not None:  # set once, never changed afterwards
            return self._info
        values = [self._get_info_key(k) for k in ("model_name", "weights_checksum", "preprocessing_version")]
        if any(v is None for v in values):
            return None
        self._info = StoreInfo(*(str(v) for v in values))
        return self._info

    def check_model(self, wanted: StoreInfo) -> None:
        """Refuse a model other than the one that built the store (an empty store accepts any).

        Raises:
            MusicSearchError: "this store was indexed with model X (checksum ...); re-index or pick --model X".
        """
        stored = self.info()
        if stored is not None and stored != wanted:
            raise MusicSearchError(model_mismatch_message(stored, wanted))

    def set_info(self, info: StoreInfo) -> None:
        """Record the store's model on first use; afterwards only the same model is accepted.

        Raises:
            MusicSearchError: if the store already records another model.
        """
        with self.transaction():
            self.check_model(info)
            for key in ("model_name", "weights_checksum", "preprocessing_version"):
                self._set_info_key(key, getattr(info, key))

    # -- ids ---------------------------------------------------------------------------------------------------

    def _take_ids(self, name: str, n: int) -> np.ndarray:
        row = self._con.execute("SELECT next, step FROM sequences WHERE name = ?", (name,)).fetchone()
        first, step = int(row[0]), int(row[1])
        self._con.execute("UPDATE sequences SET next = ? WHERE name = ?", (first + n * step, name))
        return first + step * np.arange(n, dtype=np.int64)

    def allocate_vector_ids(self, n: int) -> np.ndarray:
        """Reserve ``n`` new vector ids (never handed out before by this database).

        Returns:
            ``(n,)`` int64 ids.
        """
        with self.transaction():
            return self._take_ids("vector", n)

    # -- writes ------------------------------------------------------------------------------------------------

    def add_track(
        self,
        track: TrackInfo,
        *,
        window_starts: Sequence[float] = (),
        track_vector: bool = True,
        indexed_at: float | None = None,
    ) -> tuple[TrackRecord, list[WindowRecord]]:
        """Store a track with its windows and tags, assigning its int id and vector ids.

        To re-index a changed track, first :meth:`remove_track` it and remove the vector ids that returns from the
        vector store.

        Args:
            track: the track's metadata.
            window_starts: start (seconds) of each window vector, in window order.
            track_vector: whether the track also has one track-level vector.
            indexed_at: Unix time of indexing; now by default.

        Returns:
            ``(record, windows)``: add the track vector under ``record.vector_id`` and window ``i`` under
            ``windows[i].vector_id``.

        Raises:
            MusicSearchError: if the store has no model recorded yet (call :meth:`set_info` first), or already holds
                a track with this ``track_id``.
        """
        info = self.info()
        if info is None:
            raise MusicSearchError(f"{self.path} records no model yet; call set_info() before adding tracks")
        folder = track.folder if track.folder is not None else os.path.dirname(track.path)
        with self.transaction():
            if self._con.execute("SELECT 1 FROM tracks WHERE track_id = ?", (track.track_id,)).fetchone():
                raise MusicSearchError(
                    f"track {track.track_id!r} is already stored; remove_track() it (and its vectors) to re-index it"
                )
            (tid,) = self._take_ids("track", 1).tolist()
            vids = self._take_ids("vector", len(window_starts) + int(track_vector)).tolist()
            track_vid = vids.pop(0) if track_vector else None
            when = time.time() if indexed_at is None else float(indexed_at)
            row = (
                tid,
                track.track_id,
                track.path,
                track.content_hash,
                None if track.duration is None else float(track.duration),
                track.title,
                track.artist,
                track.album,
                None if track.year is None else int(track.year),
                folder,
                info.model_name,
                info.weights_checksum,
                info.preprocessing_version,
                when,
                track_vid,
            )
            keys = (
                None if track.artist is None else fold(track.artist),
                None if track.album is None else fold(track.album),
            )
            self._con.execute(f"INSERT INTO tracks({_ALL_TRACK_COLUMNS}) VALUES ({', '.join('?' * 17)})", (*row, *keys))
            windows = [
                WindowRecord(tid, i, float(start), int(vid))
                for i, (start, vid) in enumerate(zip(window_starts, vids, strict=True))
            ]
            self._con.executemany(
                "INSERT INTO windows(track, window_index, start, vector_id) VALUES (?, ?, ?, ?)",
                [(w.track, w.window_index, w.start, w.vector_id) for w in windows],
            )
            tags = {fold(t): t.strip() for t in reversed(track.tags) if fold(t)}  # first spelling of a tag wins
            self._con.executemany(
                "INSERT INTO tags(track, tag, tag_key) VALUES (?, ?, ?)", [(tid, t, key) for key, t in tags.items()]
            )
        record = TrackRecord(
            **dict(zip(_TRACK_FIELDS, row, strict=True)), tags=tuple(t for _, t in sorted(tags.items()))
        )
        return record, windows

    def remove_track(self, track: int) -> np.ndarray:
        """Delete a track (by int id) with its windows and tags.

        Returns:
            ``(M,)`` int64 vector ids it owned (track vector and windows): remove them from the vector store.
        """
        with self.transaction():
            vids = self.track_vector_ids(track)
            self._con.execute("DELETE FROM tracks WHERE id = ?", (int(track),))
        return vids

    # -- reads -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])

    def _records(self, rows: Iterable[tuple[Any, ...]]) -> list[TrackRecord]:
        rows = list(rows)
        tags: dict[int, list[str]] = {}
        ids = [int(r[0]) for r in rows]
        for chunk in _chunks(ids):
            for tid, tag in self._con.execute(
                f"SELECT track, tag FROM tags WHERE track IN ({_marks(chunk)}) ORDER BY track, tag_key", chunk
            ):
                tags.setdefault(int(tid), []).append(str(tag))
        return [
            TrackRecord(**dict(zip(_TRACK_FIELDS, r, strict=True)), tags=tuple(tags.get(int(r[0]), ()))) for r in rows
        ]

    def get_track(self, track: int) -> TrackRecord | None:
        """The track with int id ``track``, or ``None``."""
        got = self.get_tracks([track])
        return got[0] if got else None

    def get_tracks(self, tracks: Sequence[int]) -> list[TrackRecord]:
        """Tracks by int id, in the order given (unknown ids skipped)."""
        ids = [int(t) for t in tracks]
        found: dict[int, TrackRecord] = {}
        for chunk in _chunks(ids):
            rows = self._con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE id IN ({_marks(chunk)})", chunk)
            found.update((r.id, r) for r in self._records(rows))
        return [found[i] for i in ids if i in found]

    def find_track(self, track_id: str) -> TrackRecord | None:
        """The track with string id ``track_id``, or ``None``."""
        rows = self._con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE track_id = ?", (track_id,))
        got = self._records(rows)
        return got[0] if got else None

    def find_by_path(self, path: str) -> list[TrackRecord]:
        """Tracks stored under exactly this path."""
        return self._records(self._con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE path = ?", (path,)))

    def find_by_content_hash(self, content_hash: str) -> list[TrackRecord]:
        """Tracks whose file has this content hash (for skipping unchanged files when indexing incrementally)."""
        rows = self._con.execute(f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE content_hash = ?", (content_hash,))
        return self._records(rows)

    def iter_tracks(self, *, batch_size: int = 1000) -> Iterator[TrackRecord]:
        """Every track, by int id."""
        last = -1
        while True:
            rows = self._con.execute(
                f"SELECT {_TRACK_COLUMNS} FROM tracks WHERE id > ? ORDER BY id LIMIT ?", (last, batch_size)
            ).fetchall()
            if not rows:
                return
            yield from self._records(rows)
            last = int(rows[-1][0])

    def windows(self, track: int) -> list[WindowRecord]:
        """A track's windows, in order."""
        rows = self._con.execute(
            "SELECT track, window_index, start, vector_id FROM windows WHERE track = ? ORDER BY window_index",
            (int(track),),
        )
        return [WindowRecord(int(t), int(i), float(s), int(v)) for t, i, s, v in rows]

    def track_vector_ids(self, track: int) -> np.ndarray:
        """``(M,)`` int64 vector ids of a track (its track vector first, then its windows in order)."""
        row = self._con.execute("SELECT vector_id FROM tracks WHERE id = ?", (int(track),)).fetchone()
        head = [int(row[0])] if row is not None and row[0] is not None else []
        return np.array(head + [w.vector_id for w in self.windows(track)], dtype=np.int64)

    def vector_ids(self, *, level: str = "all") -> np.ndarray:
        """Sorted ``(M,)`` int64 vector ids the database knows: ``level`` is ``"track"``, ``"window"`` or ``"all"``.

        Compare with the vector store's ``ids()`` to find orphans left by a crash between saving vectors and
        committing their metadata.
        """
        parts = []
        if level in ("track", "all"):
            parts.append("SELECT vector_id FROM tracks WHERE vector_id IS NOT NULL")
        if level in ("window", "all"):
            parts.append("SELECT vector_id FROM windows")
        if not parts:
            raise MusicSearchError(f"level must be 'track', 'window' or 'all', got {level!r}")
        ids = [int(r[0]) for r in self._con.execute(" UNION ALL ".join(parts))]
        return np.sort(np.array(ids, dtype=np.int64))

    def lookup_vectors(self, vector_ids: Sequence[int] | np.ndarray) -> list[VectorRef | None]:
        """What each vector id stands for (its track and window), in order; ``None`` for ids the database lacks
        (padding ``-1`` or orphans). This is the metadata fetch after a search."""
        vids = [int(v) for v in np.asarray(vector_ids).ravel().tolist()]
        wanted = sorted({v for v in vids if v >= 0})
        owner: dict[int, tuple[int, int | None, float]] = {}
        for chunk in _chunks(wanted):
            marks = _marks(chunk)
            rows = self._con.execute(
                f"SELECT vector_id, id, NULL, 0.0 FROM tracks WHERE vector_id IN ({marks}) "
                f"UNION ALL SELECT vector_id, track, window_index, start FROM windows WHERE vector_id IN ({marks})",
                chunk + chunk,
            )
            for vid, tid, widx, start in rows:
                owner[int(vid)] = (int(tid), None if widx is None else int(widx), float(start))
        tracks = {t.id: t for t in self.get_tracks(sorted({o[0] for o in owner.values()}))}
        out: list[VectorRef | None] = []
        for v in vids:
            o = owner.get(v)
            out.append(None if o is None else VectorRef(v, tracks[o[0]], o[1], o[2]))
        return out

    def tag_names(self) -> list[str]:
        """The distinct tags of the store, one name per tag up to case (its smallest spelling in code-point
        order), sorted."""
        return sorted(str(r[0]) for r in self._con.execute("SELECT MIN(tag) FROM tags GROUP BY tag_key"))

    # -- filters -----------------------------------------------------------------------------------------------
    #
    # One implementation answers every filter question (resolve_filter, filter_tracks): year and duration are
    # evaluated on NumPy copies of those columns (read once per database version: a broad ``year>=1990`` over a
    # million tracks costs a millisecond instead of materialising half a million SQL rows), tags through the
    # ``tags(tag_key)`` index, artist, album and folder in SQL (indexed, selective).

    def _version(self) -> tuple[int, int]:
        """Changes whenever the database does: other connections' commits (``PRAGMA data_version``) and ours."""
        return int(self._con.execute("PRAGMA data_version").fetchone()[0]), self._commits

    def _filter_columns(self) -> _FilterColumns:
        """The track columns filters read, for the current database version (cached until it changes)."""
        version = self._version()
        if self._columns is None or self._columns.version != version:
            rows = self._con.execute("SELECT id, vector_id, year, duration FROM tracks ORDER BY id").fetchall()
            cols = np.array(rows, dtype=np.float64).reshape(-1, 4)  # NULL -> nan
            has_vector = ~np.isnan(cols[:, 1])
            self._columns = _FilterColumns(
                version=version,
                track_ids=cols[:, 0].astype(np.int64),
                vector_ids=np.where(has_vector, cols[:, 1], -1).astype(np.int64),
                year=cols[:, 2],
                duration=cols[:, 3],
            )
            self._tag_cache.clear()
        return self._columns

    def _tagged(self, tag: str) -> np.ndarray:
        """Sorted track ids with ``tag`` (through the tag index; the last 256 tags asked for are kept)."""
        key = fold(tag)
        got = self._tag_cache.pop(key, None)
        if got is None:
            cursor = self._con.execute("SELECT track FROM tags WHERE tag_key = ?", (key,))
            got = np.unique(np.fromiter((r[0] for r in cursor), np.int64))
        self._tag_cache[key] = got  # most recent last
        while len(self._tag_cache) > 256:
            self._tag_cache.pop(next(iter(self._tag_cache)))
        return got

    def _track_mask(self, flt: MetadataFilter) -> tuple[_FilterColumns, np.ndarray]:
        """The filter columns and the ``(N,)`` mask of the tracks (sorted by id) meeting ``flt``."""
        cols = self._filter_columns()
        mask = np.ones(cols.track_ids.size, bool)
        with np.errstate(invalid="ignore"):  # nan (NULL) compares false, as in SQL
            for column, lo, hi in (
                (cols.year, flt.year_min, flt.year_max),
                (cols.duration, flt.duration_min, flt.duration_max),
            ):
                if lo is not None:
                    mask &= column >= lo
                if hi is not None:
                    mask &= column <= hi
        for tag in flt.tags:
            mask &= _in_sorted(cols.track_ids, self._tagged(tag))
        for tag in flt.without_tags:
            mask &= ~_in_sorted(cols.track_ids, self._tagged(tag))
        where, params = _filter_sql(flt)
        if params:  # artist, album or folder
            rows = self._con.execute(f"SELECT id FROM tracks WHERE {where}", params)
            mask &= _in_sorted(cols.track_ids, np.fromiter((int(r[0]) for r in rows), np.int64))
        return cols, mask

    def resolve_filter(self, flt: MetadataFilter, *, level: str = "all") -> np.ndarray | None:
        """The vector ids of the tracks meeting ``flt``, as ``allowed_ids`` for a vector search.

        Args:
            flt: the conditions.
            level: which vectors: ``"track"`` (track vectors), ``"window"`` (window vectors) or ``"all"``.

        Returns:
            Sorted ``(M,)`` int64 vector ids, or ``None`` when ``flt`` is empty (no restriction).

        Raises:
            MusicSearchError: an unknown ``level``.
        """
        if level not in ("track", "window", "all"):
            raise MusicSearchError(f"level must be 'track', 'window' or 'all', got {level!r}")
        if flt.is_empty():
            return None
        cols, mask = self._track_mask(flt)
        parts = []
        if level in ("track", "all"):
            vids = cols.vector_ids[mask]
            parts.append(vids[vids >= 0])
        if level in ("window", "all"):
            tracks = cols.track_ids[mask].tolist()
            for chunk in _chunks(tracks):
                rows = self._con.execute(f"SELECT vector_id FROM windows WHERE track IN ({_marks(chunk)})", chunk)
                parts.append(np.fromiter((int(r[0]) for r in rows), np.int64))
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def filter_tracks(self, flt: MetadataFilter) -> list[int]:
        """Int ids of the tracks meeting ``flt`` (all tracks for an empty filter), sorted."""
        cols, mask = self._track_mask(flt)
        return [int(t) for t in cols.track_ids[mask].tolist()]


# --------------------------------------------------------------------------------------------------------------
# Helpers


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def _chunks(items: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(items), _MAX_VARS):
        yield list(items[start : start + _MAX_VARS])


def _in_sorted(sorted_keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``(N,)`` mask of the entries of ``sorted_keys`` (sorted, unique) that are in ``wanted`` (any order):
    ``O(M log N)`` for ``M`` wanted keys."""
    mask = np.zeros(sorted_keys.size, bool)
    wanted = np.unique(wanted)
    if wanted.size == 0 or sorted_keys.size == 0:
        return mask
    at = np.searchsorted(sorted_keys, wanted)
    valid = at < sorted_keys.size
    at, wanted = at[valid], wanted[valid]
    mask[at[sorted_keys[at] == wanted]] = True
    return mask


def _filter_sql(flt: MetadataFilter) -> tuple[str, list[object]]:
    """SQL condition on ``tracks`` (no alias) for the artist, album and folder conditions of ``flt`` (the other
    conditions are evaluated by :meth:`MetadataDB._track_mask`) and its bound parameters."""
    cond: list[str] = ["1"]
    params: list[object] = []
    if flt.artist is not None:
        cond.append("artist_key = ?")
        params.append(fold(flt.artist))
    if flt.album is not None:
        cond.append("album_key = ?")
        params.append(fold(flt.album))
    if flt.folder is not None:
        # The folder itself, or anything below it: "a/b" matches "a/b" and "a/b/c", not "a/bc". Range form so
        # that the index on folder is used; "0" is the character after "/".
        base = flt.folder.rstrip("/\\") or flt.folder
        cond.append("(folder = ? OR (folder >= ? AND folder < ?))")
        params += [base, base + "/", base + "0"]
    return " AND ".join(cond), params


def merge_metadata(shard_paths: Sequence[str | os.PathLike[str]], dest_path: str | os.PathLike[str]) -> MetadataDB:
    """Merge the metadata databases of a sharded run into one (the shards' ids are disjoint by construction).

    All shards must record the same model. The merged database continues its sequences after the largest id.

    Args:
        shard_paths: the workers' database files.
        dest_path: the merged database (must not exist yet).

    Returns:
        The merged database, open.

    Raises:
        MusicSearchError: if ``dest_path`` exists, the shards' models differ, or two shards hold the same id or
            track id (the workers were not given distinct ranks, or indexed the same file).
    """
    if not shard_paths:
        raise MusicSearchError("no metadata shards to merge; pass each worker's database file")
    if Path(dest_path).exists():
        raise MusicSearchError(f"{dest_path} exists; merge into a new file")
    infos = []
    for p in shard_paths:
        if not Path(p).is_file():
            raise MusicSearchError(f"metadata shard {p} does not exist")
        with MetadataDB(p, readonly=True) as shard:
            infos.append(shard.info())
    known = {i for i in infos if i is not None}
    if len(known) > 1:
        a, b = sorted(known, key=repr)[:2]
        raise MusicSearchError(f"shards were indexed with different models: {model_mismatch_message(a, b)}")
    dest = MetadataDB(dest_path)
    try:
        if known:
            dest.set_info(next(iter(known)))
        for i, p in enumerate(shard_paths):
            dest._con.execute("ATTACH DATABASE ? AS shard", (str(p),))  # not allowed inside a transaction
            try:
                with dest.transaction():
                    dest._con.execute(
                        f"INSERT INTO tracks({_ALL_TRACK_COLUMNS}) SELECT {_ALL_TRACK_COLUMNS} FROM shard.tracks"
                    )
                    dest._con.execute(
                        "INSERT INTO windows SELECT track, window_index, start, vector_id FROM shard.windows"
                    )
                    dest._con.execute(
                        "INSERT INTO tags(track, tag, tag_key) SELECT track, tag, tag_key FROM shard.tags"
                    )
            except sqlite3.IntegrityError as exc:
                raise MusicSearchError(
                    f"metadata shard {p} (#{i}) clashes with an earlier shard ({exc}); give each worker a "
                    "distinct shard rank and a disjoint set of files"
                ) from exc
            finally:
                dest._con.execute("DETACH DATABASE shard")
        with dest.transaction():
            for name, table_max in (("track", _MAX_TRACK_ID), ("vector", _MAX_VECTOR_ID)):
                top = dest._con.execute(table_max).fetchone()[0]
                dest._con.execute(
                    "UPDATE sequences SET next = ?, step = 1 WHERE name = ?", (0 if top is None else int(top) + 1, name)
                )
    except BaseException:
        dest.close()
        for suffix in ("", "-wal", "-shm"):  # a failed merge leaves nothing behind
            Path(f"{dest_path}{suffix}").unlink(missing_ok=True)
        raise
    return dest


_MAX_TRACK_ID = "SELECT MAX(id) FROM tracks"
_MAX_VECTOR_ID = (
    "SELECT MAX(v) FROM (SELECT MAX(vector_id) AS v FROM tracks UNION ALL SELECT MAX(vector_id) FROM windows)"
)
