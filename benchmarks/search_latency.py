"""Vector-search latency, recall, build time, memory and disk size of the store backends; prints a table.

Synthetic L2-normalised vectors from a Gaussian mixture (clustered like real embeddings; uniform noise has no
neighbour structure at all), queries from the same mixture, ground truth by exact NumPy search. One query at a time,
as a server answers them. For each size N:

* ``faiss``: the store's default backend, filled in batches as an indexer would (exact below its threshold, IVF
  above, retrained as it grows): search only, and search + SQLite fetch of the top-10's metadata.
* ``numpy``: the exact oracle, for reference.
* ``faiss-hnsw``: raw FAISS ``IndexHNSWFlat`` (M 32), the alternative approximate index, for the choice.
* ``milvus`` (Milvus Lite through pymilvus) and ``qdrant`` (qdrant-client local mode), up to ``--db-max``.

Usage:
    nice -n 19 python benchmarks/search_latency.py --sizes 10000,100000,1000000
    python benchmarks/search_latency.py --sizes 10000 --only faiss,milvus,qdrant
    python benchmarks/search_latency.py --vectors my_embeddings.npy --sizes 100000   # real embeddings
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _data import gaussian_mixture_vectors
from musicsearch.index.backends.base import VectorBackend, create_backend, l2_normalize
from musicsearch.index.metadata import MetadataDB, StoreInfo, TrackInfo

K = 10
ALL = ("faiss", "numpy", "faiss-hnsw", "milvus", "qdrant")


@dataclass
class Row:
    backend: str
    n: int
    build_s: float
    rss_mb: float
    disk_bytes_per_vec: float
    p50_ms: float
    p99_ms: float
    recall: float
    meta_p50_ms: float = float("nan")
    meta_p99_ms: float = float("nan")
    note: str = ""


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def recall_at_k(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean |got ∩ truth| / k over queries."""
    return float(np.mean([len(set(g.tolist()) & set(t.tolist())) / truth.shape[1] for g, t in zip(got, truth)]))


QUERY_THREADS = 1


@contextlib.contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """Limit BLAS and OpenMP (FAISS) thread pools to ``n`` threads (0: leave them alone)."""
    if n <= 0:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # FAISS's OpenMP pool at least
        import faiss

        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)
        return
    with threadpool_limits(limits=n):
        yield


def time_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """p50 and p99 latency (ms) of one query at a time (with ``QUERY_THREADS`` threads), and the ``(Q, K)`` ids."""
    times, ids = [], []
    with thread_limit(QUERY_THREADS):
        for q in queries[:5]:  # warm-up
            search(q[None, :])
        for q in queries:
            t0 = time.perf_counter()
            ids.append(search(q[None, :])[0])
            times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), np.stack(ids)


