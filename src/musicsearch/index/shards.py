"""Sharded indexing: several processes or machines each index a shard of a collection into its own store, then
the shard stores are merged into one.

:func:`shard_of` says which shard a track belongs to (stable everywhere), :func:`shard_store_path` where a shard's
store lives; :func:`merge_stores` merges whole shard stores (metadata through
:func:`~musicsearch.index.metadata.merge_metadata`, which owns the database schema; vectors through
:func:`merge_shards` and :func:`copy_vectors`; ``vectors.f32`` and the file logs).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.index.backends.base import MANIFEST, VectorBackend, create_backend, open_backend
from musicsearch.index.metadata import merge_metadata
from musicsearch.index.store import (
    FILES_FILE,
    METADATA_FILE,
    STORE_FILE,
    TRACKS_DIR,
    VECTORS_FILE,
    WINDOWS_DIR,
    FileLog,
    Store,
    StoreSettings,
    VectorFile,
    acquire_lock,
    level_options,
    read_settings,
)
from musicsearch.index.tuning import store_tuning_queries

__all__ = [
    "MergeReport",
    "copy_vectors",
    "describe_shard",
    "merge_shards",
    "merge_stores",
    "shard_of",
    "shard_store_path",
]

log = logging.getLogger(__name__)


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


def describe_shard(shard: tuple[int, int] | None) -> str:
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
    tune: bool = True,
) -> MergeReport:
    """Merge the stores of a sharded run (:func:`~musicsearch.index.indexer.index_collection` with ``shard=``)
    into one new store.

    The merged store holds every shard's tracks, windows, tags, vectors (both indexes and ``vectors.f32``) and file
    log rows under their original ids (disjoint by construction), so it searches exactly like a store indexed in one
    process. It is an ordinary store: later runs of :func:`~musicsearch.index.indexer.index_collection` without
    ``shard`` update it.
    Each shard's lock is held while it is read (a shard still being indexed is refused).

    Args:
        shard_stores: the shard stores, one per rank ``0 .. world_size-1`` of the same run.
        dest: the merged store (a new or empty directory).
        backend, backend_options: the merged store's vector backend, by default the shards'; e.g. ``"milvus"``
            with ``{"uri": "http://host:19530", "collection": "music"}`` merges faiss shard stores into two new
            collections of a Milvus server or cluster (``music_tracks``, ``music_windows``).
        tune: give the merged approximate indexes the store's model's typical text queries to tune ``nprobe`` on
            (:func:`~musicsearch.index.tuning.store_tuning_queries`: the model is loaded only if an index trains,
            and a model that cannot be loaded leaves the untuned default with a warning); ``False``: no model is
            loaded, and an IVF index scans ``nlist/32`` cells.

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
    lock = acquire_lock(out)
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
        queries = store_tuning_queries(shards[0]) if tune else None  # the shards share one model (checked above)
        for sub in (TRACKS_DIR, WINDOWS_DIR):
            dirs = [p / sub for p in paths if (p / sub / MANIFEST).is_file()]
            if dirs:
                opts = level_options(merged.backend, merged.backend_options, sub)
                vectors = merge_shards(dirs, out / sub, backend=merged.backend, tuning_queries=queries, **opts)
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


def copy_vectors(sources: Iterable[VectorBackend], dest: VectorBackend, *, batch_size: int = 65536) -> int:
    """Add every vector of ``sources`` to ``dest`` (merging shards, or moving between backends).

    Shards must hold disjoint ids: an id already present in ``dest`` or in an earlier source is an error, since
    silently replacing one shard's vector with another's would lose data.

    Returns:
        Number of vectors copied.

    Raises:
        MusicSearchError: on a dimension mismatch or an id present in two shards.
    """
    seen = dest.ids()
    total = 0
    for src in sources:
        if src.dim != dest.dim:
            raise MusicSearchError(f"cannot merge a {src.dim}-d store into a {dest.dim}-d store")
        src_ids = src.ids()
        clash = np.intersect1d(seen, src_ids)
        if clash.size:
            raise MusicSearchError(
                f"{clash.size} ids (first {int(clash[0])}) are in two shards; shards must use disjoint ids "
                "(give each worker its own shard rank in the metadata database)"
            )
        for ids, vecs in src.export(batch_size):
            dest.add(ids, vecs)
            total += ids.size
        seen = np.union1d(seen, src_ids)
    return total


def merge_shards(
    shard_paths: Sequence[str | os.PathLike[str]],
    dest_path: str | os.PathLike[str],
    *,
    backend: str = "faiss",
    tuning_queries: Callable[[], np.ndarray] | None = None,
    **options: Any,
) -> VectorBackend:
    """Merge saved shard stores (one per worker process or machine) into one new store and save it.

    Args:
        shard_paths: directories written by each worker's ``save``; their ids must be disjoint.
        dest_path: directory of the merged store.
        backend: backend of the merged store.
        tuning_queries: real text queries for the merged index's ``nprobe`` tuning
            (:meth:`~musicsearch.index.backends.base.VectorBackend.set_tuning_queries`).
        **options: options for the merged backend (e.g. ``exact_threshold``).

    Returns:
        The merged backend (already saved to ``dest_path``).
    """
    if not shard_paths:
        raise MusicSearchError("no shards to merge; pass the directories each worker saved")
    shards = [open_backend(p) for p in shard_paths]
    try:
        merged = create_backend(backend, shards[0].dim, **options)
        merged.set_tuning_queries(tuning_queries)
        n = copy_vectors(shards, merged)
    finally:
        for shard in shards:
            shard.close()
    merged.save(dest_path)
    log.info("merged %d shards (%d vectors) into %s", len(shard_paths), n, dest_path)
    return merged
