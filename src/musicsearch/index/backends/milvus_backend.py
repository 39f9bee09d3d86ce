"""Milvus backend: the distributed store, reached by URI through pymilvus's ``MilvusClient``.

The same code talks to three deployments; only the URI changes:

* ``"path/to/vectors.db"``: Milvus Lite, embedded in this process (package ``milvus-lite``; the ``.db`` path is a
  data directory). What the tests use.
* ``"http://host:19530"``: a Milvus standalone server or a distributed Milvus cluster (or ``milvus-lite server``,
  which speaks the same gRPC protocol: the sharding test runs one). Set ``MUSICSEARCH_MILVUS_TOKEN`` (or pass
  ``token``) when the server needs credentials; tokens are never written to the store's manifest.

One collection holds ``id`` (INT64 primary key) and ``vector`` (FLOAT_VECTOR, inner-product metric) rows. Several
worker processes or machines may write disjoint ids to the same collection at once (that is how a sharded
indexing run fills it); a local ``.db`` file, though, belongs to one process, so concurrent writers need a server.
Filters (``allowed_ids``) become ``id in [...]`` expressions, split into chunks of at most ``filter_chunk`` ids
whose top-k lists are merged exactly.

For a cluster, the index type (``IVF_SQ8`` / ``IVF_PQ`` when memory is the limit), its ``build_params``, the
collection's ``num_shards``, the in-memory ``replica_number`` and the consistency of searches
(``search_consistency="Bounded"`` for serve replicas) are options, kept in the saved manifest; docs/scaling.md
has the settings for 100 M tracks. Tested against a real standalone server in ``tests/index/test_milvus_server.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.index.backends.base import BACKENDS, VectorBackend, sort_hits

log = logging.getLogger(__name__)

TOKEN_ENV = "MUSICSEARCH_MILVUS_TOKEN"
MAX_TOP_K = 16_384  # Milvus's limit on hits per query
_INSERT_BATCH = 8_192  # rows per insert call (about 4 MiB of 128-d floats, far below gRPC's 64 MiB)
_TIE_MARGIN = 16
_LITE_USERS: dict[str, int] = {}  # open backends per Milvus Lite directory in this process
_INDEXES: dict[str, dict[str, Any]] = {
    # index type -> (build params, search params); FLAT is exact brute force.
    "FLAT": {"build": {}, "search": {}},
    "HNSW": {"build": {"M": 16, "efConstruction": 200}, "search": {"ef": 128}},
    "IVF_FLAT": {"build": {"nlist": 1024}, "search": {"nprobe": 32}},
    # compressed, for a cluster whose memory is the limit (servers only, not Milvus Lite): 1 or 32-64 bytes a vector
    "IVF_SQ8": {"build": {"nlist": 1024}, "search": {"nprobe": 32}},
    "IVF_PQ": {"build": {"nlist": 1024, "m": 32, "nbits": 8}, "search": {"nprobe": 32}},
}


def is_remote_uri(uri: str) -> bool:
    """True for a server URI (``http://``, ``https://``, ``tcp://``, ``unix:``), False for a Milvus Lite path."""
    return uri.startswith(("http://", "https://", "tcp://", "unix:"))


@BACKENDS.register("milvus")
class MilvusBackend(VectorBackend):
    """Vectors in a Milvus collection (Milvus Lite file, Milvus server or cluster), chosen by ``uri``.

    Args:
        dim: vector dimension.
        uri: ``"file.db"`` (Milvus Lite, embedded) or ``"http://host:19530"`` (server or cluster).
        collection: collection name; an existing collection is reused (its dimension must match).
        index_type: ``"HNSW"`` (default, approximate), ``"IVF_FLAT"``, ``"IVF_SQ8"``, ``"IVF_PQ"`` (approximate,
            the last two compressed; servers only) or ``"FLAT"`` (exact).
        build_params: index build parameters overriding the defaults (e.g. ``{"M": 32}``, ``{"nlist": 16384}``).
        search_params: index search parameters overriding the defaults (e.g. ``{"ef": 256}`` for HNSW).
        token: credentials for a server (``"user:password"`` or an API key); default ``$MUSICSEARCH_MILVUS_TOKEN``.
        consistency_level: ``"Strong"`` (default: a search sees every completed write) or Milvus's weaker levels.
        filter_chunk: most ids in one ``id in [...]`` filter expression.
        must_exist: refuse to create the collection (used when reopening a saved store).
        num_shards: shards (DML channels) of a new collection on a cluster: writes spread over that many data
            nodes; ``None`` keeps the server's default (1). Fixed when the collection is created.
        replica_number: in-memory replicas the collection is loaded with (query nodes serving copies: more query
            throughput and no outage when one query node dies); 1 by default, the only value Milvus Lite accepts.
        search_consistency: consistency level of searches only (``"Bounded"`` for serving: a query need not wait
            for the server's time tick, ~200 ms on Milvus 2.3, and may miss writes of the last seconds); reads
            that the indexer relies on (counts, removals, exports) keep ``consistency_level``.

    Raises:
        ConfigError: bad URI or index type.
        MusicSearchError: the server cannot be reached, or the collection's dimension differs.
    """

    name = "milvus"

    def __init__(
        self,
        dim: int,
        *,
        uri: str,
        collection: str = "musicsearch",
        index_type: str = "HNSW",
        search_params: dict[str, Any] | None = None,
        token: str | None = None,
        consistency_level: str = "Strong",
        filter_chunk: int = 16_384,
        must_exist: bool = False,
        build_params: dict[str, Any] | None = None,
        num_shards: int | None = None,
        replica_number: int = 1,
        search_consistency: str | None = None,
    ) -> None:
        super().__init__(dim)
        if index_type not in _INDEXES:
            raise ConfigError(f"unknown Milvus index type {index_type!r}; known: {', '.join(sorted(_INDEXES))}")
        uri = os.fspath(uri)
        if not is_remote_uri(uri) and not uri.endswith(".db"):
            raise ConfigError(f"Milvus URI {uri!r}: a local Milvus Lite store must end in .db, a server is http://...")
        self.uri = uri
        self.collection = collection
        self.index_type = index_type
        self.search_params = {**_INDEXES[index_type]["search"], **(search_params or {})}
        self.build_params = {**_INDEXES[index_type]["build"], **(build_params or {})}
        if num_shards is not None and int(num_shards) < 1:
            raise ConfigError(f"Milvus num_shards must be >= 1, got {num_shards}")
        if int(replica_number) < 1:
            raise ConfigError(f"Milvus replica_number must be >= 1, got {replica_number}")
        self.num_shards = None if num_shards is None else int(num_shards)
        self.replica_number = int(replica_number)
        self.search_consistency = search_consistency
        self.consistency_level = consistency_level
        self.filter_chunk = max(1, int(filter_chunk))
        self._local = None if is_remote_uri(uri) else str(Path(uri).resolve())
        if self._local is not None:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = MilvusClient(uri=uri, token=token if token is not None else os.environ.get(TOKEN_ENV, ""))
        except MilvusException as exc:
            hint = "is another process using this .db? run a server for several writers" if self._local else ""
            raise MusicSearchError(f"cannot open Milvus at {uri!r}: {exc.message}; {hint or 'check the URI'}") from exc
        if self._local is not None:
            _LITE_USERS[self._local] = _LITE_USERS.get(self._local, 0) + 1
        self._closed = False
        try:
            self._ensure_collection(must_exist)
        except (MilvusException, MusicSearchError) as exc:
            self.close()
            if isinstance(exc, MusicSearchError):
                raise
            raise MusicSearchError(f"cannot use Milvus at {uri!r}: {exc.message}; check the URI and server") from exc

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """True for a ``FLAT`` (brute-force) collection."""
        return self.index_type == "FLAT"

    def _ensure_collection(self, must_exist: bool) -> None:
        client, name = self._client, self.collection
        if must_exist and not client.has_collection(name):
            raise MusicSearchError(f"Milvus at {self.uri} has no collection {name!r}; re-index or fix the URI")
        if client.has_collection(name):
            fields = client.describe_collection(name)["fields"]
            dims = [int(f["params"]["dim"]) for f in fields if f["name"] == "vector"]
            if dims != [self.dim]:
                raise MusicSearchError(
                    f"Milvus collection {name!r} at {self.uri} holds {dims[0] if dims else '?'}-d vectors, not "
                    f"{self.dim}-d; pick another collection name or the model it was built with"
                )
        else:
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
            index_params = client.prepare_index_params()
            index_params.add_index(
                field_name="vector",
                index_type=self.index_type,
                metric_type="IP",
                params=dict(self.build_params),
            )
            extra = {} if self.num_shards is None else {"num_shards": self.num_shards}
            try:
                client.create_collection(
                    name, schema=schema, index_params=index_params, consistency_level=self.consistency_level, **extra
                )
            except MilvusException:
                if not client.has_collection(name):  # another worker may have created it at the same moment
                    raise
        if self.replica_number == 1:
            client.load_collection(name)
        else:
            client.load_collection(name, replica_number=self.replica_number)

    def close(self) -> None:
        """Close the client connection; the last user of a Milvus Lite directory also stops its embedded server,
        so another process may open it."""
        if self._closed:
            return
        self._closed = True
        self._client.close()
        if self._local is not None:
            _LITE_USERS[self._local] -= 1
            if _LITE_USERS[self._local] == 0:
                del _LITE_USERS[self._local]
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self._local)

    def __len__(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    # -- hooks ---------------------------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, ids.size, _INSERT_BATCH):
            rows = [
                {"id": int(i), "vector": v}
                for i, v in zip(ids[start : start + _INSERT_BATCH].tolist(), vectors[start : start + _INSERT_BATCH])
            ]
            self._client.upsert(self.collection, rows)

    def _present(self, ids: np.ndarray) -> np.ndarray:
        found: list[int] = []
        for start in range(0, ids.size, self.filter_chunk):
            chunk = ids[start : start + self.filter_chunk].tolist()
            found += [int(r["id"]) for r in self._client.get(self.collection, ids=chunk, output_fields=["id"])]
        return np.array(sorted(found), dtype=np.int64)

    def _get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((ids.size, self.dim), np.float32)
        found = np.zeros(ids.size, bool)
        for start in range(0, ids.size, self.filter_chunk):
            chunk = ids[start : start + self.filter_chunk]
            for row in self._client.get(self.collection, ids=chunk.tolist(), output_fields=["id", "vector"]):
                pos = start + int(np.searchsorted(chunk, int(row["id"])))
                out[pos] = np.asarray(row["vector"], np.float32)
                found[pos] = True
        return out, found

    def _remove(self, ids: np.ndarray) -> int:
        present = self._present(ids)  # Milvus reports the ids asked for, not those deleted: count first
        for start in range(0, present.size, self.filter_chunk):
            self._client.delete(self.collection, ids=present[start : start + self.filter_chunk].tolist())
        return int(present.size)

    def _known_empty(self) -> bool:
        return False  # counting is a round trip; a search of an empty collection simply finds nothing

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if k > MAX_TOP_K:
            raise MusicSearchError(f"k={k} exceeds Milvus's limit of {MAX_TOP_K} hits per query; ask for fewer")
        filters = (
            [""]
            if allowed is None
            else [
                f"id in [{', '.join(map(str, allowed[s : s + self.filter_chunk].tolist()))}]"
                for s in range(0, allowed.size, self.filter_chunk)
            ]
        )
        limit = min(MAX_TOP_K, k + _TIE_MARGIN)
        while True:
            scores, ids = self._search_limit(queries, limit, filters)
            # As in the FAISS backend: fetch more while the k-th score ties with the last one fetched.
            unsettled = (ids[:, -1] >= 0) & (scores[:, min(k, limit) - 1] == scores[:, -1])
            if limit >= MAX_TOP_K or not unsettled.any():
                return sort_hits(scores, ids, k)
            limit = min(MAX_TOP_K, 4 * limit)

    def _search_limit(self, queries: np.ndarray, limit: int, filters: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``limit`` hits per query for each filter expression, concatenated: ``(Q, limit·F)`` arrays."""
        index_params = dict(self.search_params)
        if "ef" in index_params:
            index_params["ef"] = max(int(index_params["ef"]), limit)  # HNSW needs ef >= limit
        params = {"metric_type": "IP", "params": index_params}
        all_scores, all_ids = [], []
        for expr in filters:
            hits = self._client.search(
                self.collection,
                data=list(queries),
                limit=limit,
                filter=expr,
                output_fields=["id"],
                search_params=params,
                **({} if self.search_consistency is None else {"consistency_level": self.search_consistency}),
            )
            s = np.full((queries.shape[0], limit), -np.inf, np.float32)
            i = np.full((queries.shape[0], limit), -1, np.int64)
            for row, row_hits in enumerate(hits):
                for col, hit in enumerate(row_hits):
                    s[row, col], i[row, col] = float(hit["distance"]), int(hit["id"])
            all_scores.append(s)
            all_ids.append(i)
        scores, ids = np.concatenate(all_scores, axis=1), np.concatenate(all_ids, axis=1)
        if len(filters) > 1:  # best of all chunks first, so that the last column is the weakest hit kept
            scores, ids = sort_hits(scores, ids, scores.shape[1])
        return scores, ids

    def _export(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        iterator = self._client.query_iterator(
            self.collection, batch_size=min(batch_size, 16_384), output_fields=["id", "vector"]
        )
        try:
            while rows := iterator.next():
                ids = np.array([int(r["id"]) for r in rows], dtype=np.int64)
                vecs = np.array([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), self.dim)
                yield ids, vecs
        finally:
            iterator.close()

    def _save(self, dest: Path, token: str) -> dict[str, Any]:
        self._client.flush(self.collection)
        uri = self.uri
        if not is_remote_uri(uri):  # a Milvus Lite directory inside the store is recorded relative to it
            rel = os.path.relpath(Path(uri).resolve(), dest.resolve())
            uri = rel if not rel.startswith("..") else str(Path(uri).resolve())
        return {
            "files": [],
            "uri": uri,
            "collection": self.collection,
            "index_type": self.index_type,
            "build_params": self.build_params,
            "search_params": self.search_params,
            "consistency_level": self.consistency_level,
            "num_shards": self.num_shards,
            "replica_number": self.replica_number,
            "search_consistency": self.search_consistency,
        }

    @classmethod
    def _open(cls, path: Path, manifest: dict[str, Any]) -> MilvusBackend:
        uri = str(manifest["uri"])
        if not is_remote_uri(uri) and not Path(uri).is_absolute():
            uri = str(path / uri)
        return cls(
            int(manifest["dim"]),
            uri=uri,
            collection=str(manifest["collection"]),
            index_type=str(manifest["index_type"]),
            search_params=dict(manifest.get("search_params") or {}),
            consistency_level=str(manifest.get("consistency_level", "Strong")),
            must_exist=True,
            build_params=dict(manifest.get("build_params") or {}),
            num_shards=manifest.get("num_shards"),
            replica_number=int(manifest.get("replica_number", 1)),
            search_consistency=manifest.get("search_consistency"),
        )
