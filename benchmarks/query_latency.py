"""End-to-end query latency of search() on the product's path: text encoding (the model's ONNX export, as
``query``/``serve`` run it; torch to compare) + the store's vector index + metadata (+ best segment), p50/p99;
recall@10 of the store's track index against exact search; store size per track; server memory. Prints a table.

Synthetic collections (a store built exactly as the indexer lays it out: ``store.json``, SQLite metadata with
artists/years/tags, the FAISS track and window indexes the store picks for that size, ``vectors.f32``) of N
tracks with W windows each; track vectors from a Gaussian mixture (clustered like real embeddings), window
vectors around them. The text tower is ``--model``'s (default: the shipped ``default``, a ``small`` MiniLM
model). Queries are answered one at a time through :class:`musicsearch.search.api.Searcher`, as the server
answers them, with BLAS/OpenMP limited to ``--threads`` threads; the ways of ``--text`` take turns query by
query on the same open store (so load drifts hit them alike):

* ``onnx``: the float32 export's text tower (made on first use, as ``query`` does) with ``--text-threads``
  intra-op threads;
* ``onnx-int8``: the int8 export's text tower (``musicsearch export --onnx --int8``; made on first use of a
  shipped model), what the search path runs by default;
* ``torch``: the torch text tower (what the search path ran before the exports).

``onnx:2`` (or ``onnx-int8:2``) runs that way with 2 intra-op threads instead of ``--text-threads``.

Recall@10 is measured on the track index (what ranks results) with queries drawn from the same mixture, against
exact NumPy search over the same vectors. Building a 1 M store takes minutes: ``--keep DIR`` keeps each store in
``DIR`` and later runs reuse it.

``--vectors real-mix`` builds the stores from REAL embeddings of ``--model`` instead (``benchmarks/real_mix.py``:
window embeddings of real recordings, grown to N by seeded mixtures of real neighbours plus small noise) and
measures recall with real text queries: the captions of the procedural corpus, which the index's tuning never saw
(``held-out``), the tuning texts themselves and queries by example. These stores tune ``nprobe`` at their IVF
training on the model's tuning texts, as an indexing run does.

``--nprobe`` lists the track index's cells per query to compare, each in turn with every text way, query by query:
``store`` (what the store uses: its tuned nprobe, or ``nlist/32`` for a store saved without tuning), ``default``
(``nlist/32``) or a number.

Usage:
    nice -n 10 python benchmarks/query_latency.py --sizes 100000,1000000 --keep ~/.cache/musicsearch-bench
    nice -n 10 python benchmarks/query_latency.py --sizes 10000 --text onnx,torch --queries 100
    python benchmarks/query_latency.py --vectors real-mix --sizes 1000000 --windows 1 --text onnx-int8 \
        --nprobe store,default --keep ~/.cache/musicsearch-bench
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _data import gaussian_mixture_vectors
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.backends.faiss_backend import default_nprobe, recall_at_k
from musicsearch.index.embedder import Embedder, WindowPlan, load_embedder
from musicsearch.index.metadata import TrackInfo
from musicsearch.index.store import Store, StoreSettings
from musicsearch.index.tuning import tuning_queries
from musicsearch.search.api import Searcher
from musicsearch.search.textenc import OnnxEmbedder, open_embedder

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
    path: Path, embedder: Embedder, n: int, windows: int, rng: np.random.Generator, real_mix: bool = False
) -> tuple[float, np.ndarray]:
    """Write a store of ``n`` tracks (synthetic mixture, or ``real_mix``: real embeddings grown by mixtures); return
    (seconds, the mixture's centres (empty for real-mix)).

    The vector indexes get every vector in one ``add`` at the end: an index growing chunk by chunk would retrain
    its IVF cells at each doubling (the indexer's behaviour for a growing collection), which at 1 M tracks x 4
    windows is most of the build; one add trains once on all vectors, as the last retrain would.
    """
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
    if real_mix:
        from real_mix import grow_real_mix, real_window_embeddings

        vecs, centers = grow_real_mix(real_window_embeddings(embedder.source), n, rng), np.zeros((0, dim + 1))
    else:
        vecs, centers = gaussian_mixture_vectors(n, dim, rng=rng, n_clusters=max(16, n // 1000))
    all_t: list[np.ndarray] = []
    all_w: list[tuple[np.ndarray, np.ndarray]] = []
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
            all_t.append(np.array(t_ids, np.int64))
            all_w.append((np.array(w_ids, np.int64), w_vecs))
            store.vector_file.write(np.array(t_ids + w_ids, np.int64), np.concatenate([block, w_vecs]))
        if real_mix:  # tuned on the model's typical texts at the IVF training, as an indexing run does
            store.tracks.set_tuning_queries(tuning_queries(embedder))
            store.windows.set_tuning_queries(tuning_queries(embedder))
        store.tracks.add(np.concatenate(all_t), vecs)  # vecs: in track order, as the ids
        store.windows.add(np.concatenate([i for i, _ in all_w]), np.concatenate([v for _, v in all_w]))
        store.save_vectors()
    return time.perf_counter() - t0, centers


def _memory_probe(path: str, model: str, out: Any) -> None:
    """In a fresh process: RSS with the model loaded (the search path's: ONNX), then with the store open after 20
    queries."""
    embedder = open_embedder(model)
    embedder.embed_texts(["warm up"])
    before = rss_mb()
    searcher = Searcher(Store.open(path), embedder)
    for i in range(20):
        searcher.search(QUERIES[i % len(QUERIES)], k=K)
    out.put((before, rss_mb()))
    searcher.close()


def server_memory(path: Path, model: str) -> tuple[float, float]:
    """(RSS of a process holding just the model, extra RSS once it serves the store) in MiB."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_probe, args=(str(path), model, queue))
    proc.start()
    before, after = queue.get(timeout=1800)
    proc.join(60)
    return before, after - before


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def text_ways(model: str, ways: list[str], text_threads: int) -> dict[str, Embedder]:
    """The text encoders to compare, all standing for ``model``'s weights (so the same store accepts each)."""
    out: dict[str, Embedder] = {}
    for way in ways:
        kind, _, n = way.partition(":")
        threads = int(n) if n else text_threads
        if kind == "torch":
            out[way] = load_embedder(model)
        elif kind in ("onnx", "onnx-int8"):
            int8 = kind == "onnx-int8"
            fast = open_embedder(model, onnx=True, text_int8=int8)
            if not isinstance(fast, OnnxEmbedder):  # a shipped model's first use: torch, and the exports made
                fast = open_embedder(model, onnx=True, text_int8=int8)
            if not isinstance(fast, OnnxEmbedder) or fast.text_int8 != int8:
                flag = " --int8" if int8 else ""
                raise SystemExit(
                    f"model {model} has no such ONNX export: musicsearch export --onnx{flag} --model {model}"
                )
            fast.use_text_sessions(1, threads=threads)
            out[way] = fast
        else:
            raise SystemExit(f"unknown text way {way!r} (onnx, onnx-int8, torch)")
    return out


@dataclass
class WayRow:
    index: str
    recall: str
    p50: float
    p99: float
    embed_p50: float
    search_p50: float
    meta_p50: float
    filt_p50: float
    filt_p99: float


@dataclass
class Row:
    n: int
    windows: int
    build_s: float
    bytes_per_track: float
    rss_mb: float
    model_rss_mb: float
    ways: dict[str, WayRow] = field(default_factory=dict)


def open_or_build(
    root: Path, n: int, windows: int, embedder: Embedder, keep: bool, real_mix: bool = False
) -> tuple[Path, float, np.ndarray]:
    """The store of ``n`` tracks (built now, or reused from ``root`` when ``keep``): (path, build s or nan,
    the mixture's centres)."""
    rng = np.random.default_rng(n)
    path = root / f"store{n}x{windows}-{'realmix-' if real_mix else ''}{embedder.checksum[:12]}"
    done = path / "bench-complete.json"
    n_clusters = max(16, n // 1000)
    if keep and done.exists():
        print(f"[{n}] reusing {path}", file=sys.stderr, flush=True)
        centers = gaussian_mixture_vectors(1, embedder.dim, rng=np.random.default_rng(n), n_clusters=n_clusters)[1]
        return path, float(json.loads(done.read_text())["build_s"]), centers
    shutil.rmtree(path, ignore_errors=True)
    print(f"[{n}] building a store of {n} tracks x {windows} windows ...", file=sys.stderr, flush=True)
    build_s, centers = build_store(path, embedder, n, windows, rng, real_mix)
    done.write_text(json.dumps({"build_s": build_s}))
    return path, build_s, centers


class GcProbe:
    """A ``gc.callbacks`` hook adding up the milliseconds the garbage collector runs."""

    def __init__(self) -> None:
        self.ms = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.ms += (time.perf_counter() - self._start) * 1e3


def report_tails(n: int, t: dict[tuple[str, str], dict[str, list[float]]]) -> None:
    """Print (stderr) where the slowest 1 % of each way's queries spent their time beyond the median: which part
    (text, search, metadata, garbage collection, the rest) and whether they are the first queries."""
    for (w, p), d in t.items():
        total = np.array(d["total"])
        slow = np.argsort(-total)[: max(1, total.size // 100)]
        excess = {}
        for key in ("embed", "search", "metadata", "gc"):
            arr = np.array(d[key])
            excess[key] = float(np.mean(arr[slow] - np.median(arr)))
        rest = float(np.mean(total[slow] - np.median(total))) - sum(v for k, v in excess.items() if k != "gc")
        print(
            f"[{n}] {w} @ {p}: slowest {slow.size} queries (numbers {sorted(slow.tolist())}) "
            f"{np.mean(total[slow]):.1f} ms vs median {np.median(total):.1f}; excess: "
            + ", ".join(f"{k} {v:+.1f}" for k, v in excess.items())
            + f", unaccounted {rest:+.1f} ms; gc ran in {int(np.count_nonzero(np.array(d['gc']) > 0))} of "
            f"{total.size} queries",
            file=sys.stderr,
        )


def nprobe_value(spec: str, backend: Any) -> int | None:
    """The explicit ``nprobe`` of an ``--nprobe`` item on ``backend`` (``None``: what the store uses)."""
    if spec == "store" or getattr(backend, "mode", "exact") != "ivf":
        return None
    if spec == "default":
        return default_nprobe(int(backend._index.nlist))
    return int(spec)


def recall_queries(
    store: Store, embedder: Embedder, ids: np.ndarray, vecs: np.ndarray, centers: np.ndarray, real_mix: bool
) -> dict[str, np.ndarray]:
    """Recall query groups: mixture queries (synthetic stores); held-out captions, tuning texts and examples
    (real-mix stores, the text tower of ``embedder``)."""
    rng = np.random.default_rng(len(ids))
    if not real_mix:
        return {"mixture": gaussian_mixture_vectors(200, embedder.dim, rng=rng, centers=centers)[0]}
    from real_mix import query_groups

    groups = query_groups(embedder, vecs, rng)
    return {"held-out": groups["held-out captions"], "tuning": groups["tuning texts"], "example": groups["examples"]}


def track_recall(backend: Any, ids: np.ndarray, vecs: np.ndarray, groups: dict[str, np.ndarray]) -> str:
    """Recall@10 of the track index at its current nprobe against exact search (brute force), per query group."""
    import faiss

    out = []
    for g, q in groups.items():
        kth = faiss.knn(q, vecs, K, metric=faiss.METRIC_INNER_PRODUCT)[0][:, K - 1]  # (Q,) the K-th exact score
        out.append(f"{g} {recall_at_k(backend.search(q, K)[0], kth):.3f}")
    return ", ".join(out)


def measure(
    n: int,
    windows: int,
    n_queries: int,
    embedders: dict[str, Embedder],
    threads: int,
    root: Path,
    keep: bool,
    nprobes: list[str],
    real_mix: bool,
) -> Row:
    first = next(iter(embedders.values()))
    path, build_s, centers = open_or_build(root, n, windows, first, keep, real_mix)
    size = dir_bytes(path)
    gc.collect()
    model_rss, rss = server_memory(path, first.source)
    store = Store.open(path)
    tracks: Any = store.tracks
    searchers = {w: Searcher(store, e, text_cache_size=0) for w, e in embedders.items()}  # one store, shared
    t0 = time.perf_counter()
    for s in searchers.values():
        s.calibration()
    print(f"[{n}] calibration {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    texts = [QUERIES[i % len(QUERIES)] + ("" if i < len(QUERIES) else f" {i}") for i in range(n_queries)]
    combos = [(w, p) for p in nprobes for w in searchers]  # every text way at every nprobe
    t = {c: {"total": [], "embed": [], "search": [], "metadata": [], "filt": [], "gc": []} for c in combos}
    values = {p: nprobe_value(p, tracks) for p in nprobes}
    with thread_limit(threads):
        for w, p in combos:
            tracks.nprobe = values[p]
            for text in texts[:5]:
                searchers[w].search(text, k=K)
        probe = GcProbe()
        gc.callbacks.append(probe)
        for i, text in enumerate(texts):
            for c in combos:  # the ways take turns, query by query
                w, p = c
                tracks.nprobe = values[p]
                s = searchers[w]
                gc_before = probe.ms
                timings = s.search(text, k=K).timings_ms
                t[c]["gc"].append(probe.ms - gc_before)
                for key in ("total", "embed", "search", "metadata"):
                    t[c][key].append(timings[key])
                if i % 2 == 0:
                    fr = s.search(text, k=K, filters=[f"tag={TAGS[i % 60]}", "year>=1990"])
                    t[c]["filt"].append(fr.timings_ms["total"])
        gc.callbacks.remove(probe)
        report_tails(n, t)
        # recall@10 of the track index against exact search, per nprobe
        ids, all_vecs = next(iter(searchers.values())).track_vectors()
        groups = recall_queries(store, first, ids, all_vecs, centers, real_mix)
        index, recall = {}, {}
        for p in nprobes:
            tracks.nprobe = values[p]
            index[p] = describe_index(tracks)
            recall[p] = track_recall(tracks, ids, all_vecs, groups)
    tracks.nprobe = None
    store.close()
    if not keep:
        shutil.rmtree(path, ignore_errors=True)
    pct = np.percentile
    row = Row(n, windows, build_s, size / n, rss, model_rss)
    for (w, p), d in t.items():
        row.ways[f"{w} @ {p}"] = WayRow(
            index=index[p],
            recall=recall[p],
            p50=float(pct(d["total"], 50)),
            p99=float(pct(d["total"], 99)),
            embed_p50=float(pct(d["embed"], 50)),
            search_p50=float(pct(d["search"], 50)),
            meta_p50=float(pct(d["metadata"], 50)),
            filt_p50=float(pct(d["filt"], 50)),
            filt_p99=float(pct(d["filt"], 99)),
        )
    return row


def describe_index(backend: Any) -> str:
    """The track index as searched: ``exact`` or ``IVF<nlist>,Flat nprobe <n>`` (FAISS; ``tuned`` when the
    store's measured choice), else its mode."""
    mode = str(getattr(backend, "mode", "?"))
    index = getattr(backend, "_index", None)
    if mode == "ivf" and index is not None and hasattr(backend, "effective_nprobe"):
        tuning = backend.tuning
        tuned = " (tuned)" if backend.nprobe is None and tuning is not None else ""
        return f"IVF{int(index.nlist)},Flat nprobe {backend.effective_nprobe}{tuned}"
    return mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated track counts")
    ap.add_argument("--windows", type=int, default=4, help="window vectors per track")
    ap.add_argument("--queries", type=int, default=300, help="queries per size (each way answers all)")
    ap.add_argument("--model", default="default", help="model whose text tower encodes the queries")
    ap.add_argument("--text", default="onnx,torch", help="comma-separated text ways: onnx, onnx-int8, torch")
    ap.add_argument("--text-threads", type=int, default=1, help="ONNX Runtime intra-op threads (0: one per core)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads per query (0: default)")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--keep", default=None, help="keep the stores in this folder and reuse them in later runs")
    ap.add_argument("--vectors", choices=("synthetic", "real-mix"), default="synthetic", help="see the docstring")
    ap.add_argument("--nprobe", default="store", help="comma-separated: store, default (nlist/32) or a number")
    args = ap.parse_args()
    torch.manual_seed(0)
    ways = [w.strip() for w in args.text.split(",") if w.strip()]
    embedders = text_ways(args.model, ways, args.text_threads)
    root = Path(args.keep or args.dir or tempfile.mkdtemp(prefix="query_latency_")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    nprobes = [p.strip() for p in args.nprobe.split(",") if p.strip()]
    for p in nprobes:
        if p not in ("store", "default") and not (p.isdigit() and int(p) > 0):
            raise SystemExit(f"--nprobe items are store, default or a positive number, got {p!r}")
    rows = [
        measure(
            int(s), args.windows, args.queries, embedders, args.threads, root, args.keep is not None, nprobes,
            args.vectors == "real-mix",
        )
        for s in args.sizes.split(",")
    ]  # fmt: skip
    load = " ".join(f"{x:.1f}" for x in __import__("os").getloadavg())
    print(
        f"\nend-to-end query latency ({args.model} text tower; ONNX {args.text_threads} intra-op thread(s); "
        f"{args.threads} BLAS/OpenMP thread(s); top-{K}; ways alternated query by query; {args.vectors} vectors; "
        f"load average {load})\n"
    )
    print(
        "| tracks | windows/track | track index | text | p50 ms | p99 ms | embed p50 | search p50 "
        "| metadata+segment p50 | filtered p50 / p99 | recall@10 | build s | store bytes/track "
        "| store RSS MB (+ model) |"
    )
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for w, x in r.ways.items():
            print(
                f"| {r.n:,} | {r.windows} | {x.index} | {w} | {x.p50:.1f} | {x.p99:.1f} | {x.embed_p50:.1f} "
                f"| {x.search_p50:.2f} | {x.meta_p50:.2f} | {x.filt_p50:.1f} / {x.filt_p99:.1f} | {x.recall} "
                f"| {r.build_s:.0f} | {r.bytes_per_track:,.0f} | {r.rss_mb:,.0f} (+ {r.model_rss_mb:,.0f}) |"
            )
    if args.keep is None and args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
