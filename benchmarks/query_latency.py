"""End-to-end query latency of search(): text encoding + vector search + metadata (+ best segment), p50/p99;
recall@10 of the store against exact search; store size per track; server memory. Prints a table.

Synthetic collections (a store built exactly as the indexer lays it out: ``store.json``, SQLite metadata with
artists/years/tags, a FAISS track index and a FAISS window index) of N tracks with W windows each; track vectors
from a Gaussian mixture (clustered like real embeddings), window vectors around them. The text tower is the
``--preset``'s (``small``: MiniLM, the CPU model), untrained: its speed is what is measured. Queries are answered
one at a time through :class:`musicsearch.search.api.Searcher`, as the server answers them, with BLAS/OpenMP
limited to ``--threads`` threads (1 by default: spinning OpenMP pools cost more than they save for one query).

Recall@10 is measured on the track index (what ranks results) with queries drawn from the same mixture, against
exact NumPy search over the same vectors.

Usage:
    nice -n 19 python benchmarks/query_latency.py --sizes 10000,100000
    nice -n 19 python benchmarks/query_latency.py --sizes 1000000 --windows 1 --queries 200
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _data import gaussian_mixture_vectors
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.embedder import Embedder, WindowPlan
from musicsearch.index.metadata import TrackInfo
from musicsearch.index.store import Store, StoreSettings
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.api import Searcher

K = 10
TAGS = [f"tag{i}" for i in range(60)]
QUERIES = [
    "calm piano", "an energetic rock song with electric guitars", "female vocals, no drums", "ambient drone",
    "fast techno -vocals", "sad strings", "jazz trio with upright bass", "hip hop beat", "a lullaby",
    "heavy metal without vocals", "acoustic folk song with harmonica", "orchestral film score", "reggae",
    "lo-fi beats for studying", "a choir singing in a church", "funky bass line", "latin percussion",
    "dreamy synth pop", "country ballad", "epic cinematic drums",
]  # fmt: skip


def rss_mb() -> float:
    """Resident memory of this process in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """Limit BLAS/OpenMP pools (and torch) to ``n`` threads while answering queries."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def build_store(
    path: Path, embedder: Embedder, n: int, windows: int, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """Write a store of ``n`` synthetic tracks; return (seconds, track vectors (n, D) in track-vector-id order)."""
    t0 = time.perf_counter()
    plan = WindowPlan(embedder.window_samples)
    settings = StoreSettings(
        model_name=embedder.name,
        weights_checksum=embedder.checksum,
        model_source=embedder.source,
        plan=plan,
        dim=embedder.dim,
        backend="faiss",
        created=time.time(),
    )
    dim = embedder.dim
    vecs, centers = gaussian_mixture_vectors(n, dim, rng=rng, n_clusters=max(16, n // 1000))
    with Store.create(path, settings) as store:
        chunk = 20_000
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            t_ids, w_ids = [], []
            with store.db.transaction():
                for i in range(start, stop):
                    info = TrackInfo(
                        track_id=f"t{i}",
                        path=f"/music/A{i % 997}/t{i}.flac",
                        content_hash=f"h{i}",
                        duration=30.0 * windows,
                        title=f"Track {i}",
                        artist=f"Artist {i % 997}",
                        album=f"Album {i % 4999}",
                        year=1950 + i % 71,
                        folder=f"/music/A{i % 997}",
                        tags=(TAGS[i % 60], TAGS[(i * 7) % 60]),
                    )
                    rec, wins = store.db.add_track(info, window_starts=[30.0 * w for w in range(windows)])
                    assert rec.vector_id is not None
                    t_ids.append(rec.vector_id)
                    w_ids += [w.vector_id for w in wins]
            block = vecs[start:stop]  # (b, D)
            noise = rng.standard_normal((stop - start, windows, dim)).astype(np.float32) * 0.08
            w_vecs = l2_normalize((block[:, None, :] + noise).reshape(-1, dim))  # (b·W, D)
            store.tracks.add(np.array(t_ids, np.int64), block)
            store.windows.add(np.array(w_ids, np.int64), w_vecs)
            store.vector_file.write(np.array(t_ids + w_ids, np.int64), np.concatenate([block, w_vecs]))
        store.save_vectors()
    return time.perf_counter() - t0, centers


def _memory_probe(path: str, preset: str, out: Any) -> None:
    """In a fresh process: RSS with the model loaded, then with the store open after 20 queries."""
    torch.manual_seed(0)
    embedder = Embedder.from_model(build_model(model_config(preset)), source=f"untrained {preset}")
    embedder.embed_texts(["warm up"])
    before = rss_mb()
    searcher = Searcher(Store.open(path), embedder)
    for i in range(20):
        searcher.search(QUERIES[i % len(QUERIES)], k=K)
    out.put((before, rss_mb()))
    searcher.close()


def server_memory(path: Path, preset: str) -> tuple[float, float]:
    """(RSS of a process holding just the model, extra RSS once it serves the store) in MiB."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_probe, args=(str(path), preset, queue))
    proc.start()
    before, after = queue.get(timeout=1800)
    proc.join(60)
    return before, after - before


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Row:
    n: int
    windows: int
    build_s: float
    bytes_per_track: float
    rss_mb: float
    model_rss_mb: float
    mode: str
    p50: float
    p99: float
    embed_p50: float
    search_p50: float
    meta_p50: float
    filt_p50: float
    filt_p99: float
    recall: float