def exact_truth(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ground-truth top-k row indices, in blocks to bound memory."""
    out = []
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ vectors.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out)


def build_metadata(path: Path, n: int) -> float:
    """A metadata database of ``n`` tracks whose track vectors get ids 0..n-1; returns seconds taken."""
    t0 = time.perf_counter()
    with MetadataDB(path) as db:
        db.set_info(StoreInfo("bench", "0" * 64, "v1"))
        with db.transaction():
            for i in range(n):
                db.add_track(
                    TrackInfo(
                        f"t{i}", f"/music/a{i % 97}/t{i}.flac", f"h{i}", 180.0, f"T{i}", f"A{i % 997}", "B", 2000
                    ),
                    indexed_at=0.0,
                )
    return time.perf_counter() - t0


def bench_store(
    name: str,
    vectors: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    meta_path: Path | None,
    args: argparse.Namespace,
    tmp: Path,
) -> list[Row]:
    """The musicsearch backends (faiss, numpy, milvus) through the VectorBackend interface."""
    n = len(vectors)
    ids = np.arange(n, dtype=np.int64)
    options: dict[str, object] = {}
    if name == "milvus":
        options = {"uri": str(tmp / "milvus.db"), "index_type": args.milvus_index}
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    backend = create_backend(name, vectors.shape[1], **options)
    for start in range(0, n, args.batch):
        backend.add(ids[start : start + args.batch], vectors[start : start + args.batch])
    if name != "numpy":  # the numpy oracle is measured for speed only; it is not saved
        backend.save(tmp / name)
    build = time.perf_counter() - t0
    rss = rss_mb() - rss0
    disk = dir_bytes(tmp / name) / n if (tmp / name).exists() else float("nan")
    if name == "milvus":
        disk = dir_bytes(tmp / "milvus.db") / n

    def search(q: np.ndarray, backend: VectorBackend = backend) -> np.ndarray:
        return backend.search(q, K)[1]

    p50, p99, got = time_queries(search, queries)
    note = getattr(backend, "mode", "")
    if name == "faiss" and note == "ivf":
        import faiss

        ivf = faiss.downcast_index(backend._index)  # type: ignore[attr-defined]
        note = f"ivf nlist={ivf.nlist} nprobe={backend._effective_nprobe(ivf)}"  # type: ignore[attr-defined]
    row = Row(name, n, build, rss, disk, p50, p99, recall_at_k(got, truth), note=note)
    rows = [row]
    if meta_path is not None:
        with MetadataDB(meta_path) as db:

            def search_and_fetch(q: np.ndarray, backend: VectorBackend = backend, db: MetadataDB = db) -> np.ndarray:
                _, hit = backend.search(q, K)
                refs = db.lookup_vectors(hit[0])
                assert all(r is not None for r in refs)
                return hit

            row.meta_p50_ms, row.meta_p99_ms, _ = time_queries(search_and_fetch, queries)
    if name == "faiss" and args.nprobe and getattr(backend, "mode", "") == "ivf":
        for nprobe in args.nprobe:
            backend.nprobe = nprobe  # type: ignore[attr-defined]
            p50, p99, got = time_queries(search, queries)
            rows.append(
                Row(
                    name,
                    n,
                    float("nan"),
                    float("nan"),
                    float("nan"),
                    p50,
                    p99,
                    recall_at_k(got, truth),
                    note=f"nprobe={nprobe}",
                )
            )
    backend.close()
    return rows


def bench_hnsw(
    vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace, tmp: Path
) -> list[Row]:
    import faiss

    n, dim = vectors.shape
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    for start in range(0, n, args.batch):
        index.add(vectors[start : start + args.batch])
    faiss.write_index(index, str(tmp / "hnsw.faiss"))
    build = time.perf_counter() - t0
    rss = rss_mb() - rss0
    disk = (tmp / "hnsw.faiss").stat().st_size / n
    rows = []
    for ef in (64, 128):
        index.hnsw.efSearch = ef

        def search(q: np.ndarray) -> np.ndarray:
            return index.search(l2_normalize(q), K)[1]

        p50, p99, got = time_queries(search, queries)
        rows.append(
            Row("faiss-hnsw", n, build, rss, disk, p50, p99, recall_at_k(got, truth), note=f"M=32 efC=40 ef={ef}")
        )
    return rows


def bench_qdrant(
    vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace, tmp: Path
) -> list[Row]:
    from qdrant_client import QdrantClient, models

    n, dim = vectors.shape
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    client = QdrantClient(path=str(tmp / "qdrant"))
    client.create_collection("bench", vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
    for start in range(0, n, args.batch):
        stop = min(n, start + args.batch)
        client.upsert("bench", points=models.Batch(ids=list(range(start, stop)), vectors=vectors[start:stop].tolist()))
    client.close()
    client = QdrantClient(path=str(tmp / "qdrant"))  # reopen: what a server process does after indexing
    build = time.perf_counter() - t0
    rss = rss_mb() - rss0

    def search(q: np.ndarray) -> np.ndarray:
        res = client.query_points("bench", query=q[0].tolist(), limit=K).points
        return np.array([[p.id for p in res]])

    p50, p99, got = time_queries(search, queries)
    client.close()
    return [
        Row(
            "qdrant", n, build, rss, dir_bytes(tmp / "qdrant") / n, p50, p99, recall_at_k(got, truth), note="local mode"
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated store sizes (default 10000,100000)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300, help="queries timed per row")
    parser.add_argument("--clusters", type=int, default=1024, help="Gaussian-mixture components")
    parser.add_argument("--batch", type=int, default=10_000, help="vectors per add() call while building")
    parser.add_argument("--only", default=",".join(ALL), help=f"backends to run, from {','.join(ALL)}")
    parser.add_argument("--db-max", type=int, default=100_000, help="largest size for milvus and qdrant")
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="largest size for faiss-hnsw")
    parser.add_argument("--milvus-index", default="HNSW", help="Milvus index type (HNSW, IVF_FLAT, FLAT)")
    parser.add_argument("--nprobe", default="", help="extra IVF nprobe values to time on the faiss store")
    parser.add_argument("--no-metadata", action="store_true", help="skip the SQLite metadata fetch")
    parser.add_argument("--vectors", type=Path, help="an .npy (N, D) of real embeddings instead of synthetic data")
    parser.add_argument(
        "--query-threads",
        type=int,
        default=1,
        help="BLAS/OpenMP threads while timing queries (default 1, as one server worker per request; 0: library "
        "defaults). Building always uses the library defaults.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.nprobe = [int(x) for x in args.nprobe.split(",") if x]
    only = [b for b in args.only.split(",") if b]
    unknown = set(only) - set(ALL)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; pick from {ALL}")
    global QUERY_THREADS
    QUERY_THREADS = args.query_threads
    rng = np.random.default_rng(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.vectors is not None:
        pool = l2_normalize(np.load(args.vectors))
        rng.shuffle(pool)
        queries_all, pool = pool[: args.queries], pool[args.queries :]
        sizes = [min(s, len(pool)) for s in sizes]
    rows: list[Row] = []
    print(
        f"# {args.dim}-d vectors, {args.queries} single queries per row, top-{K}, {os.cpu_count()} CPUs, "
        f"{args.query_threads or 'default'} thread(s) per query",
        flush=True,
    )
    for n in sizes:
        if args.vectors is not None:
            vectors, queries = pool[:n], queries_all
        else:
            vectors, centers = gaussian_mixture_vectors(n, args.dim, rng=rng, n_clusters=args.clusters)
            queries, _ = gaussian_mixture_vectors(args.queries, args.dim, rng=rng, centers=centers)
        truth = exact_truth(vectors, queries, K)
        tmp = Path(tempfile.mkdtemp(prefix="msbench-"))
        try:
            meta_path = None
            if not args.no_metadata and "faiss" in only:
                meta_path = tmp / "meta.sqlite"
                secs = build_metadata(meta_path, n)
                print(
                    f"# N={n}: metadata database of {n} tracks built in {secs:.1f} s, "
                    f"{meta_path.stat().st_size / n:.0f} bytes a track",
                    flush=True,
                )
            for name in only:
                if name in ("milvus", "qdrant") and n > args.db_max:
                    continue
                if name == "faiss-hnsw" and n > args.hnsw_max:
                    continue
                try:
                    if name == "faiss-hnsw":
                        new = bench_hnsw(vectors, queries, truth, args, tmp)
                    elif name == "qdrant":
                        new = bench_qdrant(vectors, queries, truth, args, tmp)
                    else:
                        new = bench_store(
                            name, vectors, queries, truth, meta_path if name == "faiss" else None, args, tmp
                        )
                except ImportError as exc:
                    print(f"# {name}: not installed ({exc})", flush=True)
                    continue
                for row in new:
                    print(f"# {row}", file=sys.stderr, flush=True)
                rows += new
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    return 0


def print_table(rows: list[Row]) -> None:
    def f(x: float, fmt: str) -> str:
        return "-" if np.isnan(x) else format(x, fmt)

    head = (
        "| backend | N | build s | RSS +MB | disk B/vec | p50 ms | p99 ms | +meta p50 | +meta p99 | recall@10 | notes |"
    )
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        cells = [
            r.backend,
            f"{r.n:,}",
            f(r.build_s, ".1f"),
            f(r.rss_mb, ".0f"),
            f(r.disk_bytes_per_vec, ".0f"),
            f(r.p50_ms, ".2f"),
            f(r.p99_ms, ".2f"),
            f(r.meta_p50_ms, ".2f"),
            f(r.meta_p99_ms, ".2f"),
            f"{r.recall:.3f}",
            r.note,
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
