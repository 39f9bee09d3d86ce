"""Load N synthetic vectors into a vector store by URI and report insert throughput and query p50/p99; a table.

For users with a server: point it at your Milvus (or a local FAISS directory) before indexing a large catalogue.
It goes through the project's own backends (:func:`musicsearch.index.store.create_backend`), so it measures what
``musicsearch index`` and ``serve`` will see:

* ``--uri http://HOST:19530`` (or https://): the ``milvus`` backend on a Milvus server or cluster, in a new
  collection (``--collection``, dropped afterwards unless ``--keep``), index ``--index-type`` (HNSW, IVF_FLAT,
  IVF_SQ8, IVF_PQ, FLAT), ``--num-shards`` / ``--replicas`` as for a cluster, Strong consistency;
* ``--uri faiss`` or ``--uri faiss:DIR``: the embedded ``faiss`` backend (exact below 50 000 vectors, IVF above,
  as a store uses it), saved to DIR (a temporary directory by default) so the save is timed too.

Vectors: 256-d unit vectors from a Gaussian mixture (:func:`~musicsearch.index.store.gaussian_mixture_vectors`),
inserted ``--batch`` at a time (the indexer commits in such batches). Insert throughput counts ``add`` calls
only; "ready" is the time until the index covers every vector (Milvus builds its index in the background; FAISS's
``add`` trains and adds in place, and "ready" adds the save). Queries: one at a time from one client thread, from
the same mixture; recall@10 against exact search over all N vectors for the first ``--gt-queries``.

Usage:
    nice -n 10 python benchmarks/vector_db_load.py --uri faiss --n 1000000
    nice -n 10 python benchmarks/vector_db_load.py --uri http://127.0.0.1:19530 --n 1000000 --index-type IVF_FLAT
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _data import gaussian_mixture_vectors
from musicsearch.index.backends.base import VectorBackend, create_backend

DIM = 256
K = 10


def _wait_indexed(backend: Any, n: int, timeout: float) -> float:
    """Seconds until a Milvus collection's index covers ``n`` rows (or ``timeout``)."""
    client, name = backend._client, backend.collection
    t0 = time.perf_counter()
    client.flush(name)
    while time.perf_counter() - t0 < timeout:
        info = client.describe_index(name, index_name="vector")
        if int(info.get("indexed_rows", 0)) >= n:  # (Milvus 2.3 keeps pending_index_rows at N: not a signal)
            break
        time.sleep(1.0)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Load, wait for the index, query; print one table row (and ``--json`` it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--uri", required=True, help="http://HOST:19530 (Milvus), or faiss / faiss:DIR")
    p.add_argument("--n", type=int, default=1_000_000, help="vectors to load (default 1 000 000)")
    p.add_argument("--batch", type=int, default=10_000, help="vectors a call (default 10 000)")
    p.add_argument("--queries", type=int, default=1000, help="timed queries (default 1000)")
    p.add_argument("--gt-queries", type=int, default=100, help="queries whose recall@10 is checked (default 100)")
    p.add_argument("--collection", default="musicsearch_load_test", help="Milvus collection (must not exist)")
    p.add_argument("--index-type", default="HNSW", help="Milvus index type (default HNSW)")
    p.add_argument("--num-shards", type=int, default=None, help="Milvus collection shards (default: server's)")
    p.add_argument("--replicas", type=int, default=1, help="Milvus in-memory replicas (default 1)")
    p.add_argument(
        "--consistency",
        default="Bounded",
        help="Milvus consistency level (default Bounded, what serve replicas use; Strong waits for the server's "
        "time tick, ~200 ms a query on Milvus 2.3)",
    )
    p.add_argument("--keep", action="store_true", help="keep the Milvus collection afterwards")
    p.add_argument("--index-timeout", type=float, default=3600.0, help="seconds to wait for Milvus's index")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    vectors, centers = gaussian_mixture_vectors(args.n, DIM, rng=rng, n_clusters=4096)  # (N, D)
    queries, _ = gaussian_mixture_vectors(args.queries, DIM, rng=rng, centers=centers)  # (Q, D)
    ids = np.arange(args.n, dtype=np.int64)
    milvus = args.uri.startswith(("http://", "https://", "tcp://"))
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if milvus:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=args.uri)
        if client.has_collection(args.collection):
            p.error(f"collection {args.collection!r} exists on {args.uri}; give a new --collection")
        client.close()
        backend: VectorBackend = create_backend(
            "milvus",
            DIM,
            uri=args.uri,
            collection=args.collection,
            index_type=args.index_type,
            num_shards=args.num_shards,
            replica_number=args.replicas,
            consistency_level=args.consistency,
        )
        what = f"milvus {args.index_type} {args.consistency} at {args.uri}"
    elif args.uri == "faiss" or args.uri.startswith("faiss:"):
        backend = create_backend("faiss", DIM)
        if args.uri == "faiss":
            tmp = tempfile.TemporaryDirectory(prefix="vector_db_load_")
            save_dir = Path(tmp.name)
        else:
            save_dir = Path(args.uri.split(":", 1)[1])
        what = "faiss (store default: IVF above 50 000)"
    else:
        p.error(f"--uri {args.uri!r}: give http://HOST:19530 for Milvus, or faiss / faiss:DIR")

    try:
        t0 = time.perf_counter()
        for start in range(0, args.n, args.batch):
            backend.add(ids[start : start + args.batch], vectors[start : start + args.batch])
        insert_s = time.perf_counter() - t0
        if milvus:
            ready_s = insert_s + _wait_indexed(backend, args.n, args.index_timeout)
        else:
            backend.save(save_dir)
            ready_s = time.perf_counter() - t0
        for q in queries[:20]:  # warm-up
            backend.search(q[None], K)
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, hit = backend.search(q[None], K)
            times.append(time.perf_counter() - t)
            found.append(hit[0])
        g = min(args.gt_queries, len(queries))
        exact = np.argpartition(-(queries[:g] @ vectors.T), K - 1, axis=1)[:, :K]  # (g, K) exact top-K, any order
        recall = float(np.mean([len(set(found[i]) & set(exact[i])) / K for i in range(g)]))
        ms = np.array(times) * 1e3
        row = {
            "store": what,
            "n": args.n,
            "insert_s": round(insert_s, 1),
            "inserts_per_s": round(args.n / insert_s),
            "ready_s": round(ready_s, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "recall_at_10": round(recall, 3),
        }
    finally:
        if milvus and not args.keep:
            backend._client.drop_collection(args.collection)  # type: ignore[attr-defined]
        backend.close()
        if tmp is not None:
            tmp.cleanup()
    print(" | ".join(row))
    print(" | ".join(str(v) for v in row.values()), flush=True)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