def measure(n: int, windows: int, n_queries: int, embedder: Embedder, threads: int, root: Path) -> Row:
    rng = np.random.default_rng(n)
    path = root / f"store{n}"
    shutil.rmtree(path, ignore_errors=True)
    print(f"[{n}] building a store of {n} tracks x {windows} windows ...", file=sys.stderr, flush=True)
    build_s, centers = build_store(path, embedder, n, windows, rng)
    size = dir_bytes(path)
    gc.collect()
    model_rss, rss = server_memory(path, embedder.source.split()[-1])
    searcher = Searcher(Store.open(path), embedder)
    t0 = time.perf_counter()
    searcher.calibration()
    print(f"[{n}] built in {build_s:.0f} s; calibration {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    texts = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(n_queries)]
    totals, embeds, searches, metas, filt = [], [], [], [], []
    with thread_limit(threads):
        for text in texts[:5]:
            searcher.search(text, k=K)
        for i, text in enumerate(texts):
            resp = searcher.search(text, k=K)
            t = resp.timings_ms
            totals.append(t["total"])
            embeds.append(t["embed"])
            searches.append(t["search"])
            metas.append(t["metadata"])
            if i % 2 == 0:
                fr = searcher.search(text, k=K, filters=[f"tag={TAGS[i % 60]}", "year>=1990"])
                filt.append(fr.timings_ms["total"])
        # recall@10 of the track index against exact search, queries from the same mixture
        ids, all_vecs = searcher.track_vectors()
        centers = gaussian_mixture_vectors(
            1, embedder.dim, rng=np.random.default_rng(n), n_clusters=max(16, n // 1000)
        )[1]
        queries, _ = gaussian_mixture_vectors(200, embedder.dim, rng=rng, centers=centers)
        got = searcher.store.tracks.search(queries, K)[1]
        exact = ids[np.argsort(-(queries @ all_vecs.T), axis=1)[:, :K]]
        recall = float(np.mean([len(set(g) & set(e)) / K for g, e in zip(got.tolist(), exact.tolist())]))
    mode = getattr(searcher.store.tracks, "mode", "?")
    searcher.close()
    shutil.rmtree(path, ignore_errors=True)
    pct = np.percentile
    return Row(
        n=n,
        windows=windows,
        build_s=build_s,
        bytes_per_track=size / n,
        rss_mb=rss,
        model_rss_mb=model_rss,
        mode=str(mode),
        p50=float(pct(totals, 50)),
        p99=float(pct(totals, 99)),
        embed_p50=float(pct(embeds, 50)),
        search_p50=float(pct(searches, 50)),
        meta_p50=float(pct(metas, 50)),
        filt_p50=float(pct(filt, 50)),
        filt_p99=float(pct(filt, 99)),
        recall=recall,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated track counts")
    ap.add_argument("--windows", type=int, default=4, help="window vectors per track")
    ap.add_argument("--queries", type=int, default=300, help="queries per size")
    ap.add_argument("--preset", default="small", help="model preset whose text tower encodes the queries")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads per query (0: default)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(model_config(args.preset))
    embedder = Embedder.from_model(model, source=f"untrained {args.preset}")
    root = Path(args.dir or tempfile.mkdtemp(prefix="query_latency_"))
    root.mkdir(parents=True, exist_ok=True)
    rows = [measure(int(s), args.windows, args.queries, embedder, args.threads, root) for s in args.sizes.split(",")]
    print(f"\nend-to-end query latency (preset {args.preset} text tower, {args.threads} thread(s), top-{K})\n")
    print(
        "| tracks | windows/track | index | build s | store bytes/track | store RSS MB (+ model) | p50 ms | p99 ms "
        "| embed p50 | search p50 | metadata+segment p50 | filtered p50 / p99 | recall@10 |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.n:,} | {r.windows} | {r.mode} | {r.build_s:.0f} | {r.bytes_per_track:,.0f} "
            f"| {r.rss_mb:,.0f} (+ {r.model_rss_mb:,.0f}) "
            f"| {r.p50:.1f} | {r.p99:.1f} | {r.embed_p50:.1f} | {r.search_p50:.2f} | {r.meta_p50:.2f} "
            f"| {r.filt_p50:.1f} / {r.filt_p99:.1f} | {r.recall:.3f} |"
        )
    shutil.rmtree(root, ignore_errors=True) if args.dir is None else None


if __name__ == "__main__":
    main()
