"""How FAISS indexes scale with the collection: bytes per vector, build seconds, query p50/p99 and recall; a table.

The figures behind docs/scaling.md ("how large a store one machine serves"). Synthetic 256-d unit vectors from a
Gaussian mixture (clustered like real embeddings; see
:func:`musicsearch.index.store.gaussian_mixture_vectors`), generated in seeded chunks so that a 5 M collection is
never held in memory whole: chunk ``j`` is drawn from ``numpy.random.default_rng([seed, j])``, so the exact
ground truth can stream the same vectors again. Queries come from the same mixture.

Index types (raw FAISS, built as a server would hold them):

* ``flat``: ``IndexFlatIP``, exact (the reference; what the store's faiss backend uses below its threshold).
* ``ivfpq``: ``IVF{nlist},PQ{m}`` (inner product), ``nlist = 4096`` cells, k-means trained on 39 vectors a cell,
  ``m`` 8-bit sub-quantisers (``--pq-m``, 32 by default: 32 bytes of code a vector), searched with ``nprobe``
  (``--nprobe``, 32).
* ``ivfsq8``: ``IVF{nlist},SQ8`` (Milvus's ``IVF_SQ8``: one byte a dimension), trained and searched like ``ivfpq``.
* ``hnsw``: ``IndexHNSWFlat`` M 32 (inner product), efConstruction 40 (FAISS's default), efSearch ``--ef`` (64).

Build seconds are wall time for training plus adding, with every core (``--build-threads``, default all).
Queries run one at a time on one thread (``omp_set_num_threads(1)``), as a server answers them: a machine with
``C`` cores answers about ``C`` such queries at once. Recall@10 is measured against exact search on the first
``--gt-queries`` queries. Bytes per vector: the serialized index (``faiss.serialize_index``) over N, which is
also its resident memory to within a few percent.

Usage:
    nice -n 10 python benchmarks/vector_scaling.py --sizes 1000000,2000000,5000000 --index ivfpq
    nice -n 10 python benchmarks/vector_scaling.py --sizes 1000000,2000000 --index hnsw,flat --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from _data import gaussian_mixture_vectors

DIM = 256
K = 10
CHUNK = 100_000
INDEXES = ("flat", "ivfpq", "ivfsq8", "hnsw")


@dataclass
class Row:
    """One measured (index type, size) point."""

    index: str
    n: int
    params: str
    build_s: float
    build_s_per_million: float
    bytes_per_vector: float
    p50_ms: float
    p99_ms: float
    recall_at_10: float
    queries: int


def chunks(n: int, centers: np.ndarray, seed: int) -> Iterator[np.ndarray]:
    """The collection of ``n`` unit vectors, ``(<= CHUNK, DIM)`` float32 chunks, the same on every call."""
    for j, start in enumerate(range(0, n, CHUNK)):
        rng = np.random.default_rng([seed, j])
        yield gaussian_mixture_vectors(min(CHUNK, n - start), DIM, rng=rng, centers=centers)[0]


def ground_truth(n: int, centers: np.ndarray, seed: int, queries: np.ndarray) -> np.ndarray:
    """Exact top-``K`` ids ``(Q, K)`` by streaming the collection (float32 inner products; ties do not matter for
    recall on continuous data)."""
    best_s = np.full((queries.shape[0], K), -np.inf, np.float32)
    best_i = np.full((queries.shape[0], K), -1, np.int64)
    for j, x in enumerate(chunks(n, centers, seed)):
        s = queries @ x.T  # (Q, c)
        top = np.argpartition(-s, K - 1, axis=1)[:, :K]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        cand_i = np.concatenate([best_i, top + j * CHUNK], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :K]
        best_s, best_i = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def build(kind: str, n: int, centers: np.ndarray, seed: int, args: argparse.Namespace) -> tuple[faiss.Index, str]:
    """Train (if needed) and fill one index; returns it and a text of its parameters."""
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(DIM)
        params = "exact"
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 40
        params = f"M 32, efConstruction 40, efSearch {args.ef}"
    elif kind in ("ivfpq", "ivfsq8"):
        quantizer = faiss.IndexFlatIP(DIM)
        if kind == "ivfpq":
            index = faiss.IndexIVFPQ(quantizer, DIM, args.nlist, args.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
            params = f"nlist {args.nlist}, PQ{args.pq_m}x8, nprobe {args.nprobe}"
        else:  # Milvus's IVF_SQ8: one byte a dimension
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, DIM, args.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            params = f"nlist {args.nlist}, SQ8, nprobe {args.nprobe}"
        n_train = min(n, 39 * args.nlist)
        rng = np.random.default_rng([seed, 10**6])
        train = gaussian_mixture_vectors(n_train, DIM, rng=rng, centers=centers)[0]
        index.train(train)
        del train
    else:
        raise SystemExit(f"unknown index type {kind!r}; choose from {', '.join(INDEXES)}")
    for x in chunks(n, centers, seed):
        index.add(x)
    return index, params


def measure(kind: str, n: int, args: argparse.Namespace) -> Row:
    """Build one index of ``n`` vectors and measure it."""
    seed = args.seed
    centers = gaussian_mixture_vectors(1, DIM, rng=np.random.default_rng(seed), n_clusters=args.clusters)[1]
    queries = gaussian_mixture_vectors(args.queries, DIM, rng=np.random.default_rng([seed, 2**20]), centers=centers)[0]
    faiss.omp_set_num_threads(args.build_threads)
    t0 = time.perf_counter()
    index, params = build(kind, n, centers, seed, args)
    build_s = time.perf_counter() - t0
    size = faiss.serialize_index(index).nbytes
    if kind == "hnsw":
        index.hnsw.efSearch = args.ef
    elif kind in ("ivfpq", "ivfsq8"):
        index.nprobe = args.nprobe
    faiss.omp_set_num_threads(1)
    for q in queries[:20]:  # warm caches
        index.search(q[None], K)
    times, found = [], np.empty((queries.shape[0], K), np.int64)
    for i, q in enumerate(queries):
        t = time.perf_counter()
        _, ids = index.search(q[None], K)
        times.append(time.perf_counter() - t)
        found[i] = ids[0]
    del index
    gc.collect()
    faiss.omp_set_num_threads(args.build_threads)
    g = min(args.gt_queries, queries.shape[0])
    truth = ground_truth(n, centers, seed, queries[:g])
    recall = float(np.mean([len(set(found[i]) & set(truth[i])) / K for i in range(g)]))
    ms = np.array(times) * 1e3
    return Row(
        index=kind,
        n=n,
        params=params,
        build_s=round(build_s, 1),
        build_s_per_million=round(build_s / (n / 1e6), 1),
        bytes_per_vector=round(size / n, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 3),
        p99_ms=round(float(np.percentile(ms, 99)), 3),
        recall_at_10=round(recall, 4),
        queries=int(queries.shape[0]),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the grid of ``--index`` x ``--sizes``, printing one table row per point as it is measured."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="1000000,2000000,5000000", help="comma-separated collection sizes")
    p.add_argument("--index", default="ivfpq,hnsw", help=f"comma-separated index types: {', '.join(INDEXES)}")
    p.add_argument("--queries", type=int, default=1000, help="timed queries per point (default 1000)")
    p.add_argument("--gt-queries", type=int, default=200, help="queries whose recall is checked (default 200)")
    p.add_argument("--nlist", type=int, default=4096, help="IVF cells (default 4096)")
    p.add_argument("--pq-m", type=int, default=32, help="PQ sub-quantisers = bytes of code a vector (default 32)")
    p.add_argument("--nprobe", type=int, default=32, help="IVF cells searched a query (default 32)")
    p.add_argument("--ef", type=int, default=64, help="HNSW efSearch (default 64)")
    p.add_argument("--clusters", type=int, default=4096, help="mixture components of the synthetic data")
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1, help="threads while building")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="append each row as a JSON line to this file")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    kinds = [k for k in args.index.split(",") if k]
    for k in kinds:
        if k not in INDEXES:
            p.error(f"unknown index type {k!r}; choose from {', '.join(INDEXES)}")
    cols = ("index", "n", "build_s", "build_s_per_million", "bytes_per_vector", "p50_ms", "p99_ms", "recall_at_10")
    print(" | ".join(cols) + " | params", flush=True)
    for kind in kinds:
        for n in sizes:
            row = measure(kind, n, args)
            print(" | ".join(str(getattr(row, c)) for c in cols) + f" | {row.params}", flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(asdict(row)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
